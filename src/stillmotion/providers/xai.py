"""xAI Grok Imagine direct (provider-apis.md section 3).

Create `POST {base}/videos/generations` -> `{"request_id"}`, poll `GET {base}/videos/{request_id}`
(the base URL already ends in `/v1`). Auth is `XAI_API_KEY` as a Bearer token; xAI answers a bad
key with HTTP 400, not 401. xAI has no client request id and no lookup by anything but the
request id, so a create whose answer was lost cannot be found again: `recover` returns None and
the runner ends the job `interrupted` rather than risk paying twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ..catalog import MODELS, ModelSpec
from ..errors import (
    AuthError,
    ContentFiltered,
    Expired,
    InvalidInput,
    ProviderError,
    QuotaError,
    StillmotionError,
)
from ..media.net import path_segment
from ..plan.requests import XaiOptions
from ..pricing import ActualCost, reported_amount, round_usd
from ._http import WireRequest, http_error, json_body, retry_after_seconds, send, send_request
from .base import JobContext, Provider, StartResult, Status, VideoResult
from .families import FAMILIES
from .rules import Checked, GatewayFields, NativeExtension, OptionContext, check_catalog_choices, gateway_part

FAMILY = FAMILIES["xai"]
CREATE_PATH = "/videos/generations"
EXTEND_PATH = "/videos/extensions"
#: xAI's Video Extension (docs.x.ai, Model Capabilities > Video > Video Extension): an MP4 of 2-15 s
#: goes in, 2-10 s are added (default 6), no aspect_ratio or resolution, output capped at 720p; the
#: answer is the whole video. Only grok-imagine-video (1.5 answers "Video extension is not supported").
NATIVE_SOURCE_S = (2.0, 15.0)
NATIVE_DURATIONS = range(2, 11)
NATIVE_DEFAULT_S = 6
NATIVE_MODEL = "xai/grok-imagine-video"
STATUS_PATH = "/videos"
_CREDIT_WORDS = ("credit", "spending limit", "spend limit", "billing", "payment", "insufficient balance")
_KEY_WORDS = ("api key", "api-key", "apikey", "authorization header")
_MODERATION_WORDS = ("moderation", "content policy", "safety")


def check_options(given: XaiOptions | None, ctx: OptionContext) -> Checked[XaiOptions]:
    opts = given or XaiOptions()
    warnings: list[str] = []
    if opts.native:
        return _check_native(opts, ctx)
    check_catalog_choices(FAMILY.field, opts.model_dump(exclude_none=True), ctx.spec)
    if opts.aspect_ratio is not None:
        warnings.append(f"aspect_ratio {opts.aspect_ratio} stretches the input image to that shape.")
    resolved = opts.model_copy(
        update={"resolution": opts.resolution or ctx.spec.default_resolution, "poll_interval_ms": None, "poll_timeout_ms": None}
    )
    return Checked(resolved, warnings, poll_interval_ms=opts.poll_interval_ms, poll_timeout_ms=opts.poll_timeout_ms)


def schema(x: dict[str, Any], tool: str, models: list[ModelSpec]) -> None:
    x.pop("native", None)  # extend_video only (its own schema keeps it)


def _check_native(opts: XaiOptions, ctx: OptionContext) -> Checked[XaiOptions]:
    if not ctx.extending:
        raise InvalidInput("xai.native", "is for extend_video only.", ["(absent)"])
    if ctx.spec.id != NATIVE_MODEL:
        raise InvalidInput("xai.native", f"xAI's video extension does not take {ctx.spec.id}.", [NATIVE_MODEL])
    if ctx.route != "direct":
        raise InvalidInput(
            "xai.native", "xAI's video extension needs the direct xAI route (XAI_API_KEY, STILLMOTION_ROUTE auto or direct).",
            ["the direct route", "(absent): the continuation from the last frame works on every route"],
        )  # fmt: skip
    for name in ("aspect_ratio", "resolution"):
        if getattr(opts, name) is not None:
            raise InvalidInput(
                f"xai.{name}", "is not taken by xAI's video extension: it keeps the source's shape, at most 720p.",
                ["(absent)"],
            )  # fmt: skip
    if ctx.duration is not None and ctx.duration not in NATIVE_DURATIONS:
        raise InvalidInput(
            "duration", f"xAI's video extension adds 2-10 s, not {ctx.duration} s.", [str(d) for d in NATIVE_DURATIONS]
        )
    resolved = XaiOptions(native=True)
    return Checked(
        resolved, duration=NATIVE_DEFAULT_S, poll_interval_ms=opts.poll_interval_ms, poll_timeout_ms=opts.poll_timeout_ms
    )


def check_native_source(duration_s: float) -> None:
    """The source video's length against xAI's 2-15 s input rule (InvalidInput on `video`)."""
    lo, hi = NATIVE_SOURCE_S
    if not lo <= duration_s <= hi:
        raise InvalidInput(
            "video", f"is {duration_s:.2f} s; xAI's video extension takes a {lo:g}-{hi:g} s MP4.",
            [f"a {lo:g}-{hi:g} s video", "(xai.native absent) any length, continued from its last frame"],
        )  # fmt: skip


EXTENSION = NativeExtension("native", check_native_source)
"""`xai.native`: xAI's own video extension (`extend_video`), the whole video in and out."""


XAI_TICKS_PER_USD = 10_000_000_000
"""xAI's `cost_in_usd_ticks`: 1 USD = 10^10 ticks (docs.x.ai/developers/cost-tracking)."""


def xai_actual(usage: Any, where: str = "xAI") -> ActualCost | None:
    """`usage.cost_in_usd_ticks` (xAI, or the AI SDK's `costInUsdTicks`) -> dollars."""
    if not isinstance(usage, Mapping):
        return None
    ticks = usage.get("cost_in_usd_ticks", usage.get("costInUsdTicks"))
    value = reported_amount(ticks) if isinstance(ticks, int | float | str) else None
    if value is None:
        return None
    return ActualCost(usd=round_usd(value / XAI_TICKS_PER_USD), source=f"{where} cost_in_usd_ticks {ticks}")


def wire_options(job: JobContext) -> dict[str, Any]:
    req = job.request
    opts = req.xai or XaiOptions()
    body: dict[str, Any] = {}
    if opts.aspect_ratio:
        # only when asked: it stretches the image; without it xAI keeps the image's own ratio
        body["aspect_ratio"] = opts.aspect_ratio
    body["resolution"] = opts.resolution or MODELS[req.model].default_resolution
    return body


GATEWAY_FIELDS: GatewayFields = {
    "aspect_ratio": ("top", "aspectRatio", None),
    "resolution": ("po", "resolution", None),
}


def gateway_body(job: JobContext) -> dict[str, Any]:
    """xAI's part of a Gateway body: its own fields in the AI SDK's spelling."""
    return gateway_part(FAMILY.name, wire_options(job), GATEWAY_FIELDS, job.gateway_file(job.request.start_image))


class XaiProvider(Provider):
    name = FAMILY.name
    route = "direct"

    # -- request body ----------------------------------------------------------------------

    def extends_video(self, job: JobContext) -> bool:
        return job.request.tool == "extend_video" and EXTENSION.asked(job.request.xai)

    def create_request(self, job: JobContext) -> WireRequest:
        path = EXTEND_PATH if self.extends_video(job) else CREATE_PATH
        return WireRequest("POST", self._base + path, self._headers(create=True), self._body(job))

    def _body(self, job: JobContext) -> dict[str, Any]:
        req = job.request
        spec = MODELS[req.model]
        body: dict[str, Any] = {"model": spec.direct_name}
        if self.extends_video(job):  # the documented extension body: the source goes in whole
            if req.prompt:
                body["prompt"] = req.prompt
            body["duration"] = int(req.duration)
            body["video"] = {"url": job.video_url_or_data_uri(req.clips[0])}
            return body
        if req.prompt:
            body["prompt"] = req.prompt
        body["duration"] = int(req.duration)
        body.update(wire_options(job))
        body["image"] = {"url": job.url_or_data_uri(req.start_image)}
        return body

    # -- interface -------------------------------------------------------------------------

    async def start(self, job: JobContext) -> StartResult:
        resp = await send_request(self.client, self.create_request(job))
        data = json_body(resp)
        if resp.status_code != 200 or not isinstance(data, dict):
            raise self._error(resp, data)
        request_id = str(data.get("request_id") or "")
        if not request_id:
            raise ProviderError("xAI answered the create without a request_id")
        return StartResult(operation={"request_id": request_id}, provider_task_id=request_id)

    async def status(self, job: JobContext, operation: dict[str, Any]) -> Status:
        request_id = str(operation["request_id"])
        resp = await send(
            self.client, "GET", f"{self._base}{STATUS_PATH}/{path_segment(request_id)}", headers=self._headers()
        )
        data = json_body(resp)
        if resp.status_code == 202:
            # pending, whatever the body (it may be empty)
            return Status("pending", progress=_progress(data))
        if resp.status_code == 200 and not isinstance(data, dict):
            # a garbled poll answer: polling again is safe
            raise ProviderError(
                f"xAI answered the poll with an unreadable body: {resp.text[:200]!r}", retryable=True
            )
        if resp.status_code != 200 or not isinstance(data, dict):
            raise self._error(resp, data)
        return self._status(request_id, data)

    async def recover(self, job: JobContext) -> StartResult | None:
        """xAI requests can only be looked up by the id the lost answer carried: never resubmit."""
        return None

    # -- answers ---------------------------------------------------------------------------

    def _error(self, resp: httpx.Response, body: Any) -> StillmotionError:
        message, code = _error_fields(body)
        message = message or resp.reason_phrase or f"HTTP {resp.status_code}"
        status = resp.status_code
        text = f"xAI: {message} (HTTP {status})"
        pcode = code or str(status)
        lower = f"{message} {code or ''}".lower()
        if status in (402, 403, 429) and any(w in lower for w in _CREDIT_WORDS):
            return QuotaError(text, provider_code=pcode)
        if status == 400 and any(w in lower for w in _KEY_WORDS):  # xAI answers a bad key with 400
            return AuthError(text, provider_code=pcode)
        if status in (400, 422) and any(w in lower for w in _MODERATION_WORDS):
            return ContentFiltered(text, provider_code=pcode)
        if status == 200:
            return ProviderError(f"xAI answered with an unreadable body: {resp.text[:200]!r}")
        return http_error(status, text, pcode, retry_after_seconds(resp))

    def _status(self, request_id: str, data: dict[str, Any]) -> Status:
        st = str(data.get("status") or "").lower()
        raw_video = data.get("video")
        video: dict[str, Any] = raw_video if isinstance(raw_video, dict) else {}
        url = video.get("url")
        if st == "expired":
            return Status(
                "failed", error=Expired(f"xAI video request {request_id} expired", provider_code="expired")
            )
        if st == "failed":
            message, code = _error_fields(data)
            text = f"xAI video generation failed: {message or code or 'no reason given'}"
            err: StillmotionError
            if any(w in (message or "").lower() for w in _MODERATION_WORDS):
                err = ContentFiltered(text, provider_code=code or "failed")
            else:
                err = ProviderError(text, provider_code=code or "failed")
            return Status("failed", error=err)
        if st == "done" or (not st and url):
            if video.get("respect_moderation") is False:
                return Status(
                    "failed",
                    error=ContentFiltered(
                        "xAI blocked the generated video: it did not pass content moderation",
                        provider_code="respect_moderation",
                    ),
                )
            if not isinstance(url, str) or not url:
                return Status(
                    "failed", error=ProviderError(f"xAI finished request {request_id} without a video URL")
                )
            # xAI's URLs are temporary with no published lifetime: the runner downloads at once
            return Status("completed", progress=1.0, video=VideoResult(url=url), actual=xai_actual(data.get("usage")))
        return Status("pending", progress=_progress(data))


def _progress(data: Any) -> float | None:
    if not isinstance(data, dict):
        return None
    raw = data.get("progress")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return min(1.0, max(0.0, float(raw) / 100.0))


def _error_fields(body: Any) -> tuple[str, str | None]:
    """(message, code) from any of xAI's error shapes: `{error: {message, type, code}}`,
    `{code, error: str}` and `{error: str}`."""
    if not isinstance(body, dict):
        return "", None
    err = body.get("error")
    code = body.get("code")
    if isinstance(err, dict):
        message = str(err.get("message") or "")
        inner = err.get("code") or err.get("type")
        return message, str(inner) if inner not in (None, "") else None
    if isinstance(err, str):
        return err, str(code) if code not in (None, "") else None
    if isinstance(body.get("message"), str):
        return str(body["message"]), str(code) if code not in (None, "") else None
    return "", str(code) if code not in (None, "") else None
