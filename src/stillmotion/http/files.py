"""What the HTTP transport adds around the MCP app: the signed `/files/<job_id>/<name>` route
(streamed, with Range) and read timeouts for request headers and bodies.

Timeouts: uvicorn's h11 protocol has a keep-alive timeout but none for a request whose headers or
body arrive slowly, and an ASGI middleware only runs once the headers are complete. So the guard
is a subclass of uvicorn's `H11Protocol` (passed as `uvicorn.run(http=...)`): a request's headers
must be complete within `header_timeout` of the connection (or of the previous response), however
many bytes trickle in; a body must keep arriving, each piece within `body_timeout` of the last.
Otherwise the connection is closed.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .links import FILE_NAMES, FileLinks

_PATH_RE = re.compile(r"^/files/([a-z0-9][a-z0-9_-]{7,63})/([a-z0-9.-]+)$")
_RANGE_RE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")
"""ASCII digits only, at most 19 (a 5,000-digit number is no offset: 416, not int()'s ValueError)."""
STREAM_CHUNK = 256 * 1024
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0


class FileRoute:
    """Serves `GET|HEAD /files/<job_id>/<name>?exp=&sig=` from the output folder; everything else
    goes to `app`. The signature is the authorisation (a player or a browser can follow the link
    without the bearer token), so this sits outside the token gate."""

    def __init__(self, app: ASGIApp, links: FileLinks, output_dir: Any) -> None:
        self.app = app
        self.links = links
        self.output_dir = output_dir

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/files/"):
            await self.app(scope, receive, send)
            return
        await self._serve(scope, send)

    async def _plain(self, send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        body = text.encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
            *(headers or [])]})
        await send({"type": "http.response.body", "body": body})

    async def _serve(self, scope: Scope, send: Send) -> None:
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await self._plain(send, 405, "only GET and HEAD\n", [(b"allow", b"GET, HEAD")])
            return
        m = _PATH_RE.match(scope["path"])
        if m is None or m.group(2) not in FILE_NAMES:
            await self._plain(send, 404, "no such file\n")
            return
        job_id, name = m.group(1), m.group(2)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        exp = (query.get("exp") or [""])[0]
        sig = (query.get("sig") or [""])[0]
        if not self.links.check(job_id, name, exp, sig):
            await self._plain(send, 403, "missing, altered or expired signature\n")
            return
        path = self.output_dir / job_id / name
        try:
            fh = await anyio.to_thread.run_sync(open, path, "rb")
        except OSError:
            await self._plain(send, 404, "no such file\n")
            return
        try:
            size = os.fstat(fh.fileno()).st_size
            headers = dict(scope.get("headers") or [])
            start, end, status = 0, size - 1, 200
            raw_range = headers.get(b"range", b"").decode("latin-1").strip()
            if raw_range:
                parsed = _parse_range(raw_range, size)
                if parsed is None:
                    await self._plain(send, 416, "unsatisfiable range\n", [(b"content-range", f"bytes */{size}".encode())])
                    return
                start, end = parsed
                status = 206
            length = max(0, end - start + 1)
            out = [
                (b"content-type", b"video/mp4" if name.endswith(".mp4") else b"image/png"),
                (b"content-length", str(length).encode()),
                (b"accept-ranges", b"bytes"),
                (b"cache-control", b"private, max-age=3600"),
            ]
            if status == 206:
                out.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
            await send({"type": "http.response.start", "status": status, "headers": out})
            if method == "HEAD" or length == 0:
                await send({"type": "http.response.body", "body": b""})
                return
            await anyio.to_thread.run_sync(fh.seek, start)
            left = length
            while left > 0:
                chunk = await anyio.to_thread.run_sync(fh.read, min(STREAM_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
            if left > 0:  # the file shrank under us: end the body (the length no longer holds)
                await send({"type": "http.response.body", "body": b""})
        finally:
            fh.close()


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """One `bytes=` range -> (start, end) inclusive; None when unsatisfiable or not understood."""
    m = _RANGE_RE.match(value.replace(" ", ""))
    if m is None or size == 0:
        return None
    a, b = m.group(1), m.group(2)
    if a == "" and b == "":
        return None
    if a == "":
        n = int(b)
        if n == 0:
            return None
        return max(0, size - n), size - 1
    start = int(a)
    end = int(b) if b else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body read timeouts (see the module text)."""

    header_timeout: float = HEADER_TIMEOUT_S
    body_timeout: float = BODY_TIMEOUT_S
    _deadline: asyncio.TimerHandle | None = None
    _phase: str = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch(False)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch(True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _watch(self, got_data: bool) -> None:
        if self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._phase != "headers":  # one fixed deadline: trickled bytes do not extend it
                self._arm(self.header_timeout, "headers")
        elif state is h11.SEND_BODY:
            if self._phase != "body" or got_data:
                self._arm(self.body_timeout, "body")
        else:
            self._cancel()

    def _arm(self, seconds: float, phase: str) -> None:
        self._cancel()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = ""

    def _expire(self) -> None:
        phase, self._deadline = self._phase, None
        self._phase = ""
        if self.transport.is_closing():
            return
        self.logger.info("closing a connection from %s: request %s too slow", self.client, phase)
        self.transport.close()


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[GuardedH11Protocol]:
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
