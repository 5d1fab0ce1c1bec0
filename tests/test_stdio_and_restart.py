"""The server as a real subprocess: stdio protocol hygiene, and kill -9 in the middle of a render."""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import SettingsFactory, connect, structured, wait_done
from tests.stdio_client import StdioServer


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"STILLMOTION_HOME": str(home), "STILLMOTION_POLL_INTERVAL_MS": "50", **extra}


def test_stdio_answers_and_stdout_is_protocol_only(home: Path, image_480: Path) -> None:
    srv = StdioServer(_env(home))
    try:
        init = srv.initialize()
        assert init["result"]["serverInfo"]["name"] == "stillmotion"
        tools = srv.request("tools/list")["result"]["tools"]
        assert {t["name"] for t in tools} >= {"animate_image", "check_job", "list_models"}
        res = srv.call_tool(
            "camera_move",
            {"image": str(image_480), "camera": {"type": "simple", "config": {"zoom": 3}}, "duration": 1,
             "local": {"resolution": "480p"}, "wait_seconds": 30},
        )["result"]
        assert res["isError"] is False
        assert res["structuredContent"]["status"] == "succeeded"
        bad = srv.call_tool("camera_move", {"image": str(image_480), "camera": {"type": "simple"}})["result"]
        assert bad["isError"] is True and "camera.config" in bad["content"][0]["text"]
    finally:
        srv.close()
    assert srv.stdout_lines, "no output at all"
    for line in srv.stdout_lines:
        msg = json.loads(line)  # every stdout line is a JSON-RPC message
        assert msg.get("jsonrpc") == "2.0"
    assert b"job" in srv.stderr or srv.stderr == b"" or b"INFO" in srv.stderr


def test_kill9_mid_render_then_restart_finishes(
    home: Path, image_480: Path, tmp_path: Path, make_settings: SettingsFactory
) -> None:
    hold = tmp_path / "hold-render"
    hold.touch()
    srv = StdioServer(_env(home, STILLMOTION_TEST_HOLD_FILE=str(hold)))
    try:
        srv.initialize()
        res = srv.call_tool(
            "animate_image", {"image": str(image_480), "duration": 1, "local": {"resolution": "480p"}}
        )["result"]
        job_id = res["structuredContent"]["job_id"]
        # the render is parked at the hold point: progress reaches the store, the job is running
        for _ in range(200):
            st = srv.call_tool("check_job", {"job_id": job_id})["result"]["structuredContent"]
            if st["status"] == "running" and st["progress"] is not None:
                break
            time.sleep(0.05)
        assert st["status"] == "running"
    finally:
        srv.kill()  # SIGKILL: no shutdown code runs
    hold.unlink()

    async def restart() -> tuple[dict[str, Any], list[str]]:
        async with connect(make_settings()) as client:
            done = await wait_done(client, job_id)
            jobs = structured(await client.call_tool("list_jobs", {}))["jobs"]
            return done, [j["job_id"] for j in jobs]

    done, ids = anyio.run(restart)
    assert done["status"] == "succeeded", done
    assert done["video"]["duration_s"] == pytest.approx(1.0, abs=0.05)
    assert ids == [job_id]
    assert not list((home / "outputs" / job_id).glob("*.part"))


def _threads_rendering() -> int:
    return sum(
        1 for frame in sys._current_frames().values() if any(f.name == "render_job" for f in traceback.extract_stack(frame))
    )


def test_shutdown_mid_render_leaves_no_thread_behind(make_settings: SettingsFactory, image_480: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold-render"
    hold.touch()

    async def run() -> str:
        async with connect(make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))) as client:
            job = structured(await client.call_tool("animate_image", {"image": str(image_480), "duration": 1, "local": {"resolution": "480p"}}))
            for _ in range(250):  # until the render thread is parked at the hold point
                if _threads_rendering():
                    break
                await anyio.sleep(0.02)
            assert _threads_rendering() == 1
            return str(job["job_id"])

    job_id = anyio.run(run)  # the server shuts down while its render is parked
    deadline = time.monotonic() + 10
    while _threads_rendering() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _threads_rendering() == 0, "a render thread outlived its server (it would keep the process alive)"
    hold.unlink()

    async def again() -> dict[str, Any]:
        async with connect(make_settings()) as client:
            return await wait_done(client, job_id)

    assert anyio.run(again)["status"] == "succeeded"  # and the job resumes with the next server
