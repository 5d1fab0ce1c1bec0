"""Outbound fetches of user-supplied and provider-supplied URLs: size-capped, time-limited, and
refused on loopback/private/link-local networks unless allowed (or the URL's origin is one of the
configured provider base URLs, so a fake or a proxy on loopback works)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx

from ..errors import Expired, InvalidInput, ProviderError, StillmotionError

FETCH_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=10.0)
CHUNK = 1024 * 1024


class BlockedURL(StillmotionError):
    kind = "invalid_input"


def _origin(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}".lower()


def _is_private(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _is_private(ip.ipv4_mapped)
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


@dataclass(frozen=True)
class UrlGuard:
    allow_private: bool
    trusted_origins: frozenset[str]

    async def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BlockedURL(f"only http(s) URLs can be fetched, got {parts.scheme or 'no'} scheme")
        if self.allow_private or _origin(url) in self.trusted_origins:
            return
        host = parts.hostname
        try:
            addrs = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = await anyio.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
            except OSError as exc:
                raise BlockedURL(f"cannot resolve host {host!r}: {exc}") from exc
            addrs = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        for ip in addrs:
            if _is_private(ip):
                raise BlockedURL(
                    f"URL host {host!r} resolves to a private, loopback or link-local address ({ip}); "
                    "set STILLMOTION_ALLOW_PRIVATE_NETWORK=1 to allow it"
                )


async def fetch_bytes(
    client: httpx.AsyncClient, guard: UrlGuard, url: str, *, max_bytes: int, argument: str
) -> tuple[bytes, str | None]:
    """GET a user-supplied URL into memory (capped). Errors are InvalidInput naming the argument."""
    try:
        await guard.check(url)
    except BlockedURL as exc:
        raise InvalidInput(argument, exc.message) from exc
    buf = bytearray()
    try:
        async with client.stream("GET", url, timeout=FETCH_TIMEOUT, follow_redirects=False) as resp:
            if resp.status_code != 200:
                raise InvalidInput(argument, f"fetching {url} answered HTTP {resp.status_code}.")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise InvalidInput(argument, f"the URL's file is {int(declared)} bytes, over the {max_bytes}-byte cap.")
            async for chunk in resp.aiter_bytes():
                buf.extend(chunk)
                if len(buf) > max_bytes:
                    raise InvalidInput(argument, f"the URL's file is over the {max_bytes}-byte cap.")
            ctype = resp.headers.get("content-type")
    except httpx.HTTPError as exc:
        raise InvalidInput(argument, f"could not fetch {url}: {type(exc).__name__}.") from exc
    return bytes(buf), ctype


@dataclass
class Downloaded:
    path: Path
    bytes: int
    sha256: str


BATCH = 2 * CHUNK
"""Bytes handed to the writer thread at a time (measured best of 0.5-8 MiB on 2 cores)."""


class _FileSink:
    """Hashes and writes a download on one worker thread, one batch behind the network.

    The event loop only collects the chunks the transport hands it (no copying, no hashing, no
    disk I/O on the loop); the worker thread runs SHA-256 and the writes, which release the GIL,
    in parallel with the next batch arriving. At most two batches (plus the joined copy of one,
    ~6 MiB) are held at once.
    A download smaller than one batch never starts a thread of its own (its write and fsync go to
    anyio's worker threads).
    """

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._digest = hashlib.sha256()
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def _consume(self, batch: list[bytes]) -> None:
        data = b"".join(batch)  # one hash call and one write per batch: each releases the GIL once
        self._digest.update(data)
        self._fh.write(data)

    async def _wait(self) -> None:
        fut, self._pending = self._pending, None
        if fut is None:
            return
        if not fut.done():
            await anyio.to_thread.run_sync(fut.exception)
        fut.result()  # re-raises the worker's error (a full disk, say)

    async def add(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        if self._batch_bytes >= BATCH:
            await self._wait()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stillmotion-download")
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._pending = self._pool.submit(self._consume, batch)

    async def finish(self) -> str:
        """Write what is left, flush and fsync; the SHA-256 hex digest of everything written."""
        await self._wait()
        batch, self._batch, self._batch_bytes = self._batch, [], 0

        def tail() -> None:
            self._consume(batch)
            self._fh.flush()
            os.fsync(self._fh.fileno())

        if self._pool is None:
            await anyio.to_thread.run_sync(tail)  # a small file: no worker of its own, but fsync off the loop
        else:
            self._pending = self._pool.submit(tail)
            await self._wait()
        return self._digest.hexdigest()

    def close(self) -> None:
        """Stop the worker (waits for a batch in progress: at most a few ms of disk writes)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


async def download_to_file(
    client: httpx.AsyncClient,
    guard: UrlGuard,
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Downloaded:
    """Stream a result URL to `dest` (a temp path the caller renames). Never holds the body in memory.

    A short body (fewer bytes than Content-Length) is a retryable ProviderError; 403/404/410 on a
    signed URL is Expired.
    """
    await guard.check(url)
    total = 0
    try:
        async with client.stream("GET", url, timeout=FETCH_TIMEOUT, follow_redirects=True) as resp:
            if resp.status_code in (403, 404, 410):
                raise Expired(f"the result URL answered HTTP {resp.status_code}; it has probably expired")
            if resp.status_code != 200:
                raise ProviderError(f"result download answered HTTP {resp.status_code}", retryable=resp.status_code >= 500)
            declared_raw = resp.headers.get("content-length")
            declared = int(declared_raw) if declared_raw and declared_raw.isdigit() else None
            if declared is not None and declared > max_bytes:
                raise ProviderError(f"result is {declared} bytes, over the {max_bytes}-byte cap")
            with open(dest, "wb") as fh:
                sink = _FileSink(fh)
                try:
                    # the transport's own chunks (<= 64 KiB): re-chunking them costs copies, and small
                    # chunks stay in the CPU cache from the socket read to the hash and the write
                    async for chunk in resp.aiter_raw():
                        total += len(chunk)
                        if total > max_bytes:
                            raise ProviderError(f"result is over the {max_bytes}-byte cap")
                        await sink.add(chunk)
                        if on_progress is not None:
                            on_progress(total, declared)
                    sha256 = await sink.finish()
                finally:
                    sink.close()
            if declared is not None and total != declared:
                raise ProviderError(f"result download truncated: {total} of {declared} bytes", retryable=True)
    except httpx.HTTPError as exc:
        raise ProviderError(f"result download failed: {type(exc).__name__}", retryable=True) from exc
    return Downloaded(dest, total, sha256)
