"""Vercel AI Gateway: every cloud model with one `AI_GATEWAY_API_KEY` (ai-sdk-video-providers.md 5).

The wire format is the AI SDK's (`@ai-sdk/gateway` 4.x): SDK call options in camelCase at the top
level (`prompt`, `n`, `duration`, `aspectRatio`, `seed`, `resolution`), the start image as `image`
(`{type: url, url}` or `{type: file, mediaType, data: <raw base64>}`), and `providerOptions` keyed
`klingai` / `alibaba` / `xai` with the seed's camelCase names, forwarded untouched by the Gateway.

Two flows:

* B (preferred, resumable): `POST {base}/video-model/start` with `idempotency-key:
  stillmotion_<job_id>` answers `{operation}`; `POST {base}/video-model/status {operation}` answers
  pending / completed / error / cancelled. Repeating the start with the same key returns the same
  operation, so a lost answer or a crash mid-start is recovered without a second generation.
* A (fallback when `/start` answers 404): `POST {base}/video-model`, one SSE stream; the Gateway
  polls the provider itself and the first `data:` event is the result or an error. Such a job
  finishes inside `start` and cannot be resumed by another process: `status` raises Interrupted,
  and `recover` never opens a second stream.

Where each option goes (the references leave some of this open):

* negative prompt: `providerOptions.klingai.negativePrompt` / `providerOptions.alibaba.negativePrompt`;
  xAI has none (validation warns and it is not sent).
* Wan `seed` and `resolution` are the SDK's top-level call options (`seed`, `resolution: "WxH"`,
  which the Alibaba provider maps to the 720P / 1080P tier): the SDK's Alibaba provider does not
  pass unknown `providerOptions.alibaba` keys through, so those two would be dropped there.
* xAI `resolution` is `providerOptions.xai.resolution`; `aspect_ratio` is the top-level `aspectRatio`.
* Kling's end frame is `providerOptions.klingai.imageTail` (URL or raw base64, as the seed shows);
  masks likewise; the watermark is `watermarkEnabled`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx

from ..catalog import MODELS
from ..errors import (
    AmbiguousSubmission,
    AuthError,
    ContentFiltered,
    Expired,
    Interrupted,
    InvalidInput,
    JobTimeout,
    ProviderError,
    ProviderRejectedInput,
    QuotaError,
    RateLimited,
    StillmotionError,
)
from ..pricing import ActualCost, reported_amount, round_usd
from ..scrub import scrub
from . import kling, seedance, veo, wan, xai
from ._http import WireRequest, http_error, json_body, retry_after_seconds, send, send_request
from .base import JobContext, Provider, StartResult, Status, VideoResult
from .families import GATEWAY

SSE_PATH = "/video-model"
START_PATH = "/video-model/start"
STATUS_PATH = "/video-model/status"

PROTOCOL_HEADERS = {
    "ai-gateway-protocol-version": "0.0.1",
    "ai-gateway-auth-method": "api-key",
    "ai-video-model-specification-version": "4",
}
#: The streamed call waits while the Gateway polls the provider (minutes); heartbeats keep reads short.
STREAM_TIMEOUTS = httpx.Timeout(connect=10.0, read=300.0, write=60.0, pool=30.0)


#: Each family the Gateway serves -> its part of the body, built in its own module.
GATEWAY_PARTS: dict[str, Callable[[JobContext], dict[str, Any]]] = {
    m.FAMILY.name: m.gateway_body for m in (kling, wan, xai, veo, seedance)
}

SSE_WARNING = (
    "the Vercel AI Gateway did not offer its resumable start/status endpoints, so this job ran as one "
    "streamed request: it cannot be resumed if the server restarts before it finishes."
)

_FILTER_WORDS = (
    "content polic", "content filter", "moderat", "safety", "unsafe", "inappropriate", "nsfw", "risk control",
)  # fmt: skip
_QUOTA_WORDS = ("credit", "balance", "quota", "insufficient fund", "insufficient_fund", "billing", "payment")


def idempotency_key(job_id: str) -> str:
    """The same for every start of a job: retries, lost answers and restarts."""
    return f"stillmotion_{job_id}"


def map_error(
    message: str,
    etype: str | None,
    status: int | None,
    *,
    retry_after: float | None = None,
    param: Any = None,
) -> StillmotionError:
    """A Gateway error (`{error: {message, type}}` or an SSE error event) -> the error tree."""
    low = message.lower()
    where = ", ".join(x for x in (etype, f"HTTP {status}" if status else None) if x)
    text = f"Vercel AI Gateway: {message}" + (f" ({where})" if where else "")
    if param:
        text += f" [param: {param}]"
    code = etype or (str(status) if status else None)
    quota = any(w in low for w in _QUOTA_WORDS)
    if etype in ("insufficient_funds", "payment_required") or status == 402:
        return QuotaError(text, provider_code=code)
    forbidden = etype == "forbidden" or (etype is None and status == 403)
    limited = etype == "rate_limit_exceeded" or (etype is None and status == 429)
    if (forbidden or limited) and quota:
        return QuotaError(text, provider_code=code)  # a 403/429 that says the credits are gone
    if etype in ("authentication_error", "forbidden"):
        return AuthError(text, provider_code=code)
    if etype == "rate_limit_exceeded":
        return RateLimited(text, provider_code=code, retry_after=retry_after)
    identity = etype is None and status in (401, 403, 429)  # the fallback's auth / rate limit, before words
    if not identity and any(w in low for w in _FILTER_WORDS):
        return ContentFiltered(text, provider_code=code)
    if etype == "invalid_request_error":
        return ProviderRejectedInput(text, provider_code=code)
    if etype in ("model_not_found", "not_found"):
        return ProviderError(text, provider_code=code)
    if etype in ("internal_server_error", "failed_dependency"):
        return ProviderError(text, provider_code=code, retryable=True, retry_after=retry_after)
    return http_error(status, text, code, retry_after)


def describe_warning(w: Any) -> str:
    """`{type, message | feature, details}` -> one line."""
    if not isinstance(w, dict):
        return f"Vercel AI Gateway: {w}"
    if w.get("type") == "unsupported" or w.get("feature") is not None:
        feature = w.get("feature") or w.get("setting") or "a setting"
        details = w.get("details") or w.get("message")
        return f"Vercel AI Gateway: {feature} is not supported" + (f": {details}" if details else ".")
    msg = w.get("message") or w.get("details") or json.dumps(w, sort_keys=True)
    return f"Vercel AI Gateway: {msg}"


def _warnings(body: Any) -> list[str]:
    ws = body.get("warnings") if isinstance(body, dict) else None
    return [scrub(describe_warning(w)) for w in ws] if isinstance(ws, list) else []


def _video(videos: Any) -> VideoResult | StillmotionError:
    """The first of the Gateway's videos: `{type: url, url}` or `{type: base64, data}`."""
    first = videos[0] if isinstance(videos, list) and videos else None
    if not isinstance(first, dict):
        return ProviderError("Vercel AI Gateway: the generation finished without a video")
    media = str(first.get("mediaType") or "video/mp4")
    if first.get("type") == "url" and isinstance(first.get("url"), str) and first["url"]:
        return VideoResult(url=first["url"], media_type=media)
    if first.get("type") == "base64" and isinstance(first.get("data"), str) and first["data"]:
        return VideoResult(data_b64=first["data"], media_type=media)
    return ProviderError(
        f"Vercel AI Gateway: the video came back as {first.get('type')!r}, which has no URL or data to download"
    )


def gateway_actual(metadata: Any) -> ActualCost | None:
    """The Gateway's answer: `providerMetadata.gateway.cost` (USD) when present, else xAI's ticks."""
    if not isinstance(metadata, Mapping):
        return None
    gw = metadata.get("gateway")
    cost = gw.get("cost") if isinstance(gw, Mapping) else None
    usd = reported_amount(cost)
    if usd is not None:
        return ActualCost(usd=round_usd(usd), source=f"Vercel AI Gateway providerMetadata.gateway.cost {cost}")
    return xai.xai_actual(metadata.get("xai"), "Vercel AI Gateway providerMetadata.xai")


class GatewayProvider(Provider):
    name = GATEWAY.name
    route = "gateway"
    create_note = "If the Gateway has no /video-model/start, the same body goes to /video-model as one streamed call."

    def _gateway_headers(self, model_id: str, *, stream: bool = False, key: str | None = None) -> dict[str, str]:
        h = {"Authorization": self._authorization(), **PROTOCOL_HEADERS, "ai-model-id": model_id, "content-type": "application/json"}
        if stream:
            h["accept"] = "text/event-stream"
        if key is not None:
            h["idempotency-key"] = key
        return h

    @staticmethod
    def _model_id(job: JobContext) -> str:
        spec = MODELS[job.request.model]
        if spec.gateway_id is None:
            raise InvalidInput(
                "model", f"{spec.id} is not served by the Vercel AI Gateway; use its direct route."
            )
        return spec.gateway_id

    # -- request body ----------------------------------------------------------------------

    def create_request(self, job: JobContext) -> WireRequest:
        """Flow B's start, keyed by the job (`idempotency-key`); flow A sends the same body."""
        headers = self._gateway_headers(self._model_id(job), key=idempotency_key(job.job_id))
        return WireRequest("POST", self._base + START_PATH, headers, self._body(job))

    def _body(self, job: JobContext) -> dict[str, Any]:
        """The call options every family shares, then the family's own part (its module's `gateway_body`)."""
        req = job.request
        part = GATEWAY_PARTS.get(MODELS[req.model].provider)
        if part is None:  # pragma: no cover - validation never routes local models here
            raise InvalidInput("model", f"{req.model} is not served by the Vercel AI Gateway.")
        return {"prompt": req.prompt or "", "n": 1, "duration": req.duration, **part(job)}

    # -- interface -------------------------------------------------------------------------

    async def start(self, job: JobContext) -> StartResult:
        request = self.create_request(job)
        started = await self._start(request)
        if started is not None:
            return started
        return await self._generate_streamed(job, request.body)

    async def recover(self, job: JobContext) -> StartResult | None:
        """Repeat the start with the same idempotency key: the Gateway answers the same operation.
        Without the start endpoint (a streamed job) there is nothing to look up: None, never a new stream."""
        return await self._start(self.create_request(job))

    async def status(self, job: JobContext, operation: dict[str, Any]) -> Status:
        if operation.get("flow") != "start":
            raise Interrupted(
                "this Gateway job ran as one streamed request, which a restarted server cannot resume; it was not "
                "resubmitted (the Gateway may still have finished and billed it)."
            )
        resp = await send(
            self.client,
            "POST",
            self._base + STATUS_PATH,
            headers=self._gateway_headers(self._model_id(job)),
            json={"operation": operation["operation"]},
        )
        body = json_body(resp)
        if resp.status_code != 200:
            err = self._http_error(resp, body)
            if resp.status_code == 404 and err.provider_code == "not_found":
                raise Expired(
                    f"{err.message} The Gateway no longer knows this generation.", provider_code="not_found"
                )
            raise err
        if not isinstance(body, dict):
            raise ProviderError("Vercel AI Gateway: the status answer is not a JSON object", retryable=True)
        state = body.get("status")
        if state == "completed":
            video = _video(body.get("videos"))
            if isinstance(video, StillmotionError):
                return Status("failed", error=video)
            return Status("completed", progress=1.0, video=video, actual=gateway_actual(body.get("providerMetadata")))
        if state == "error":
            return Status("failed", error=self._job_error(body.get("error")))
        if state == "cancelled":
            return Status("failed", error=ProviderError("Vercel AI Gateway: video generation was cancelled."))
        return Status("pending")

    # -- flow B ----------------------------------------------------------------------------

    async def _start(self, request: WireRequest) -> StartResult | None:
        """POST /video-model/start; None when the Gateway has no such endpoint (404)."""
        resp = await send_request(self.client, request)
        answer = json_body(resp)
        if resp.status_code in (404, 405):
            etype = _error_type(answer)
            if etype in (None, "not_found"):
                return None
        if resp.status_code != 200:
            raise self._http_error(resp, answer)
        op = answer.get("operation") if isinstance(answer, dict) else None
        if not isinstance(op, dict) or not op:
            raise ProviderError("Vercel AI Gateway: /video-model/start answered without an operation")
        task_id = op.get("gatewayJobId")
        if not isinstance(task_id, str):
            meta = answer.get("providerMetadata") if isinstance(answer, dict) else None
            job_meta = ((meta or {}).get("gateway") or {}).get("asyncJob") if isinstance(meta, dict) else None
            task_id = job_meta.get("jobId") if isinstance(job_meta, dict) else None
        return StartResult(
            operation={"flow": "start", "operation": op},
            provider_task_id=task_id if isinstance(task_id, str) else None,
            warnings=_warnings(answer),
        )

    # -- flow A ----------------------------------------------------------------------------

    async def _generate_streamed(self, job: JobContext, body: dict[str, Any]) -> StartResult:
        url = self._base + SSE_PATH
        headers = self._gateway_headers(self._model_id(job), stream=True)
        limit = job.request.poll_timeout_ms / 1000
        event: dict[str, Any] | None = None
        try:
            with anyio.fail_after(limit):
                async with self.client.stream(
                    "POST", url, headers=headers, json=body, timeout=STREAM_TIMEOUTS
                ) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        raise self._http_error(resp, json_body(resp))
                    event = await _first_event(resp)
        except TimeoutError:
            raise JobTimeout(
                f"the Gateway's stream gave no result within poll_timeout_ms={job.request.poll_timeout_ms}; "
                "the generation may still complete (and be billed) on the Gateway's side."
            ) from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ProviderError(
                f"could not connect to {httpx.URL(url).host}: {type(exc).__name__}", retryable=True
            ) from exc
        except httpx.HTTPError as exc:  # sent, then the stream broke: the Gateway may be generating
            raise AmbiguousSubmission(
                f"the Gateway's stream broke before its result ({type(exc).__name__}); the generation may have started"
            ) from exc
        if event is None:
            raise AmbiguousSubmission(
                "the Gateway's stream ended without a result; the generation may have started"
            )
        if event.get("type") == "error":
            raise map_error(
                str(event.get("message") or "video generation failed"),
                _str_or_none(event.get("errorType")),
                event.get("statusCode") if isinstance(event.get("statusCode"), int) else None,
                param=event.get("param"),
            )
        if event.get("type") != "result":
            raise ProviderError(f"Vercel AI Gateway: unexpected stream event type {event.get('type')!r}")
        video = _video(event.get("videos"))
        done = (
            Status("failed", error=video)
            if isinstance(video, StillmotionError)
            else Status("completed", progress=1.0, video=video, actual=gateway_actual(event.get("providerMetadata")))
        )
        return StartResult(
            operation={"flow": "sse"}, warnings=[SSE_WARNING, *_warnings(event)], completed=done
        )

    # -- answers ---------------------------------------------------------------------------

    @staticmethod
    def _http_error(resp: httpx.Response, body: Any) -> StillmotionError:
        err = body.get("error") if isinstance(body, dict) else None
        message = ""
        etype: str | None = None
        param: Any = None
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            etype = _str_or_none(err.get("type"))
            param = err.get("param")
        elif isinstance(err, str):
            message = err
        message = message or resp.reason_phrase or f"HTTP {resp.status_code}"
        return map_error(message, etype, resp.status_code, retry_after=retry_after_seconds(resp), param=param)

    @staticmethod
    def _job_error(err: Any) -> StillmotionError:
        """The `error` of a status answer `{status: error, error}`: an object or a string."""
        if isinstance(err, dict):
            status = err.get("statusCode")
            return map_error(
                str(err.get("message") or "video generation failed"),
                _str_or_none(err.get("type") or err.get("errorType")),
                status if isinstance(status, int) else None,
                param=err.get("param"),
            )
        return map_error(str(err or "video generation failed"), None, None)


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _error_type(body: Any) -> str | None:
    err = body.get("error") if isinstance(body, dict) else None
    return _str_or_none(err.get("type")) if isinstance(err, dict) else None


async def _first_event(resp: httpx.Response) -> dict[str, Any] | None:
    """The first SSE event that carries `data:` (`:` heartbeats and other fields skipped), parsed."""
    data: list[str] = []
    async for line in resp.aiter_lines():
        if not line:
            if data:
                break
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if not data:
        return None
    try:
        event = json.loads("\n".join(data))
    except ValueError:
        raise ProviderError("Vercel AI Gateway: the stream's event is not JSON") from None
    if not isinstance(event, dict):
        raise ProviderError("Vercel AI Gateway: the stream's event is not a JSON object")
    return event
