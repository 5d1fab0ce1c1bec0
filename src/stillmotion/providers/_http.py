"""One place that sends a provider request and turns transport failures into the error tree.

Nothing is retried here; the runner retries. What matters is which failures are safe to retry:
a connect error means nothing was sent (safe); a read timeout or a dropped connection after a
create was sent means the task may exist (AmbiguousSubmission).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import httpx

from ..errors import (
    AmbiguousSubmission,
    AuthError,
    ProviderError,
    ProviderRejectedInput,
    RateLimited,
    StillmotionError,
)
from ..ops.metrics import observe_request

API_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=30.0)

#: Connections kept open (and alive) at most, over all shards of the provider client's pool.
MAX_CONNECTIONS = 208
#: Connections per shard: httpcore's pool does work per pooled connection on every request
#: (a socket probe of each idle one, a count of idle ones per idle one), so one pool of 200
#: costs 1-4 ms of CPU per request once it is full; a shard of 8 costs a small part of that.
SHARD_CONNECTIONS = 8


class WireRequest(NamedTuple):
    """One HTTP request as a provider sends it: what `Provider.create_request` returns, what its
    `start` sends (`send_request`) and what the dry run shows (credential headers dropped)."""

    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


class _Released(httpx.AsyncByteStream):
    """A response body that tells its shard when it is closed (read to the end or dropped)."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ShardedTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, split into shards of SHARD_CONNECTIONS connections each.

    A request goes to the shard with the fewest requests in flight (the first such one, so a
    light load keeps reusing the connections of the first shard and the others' idle connections
    expire). It behaves as one pool of MAX_CONNECTIONS keep-alive connections, but each request
    pays for the connections of one shard only.
    """

    def __init__(self, *, max_connections: int = MAX_CONNECTIONS, per_shard: int = SHARD_CONNECTIONS) -> None:
        n = max(1, -(-max_connections // per_shard))
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        tls = httpx.create_ssl_context()  # one context for all shards (each costs ~10 ms to build)
        self._shards = [httpx.AsyncHTTPTransport(verify=tls, limits=limits) for _ in range(n)]
        self._busy = [0] * n

    @property
    def in_flight(self) -> list[int]:
        return list(self._busy)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        busy = self._busy
        i = busy.index(min(busy))
        busy[i] += 1

        def release() -> None:
            busy[i] -= 1

        try:
            resp = await self._shards[i].handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(resp.stream, httpx.AsyncByteStream)
        resp.stream = _Released(resp.stream, release)
        return resp

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


def provider_client() -> httpx.AsyncClient:
    """The one client a server or worker sends provider requests and downloads through."""
    return httpx.AsyncClient(follow_redirects=False, transport=ShardedTransport())


def retry_after_seconds(resp: httpx.Response) -> float | None:
    """Retry-After (seconds or HTTP date) or retry-after-ms, honoured when 0-60 s."""
    ms = resp.headers.get("retry-after-ms")
    if ms:
        try:
            v = float(ms) / 1000
            return v if 0 <= v <= 60 else None
        except ValueError:
            pass
    raw = resp.headers.get("retry-after")
    if not raw:
        return None
    try:
        v = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        if parsed is None:
            return None
        v = parsed.timestamp() - time.time()
    return v if 0 <= v <= 60 else None


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    json: Any | None = None,
    creates: bool = False,
    timeouts: httpx.Timeout = API_TIMEOUT,
) -> httpx.Response:
    started = time.monotonic()
    kind = "create" if creates else "poll"  # (metrics.py: the provider label comes from the job's task)
    try:
        resp = await _send(client, method, url, headers=headers, json=json, creates=creates, timeouts=timeouts)
    except Exception:
        observe_request(kind, time.monotonic() - started, None)
        raise
    observe_request(kind, time.monotonic() - started, resp.status_code)
    return resp


async def send_request(client: httpx.AsyncClient, request: WireRequest, *, creates: bool = True) -> httpx.Response:
    """Send a `WireRequest` exactly as it is (a create, unless told otherwise)."""
    return await send(client, request.method, request.url, headers=request.headers, json=request.body, creates=creates)


async def _send(
    client: httpx.AsyncClient, method: str, url: str, *, headers: dict[str, str], json: Any | None, creates: bool,
    timeouts: httpx.Timeout,
) -> httpx.Response:
    try:
        return await client.request(method, url, headers=headers, json=json, timeout=timeouts)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise ProviderError(f"could not connect to {httpx.URL(url).host}: {type(exc).__name__}", retryable=True) from exc
    except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        if creates:
            raise AmbiguousSubmission(
                f"the create request to {httpx.URL(url).host} got no answer ({type(exc).__name__}); "
                "the provider may have started the task"
            ) from exc
        raise ProviderError(f"{method} {httpx.URL(url).path} failed: {type(exc).__name__}", retryable=True) from exc
    except httpx.HTTPError as exc:
        raise ProviderError(f"{method} {httpx.URL(url).path} failed: {type(exc).__name__}", retryable=True) from exc


def http_error(status: int | None, text: str, code: str | None, retry_after: float | None = None) -> StillmotionError:
    """The one fallback after a provider's own code table: what the HTTP status alone says.

    401/403 -> AuthError, 429 -> RateLimited (honouring Retry-After), 408 and 5xx -> a retryable
    ProviderError, 400/413/415/422 -> ProviderRejectedInput, anything else (or no status, as in a
    streamed error event) -> a ProviderError that is not retried."""
    if status in (401, 403):
        return AuthError(text, provider_code=code)
    if status == 429:
        return RateLimited(text, provider_code=code, retry_after=retry_after)
    if status is not None and (status >= 500 or status == 408):
        return ProviderError(text, provider_code=code, retryable=True, retry_after=retry_after)
    if status in (400, 413, 415, 422):
        return ProviderRejectedInput(text, provider_code=code)
    return ProviderError(text, provider_code=code)


def json_body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None
