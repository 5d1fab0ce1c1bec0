"""Subscribers hear when a job's resource changes: `subscriptions/listen` (2026 era) and
`resources/subscribe` + `notifications/resources/updated` (2025 era)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning

from stillmotion.server import build_server
from tests.conftest import SettingsFactory, connect, structured

pytestmark = pytest.mark.anyio
ARGS = {"duration": 1, "local": {"resolution": "480p"}}


async def test_listen_gets_job_updates(make_settings: SettingsFactory, image_480: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    async with connect(make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))) as client:
        job = structured(await client.call_tool("animate_image", {"image": str(image_480), **ARGS}))
        uri = f"stillmotion://jobs/{job['job_id']}"
        async with client.listen(resource_subscriptions=[uri]) as sub:
            hold.unlink()
            seen: list[str] = []
            with anyio.fail_after(30):
                async for event in sub:
                    seen.append(str(getattr(event, "uri", "")))
                    status = structured(await client.call_tool("check_job", {"job_id": job["job_id"]}))["status"]
                    if status == "succeeded":
                        break
        assert seen and all(u == uri for u in seen)


async def test_legacy_subscribe_gets_updated_notifications(
    make_settings: SettingsFactory, image_480: Path, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    got: list[str] = []
    done = anyio.Event()

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == "notifications/resources/updated":
            got.append(str(root.params.uri))
            done.set()

    server = build_server(make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold)))
    async with Client(server, mode="legacy", message_handler=on_message) as client:
        job = structured(await client.call_tool("animate_image", {"image": str(image_480), **ARGS}))
        uri = f"stillmotion://jobs/{job['job_id']}"
        with warnings.catch_warnings():
            # the 2025-era client call is deprecated in the SDK; 2025-era hosts still use it
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource(uri)
        hold.unlink()
        with anyio.fail_after(30):
            await done.wait()
    assert got and got[0] == uri
