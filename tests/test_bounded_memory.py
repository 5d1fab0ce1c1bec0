"""Memory bounded by work in progress, not by work queued (issue #22): a submission reads, decodes,
checks, hashes and writes its images inside one admission slot, so the requests queued behind the
slots hold no image bytes; a URL input is fetched to a file before its request takes a slot."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from PIL import Image

from stillmotion.media.images import ADMITTED, admission_limiter
from tests.conftest import SettingsFactory, connect, structured
from tests.test_bounded_clips import RSS_CAP_MB, peak_rss_mb

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _rss_bounded() -> Iterator[None]:
    """The server runs in this process: its peak RSS stays under 800 MB in every case."""
    yield
    assert peak_rss_mb() < RSS_CAP_MB
QUEUED = 12


def noise_png(path: Path, seed: int) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


async def test_queued_submissions_hold_no_image_bytes(make_settings: SettingsFactory, tmp_path: Path) -> None:
    images = [noise_png(tmp_path / "in" / f"n{i}.png", i) for i in range(QUEUED)]
    size = images[0].stat().st_size
    assert size > 2_000_000  # 2.7 MB each: 12 read at once would hold 33 MB
    limiter = admission_limiter()
    holders = [object() for _ in range(ADMITTED)]
    ids: list[str] = []
    async with connect(make_settings()) as client:
        for h in holders:  # every slot taken: each call below must queue before reading its file
            await limiter.acquire_on_behalf_of(h)
        released = False
        try:
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]

            async def submit(image: Path) -> None:
                args = {"image": str(image), "prompt": "x", "model": "local/preview", "duration": 1}
                ids.append(structured(await client.call_tool("animate_image", args))["job_id"])

            async with anyio.create_task_group() as tg:
                for image in images:
                    tg.start_soon(submit, image)
                with anyio.fail_after(30):
                    while limiter.statistics().tasks_waiting < QUEUED:
                        await anyio.sleep(0.01)
                held = tracemalloc.get_traced_memory()[0] - base
                tracemalloc.stop()
                assert held < size, f"{QUEUED} queued submissions hold {held} bytes"
                assert ids == []
                for h in holders:
                    limiter.release_on_behalf_of(h)
                released = True
        finally:
            if tracemalloc.is_tracing():
                tracemalloc.stop()
            if not released:
                for h in holders:
                    limiter.release_on_behalf_of(h)
        assert len(ids) == QUEUED
        jobs = structured(await client.call_tool("list_jobs", {"limit": 50}))["jobs"]
        assert len(jobs) == QUEUED
    assert limiter.statistics().borrowed_tokens == 0
