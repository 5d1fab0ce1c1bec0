"""/metrics and JSON logs (issue #26): a real Prometheus (Debian's `prometheus` binary, started
here on loopback with a temporary config, never a system service) scrapes a real
`stillmotion serve --http` that ran local and xAI (strict fake) jobs, with a bearer token; its
query API must return the right counts. The same server logs JSON: every stderr line parses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import running, write_image
from tests.fakes import XaiFake
from tests.replicas import base_env, free_port, start_replica

TOKEN = "metrics-test-token-5d1e"
XAI_KEY = "xai-key-0123456789"


def _prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "Prometheus is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI must run the metrics test (.ci/run installs it)", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture
def xai() -> Iterator[XaiFake]:
    with running(XaiFake(api_key=XAI_KEY)) as fake:
        yield fake


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def _run_jobs(url: str, img: Path) -> list[dict[str, Any]]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    done = []
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as web:
        async with Client(streamable_http_client(url, http_client=web)) as c:
            for args in (
                {"duration": 1, "local": {"resolution": "480p"}},
                {"duration": 1, "local": {"resolution": "480p"}},
                {"model": "xai/grok-imagine-video", "prompt": "waves roll in", "duration": 6},
            ):
                res = await c.call_tool("animate_image", {"image": str(img), "wait_seconds": 40, **args})
                job = res.structured_content or {}
                while job.get("status") not in ("succeeded", "failed", "cancelled"):
                    job = (await c.call_tool("check_job", {"job_id": job["job_id"], "wait_seconds": 30})).structured_content or {}
                done.append(job)
    return done


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    got = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    got.raise_for_status()
    body = got.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_scrapes_metrics_and_logs_are_json(tmp_path: Path, xai: XaiFake) -> None:
    binary = _prometheus()
    img = write_image(tmp_path / "in" / "photo.png", 640, 480, seed=3)
    env = base_env(
        STILLMOTION_HOME=str(tmp_path / "home"), STILLMOTION_HTTP_TOKEN=TOKEN, STILLMOTION_LOG_FORMAT="json",
        STILLMOTION_INPUT_ROOTS=str(img.parent), STILLMOTION_POLL_INTERVAL_MS="100",
        XAI_API_KEY=XAI_KEY, XAI_BASE_URL=xai.api_base,
    )
    server = start_replica("server", env, tmp_path / "logs")
    prom: subprocess.Popen[bytes] | None = None
    try:
        server.wait_ready()
        jobs = anyio.run(_run_jobs, server.url, img)
        assert [j["status"] for j in jobs] == ["succeeded"] * 3, jobs

        # the endpoint itself: the token, then the numbers
        assert httpx.get(server.base + "/metrics").status_code == 401
        assert httpx.get(server.base + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        page = httpx.get(server.base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain; version=0.0.4")
        got = _samples(page.text)
        assert got[("stillmotion_jobs_finished_total", (("provider", "local"), ("status", "succeeded")))] == 2
        assert got[("stillmotion_jobs_finished_total", (("provider", "xai"), ("status", "succeeded")))] == 1
        assert got[("stillmotion_jobs", (("provider", "local"), ("status", "succeeded")))] == 2
        assert got[("stillmotion_provider_requests_total", (("kind", "create"), ("outcome", "ok"), ("provider", "xai")))] == 1
        polls = got[("stillmotion_provider_requests_total", (("kind", "poll"), ("outcome", "ok"), ("provider", "xai")))]
        assert polls >= 1
        assert got[("stillmotion_provider_request_seconds_count", (("kind", "poll"), ("provider", "xai")))] == polls
        assert got[("stillmotion_spend_usd_total", (("provider", "xai"),))] == pytest.approx(jobs[2]["cost"]["estimated_usd"]
                                                                                          if jobs[2]["cost"]["actual_usd"] is None
                                                                                          else jobs[2]["cost"]["actual_usd"])
        assert got[("stillmotion_job_takeovers_total", ())] == 0
        assert not any("job_" in v for key in got for _, v in key[1]), "no job ids in labels"

        # a real Prometheus: one scrape job with the token, one without
        port = free_port()
        target = f"127.0.0.1:{server.port}"
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({  # (YAML is a superset of JSON)
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "stillmotion", "authorization": {"type": "Bearer", "credentials": TOKEN},
                 "static_configs": [{"targets": [target]}]},
                {"job_name": "no-token", "static_configs": [{"targets": [target]}]},
            ],
        }))
        plog = open(tmp_path / "prometheus.log", "wb")
        prom = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=plog, stderr=plog, stdin=subprocess.DEVNULL)
        plog.close()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        finished: list[dict[str, Any]] = []
        up: dict[str, str] = {}
        while time.monotonic() < deadline:
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                finished = _query(base, 'sum by (provider, status) (stillmotion_jobs_finished_total{job="stillmotion"})')
                up = {r["metric"]["job"]: r["value"][1] for r in _query(base, "up")}
            except httpx.HTTPError:
                pass
            if finished and len(up) == 2:
                break
            time.sleep(0.5)
        counts = {(r["metric"]["provider"], r["metric"]["status"]): r["value"][1] for r in finished}
        assert counts == {("local", "succeeded"): "2", ("xai", "succeeded"): "1"}, finished
        assert up == {"stillmotion": "1", "no-token": "0"}, up  # the scrape without the token was refused
    finally:
        if prom is not None:
            prom.send_signal(signal.SIGTERM)
            try:
                prom.wait(30)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait(10)
        server.stop()

    lines = server.log.read_text().splitlines()
    assert lines, "the server logged nothing"
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line on stderr: {line!r}")
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e.get("job_id") == jobs[2]["job_id"] and e.get("provider") == "xai" for e in entries), entries
    assert any("serving MCP" in e["message"] for e in entries)
    assert not any(TOKEN in line or XAI_KEY in line for line in lines)
