"""Shared fixtures: isolated STILLMOTION_HOME per test, an in-memory MCP client, textured images."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import numpy as np
import pytest
from hypothesis import settings as hyp_settings
from mcp import Client
from PIL import Image

from stillmotion.server import build_server
from stillmotion.settings import Settings
from tests.pg import PgCluster, pg_cluster
from tests.render.measure import textured_image

hyp_settings.register_profile("ci", deadline=None, derandomize=True, max_examples=60)
hyp_settings.register_profile("dev", deadline=None, max_examples=40)
hyp_settings.load_profile("ci" if os.environ.get("CI") else "dev")

for var in (
    "KLINGAI_API_KEY", "KLINGAI_ACCESS_KEY", "KLINGAI_SECRET_KEY", "ALIBABA_API_KEY", "DASHSCOPE_API_KEY",
    "XAI_API_KEY", "AI_GATEWAY_API_KEY", "STILLMOTION_ROUTE", "STILLMOTION_DEFAULT_MODEL", "STILLMOTION_HOME",
    "STILLMOTION_OUTPUT_DIR", "STILLMOTION_INPUT_ROOTS", "STILLMOTION_STRICT_CAPABILITIES", "STILLMOTION_LEASE_MS",
    "STILLMOTION_WORKER_IDLE_MS", "BLOB_READ_WRITE_TOKEN", "VERCEL_BLOB_API_URL", "STILLMOTION_GATEWAY_MAX_BODY_BYTES",
):
    os.environ.pop(var, None)
# No background worker outlives a test unless the test is about it (tests/test_many_processes.py).
os.environ["STILLMOTION_BACKGROUND"] = "0"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(home: Path) -> SettingsFactory:
    def make(transport: str = "stdio", **env: str) -> Settings:
        base = {"STILLMOTION_HOME": str(home), "STILLMOTION_POLL_INTERVAL_MS": "50", "STILLMOTION_RETRY_BASE_MS": "20",
                "STILLMOTION_BACKGROUND": "0"}
        base.update(env)
        return Settings.from_env(base, transport=transport)  # type: ignore[arg-type]

    return make


@asynccontextmanager
async def connect(settings: Settings, mode: str = "auto") -> AsyncIterator[Client]:
    async with Client(build_server(settings), mode=mode) as client:  # type: ignore[arg-type]
        yield client


def write_image(path: Path, w: int, h: int, seed: int = 0, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(textured_image(w, h, seed)).save(path, format=fmt)
    return path


@pytest.fixture
def image_480(tmp_path: Path) -> Path:
    """A 640x480 textured PNG (renders at 480p without resampling surprises)."""
    return write_image(tmp_path / "in" / "scene.png", 640, 480, seed=1)


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text if result.content else result
    assert result.structured_content is not None
    return dict(result.structured_content)


def error_text(result: Any) -> str:
    assert result.is_error, f"expected a tool error, got {result.structured_content}"
    return str(result.content[0].text)


async def until(cond: Callable[[], object], timeout: float = 30.0, step: float = 0.02) -> None:
    """Until `cond()` holds (an event a test waits for), failing after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while not cond():
            await anyio.sleep(step)


FakeT = TypeVar("FakeT", bound=Any)


@contextmanager
def running(fake: FakeT) -> Iterator[FakeT]:
    """A loopback fake started for one test and stopped after it; it must have seen no wire-format
    violation."""
    with fake:
        yield fake
        assert fake.violations == []


async def wait_done(client: Client, job_id: str, rounds: int = 20) -> dict[str, Any]:
    for _ in range(rounds):
        sc = structured(await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 20}))
        if sc["status"] in ("succeeded", "failed", "cancelled"):
            return sc
    raise AssertionError(f"job {job_id} did not finish")


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL cluster for the whole session (see tests/pg.py)."""
    with pg_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg: PgCluster) -> Iterator[str]:
    """A fresh database on the session's cluster, dropped after the test."""
    url = pg.create_database()
    try:
        yield url
    finally:
        pg.drop_database(url)
