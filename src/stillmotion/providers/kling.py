"""KlingAI direct: the legacy image-to-video API (`POST /v1/videos/image2video`).

Auth is `KLINGAI_API_KEY` as a Bearer token, or an HS256 JWT `{iss: AK, exp: now+1800,
nbf: now-5}` signed with the secret key, fresh for every request. Every create carries
`external_task_id` = our job id, so a create whose answer was lost can be found again (and a
second create with the same id is refused by Kling, never billed twice).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
import jwt

from .. import errors
from ..catalog import MODELS, ModelSpec
from ..errors import InvalidInput, ProviderError, ProviderRejectedInput, StillmotionError
from ..media.net import path_segment
from ..plan.requests import KlingOptions, KlingShot
from ..pricing import ActualCost, reported_amount
from ..scrub import register_derived
from ._http import WireRequest, http_error, json_body, retry_after_seconds, send, send_request
from .base import (
    JobContext,
    ListedTask,
    Provider,
    StartResult,
    Status,
    VideoResult,
    camera_payload,
    trajectory_payload,
)
from .families import FAMILIES
from .rules import Checked, GatewayFields, OptionContext, gateway_part, provider_options

FAMILY = FAMILIES["klingai"]
PATH = "/v1/videos/image2video"
RESULT_TTL_S = 30 * 24 * 3600
_FILTER_WORDS = ("risk control", "safety", "sensitive", "inappropriate", "content policy", "violat")


VOICE_REF = re.compile(r"<<<voice_(\d+)>>>")
SHOT_PROMPT_MAX = 512


class _DuplicateExternalId(StillmotionError):
    pass


CODE_ERRORS: dict[int, type[StillmotionError]] = {
    **dict.fromkeys((1000, 1001, 1002, 1003, 1004, 1103, 1304), errors.AuthError),
    **dict.fromkeys((1100, 1101, 1102), errors.QuotaError),
    **dict.fromkeys((1200, 1201), ProviderRejectedInput),
    **dict.fromkeys((1202, 1203), ProviderError),
    **dict.fromkeys((1300, 1301), errors.ContentFiltered),
}
"""Kling's business codes -> the error tree; 1201 on a create (a duplicate external id), 1302 (rate),
1303 (the concurrency limit) and 5000-5002 (retryable) are read apart, then the HTTP fallback."""


# -- option rules (pure) ---------------------------------------------------------------------


def _models_with(flag: str) -> list[str]:
    return [m.id for m in MODELS.values() if getattr(m, flag)]


def check_options(given: KlingOptions | None, ctx: OptionContext) -> Checked[KlingOptions]:
    """Every Kling option rule: modes, cfg_scale, sound, voices, shots, elements."""
    opts = given or KlingOptions()
    spec, tool = ctx.spec, ctx.tool
    feature = spec.features.get(tool)
    warnings: list[str] = []
    out: dict[str, Any] = {}
    if spec.modes:
        mode = opts.mode or "std"
        allowed = feature.modes if feature and feature.modes else spec.modes
        if mode not in allowed:
            needs = " or ".join(allowed)
            raise InvalidInput(
                "kling.mode",
                f"{tool} on {spec.id} needs mode {needs}; got {mode!r}"
                + (" (the default). stillmotion never upgrades the mode silently: set kling.mode" if opts.mode is None else "")
                + ".",
                list(allowed),
            )
        out["mode"] = mode
    elif opts.mode is not None:
        raise InvalidInput("kling.mode", f"{spec.id} has no quality modes; leave mode out.", "(no mode)")
    mode_now = out.get("mode")
    if opts.cfg_scale is not None:
        if not spec.cfg_scale:
            raise InvalidInput(
                "kling.cfg_scale", f"{spec.id} does not support cfg_scale (Kling v2.x models do not).", _models_with("cfg_scale")
            )
        out["cfg_scale"] = opts.cfg_scale
    sound = opts.sound
    if sound == "on":
        if not spec.sound:
            raise InvalidInput(
                "kling.sound", f"{spec.id} cannot generate sound; sound needs Kling v2.6 or later.", _models_with("sound")
            )
        if mode_now not in spec.sound:
            raise InvalidInput("kling.sound", f"sound on {spec.id} needs mode {'|'.join(spec.sound)}.", list(spec.sound))
        if tool == "interpolate_frames" and spec.interpolation_silent_only:
            raise InvalidInput("kling.sound", f"first/last-frame clips on {spec.id} are silent only.", ["off"])
    if sound is not None:
        if not spec.sound and sound == "off":
            warnings.append(f"sound is ignored: {spec.id} renders silent video.")
        else:
            out["sound"] = sound
    voices = opts.voices or []
    if voices:
        if not spec.voices:
            raise InvalidInput("kling.voices", f"{spec.id} does not take voices (v2.6 and later).", _models_with("voices"))
        if sound != "on":
            raise InvalidInput("kling.voices", "voices need kling.sound set to 'on'.", ["sound: on"])
        out["voices"] = voices
    if opts.elements:
        if len(opts.elements) > 3 or any(e < 1 for e in opts.elements):
            raise InvalidInput("kling.elements", f"has {opts.elements}; Kling takes 1-3 positive element ids.", "1-3 ids >= 1")
        if not spec.elements:
            raise InvalidInput(
                "kling.elements", f"{spec.id} does not take element references (Kling 3.0 does).", _models_with("elements")
            )
        if voices:
            raise InvalidInput(
                "kling.elements", "Kling does not take elements together with voices; drop one of them.",
                "kling.elements or kling.voices, not both",
            )
        out["elements"] = list(opts.elements)
    if opts.watermark is not None:
        out["watermark"] = opts.watermark

    duration, prompt_used = _check_shots(opts, ctx, warnings, out)
    prompts = [("prompt", ctx.prompt)] if prompt_used else []
    prompts += [(f"kling.shots[{i}].prompt", s.prompt) for i, s in enumerate(opts.shots or [])]
    for argument, text in prompts:
        check_voice_refs(argument, text, len(voices))
    return Checked(
        KlingOptions.model_validate(out),
        warnings,
        duration=duration,
        prompt_used=prompt_used,
        poll_interval_ms=opts.poll_interval_ms,
        poll_timeout_ms=opts.poll_timeout_ms,
    )


def _short(m: ModelSpec) -> str:
    return m.id.removeprefix("klingai/kling-").removesuffix("-i2v")


def schema(k: dict[str, Any], tool: str, kling: list[ModelSpec]) -> None:
    """The `kling` object in a tool's schema: which of this tool's models take sound, cfg_scale, shots."""
    sound = [m for m in kling if m.sound and not (tool == "interpolate_frames" and m.interpolation_silent_only)]
    cfg = [m for m in kling if m.cfg_scale]
    voices = [m for m in sound if m.voices]
    if sound:
        k["sound"]["description"] = "Audio on " + ", ".join(
            _short(m) + ("" if set(m.sound) == set(m.modes) else " " + "|".join(m.sound)) for m in sound
        ) + "; default off."
    if cfg:
        k["cfg_scale"]["description"] = f"Default 0.5; only {', '.join(_short(m) for m in cfg)}."
    shots = [m for m in kling if m.shots] if tool == "animate_image" else []  # local/preview previews them too
    elements = shots
    for name, keep in (("sound", sound), ("voices", voices), ("cfg_scale", cfg), ("mode", any(m.modes for m in kling)),
                       ("shots", shots), ("shot_type", shots), ("elements", elements)):  # fmt: skip
        if not keep:
            k.pop(name, None)


def check_voice_refs(argument: str, text: str | None, n_voices: int) -> None:
    for n in sorted({int(n) for n in VOICE_REF.findall(text or "")}):
        if n < 1 or n > n_voices:
            raise InvalidInput(
                argument,
                f"refers to <<<voice_{n}>>> but kling.voices lists {n_voices} voice(s).",
                [f"<<<voice_{i + 1}>>>" for i in range(n_voices)] or "no voice references without kling.voices",
            )


def check_shot_list(
    shots: list[KlingShot], duration: int | None, allowed: tuple[int, ...], model: str
) -> int:
    """1-6 shots, each <= 512 characters and >= 1 s, summing to the clip's duration; returns the sum."""
    if not 1 <= len(shots) <= 6:
        raise InvalidInput("kling.shots", f"has {len(shots)} shots.", "1 to 6 shots")
    for i, shot in enumerate(shots):
        if len(shot.prompt) > SHOT_PROMPT_MAX or not shot.prompt.strip():
            raise InvalidInput(
                f"kling.shots[{i}].prompt", f"is {len(shot.prompt)} characters.", f"1-{SHOT_PROMPT_MAX} characters"
            )
        if shot.duration < 1:
            raise InvalidInput(f"kling.shots[{i}].duration", f"is {shot.duration} s.", ">= 1 s")
    total = sum(s.duration for s in shots)
    if duration is not None and total != duration:
        raise InvalidInput(
            "kling.shots",
            f"durations sum to {total} s but duration is {duration} s; they must be equal (or leave duration out).",
            f"shot durations summing to {duration}",
        )
    if total not in allowed:
        raise InvalidInput(
            "kling.shots", f"durations sum to {total} s, which {model} does not offer.", [str(d) for d in allowed]
        )
    return total


def _check_shots(opts: KlingOptions, ctx: OptionContext, warnings: list[str], out: dict[str, Any]) -> tuple[int | None, bool]:
    """Kling 3.0 multi-shot. Returns (implied duration, whether the main prompt is used)."""
    shots = opts.shots
    shot_type = opts.shot_type or ("customize" if shots else None)
    if shot_type is None:
        return None, True
    spec = ctx.spec
    argument = "kling.shots" if shots else "kling.shot_type"
    if not spec.shots:
        raise InvalidInput(argument, f"{spec.id} has no multi-shot generation (Kling 3.0 does).", _models_with("shots"))
    if ctx.tool != "animate_image" or ctx.has_end_image:
        raise InvalidInput(
            argument, f"multi-shot is for animate_image only; Kling takes no end frame with it (got {ctx.tool}).",
            ["animate_image"],
        )
    out["shot_type"] = shot_type
    if shot_type == "intelligence":
        if shots:
            raise InvalidInput(
                "kling.shots", "shot_type intelligence lets Kling cut the main prompt into shots; leave shots out "
                "(or use shot_type customize).", "(absent) with shot_type intelligence",
            )
        if ctx.prompt is None:
            raise InvalidInput("prompt", "shot_type intelligence needs the main prompt to cut into shots.", "1-2500 characters")
        return None, True
    if not shots:
        raise InvalidInput("kling.shots", "shot_type customize needs 1-6 shots of {prompt, duration}.", "1 to 6 shots")
    feature = spec.features.get(ctx.tool)
    allowed = feature.durations if feature and feature.durations else spec.durations
    total = check_shot_list(shots, ctx.duration, allowed, spec.id)
    if ctx.prompt is not None:
        warnings.append("prompt is ignored: with kling.shots each shot's prompt is sent instead.")
    out["shots"] = [s.model_dump() for s in shots]
    return total, False


def wire_options(job: JobContext) -> dict[str, Any]:
    """Kling's own fields for everything but model, prompt, image, duration and the external id."""
    req = job.request
    opts = req.kling or KlingOptions()
    body: dict[str, Any] = {}
    if req.end_image is not None:
        body["image_tail"] = job.url_or_raw_b64(req.end_image)
    if req.negative_prompt:
        body["negative_prompt"] = req.negative_prompt
    if opts.sound is not None:
        body["sound"] = opts.sound
    if opts.cfg_scale is not None:
        body["cfg_scale"] = opts.cfg_scale
    if opts.mode is not None:
        body["mode"] = opts.mode
    if req.camera is not None:
        body["camera_control"] = camera_payload(req.camera)
    if req.static_mask is not None:
        body["static_mask"] = job.url_or_raw_b64(req.static_mask)
    if req.dynamic_masks:
        body["dynamic_masks"] = [
            {"mask": job.url_or_raw_b64(m.image), "trajectories": trajectory_payload(m.trajectory)}
            for m in req.dynamic_masks
        ]
    if opts.shot_type is not None:
        body["multi_shot"] = True
        body["shot_type"] = opts.shot_type
        if opts.shots:
            body["multi_prompt"] = [
                {"index": i + 1, "prompt": s.prompt, "duration": str(s.duration)} for i, s in enumerate(opts.shots)
            ]
    if opts.elements:
        body["element_list"] = [{"element_id": e} for e in opts.elements]
    if opts.voices:
        body["voice_list"] = [{"voice_id": v} for v in opts.voices]
    if opts.watermark is not None:
        body["watermark_info"] = {"enabled": bool(opts.watermark)}
    return body


def _gateway_voices(voices: Any) -> Any:
    # The AI SDK's Kling options schema validates `voiceList: [{voice_id}]` (and strips other keys);
    # the seed's example writes `[{voiceId}]`. Both keys in each item satisfy either reading.
    return [{"voice_id": v["voice_id"], "voiceId": v["voice_id"]} for v in voices]


GATEWAY_FIELDS: GatewayFields = {
    **provider_options(
        image_tail="imageTail", negative_prompt="negativePrompt", sound="sound", cfg_scale="cfgScale", mode="mode",
        camera_control="cameraControl", static_mask="staticMask", dynamic_masks="dynamicMasks", multi_shot="multiShot",
        shot_type="shotType", multi_prompt="multiPrompt", element_list="elementList",
    ),
    "voice_list": ("po", "voiceList", _gateway_voices),
    "watermark_info": ("po", "watermarkEnabled", lambda v: bool(v["enabled"])),
}


def gateway_body(job: JobContext) -> dict[str, Any]:
    """Kling's part of a Gateway body: its own fields in the AI SDK's spelling."""
    return gateway_part(FAMILY.name, wire_options(job), GATEWAY_FIELDS, job.gateway_file(job.request.start_image))


def kling_actual(data: Any) -> ActualCost | None:
    """Kling's `final_unit_deduction` (a string of units)."""
    raw = data.get("final_unit_deduction") if isinstance(data, Mapping) else None
    units = reported_amount(raw)
    return None if units is None else ActualCost(units=units, source=f"Kling final_unit_deduction {raw}")


class KlingProvider(Provider):
    name = FAMILY.name
    route = "direct"

    poll_headers: ClassVar[dict[str, str]] = {"Content-Type": "application/json"}

    def _authorization(self) -> str:
        """KLINGAI_API_KEY, else an HS256 JWT made from the access and secret keys (fresh each time)."""
        keys = self.settings.keys
        access, secret = keys.get("KLINGAI_ACCESS_KEY"), keys.get("KLINGAI_SECRET_KEY")
        if "KLINGAI_API_KEY" in keys or access is None or secret is None:
            return super()._authorization()
        now = int(time.time())
        token = jwt.encode(
            {"iss": access.reveal(), "exp": now + 1800, "nbf": now - 5},
            secret.reveal(),
            algorithm="HS256",
            headers={"alg": "HS256", "typ": "JWT"},
        )
        register_derived(token)  # an echoed JWT is scrubbed like the keys it was made from
        return f"Bearer {token}"

    # -- request body ----------------------------------------------------------------------

    def create_request(self, job: JobContext) -> WireRequest:
        return WireRequest("POST", self._base + PATH, self._headers(create=True), self._body(job))

    def _body(self, job: JobContext) -> dict[str, Any]:
        req = job.request
        spec = MODELS[req.model]
        body: dict[str, Any] = {"model_name": spec.direct_name}
        if req.prompt:
            body["prompt"] = req.prompt
        body["image"] = job.url_or_raw_b64(req.start_image)
        body.update(wire_options(job))
        body["duration"] = str(req.duration)
        body["external_task_id"] = job.job_id
        return body

    # -- interface -------------------------------------------------------------------------

    async def start(self, job: JobContext) -> StartResult:
        resp = await send_request(self.client, self.create_request(job))
        try:
            data = self._data(resp, creating=True)
        except _DuplicateExternalId as dup:
            # 1201 on a create: "external_task_id already exists" (another attempt or process created
            # it) means "look it up", never a failure; any other 1201 is the caller's input.
            found = await self._lookup(job.job_id)
            if found is None:
                raise ProviderRejectedInput(dup.message, provider_code=dup.provider_code) from None
            return found
        task_id = str(data.get("task_id") or "")
        if not task_id:
            raise ProviderError(f"Kling answered without a task_id (request_id {self._request_id(resp)})")
        return StartResult(operation={"task_id": task_id}, provider_task_id=task_id)

    async def status(self, job: JobContext, operation: dict[str, Any]) -> Status:
        resp = await send(self.client, "GET", f"{self._base}{PATH}/{path_segment(operation['task_id'])}", headers=self._headers())
        return self._status(self._data(resp))

    # The task list (`GET /v1/videos/image2video?pageNum=&pageSize=`, newest first) answers the
    # status of many tasks in one request; the runner's batcher uses it when many are polled.
    list_page_max = 500

    def list_key(self) -> str | None:
        # one account per settings object (the credentials come from it)
        return f"{self.name} {self._base}{PATH} {id(self.settings)}"

    def list_external_id(self, job: JobContext) -> str | None:
        return job.job_id  # every create carries external_task_id = the job id

    async def status_page(self, page: int, size: int) -> list[ListedTask]:
        url = f"{self._base}{PATH}?pageNum={int(page)}&pageSize={int(size)}"
        resp = await send(self.client, "GET", url, headers=self._headers())
        body = json_body(resp)
        if not (resp.status_code == 200 and isinstance(body, dict) and body.get("code") == 0):
            raise self._error(resp, body, creating=False)
        data = body.get("data")
        if not isinstance(data, list):
            raise ProviderError("Kling answered its task list without a list of tasks", retryable=True)
        out: list[ListedTask] = []
        for item in data:
            if not isinstance(item, dict) or not item.get("task_id"):
                continue
            created = item.get("created_at")
            created_s = created / 1000 if isinstance(created, int | float) else None
            updated = item.get("updated_at")
            info = item.get("task_info")
            ext = info.get("external_task_id") if isinstance(info, dict) else None
            out.append(
                ListedTask(
                    str(item["task_id"]),
                    created_s,
                    self._status(item),
                    external_id=str(ext) if ext else None,
                    updated_at=updated / 1000 if isinstance(updated, int | float) else None,
                )
            )
        return out

    async def recover(self, job: JobContext) -> StartResult | None:
        """Look the task up by external_task_id; if Kling never received it, create it now (safe:
        the external id is unique on the account, so a second create is refused, not billed)."""
        found = await self._lookup(job.job_id)
        if found is not None:
            return found
        return await self.start(job)

    async def _lookup(self, external_id: str) -> StartResult | None:
        resp = await send(self.client, "GET", f"{self._base}{PATH}/{path_segment(external_id)}", headers=self._headers())
        body = json_body(resp)
        if resp.status_code == 404 or (isinstance(body, dict) and body.get("code") in (1203,)):
            return None
        data = self._data(resp)
        task_id = str(data.get("task_id") or "")
        if not task_id:
            return None
        return StartResult(operation={"task_id": task_id}, provider_task_id=task_id)

    # -- answers ---------------------------------------------------------------------------

    @staticmethod
    def _request_id(resp: httpx.Response) -> str:
        body = json_body(resp)
        return str(body.get("request_id", "?")) if isinstance(body, dict) else "?"

    def _data(self, resp: httpx.Response, *, creating: bool = False) -> dict[str, Any]:
        body = json_body(resp)
        if resp.status_code == 200 and isinstance(body, dict) and body.get("code") == 0:
            data = body.get("data")
            if isinstance(data, dict):
                return data
            raise ProviderError("Kling answered code 0 without data", retryable=True)
        raise self._error(resp, body, creating=creating)

    def _error(self, resp: httpx.Response, body: Any, *, creating: bool) -> StillmotionError:
        code = body.get("code") if isinstance(body, dict) else None
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
        message = message or resp.reason_phrase or f"HTTP {resp.status_code}"
        text = f"Kling: {message}" + (f" (code {code})" if code is not None else f" (HTTP {resp.status_code})")
        pcode = str(code) if code is not None else str(resp.status_code)
        retry_after = retry_after_seconds(resp)
        if isinstance(code, int):
            if code == 1201 and creating:
                return _DuplicateExternalId(text, provider_code=pcode)
            if code == 1303:  # the account's parallel-task limit: wait locally, a second at least
                return errors.ConcurrencyLimited(text, provider_code=pcode, retry_after=max(1.0, retry_after or 1.0))
            if code == 1302:
                return errors.RateLimited(text, provider_code=pcode, retry_after=retry_after)
            if 5000 <= code <= 5002:
                return ProviderError(text, provider_code=pcode, retryable=True, retry_after=retry_after)
            kind = CODE_ERRORS.get(code)
            if kind is not None:
                return kind(text, provider_code=pcode)
        return http_error(resp.status_code, text, pcode, retry_after)

    def _status(self, data: dict[str, Any]) -> Status:
        st = data.get("task_status")
        if st == "succeed":
            videos = (data.get("task_result") or {}).get("videos") or []
            url = videos[0].get("url") if videos and isinstance(videos[0], dict) else None
            if not url:
                return Status("failed", error=ProviderError("Kling finished the task without a video URL"))
            return Status(
                "completed",
                progress=1.0,
                video=VideoResult(url=url, url_expires_at=time.time() + RESULT_TTL_S),
                actual=kling_actual(data),
            )
        if st == "failed":
            msg = str(data.get("task_status_msg") or "no reason given")
            err: StillmotionError
            if any(w in msg.lower() for w in _FILTER_WORDS):
                err = errors.ContentFiltered(f"Kling: {msg}")
            else:
                err = ProviderError(f"Kling task failed: {msg}")
            return Status("failed", error=err)
        return Status("pending")
