"""The signed `/files/...` route answers malformed `exp`, `sig` and Range values with 4xx, never a
500 or a traceback (issue #22)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from stillmotion.http.files import FileRoute
from stillmotion.http.links import FileLinks

pytestmark = pytest.mark.anyio
JOB = "job_0123456789abcdef"


async def _inner(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the file route must answer /files/ itself")


@pytest.fixture
def route(tmp_path: Path) -> tuple[FileRoute, FileLinks]:
    (tmp_path / JOB).mkdir()
    (tmp_path / JOB / "video.mp4").write_bytes(bytes(range(256)) * 40)
    links = FileLinks("http://testserver", b"k" * 32)
    return FileRoute(_inner, links, tmp_path), links


async def test_malformed_values_get_4xx(route: tuple[FileRoute, FileLinks], caplog: pytest.LogCaptureFixture) -> None:
    app, links = route
    good = links.url(JOB, "video.mp4").removeprefix("http://testserver")
    path, _, query = good.partition("?")
    exp = query.split("&")[0].split("=")[1]
    sig = query.split("&")[1].split("=")[1]
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        assert (await client.get(good)).status_code == 200
        for q in (
            f"exp=%C2%B2&sig={sig}",  # a superscript two: a digit to str.isdigit, not to int()
            f"exp=%C2%B2{exp}&sig={sig}",
            f"exp={exp}&sig=%C3%A9",  # non-ASCII signature: compare_digest raises on it
            f"exp={exp}&sig=%ff%fe",
            f"exp={'9' * 5000}&sig={sig}",
            "exp=&sig=",
        ):
            r = await client.get(f"{path}?{q}")
            assert r.status_code == 403, (q, r.status_code)
        for value in ("bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000, "bytes=²-3", "bytes=x"):
            r = await client.get(good, headers={"Range": value.encode()})
            assert r.status_code == 416, (value[:20], r.status_code)
        r = await client.get(good, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == bytes(range(10, 20))
    assert not [rec for rec in caplog.records if rec.exc_info], [rec.getMessage() for rec in caplog.records]
