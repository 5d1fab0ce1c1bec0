"""The command line (models, jobs, run) and the streamable HTTP transport (token, host checks)."""

from __future__ import annotations

import json
import os
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
from stillmotion.http import build_http_app
from tests.conftest import SettingsFactory

EXE = [sys.executable, "-m", "stillmotion"]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLINGAI_", "ALIBABA_", "XAI_", "AI_GATEWAY"))}
    env.update({"STILLMOTION_HOME": str(home), **extra})
    return env


def test_models_table(home: Path) -> None:
    out = subprocess.run([*EXE, "models"], env=_env(home, XAI_API_KEY="x"), capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["model", "tools"]
    by_model = {line.split()[0]: line for line in lines[1:]}
    assert "local/preview" in by_model and by_model["local/preview"].rstrip().endswith("local")
    assert by_model["xai/grok-imagine-video"].rstrip().endswith("direct")
    assert by_model["klingai/kling-v2.6-i2v"].rstrip().endswith("needs a key")
    assert "1-15 s" in by_model["xai/grok-imagine-video"]


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
