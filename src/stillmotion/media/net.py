"""Outbound fetches of user-supplied and provider-supplied URLs: size-capped, time-limited, and
refused on loopback/private/link-local networks unless allowed (or the URL's origin is one of the
configured provider base URLs, so a fake or a proxy on loopback works)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
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
    digest = hashlib.sha256()
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
                async for chunk in resp.aiter_raw(CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise ProviderError(f"result is over the {max_bytes}-byte cap")
                    digest.update(chunk)
                    fh.write(chunk)
                    if on_progress is not None:
                        on_progress(total, declared)
                fh.flush()
                os.fsync(fh.fileno())
            if declared is not None and total != declared:
                raise ProviderError(f"result download truncated: {total} of {declared} bytes", retryable=True)
    except httpx.HTTPError as exc:
        raise ProviderError(f"result download failed: {type(exc).__name__}", retryable=True) from exc
    return Downloaded(dest, total, digest.hexdigest())


