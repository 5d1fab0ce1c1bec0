"""Alibaba Wan direct: DashScope's asynchronous video synthesis (provider-apis.md section 2).

Create `POST {base}/api/v1/services/aigc/video-generation/video-synthesis` with the
`X-DashScope-Async: enable` header (without it DashScope answers 403), query
`GET {base}/api/v1/tasks/{task_id}`. Auth is `ALIBABA_API_KEY` (or `DASHSCOPE_API_KEY`) as a
Bearer token. DashScope has no client task id and no lookup by anything but the task id, so a
create whose answer was lost cannot be found again: `recover` returns None and the runner ends
the job `interrupted` rather than risk paying twice.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import httpx

from ..catalog import MODELS, ModelSpec
from ..errors import (
    AuthError,
    ContentFiltered,
    Expired,
    InvalidInput,
    ProviderError,
    ProviderRejectedInput,
    QuotaError,
    RateLimited,
    StillmotionError,
)
from ..media.net import path_segment
from ..media.sources import AudioFacts, audio_facts
from ..plan.requests import WanOptions
from ._http import WireRequest, http_error, json_body, retry_after_seconds, send, send_request
from .base import JobContext, Provider, StartResult, Status, VideoResult
from .families import FAMILIES
from .rules import AudioInput, Checked, GatewayFields, OptionContext, gateway_part, provider_options

FAMILY = FAMILIES["alibaba"]
CREATE_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"
TASKS_PATH = "/api/v1/tasks"
RESULT_TTL_S = 24 * 3600
"""DashScope keeps task ids and result URLs for 24 hours."""

FILTER_CODES = frozenset({"DataInspectionFailed", "IPInfringementSuspect"})
QUOTA_CODES = frozenset({"Arrearage", "Throttling.AllocationQuota"})
RETRY_CODES = frozenset({"InternalError", "ModelUnavailable", "InternalError.Algo", "SystemError"})
OPTIONAL_PARAMETERS = ("prompt_extend", "seed", "watermark", "shot_type")
"""Option keys sent as `parameters.*` under the same name only when the user set them."""
AUDIO_FORMATS = ("wav", "mp3")
AUDIO_SECONDS = (3.0, 30.0)
AUDIO_MAX_BYTES = 15 * 1024 * 1024
"""DashScope's rules for `input.audio_url` (provider-apis.md 2.2)."""


def check_options(given: WanOptions | None, ctx: OptionContext) -> Checked[WanOptions]:
    """Wan's option rules: audio (flash only; a driving track turns it on), shot_type, resolution."""
    opts = given or WanOptions()
    spec = ctx.spec
    out = opts.model_dump(exclude_none=True)
    out.pop("poll_interval_ms", None)
    out.pop("poll_timeout_ms", None)
    if opts.audio is not None and not spec.audio:
        raise InvalidInput(
            "wan.audio", f"{spec.id} cannot generate audio; only the flash model can.", ["alibaba/wan-v2.6-i2v-flash"]
        )
    if opts.shot_type == "multi" and opts.prompt_extend is False:
        raise InvalidInput(
            "wan.shot_type",
            "multi works through DashScope's prompt rewriting, which wan.prompt_extend false turns off.",
            ["single", "multi with prompt_extend true or unset"],
        )
    if opts.audio_url is not None and spec.audio:
        if opts.audio is False:
            raise InvalidInput(
                "wan.audio",
                "is false but wan.audio_url gives a driving track; DashScope would drop the track silently. "
                "Leave audio out (a track turns it on) or drop audio_url.",
                ["true", "(absent)"],
            )
        out["audio"] = True
    if spec.audio:
        out.setdefault("audio", False)  # DashScope's default is on (billed); ours is off unless asked
    out.setdefault("resolution", spec.default_resolution)
    return Checked(
        WanOptions.model_validate(out),
        poll_interval_ms=opts.poll_interval_ms,
        poll_timeout_ms=opts.poll_timeout_ms,
    )


def schema(w: dict[str, Any], tool: str, wan: list[ModelSpec]) -> None:
    """The `wan` object in a tool's schema: which models take audio, the default resolution."""
    audio = [m.id.removeprefix("alibaba/") for m in wan if m.audio]
    w["audio"]["description"] = f"{', '.join(audio)} only; default false."
    w["resolution"]["description"] = f"Default {wan[0].default_resolution}."


def check_audio(data: bytes, argument: str = "wan.audio_url") -> AudioFacts:
    """DashScope's audio_url rules (wav/mp3 by content, <= 15 MB, 3-30 s), before anything is sent.
    Decodes the container: call from a worker thread."""
    if len(data) > AUDIO_MAX_BYTES:
        raise InvalidInput(argument, f"is {len(data)} bytes; DashScope takes at most 15 MB.", "<= 15 MB")
    facts = audio_facts(data, argument, AUDIO_FORMATS)
    lo, hi = AUDIO_SECONDS
    if not lo <= facts.duration_s <= hi:
        raise InvalidInput(
            argument, f"is {facts.duration_s:.2f} s long; DashScope takes 3-30 s (longer than the clip is cut).", "3-30 s"
        )
    return facts


AUDIO_INPUT = AudioInput("audio_url", AUDIO_MAX_BYTES, check_audio, "a local wav/mp3 file or an http(s) URL")
"""`wan.audio_url`, the driving track: fetched, checked and kept like the images (plan/intake.py)."""


def wire_options(job: JobContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """DashScope's `input.*` (besides prompt and img_url) and `parameters.*` (besides duration)."""
    req = job.request
    spec = MODELS[req.model]
    opts = req.wan or WanOptions()
    inp: dict[str, Any] = {}
    if req.negative_prompt:
        inp["negative_prompt"] = req.negative_prompt
    if req.audio is not None:
        if req.audio.url is None:
            raise InvalidInput("wan.audio_url", "has no public URL (the Blob upload did not happen).", "an http(s) URL")
        inp["audio_url"] = req.audio.url
    params: dict[str, Any] = {"resolution": opts.resolution or spec.default_resolution}
    if spec.audio:
        params["audio"] = bool(opts.audio)
    dumped = opts.model_dump(exclude_none=True)
    for key in OPTIONAL_PARAMETERS:
        if key in dumped:
            params[key] = dumped[key]
    return inp, params


WAN_RESOLUTIONS = {"480P": "832x480", "720P": "1280x720", "1080P": "1920x1080"}
"""Wan tiers as the AI SDK's `resolution: "WxH"` (its Alibaba provider maps these back to the tier);
the SDK's Alibaba provider drops unknown providerOptions keys, so seed and resolution go top-level."""
GATEWAY_FIELDS: GatewayFields = {
    **provider_options(
        negative_prompt="negativePrompt", audio_url="audioUrl", audio="audio", prompt_extend="promptExtend",
        watermark="watermark", shot_type="shotType",
    ),
    "seed": ("top", "seed", None),
    "resolution": ("top", "resolution", lambda v: WAN_RESOLUTIONS.get(v, v)),
}


def gateway_body(job: JobContext) -> dict[str, Any]:
    """Wan's part of a Gateway body: `input.*` and `parameters.*` in the AI SDK's spelling."""
    inputs, params = wire_options(job)
    return gateway_part(FAMILY.name, {**inputs, **params}, GATEWAY_FIELDS, job.gateway_file(job.request.start_image))


class WanProvider(Provider):
    name = FAMILY.name
    route = "direct"

    create_headers: ClassVar[dict[str, str]] = {"Content-Type": "application/json", "X-DashScope-Async": "enable"}

    # -- request body ----------------------------------------------------------------------

    def create_request(self, job: JobContext) -> WireRequest:
        return WireRequest("POST", self._base + CREATE_PATH, self._headers(create=True), self._body(job))

    def _body(self, job: JobContext) -> dict[str, Any]:
        req = job.request
        spec = MODELS[req.model]
        inputs, params = wire_options(job)
        inp: dict[str, Any] = {}
        if req.prompt:
            inp["prompt"] = req.prompt
        inp["img_url"] = job.url_or_data_uri(req.start_image)
        inp.update(inputs)
        return {"model": spec.direct_name, "input": inp, "parameters": {"duration": int(req.duration), **params}}

    # -- interface -------------------------------------------------------------------------

    async def start(self, job: JobContext) -> StartResult:
        resp = await send_request(self.client, self.create_request(job))
        output = self._output(resp)
        task_id = str(output.get("task_id") or "")
        if not task_id:
            raise ProviderError(
                f"DashScope answered the create without a task_id (request_id {_request_id(resp)})"
            )
        return StartResult(operation={"task_id": task_id}, provider_task_id=task_id)

    async def status(self, job: JobContext, operation: dict[str, Any]) -> Status:
        task_id = str(operation["task_id"])
        resp = await send(self.client, "GET", f"{self._base}{TASKS_PATH}/{path_segment(task_id)}", headers=self._headers())
        return self._status(task_id, self._output(resp, polling=True))

    async def recover(self, job: JobContext) -> StartResult | None:
        """DashScope tasks can only be looked up by the id the lost answer carried: never resubmit."""
        return None

    # -- answers ---------------------------------------------------------------------------

    def _output(self, resp: httpx.Response, *, polling: bool = False) -> dict[str, Any]:
        """The `output` object of a 200 answer; anything else raises. A garbled poll answer is
        retried (polling is safe); a garbled create answer is not (the task may exist)."""
        body = json_body(resp)
        if resp.status_code == 200 and not (isinstance(body, dict) and body.get("code")):
            output = body.get("output") if isinstance(body, dict) else None
            if isinstance(output, dict):
                return output
            raise ProviderError(
                f"DashScope answered without an output object: {resp.text[:200]!r}", retryable=polling
            )
        raise self._error(resp, body)

    def _error(self, resp: httpx.Response, body: Any) -> StillmotionError:
        code = str(body.get("code") or "") if isinstance(body, dict) else ""
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
        message = message or resp.reason_phrase or f"HTTP {resp.status_code}"
        rid = body.get("request_id") if isinstance(body, dict) else None
        text = f"DashScope: {message} ({code or 'HTTP'} {resp.status_code}" + (
            f", request_id {rid})" if rid else ")"
        )
        pcode = code or str(resp.status_code)
        retry_after = retry_after_seconds(resp)
        if code == "InvalidApiKey" or code.startswith("AccessDenied") or code.endswith(".AccessDenied"):
            return AuthError(text, provider_code=pcode)
        if code in QUOTA_CODES:
            return QuotaError(text, provider_code=pcode)
        if code == "Throttling" or code.startswith("Throttling."):
            return RateLimited(text, provider_code=pcode, retry_after=retry_after)
        if code in FILTER_CODES:
            return ContentFiltered(text, provider_code=pcode)
        if code == "InvalidParameter" or code.startswith("InvalidParameter."):
            return ProviderRejectedInput(text, provider_code=pcode)
        if code == "ModelNotFound":
            return ProviderError(text, provider_code=pcode)
        if code in RETRY_CODES:
            return ProviderError(text, provider_code=pcode, retryable=True, retry_after=retry_after)
        return http_error(resp.status_code, text, pcode, retry_after)

    def _status(self, task_id: str, output: dict[str, Any]) -> Status:
        st = str(output.get("task_status") or "").upper()
        if st == "SUCCEEDED":
            url = output.get("video_url")
            if not isinstance(url, str) or not url:
                return Status(
                    "failed", error=ProviderError(f"DashScope finished task {task_id} without a video_url")
                )
            return Status(
                "completed",
                progress=1.0,
                video=VideoResult(url=url, url_expires_at=time.time() + RESULT_TTL_S),
            )
        if st in ("FAILED", "CANCELED"):
            code = str(output.get("code") or "")
            message = str(output.get("message") or ("the task was canceled" if st == "CANCELED" else "no reason given"))
            text = f"DashScope task {st.lower()}: {message}" + (f" ({code})" if code else "")
            err: StillmotionError
            if code in FILTER_CODES:
                err = ContentFiltered(text, provider_code=code)
            else:
                err = ProviderError(text, provider_code=code or st)
            return Status("failed", error=err)
        if st == "UNKNOWN":
            return Status(
                "failed",
                error=Expired(
                    f"DashScope no longer knows task {task_id} (task ids expire after 24 hours)",
                    provider_code="UNKNOWN",
                ),
            )
        return Status("pending")


def _request_id(resp: httpx.Response) -> str:
    body = json_body(resp)
    return str(body.get("request_id", "?")) if isinstance(body, dict) else "?"
