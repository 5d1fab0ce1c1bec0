"""One place that sends a provider request and turns transport failures into the error tree.

Nothing is retried here; the runner retries. What matters is which failures are safe to retry:
a connect error means nothing was sent (safe); a read timeout or a dropped connection after a
create was sent means the task may exist (AmbiguousSubmission).
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

from ..errors import AmbiguousSubmission, ProviderError

API_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=30.0)


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


def json_body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None
