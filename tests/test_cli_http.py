"""The command line (models, jobs, run) and the streamable HTTP transport (token, host checks)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client

from stillmotion.cli import main
from stillmotion.http.app import build_http_app
from tests.conftest import SettingsFactory

EXE = [sys.executable, "-m", "stillmotion"]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLINGAI_", "ALIBABA_", "XAI_", "AI_GATEWAY"))}
    env.update({"STILLMOTION_HOME": str(home), **extra})
    return env


def test_models_table(home: Path) -> None:
    out = subprocess.run([*EXE, "models"], env=_env(home, XAI_API_KEY="x"), capture_output=True, text=True, check=True)
    rows = [re.split(r"\s{2,}", line) for line in out.stdout.splitlines()]
    assert rows[0] == ["model", "tools", "durations", "modes", "route now", "enabled by"]
    by_model = {r[0]: r for r in rows[1:]}
    assert by_model["local/preview"][4:] == ["local", "nothing (offline)"]
    assert by_model["xai/grok-imagine-video"][2:] == ["1-15 s", "-", "direct", "XAI_API_KEY or AI_GATEWAY_API_KEY"]
    assert by_model["klingai/kling-v2.6-i2v"][4:] == [
        "not set up", "KLINGAI_API_KEY (or KLINGAI_ACCESS_KEY + KLINGAI_SECRET_KEY) or AI_GATEWAY_API_KEY"
    ]
    assert by_model["klingai/kling-v1.5-i2v"][5] == "KLINGAI_API_KEY (or KLINGAI_ACCESS_KEY + KLINGAI_SECRET_KEY)"


def test_run_help_lists_tools_and_unknown_tools_get_a_suggestion(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for tool in ("animate_image", "interpolate_frames", "camera_move", "motion_brush", "check_job", "list_models"):
        assert f"\n  {tool} " in out
    os.environ["STILLMOTION_HOME"] = str(home)
    try:
        code = main(["run", "camra_move", "{}"])
    finally:
        os.environ.pop("STILLMOTION_HOME")
    assert code == 2
    assert "unknown tool 'camra_move'; did you mean 'camera_move'?" in capsys.readouterr().err


def test_next_step_fits_a_shell_user(home: Path, image_480: Path) -> None:
    args = json.dumps({"image": str(image_480), "duration": 1, "local": {"resolution": "480p"}})
    out = subprocess.run([*EXE, "run", "animate_image", args], env=_env(home), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    if result["status"] != "succeeded":
        expected = "stillmotion run check_job '" + json.dumps({"job_id": result["job_id"]}) + "' --wait"
        assert expected in result["next_step"] and "Call check_job" not in result["next_step"]
    else:
        assert "stillmotion run animate_image" in result["next_step"]


def test_run_with_wait_then_jobs(home: Path, image_480: Path) -> None:
    args = json.dumps({"image": str(image_480), "camera": {"type": "forward_up"}, "duration": 1, "local": {"resolution": "480p"}})
    out = subprocess.run([*EXE, "run", "camera_move", args, "--wait"], env=_env(home), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "succeeded" and Path(result["video"]["path"]).is_file()
    assert "%" in out.stderr  # the progress bar went to stderr, the JSON to stdout
    jobs = subprocess.run([*EXE, "jobs"], env=_env(home), capture_output=True, text=True, check=True)
    assert result["job_id"] in jobs.stdout and "succeeded" in jobs.stdout


def test_run_reports_tool_errors(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.environ["STILLMOTION_HOME"] = str(home)
    try:
        code = main(["run", "camera_move", json.dumps({"image": "/nope.png", "camera": {"type": "down_back"}})])
    finally:
        os.environ.pop("STILLMOTION_HOME")
    assert code == 1
    assert "no readable file" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_transport_serves_mcp_and_checks_host(home: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*EXE, "serve", "--http", "--port", str(port)], env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        for _ in range(100):
            try:
                httpx.get(url, timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)

        async def talk() -> list[str]:
            async with Client(url) as client:
                return [t.name for t in (await client.list_tools()).tools]

        assert "animate_image" in anyio.run(talk)
        evil = httpx.post(url, headers={"Host": "evil.example", "Content-Type": "application/json"}, json={})
        assert evil.status_code in (400, 403, 421)
        assert proc.stdout is not None
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert out == b""  # HTTP mode writes nothing to stdout either


def test_http_needs_token_off_loopback_and_enforces_it(make_settings: SettingsFactory) -> None:
    with pytest.raises(SystemExit, match="STILLMOTION_HTTP_TOKEN"):
        build_http_app(make_settings("http"), "0.0.0.0", 8765)
    app = build_http_app(make_settings("http", STILLMOTION_HTTP_TOKEN="s3cret-token"), "0.0.0.0", 8765)

    async def probe() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://0.0.0.0:8765") as c:
            no = await c.post("/mcp", json={})
            wrong = await c.post("/mcp", json={}, headers={"Authorization": "Bearer nope"})
            return no.status_code, wrong.status_code

    assert anyio.run(probe) == (401, 401)
