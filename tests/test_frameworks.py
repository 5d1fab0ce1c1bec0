"""Agent-framework converters (langchain-google-genai, openai-agents strict, pydantic-ai, ChatOpenAI)
accept our tool list and a finished job's result.

They live in a second virtual environment (langchain-mcp-adapters pins mcp<2), made by
`tests/frameworks/setup.sh`; this test dumps the tool list and a finished result with the
project's code and runs tests/frameworks/check_converters.py there. Without that environment the
test skips on a developer machine and fails under CI=true (.ci/run creates it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from tests.frameworks.dump import dump

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("FRAMEWORKS_VENV", ROOT / ".frameworks-venv"))


@pytest.mark.timeout(900)
async def test_agent_frameworks_accept_our_tools_and_results(tmp_path: Path) -> None:
    python = VENV / "bin" / "python"
    if not python.exists():
        message = f"no framework venv at {VENV}: run tests/frameworks/setup.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    await dump(tmp_path / "dump")
    env = {**os.environ, "FRAMEWORKS_DUMP": str(tmp_path / "dump")}
    env.pop("PYTHONPATH", None)
    command = [str(python), "-m", "pytest", "-c", "tests/frameworks/pytest.ini", "tests/frameworks/check_converters.py", "-q"]
    with anyio.fail_after(600):
        proc = await anyio.run_process(command, cwd=ROOT, env=env, check=False)
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    tail = "\n".join(out.splitlines()[-40:])
    sys.stderr.write(tail + "\n")
    assert proc.returncode == 0, tail
    assert " passed" in out and "skipped" not in out
