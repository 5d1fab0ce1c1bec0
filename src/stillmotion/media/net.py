"""Outbound fetches of user-supplied and provider-supplied URLs: size-capped, time-limited, and
refused on loopback/private/link-local networks unless allowed (or the URL's origin is one of the
configured provider base URLs, so a fake or a proxy on loopback works).

Every fetch follows redirects itself (at most ``MAX_REDIRECTS`` hops) and runs the guard on every
hop. The guard also runs *inside the connect*: a fetch goes through its own connection pool whose
network backend resolves the host once, checks every address it got, and connects to that checked
address. So a name that answers a public address to the pre-flight check and a private one a moment
later (DNS rebinding) is refused at connect time, never connected to.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urljoin, urlsplit

import anyio
import anyio.to_thread
import httpcore
import httpx

from ..errors import Expired, InvalidInput, ProviderError, RateLimited, StillmotionError
from ..providers._http import retry_after_seconds

FETCH_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=10.0)
FETCH_DEADLINE_S = 120.0
"""The whole of one fetch (every redirect hop and the body) must end within this
(STILLMOTION_FETCH_TIMEOUT_S); the per-read timeout alone lets a URL drip one byte a minute."""
CHUNK = 1024 * 1024
MAX_REDIRECTS = 5
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the addresses the host resolves to, as strings."""


class BlockedURL(StillmotionError):
    kind = "invalid_input"


def url_problem(url: str) -> str | None:
    """Why `url` is not a well-formed http(s) URL (bad port, unclosed IPv6 bracket, no host, a
    control character), or None when it is one."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "it holds a control character (NUL, newline or the like)"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for "12ab" and for 99999
    except ValueError as exc:
        return f"it is malformed ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"only http(s) URLs can be fetched, got {parts.scheme or 'no'} scheme"
    if not parts.hostname:
        return "it has no host name"
    if port == 0:
        return "port 0 is not a port"
    return None


def path_segment(value: object) -> str:
    """A provider id made safe as one URL path segment (`../x?y` cannot leave its place)."""
    return quote(str(value), safe="")


def _origin(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}".lower()


def _host_port(url: str) -> tuple[str, int]:
    p = urlsplit(url)
    return (p.hostname or "").lower(), p.port or (443 if p.scheme == "https" else 80)


def _is_private(ip: IPAddress) -> bool:
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


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port)
    return [str(info[4][0]).split("%")[0] for info in infos]


@dataclass(frozen=True)
class UrlGuard:
    allow_private: bool
    trusted_origins: frozenset[str]
    resolver: Resolver = field(default=system_resolver, compare=False)
    """How host names are resolved (tests pass their own, to play DNS tricks)."""

    def _trusted(self, host: str, port: int) -> bool:
        return any(_host_port(o) == (host.lower(), port) for o in self.trusted_origins)

    async def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to for (host, port): resolved once, each one checked.
        Raises BlockedURL when any of them is private (unless allowed, or the host is trusted)."""
        host = host.strip("[]")
        if self.allow_private or self._trusted(host, port):
            return [host]
        try:
            addrs: list[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                raw = await self.resolver(host, port)
            except OSError as exc:
                raise BlockedURL(f"cannot resolve host {host!r}: {exc}") from exc
            try:
                addrs = [ipaddress.ip_address(a.split("%")[0]) for a in raw]
            except ValueError as exc:
                raise BlockedURL(f"host {host!r} resolved to an unreadable address") from exc
        if not addrs:
            raise BlockedURL(f"host {host!r} resolved to no address")
        for ip in addrs:
            if _is_private(ip):
                raise BlockedURL(
                    f"URL host {host!r} resolves to a private, loopback or link-local address ({ip}); "
                    "set STILLMOTION_ALLOW_PRIVATE_NETWORK=1 to allow it"
                )
        return [str(ip) for ip in dict.fromkeys(addrs)]

    async def check(self, url: str) -> None:
        """Pre-flight check of one URL (form, scheme, host); the connect runs the address check again."""
        problem = url_problem(url)
        if problem is not None:
            raise BlockedURL(f"{url[:200]!r} cannot be fetched: {problem}")
        if self.allow_private or _origin(url) in self.trusted_origins:
            return
        host, port = _host_port(url)
        await self.addresses(host, port)

    def client(self, timeout: httpx.Timeout = FETCH_TIMEOUT) -> httpx.AsyncClient:
        """A client whose every connection goes to an address this guard checked at connect time."""
        return httpx.AsyncClient(transport=_GuardedTransport(self), timeout=timeout, follow_redirects=False)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the guard inside connect: resolve once, check, connect to
    exactly the checked address (TLS still verifies the certificate for the URL's host name)."""

    def __init__(self, guard: UrlGuard) -> None:
        self._guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._guard.addresses(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


_SSL: list[ssl.SSLContext] = []


def _ssl_context() -> ssl.SSLContext:
    """One verifying context for every fetch (loading the CA bundle costs milliseconds)."""
    if not _SSL:
        _SSL.append(httpx.create_ssl_context())
    return _SSL[0]


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, guard: UrlGuard) -> None:
        ctx = _ssl_context()
        super().__init__(verify=ctx, trust_env=False)  # the shared context: no CA bundle loaded per fetch
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ctx,
            max_connections=4,
            network_backend=_GuardedBackend(guard),
        )


class TooManyRedirects(StillmotionError):
    kind = "provider_error"


FINAL_URL = "stillmotion_final_url"
"""The key in a response's `extensions` naming the URL (after redirects) that was checked and fetched."""


@asynccontextmanager
async def open_url(guard: UrlGuard, url: str, *, timeout: httpx.Timeout = FETCH_TIMEOUT) -> AsyncIterator[httpx.Response]:
    """GET `url`, following at most MAX_REDIRECTS redirects by hand, the guard on every hop (before
    the request and again inside the connect). Yields the final answer, body not yet read, with the
    final URL (as given or as joined from the last Location) in `resp.extensions[FINAL_URL]`.
    Raises BlockedURL, TooManyRedirects or httpx.HTTPError."""
    if not _SSL:
        await anyio.to_thread.run_sync(_ssl_context)  # loading the CA bundle: once, off the loop
    async with guard.client(timeout) as client:
        current = url
        for hop in range(MAX_REDIRECTS + 1):
            await guard.check(current)
            try:
                request = client.build_request("GET", current)
            except httpx.InvalidURL as exc:
                raise BlockedURL(f"{current[:200]!r} cannot be fetched: it is malformed ({exc})") from exc
            resp = await client.send(request, stream=True)
            location = resp.headers.get("location")
            if resp.status_code in REDIRECT_CODES and location:
                await resp.aclose()
                if hop == MAX_REDIRECTS:
                    raise TooManyRedirects(f"{url} redirected more than {MAX_REDIRECTS} times")
                try:
                    current = urljoin(current, location)
                except ValueError as exc:
                    raise BlockedURL(f"a redirect of {url[:200]!r} is malformed ({exc})") from exc
                continue
            resp.extensions[FINAL_URL] = current
            try:
                yield resp
            finally:
                await resp.aclose()
            return


def _check_form(url: str, argument: str) -> None:
    problem = url_problem(url)
    if problem is not None:
        raise InvalidInput(argument, f"is not a usable URL: {problem}.", "an http(s) URL such as https://example.com/clip.mp4")


async def remove_file(path: Path) -> None:
    """Remove `path` (if there) on a worker thread, shielded: it runs to the end while the caller is
    being cancelled, so neither an interrupted download nor a temporary file stays on disk."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(partial(path.unlink, missing_ok=True))


@dataclass
class Fetched:
    path: Path
    bytes: int
    sha256: str
    content_type: str | None
    final_url: str
    """The URL the body came from, after redirects: every hop was checked by the guard."""


async def fetch_to_file(
    guard: UrlGuard, url: str, dest: Path, *, max_bytes: int, argument: str, deadline_s: float = FETCH_DEADLINE_S
) -> Fetched:
    """GET a user-supplied URL into `dest`, streamed (never whole in memory), capped at max_bytes
    (one byte more ends the read), the whole fetch within `deadline_s`. Errors are InvalidInput
    naming the argument; `dest` is removed on every failure, cancellation included."""
    _check_form(url, argument)
    sink = _FileSink(dest)
    try:
        with anyio.fail_after(deadline_s):
            async with open_url(guard, url) as resp:
                if resp.status_code != 200:
                    raise InvalidInput(argument, f"fetching {url} answered HTTP {resp.status_code}.")
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise InvalidInput(argument, f"the URL's file is {int(declared)} bytes, over the {max_bytes}-byte cap.")
                sha256 = await sink.stream(
                    resp, max_bytes=max_bytes,
                    over_cap=lambda: InvalidInput(argument, f"the URL's file is over the {max_bytes}-byte cap."),
                )  # fmt: skip
                return Fetched(dest, sink.total, sha256, resp.headers.get("content-type"), str(resp.extensions[FINAL_URL]))
    except BaseException as exc:
        await remove_file(dest)
        if isinstance(exc, TimeoutError):
            raise InvalidInput(
                argument,
                f"fetching {url} did not finish within {deadline_s:g} s (STILLMOTION_FETCH_TIMEOUT_S); "
                f"{sink.total} bytes had arrived.",
            ) from None
        if isinstance(exc, BlockedURL | TooManyRedirects):
            raise InvalidInput(argument, exc.message) from exc
        if isinstance(exc, httpx.HTTPError):
            raise InvalidInput(argument, f"could not fetch {url}: {type(exc).__name__}.") from exc
        raise


@asynccontextmanager
async def fetched_temp(
    guard: UrlGuard, url: str, *, max_bytes: int, argument: str, deadline_s: float = FETCH_DEADLINE_S
) -> AsyncIterator[Fetched]:
    """`fetch_to_file` into a temporary file that is removed when the block ends."""
    fd, name = await anyio.to_thread.run_sync(lambda: tempfile.mkstemp(prefix="stillmotion-fetch-"))
    os.close(fd)
    tmp = Path(name)
    try:
        yield await fetch_to_file(guard, url, tmp, max_bytes=max_bytes, argument=argument, deadline_s=deadline_s)
    finally:
        await remove_file(tmp)


async def fetch_bytes(
    client: httpx.AsyncClient | None,
    guard: UrlGuard,
    url: str,
    *,
    max_bytes: int,
    argument: str,
    deadline_s: float = FETCH_DEADLINE_S,
) -> tuple[bytes, str | None]:
    """A user-supplied URL's bytes (capped at max_bytes), streamed to a temporary file first.
    `client` is unused (fetches use the guard's own connections); it stays for existing callers."""
    async with fetched_temp(guard, url, max_bytes=max_bytes, argument=argument, deadline_s=deadline_s) as got:
        data = await anyio.to_thread.run_sync(got.path.read_bytes)
    return data, got.content_type


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

    _fh: BinaryIO

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.total = 0
        """Bytes received so far (a timeout's message says how many had arrived)."""
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

    async def stream(
        self, resp: httpx.Response, *, max_bytes: int, over_cap: Callable[[], StillmotionError],
        on_progress: Callable[[int, int | None], None] | None = None, declared: int | None = None,
    ) -> str:
        """Stream `resp`'s body into `dest`: one byte over `max_bytes` ends the read with `over_cap()`;
        `on_progress(total, declared)` after each chunk. The SHA-256 hex digest of the whole body."""
        self._fh = await anyio.to_thread.run_sync(open, self.dest, "wb")
        try:
            # the transport's own chunks (<= 64 KiB): re-chunking them costs copies, and small
            # chunks stay in the CPU cache from the socket read to the hash and the write
            async for chunk in resp.aiter_raw():
                self.total += len(chunk)
                if self.total > max_bytes:
                    raise over_cap()
                await self.add(chunk)
                if on_progress is not None:
                    on_progress(self.total, declared)
            return await self.finish()
        finally:
            self.close()
            self._fh.close()  # (finish() flushed and fsynced it: nothing left to write)

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
    client: httpx.AsyncClient | None,
    guard: UrlGuard,
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    on_progress: Callable[[int, int | None], None] | None = None,
    deadline_s: float | None = None,
) -> Downloaded:
    """Stream a result URL to `dest` (a temp path the caller renames). Never holds the body in memory.

    Redirects are followed by hand (at most MAX_REDIRECTS), the guard on every hop and at connect
    time. A short body (fewer bytes than Content-Length) is a retryable ProviderError; 403/404/410
    on a signed URL is Expired; over `max_bytes` (declared or streamed) is a ProviderError. On every
    failure, cancellation included, `dest` is removed: no partial file stays behind.
    `client` is unused (the guard's own connections are); it stays for existing callers.
    With `deadline_s`, the whole download must end within it (a non-retryable ProviderError).
    """
    sink = _FileSink(dest)
    try:
        with anyio.fail_after(deadline_s):
            async with open_url(guard, url) as resp:
                if resp.status_code in (403, 404, 410):
                    raise Expired(f"the result URL answered HTTP {resp.status_code}; it has probably expired")
                if resp.status_code == 429:
                    raise RateLimited("result download answered HTTP 429", provider_code="429", retry_after=retry_after_seconds(resp))
                if resp.status_code != 200:
                    raise ProviderError(
                        f"result download answered HTTP {resp.status_code}",
                        provider_code=str(resp.status_code),
                        retryable=resp.status_code >= 500 or resp.status_code == 408,
                        retry_after=retry_after_seconds(resp) if resp.status_code >= 500 else None,
                    )
                declared_raw = resp.headers.get("content-length")
                declared = int(declared_raw) if declared_raw and declared_raw.isdigit() else None
                if declared is not None and declared > max_bytes:
                    raise ProviderError(
                        f"result is {declared} bytes, over the {max_bytes}-byte cap (STILLMOTION_MAX_RESULT_BYTES)"
                    )
                sha256 = await sink.stream(
                    resp, max_bytes=max_bytes, on_progress=on_progress, declared=declared,
                    over_cap=lambda: ProviderError(f"result is over the {max_bytes}-byte cap (STILLMOTION_MAX_RESULT_BYTES)"),
                )  # fmt: skip
                if declared is not None and sink.total != declared:
                    raise ProviderError(f"result download truncated: {sink.total} of {declared} bytes", retryable=True)
    except BaseException as exc:
        await remove_file(dest)
        if isinstance(exc, TimeoutError):
            raise ProviderError(
                f"result download did not finish within {deadline_s:g} s (STILLMOTION_FETCH_TIMEOUT_S); {sink.total} bytes arrived"
            ) from None
        if isinstance(exc, BlockedURL):
            raise ProviderError(f"result download refused: {exc.message}") from exc
        if isinstance(exc, httpx.HTTPError):
            raise ProviderError(f"result download failed: {type(exc).__name__}", retryable=True) from exc
        raise
    return Downloaded(dest, sink.total, sha256)


def write_base64_file(data: str, dest: Path, *, max_bytes: int) -> int:
    """Decode a base64 result (the Gateway's inline video) to `dest` in slices, capped at max_bytes.
    Runs on a worker thread. `dest` is removed on any failure."""
    total = 0
    try:
        if len(data) * 3 // 4 > max_bytes + 3:
            raise ProviderError(
                f"result is about {len(data) * 3 // 4} bytes, over the {max_bytes}-byte cap (STILLMOTION_MAX_RESULT_BYTES)"
            )
        with open(dest, "wb") as fh:
            step = 4 * 1024 * 1024
            for i in range(0, len(data), step):
                chunk = base64.b64decode(data[i : i + step])
                total += len(chunk)
                if total > max_bytes:
                    raise ProviderError(f"result is over the {max_bytes}-byte cap (STILLMOTION_MAX_RESULT_BYTES)")
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return total
