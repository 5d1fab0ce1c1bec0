"""Dump what the framework tests read: our `tools/list` and a finished job's tool result, as JSON.

Runs in the project's environment (`python -m tests.frameworks.dump OUT_DIR`); the framework
venv (tests/frameworks/setup.sh) only reads the files, since langchain-mcp-adapters pins mcp<2.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from stillmotion.server import build_server
from stillmotion.settings import Settings
from tests.conftest import write_image


async def dump(out: Path) -> None:
    await anyio.Path(out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        env = {"STILLMOTION_HOME": home, "STILLMOTION_RESOURCE_LINKS": "0"}
        settings = Settings.from_env(env)
        image = write_image(Path(home) / "in.png", 320, 240, seed=3)
        async with Client(build_server(settings)) as client:
            tools = (await client.list_tools()).tools
            (out / "tools.json").write_text(
                json.dumps([t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools], indent=1)
            )
            started = await client.call_tool(
                "animate_image", {"image": str(image), "duration": 1, "local": {"resolution": "480p"}, "wait_seconds": 40}
            )
            assert started.structured_content is not None, started
            done = started
            while (done.structured_content or {}).get("status") not in ("succeeded", "failed"):
                done = await client.call_tool("check_job", {"job_id": started.structured_content["job_id"], "wait_seconds": 40})
            result: dict[str, Any] = done.model_dump(mode="json", by_alias=True, exclude_none=True)
            (out / "finished_result.json").write_text(json.dumps(result, indent=1))


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FRAMEWORKS_DUMP", "tests/frameworks/out"))
    anyio.run(dump, target)


if __name__ == "__main__":
    main()
