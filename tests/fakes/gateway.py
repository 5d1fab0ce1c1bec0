"""Fake Vercel AI Gateway video protocol (ai-sdk-video-providers.md section 5).

A client is configured with ``api_base`` (= base_url + "/v4/ai").

* Flow A: ``POST /v4/ai/video-model`` (``accept: text/event-stream``) answers one SSE stream:
  ``:`` heartbeats, then one ``data: {"type":"result",...}`` or ``data: {"type":"error",...}``.
* Flow B: ``POST /v4/ai/video-model/start`` (``idempotency-key``) -> ``{operation}``, then
  ``POST /v4/ai/video-model/status`` ``{"operation":...}`` -> pending | completed | error | cancelled.
  With ``start_status_supported=False`` both answer 404 and only Flow A works.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import (
    AbortConnection,
    FakeServer,
    Problems,
    Recorded,
    Reply,
    Route,
    Task,
    check_image_bytes,
    check_keys,
    decode_b64,
    is_http_url,
    is_int,
    is_number,
    parse_data_uri,
    type_name,
)
from .kling import (
    check_camera_control,
    check_capabilities,
    check_dynamic_masks,
    check_image_field,
    check_multi_prompt,
)

__all__ = ["GatewayFake"]

PREFIX = "/v4/ai"
SSE_PATH = PREFIX + "/video-model"
START_PATH = PREFIX + "/video-model/start"
STATUS_PATH = PREFIX + "/video-model/status"

#: gateway model id -> providerOptions key
MODEL_PROVIDERS: dict[str, str] = {
    "klingai/kling-v2.5-turbo-i2v": "klingai",
    "klingai/kling-v2.6-i2v": "klingai",
    "klingai/kling-v3.0-i2v": "klingai",
    "alibaba/wan-v2.6-i2v": "alibaba",
    "alibaba/wan-v2.6-i2v-flash": "alibaba",
    "spacexai/grok-imagine-video": "xai",
    "spacexai/grok-imagine-video-1.5": "xai",
    "google/veo-3.1-generate-001": "vertex",
    "google/veo-3.1-fast-generate-001": "vertex",
    "google/veo-3.0-generate-001": "vertex",
    "google/veo-3.0-fast-generate-001": "vertex",
    "bytedance/seedance-2.0": "bytedance",
    "bytedance/seedance-2.0-fast": "bytedance",
    "bytedance/seedance-v1.5-pro": "bytedance",
    "bytedance/seedance-v1.0-pro": "bytedance",
    "bytedance/seedance-v1.0-pro-fast": "bytedance",
}


@dataclass(frozen=True)
class Limits:
    """What the Gateway's backend takes for one Veo / Seedance model (sources: docs/decisions.md, #24)."""

    durations: tuple[int, ...]
    sizes: tuple[str, ...]
    """`resolution` values (WxH) the SDK maps to the model's tiers."""
    ratios: tuple[str, ...]
    last_frame: bool
    audio: bool


_VEO_SIZES = ("1280x720", "1920x1080")
_SD_SIZES = ("864x480", "1280x720", "1920x1080")
_SD_RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive")
LIMITS: dict[str, Limits] = {
    "google/veo-3.1-generate-001": Limits((4, 6, 8), _VEO_SIZES, ("16:9", "9:16"), True, True),
    "google/veo-3.1-fast-generate-001": Limits((4, 6, 8), _VEO_SIZES, ("16:9", "9:16"), True, True),
    "google/veo-3.0-generate-001": Limits((4, 6, 8), _VEO_SIZES, ("16:9", "9:16"), False, True),
    "google/veo-3.0-fast-generate-001": Limits((8,), _VEO_SIZES, ("16:9", "9:16"), False, True),
    "bytedance/seedance-2.0": Limits(tuple(range(4, 16)), _SD_SIZES, _SD_RATIOS, True, True),
    "bytedance/seedance-2.0-fast": Limits(tuple(range(4, 16)), _SD_SIZES[:2], _SD_RATIOS, True, True),
    "bytedance/seedance-v1.5-pro": Limits(tuple(range(4, 13)), _SD_SIZES, _SD_RATIOS, True, True),
    "bytedance/seedance-v1.0-pro": Limits(tuple(range(3, 13)), _SD_SIZES, _SD_RATIOS, True, False),
    "bytedance/seedance-v1.0-pro-fast": Limits(tuple(range(3, 13)), _SD_SIZES, _SD_RATIOS, False, False),
}
BODY_KEYS = frozenset(
    {"prompt", "n", "aspectRatio", "resolution", "duration", "fps", "seed", "generateAudio", "providerOptions",
     "image", "frameImages"}
)  # fmt: skip
OPTION_KEYS: dict[str, frozenset[str]] = {
    "klingai": frozenset(
        {"mode", "negativePrompt", "cfgScale", "sound", "voiceList", "imageTail", "cameraControl", "staticMask",
         "dynamicMasks", "watermarkEnabled", "multiShot", "shotType", "multiPrompt", "elementList"}
    ),
    "alibaba": frozenset(
        {"negativePrompt", "audioUrl", "promptExtend", "shotType", "watermark", "audio", "resolution", "seed"}
    ),
    "xai": frozenset({"resolution", "user"}),
    "vertex": frozenset({"negativePrompt", "personGeneration", "generateAudio", "referenceImages"}),
    "bytedance": frozenset(
        {"watermark", "generateAudio", "cameraFixed", "returnLastFrame", "serviceTier", "draft", "lastFrameImage",
         "referenceImages"}
    ),
}  # fmt: skip
PROMPT_LIMIT = {"klingai": 2500, "alibaba": 1500}
SEEDANCE_IMAGE: dict[str, Any] = {
    "allowed": ("image/png", "image/jpeg", "image/webp", "image/bmp"), "max_bytes": 30 << 20, "min_side": 300,
    "max_side": 6000, "ratio": (0.4, 2.5),
}  # fmt: skip
ERROR_STATUS: dict[str, int] = {
    "authentication_error": 401,
    "invalid_request_error": 400,
    "rate_limit_exceeded": 429,
    "model_not_found": 404,
    "not_found": 404,
    "forbidden": 403,
    "failed_dependency": 424,
    "internal_server_error": 500,
}
PROTOCOL_HEADERS = {
    "ai-gateway-protocol-version": "0.0.1",
    "ai-gateway-auth-method": "api-key",
    "ai-video-model-specification-version": "4",
}
_RATIO = re.compile(r"^[1-9]\d*:[1-9]\d*$")
_SIZE = re.compile(r"^[1-9]\d*x[1-9]\d*$")
_CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def kling_model_name(model_id: str) -> str:
    """``klingai/kling-v2.6-i2v`` -> ``kling-v2-6`` (the AI SDK's mapping)."""
    name = model_id.split("/", 1)[1].removesuffix("-i2v")
    return name.removesuffix(".0").replace(".", "-")


class GatewayFake(FakeServer):
    """Strict fake of the AI Gateway video endpoints.

    Knobs: ``heartbeats`` / ``heartbeat_interval_s`` (SSE), ``result_as_base64``,
    ``enforce_capabilities`` (Kling's 1.4 map for klingai models), ``model_ids`` (accepted ids).
    Outcomes: ``succeed``, ``failed`` (``code`` = error type, ``status_code``), ``cancelled``.
    """

    OUTCOMES: ClassVar[tuple[str, ...]] = ("succeed", "failed", "cancelled")
    API_PREFIX: ClassVar[str] = PREFIX

    def __init__(
        self,
        api_key: str = "gw-test-key",
        start_status_supported: bool = True,
        *,
        enforce_capabilities: bool = True,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.start_status_supported = start_status_supported
        self.enforce_capabilities = enforce_capabilities
        self.model_ids: dict[str, str] = dict(MODEL_PROVIDERS)
        self.heartbeats = 2
        self.heartbeat_interval_s = 0.05
        self.result_as_base64 = False
        #: bodies larger than this are answered 413 (the Gateway's request size limit)
        self.max_body_bytes = 4_500_000
        #: distinct jobs created by /start (a repeated idempotency key does not count)
        self.starts = 0
        #: SSE streams opened on /video-model
        self.streams = 0
        #: idempotency-key -> gatewayJobId
        self.idempotency_keys: dict[str, str] = {}
        self._seq = 0
        self._cuts = 0

    # ---- helpers for tests ----------------------------------------------------------------

    @staticmethod
    def error_body(message: str, type: str = "invalid_request_error") -> dict[str, Any]:
        return {"error": {"message": message, "type": type}}

    def inject_error(
        self,
        type: str,
        match: str = f"POST {START_PATH}",
        *,
        message: str | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Injects the gateway's non-2xx error answer of this ``type`` (status from the type)."""
        self.inject(
            match,
            status=ERROR_STATUS.get(type, 500),
            json=self.error_body(message or type.replace("_", " "), type),
            headers=headers,
            times=times,
        )

    def cut_stream(self, times: int = 1) -> None:
        """The next ``times`` SSE streams send their heartbeats, then close with no event."""
        with self._lock:
            self._cuts += times

    # ---- routing --------------------------------------------------------------------------

    def route(self, req: Recorded) -> Route | None:
        if req.method != "POST":
            return None
        if req.path == SSE_PATH:
            return Route("generate", self._generate, self._check_generate)
        if req.path in (START_PATH, STATUS_PATH):
            if not self.start_status_supported:
                return Route("unsupported", self._not_supported)
            if req.path == START_PATH:
                return Route("start", self._start, self._check_start)
            return Route("status", self._status, self._check_status)
        return None

    def unknown_route(self, req: Recorded) -> Reply:
        return self._error(404, "not_found", f"Not Found: {req.method} {req.path}")

    def _not_supported(self, req: Recorded) -> Reply:
        return self._error(404, "not_found", "Not Found")

    def _error(self, status: int, type: str, message: str) -> Reply:
        return Reply.of_json(status, self.error_body(message, type))

    # ---- checks ---------------------------------------------------------------------------

    def _check_headers(self, req: Recorded, p: Problems) -> Reply | None:
        if len(req.body) > self.max_body_bytes:
            # not a wire-format bug of the client by itself: the Gateway's size limit (413)
            return self._error(413, "invalid_request_error", f"Request body too large ({len(req.body)} bytes)")
        h = req.header("authorization")
        if h is None or not h.strip():
            p.add("missing authorization header")
            return self.reject(p, self._error(401, "authentication_error", "Missing authentication"))
        token = h[7:] if h.startswith("Bearer ") else ""
        if not token or token != token.strip():
            p.add(f"authorization must be 'Bearer <key>', got {h[:12]!r}...")
            return self.reject(p, self._error(401, "authentication_error", "Invalid authorization header"))
        if not hmac.compare_digest(token.encode(), self.api_key.encode()):
            self.auth_failure(f"{p.where}: unknown API key")
            return self._error(401, "authentication_error", "Invalid API key")
        for name, want in PROTOCOL_HEADERS.items():
            got = req.header(name)
            if got != want:
                p.add(f"header {name} must be {want!r}, got {got!r}")
        model = req.header("ai-model-id")
        if p:
            return self.reject(p, self._error(400, "invalid_request_error", p.first))
        if model is None:
            p.add("missing header ai-model-id")
            return self.reject(p, self._error(400, "invalid_request_error", p.first))
        if model not in self.model_ids:
            p.add(f"ai-model-id {model!r} is not a gateway video model ({', '.join(sorted(self.model_ids))})")
            return self.reject(p, self._error(404, "model_not_found", f"Model {model} not found"))
        ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            p.add(f"content-type must be application/json, got {req.header('content-type')!r}")
            return self.reject(p, self._error(400, "invalid_request_error", p.first))
        if not isinstance(req.json, dict):
            p.add(f"body must be a JSON object, got {type_name(req.json) if req.body else 'nothing'}")
            return self.reject(p, self._error(400, "invalid_request_error", p.first))
        return None

    def _check_generate(self, req: Recorded) -> Reply | None:
        p = Problems("video-model")
        denied = self._check_headers(req, p)
        if denied is not None:
            return denied
        if "text/event-stream" not in (req.header("accept") or ""):
            p.add(f"accept must be text/event-stream, got {req.header('accept')!r}")
        self.validate_body(req.obj, str(req.header("ai-model-id")), p)
        if p:
            return self.reject(p, self._error(400, "invalid_request_error", p.first))
        return None

    def _check_start(self, req: Recorded) -> Reply | None:
        p = Problems("video-model/start")
        denied = self._check_headers(req, p)
        if denied is not None:
            return denied
        if not (req.header("idempotency-key") or "").strip():
            p.add("missing header idempotency-key")
        self.validate_body(req.obj, str(req.header("ai-model-id")), p)
        if p:
            return self.reject(p, self._error(400, "invalid_request_error", p.first))
        return None

    def _check_status(self, req: Recorded) -> Reply | None:
        p = Problems("video-model/status")
        denied = self._check_headers(req, p)
        if denied is not None:
            return denied
        body = req.obj
        op = body.get("operation")
        check_keys(p, body, frozenset({"operation"}), "")
        if (
            not isinstance(op, dict)
            or set(op) != {"gatewayJobId"}
            or not isinstance(op.get("gatewayJobId"), str)
        ):
            p.add(f"body must be {{'operation': <the operation /start returned>}}, got operation={op!r}")
        else:
            task = self.find_task(op["gatewayJobId"])
            model = req.header("ai-model-id")
            if task is not None and task.extra.get("model_id") != model:
                p.add(f"ai-model-id {model!r} differs from the job's model {task.extra.get('model_id')!r}")
        if p:
            return self.reject(p, self._error(400, "invalid_request_error", p.first))
        return None

    def validate_body(self, body: dict[str, Any], model_id: str, p: Problems) -> None:
        provider = self.model_ids[model_id]
        check_keys(p, body, BODY_KEYS, "")
        prompt = body.get("prompt")
        if "prompt" in body and not isinstance(prompt, str):
            p.add(f"field 'prompt' must be a string, got {type_name(prompt)}")
        elif isinstance(prompt, str) and len(prompt) > PROMPT_LIMIT.get(provider, 1 << 30):
            p.add(
                f"field 'prompt' is {len(prompt)} characters, more than {PROMPT_LIMIT[provider]} for {provider}"
            )
        kl_opts = (body.get("providerOptions") or {}).get("klingai") if isinstance(body.get("providerOptions"), dict) else None
        custom_shots = (
            isinstance(kl_opts, dict) and kl_opts.get("multiShot") is True and kl_opts.get("shotType") == "customize"
        )  # Kling ignores the main prompt then (each shot has its own)
        if self.require_prompt and not custom_shots and not (isinstance(prompt, str) and prompt.strip()):
            p.add("field 'prompt' is required and must not be empty")
        if "n" not in body:
            p.add("field 'n' is required (1)")
        elif not is_int(body["n"]) or body["n"] != 1:
            p.add(f"field 'n' must be 1, got {body['n']!r}")
        if "duration" in body:
            d = body["duration"]
            if not is_number(d):
                p.add(f"field 'duration' must be a number, got {type_name(d)}")
            elif d <= 0:
                p.add(f"field 'duration' must be positive, got {d}")
            elif provider in ("alibaba", "xai") and (
                d != int(d) or not (2 if provider == "alibaba" else 1) <= d <= 15
            ):
                p.add(
                    f"field 'duration' must be whole seconds in {'2' if provider == 'alibaba' else '1'}..15 for {provider}, got {d}"
                )
        if "aspectRatio" in body and not (
            isinstance(body["aspectRatio"], str) and _RATIO.match(body["aspectRatio"])
        ):
            p.add(f"field 'aspectRatio' must be a 'W:H' string, got {body['aspectRatio']!r}")
        if "resolution" in body and not (
            isinstance(body["resolution"], str) and _SIZE.match(body["resolution"])
        ):
            p.add(f"field 'resolution' must be a 'WxH' string, got {body['resolution']!r}")
        if "fps" in body and not (is_number(body["fps"]) and body["fps"] > 0):
            p.add(f"field 'fps' must be a positive number, got {body['fps']!r}")
        if "seed" in body and not is_int(body["seed"]):
            p.add(f"field 'seed' must be an integer, got {type_name(body['seed'])}")
        if "generateAudio" in body and not isinstance(body["generateAudio"], bool):
            p.add(f"field 'generateAudio' must be a bool, got {type_name(body['generateAudio'])}")
        size: tuple[int, int] | None = None
        has_first = "image" in body
        has_last = False
        if "image" in body:
            size = self._check_file(p, "image", body["image"], provider, first=True)
        if "frameImages" in body:
            frames = body["frameImages"]
            if not isinstance(frames, list) or not 1 <= len(frames) <= 2:
                p.add(f"field 'frameImages' must be an array of 1-2 items, got {type_name(frames)}")
            else:
                seen: set[str] = set()
                for i, fr in enumerate(frames):
                    if not isinstance(fr, dict) or set(fr) != {"frameType", "image"}:
                        p.add(f"frameImages[{i}] must be exactly {{'frameType', 'image'}}, got {fr!r}"[:200])
                        continue
                    ft = fr["frameType"]
                    if ft not in ("first_frame", "last_frame") or ft in seen:
                        p.add(
                            f"frameImages[{i}].frameType must be a distinct 'first_frame'/'last_frame', got {ft!r}"
                        )
                        continue
                    seen.add(ft)
                    s = self._check_file(
                        p, f"frameImages[{i}].image", fr["image"], provider, first=ft == "first_frame"
                    )
                    if ft == "first_frame":
                        has_first = True
                        size = size or s
                    else:
                        has_last = True
                if has_last and provider != "klingai" and not (provider == "vertex" and LIMITS[model_id].last_frame):
                    p.add(f"a last_frame frame image is not supported for {model_id}")
        if not has_first:
            p.add("an image-to-video model needs 'image' or a first_frame in 'frameImages'")
        opts = body.get("providerOptions", {})
        if not isinstance(opts, dict):
            p.add(f"field 'providerOptions' must be an object, got {type_name(opts)}")
            return
        for key, val in opts.items():
            if key not in OPTION_KEYS:
                p.add(f"providerOptions key {key!r} is not one of {', '.join(OPTION_KEYS)}")
            elif key != provider:
                p.add(f"providerOptions.{key} does not match ai-model-id {model_id!r} (expects {provider!r})")
            elif not isinstance(val, dict):
                p.add(f"providerOptions.{key} must be an object, got {type_name(val)}")
            else:
                for k in val:
                    if "_" in k or not _CAMEL.match(k):
                        p.add(
                            f"providerOptions.{key}.{k} is not camelCase (the gateway takes camelCase keys)"
                        )
                    elif k not in OPTION_KEYS[key]:
                        p.add(
                            f"unknown option providerOptions.{key}.{k} (allowed: {', '.join(sorted(OPTION_KEYS[key]))})"
                        )
        own = opts.get(provider)
        own = own if isinstance(own, dict) else {}
        if provider == "klingai":
            self._check_kling_options(p, body, own, model_id, size, has_last)
        elif provider == "alibaba":
            self._check_alibaba_options(p, own, model_id)
        elif provider in ("vertex", "bytedance"):
            self._check_family(p, body, own, model_id, provider)
        else:
            allowed = ("480p", "720p", "1080p") if model_id.endswith("-1.5") else ("480p", "720p")
            if "resolution" in own and own["resolution"] not in allowed:
                p.add(f"providerOptions.xai.resolution must be one of {', '.join(allowed)} for {model_id}, got {own['resolution']!r}")
            if "user" in own and not isinstance(own["user"], str):
                p.add(f"providerOptions.xai.user must be a string, got {type_name(own['user'])}")

    def _check_file(
        self, p: Problems, name: str, img: Any, provider: str, *, first: bool
    ) -> tuple[int, int] | None:
        if not isinstance(img, dict):
            p.add(f"field '{name}' must be an object, got {type_name(img)}")
            return None
        kind = img.get("type")
        if kind == "url":
            if set(img) != {"type", "url"}:
                p.add(f"field '{name}' of type 'url' must be exactly {{type, url}}, got keys {sorted(img)}")
            elif not is_http_url(img["url"]):
                p.add(f"field '{name}.url' must be an http(s) URL, got {str(img['url'])[:40]!r}")
            return None
        if kind != "file":
            p.add(f"field '{name}.type' must be 'url' or 'file', got {kind!r}")
            return None
        if provider == "alibaba":
            # the seed: "Wan requires image URLs (not buffers). Use Vercel Blob to host local images."
            p.add(f"field '{name}' must be a URL for alibaba (Wan takes image URLs only), got an inline file")
            return None
        if set(img) != {"type", "mediaType", "data"}:
            p.add(
                f"field '{name}' of type 'file' must be exactly {{type, mediaType, data}}, got keys {sorted(img)}"
            )
            return None
        mt, data = img["mediaType"], img["data"]
        if mt not in ("image/png", "image/jpeg", "image/webp"):
            p.add(f"field '{name}.mediaType' must be image/png, image/jpeg or image/webp, got {mt!r}")
            return None
        if not isinstance(data, str):
            p.add(f"field '{name}.data' must be a base64 string, got {type_name(data)}")
            return None
        if data.startswith("data:"):
            p.add(f"field '{name}.data' must be plain base64 without a 'data:' prefix")
            return None
        raw = decode_b64(data)
        if raw is None:
            p.add(f"field '{name}.data' is not valid base64")
            return None
        if provider == "klingai":
            return check_image_bytes(
                p, name, raw, allowed=("image/png", "image/jpeg"), max_bytes=10 << 20, min_side=300,
                ratio=(1 / 2.5, 2.5) if first else None, declared=mt,
            )  # fmt: skip
        if provider == "alibaba":
            return check_image_bytes(
                p, name, raw, allowed=("image/png", "image/jpeg", "image/webp"), max_bytes=20 << 20, min_side=240,
                max_side=8000, declared=mt,
            )  # fmt: skip
        if provider == "vertex":
            return check_image_bytes(p, name, raw, allowed=("image/png", "image/jpeg"), max_bytes=20 << 20, declared=mt)
        if provider == "bytedance":
            return check_image_bytes(p, name, raw, **SEEDANCE_IMAGE, declared=mt)
        return check_image_bytes(
            p, name, raw, allowed=("image/png", "image/jpeg", "image/webp"), max_bytes=20 << 20, declared=mt
        )

    def _check_kling_options(
        self,
        p: Problems,
        body: dict[str, Any],
        o: dict[str, Any],
        model_id: str,
        size: tuple[int, int] | None,
        has_last: bool,
    ) -> None:
        pre = "providerOptions.klingai."
        if "mode" in o and o["mode"] not in ("std", "pro"):
            p.add(f"{pre}mode must be 'std' or 'pro', got {o['mode']!r}")
        if "sound" in o and o["sound"] not in ("on", "off"):
            p.add(f"{pre}sound must be 'on' or 'off', got {o['sound']!r}")
        if "negativePrompt" in o and not (
            isinstance(o["negativePrompt"], str) and len(o["negativePrompt"]) <= 2500
        ):
            p.add(f"{pre}negativePrompt must be a string of at most 2500 characters")
        if "cfgScale" in o and not (is_number(o["cfgScale"]) and 0 <= o["cfgScale"] <= 1):
            p.add(f"{pre}cfgScale must be a number in [0, 1], got {o['cfgScale']!r}")
        for k in ("watermarkEnabled", "multiShot"):
            if k in o and not isinstance(o[k], bool):
                p.add(f"{pre}{k} must be a bool, got {type_name(o[k])}")
        if "shotType" in o and o["shotType"] not in ("customize", "intelligence"):
            p.add(f"{pre}shotType must be 'customize' or 'intelligence', got {o['shotType']!r}")
        if "voiceList" in o:
            vl = o["voiceList"]
            if not isinstance(vl, list) or not 1 <= len(vl) <= 2:
                p.add(f"{pre}voiceList must be an array of 1-2 items")
            else:
                for i, v in enumerate(vl):
                    # the AI SDK's Kling options schema: z.object({voice_id: z.string()}) (other keys
                    # stripped); the seed's example spells voiceId, accepted alongside when equal
                    if not isinstance(v, dict) or not isinstance(v.get("voice_id"), str) or not v["voice_id"]:
                        p.add(f"{pre}voiceList[{i}] must have voice_id: string (the SDK's schema), got {v!r}")
                    elif not set(v) <= {"voice_id", "voiceId"} or v.get("voiceId", v["voice_id"]) != v["voice_id"]:
                        p.add(f"{pre}voiceList[{i}] may only add voiceId equal to voice_id, got {v!r}")
            if o.get("sound") != "on" and body.get("generateAudio") is not True:
                p.add(f"{pre}voiceList needs sound 'on'")
        if "imageTail" in o:
            check_image_field(p, pre + "imageTail", o["imageTail"], ratio=False)
        if "cameraControl" in o:
            check_camera_control(p, o["cameraControl"], pre + "cameraControl")
        if "staticMask" in o:
            check_image_field(p, pre + "staticMask", o["staticMask"], ratio=False, mask=True)
        if "dynamicMasks" in o:
            check_dynamic_masks(p, o["dynamicMasks"], size, pre + "dynamicMasks")
        if "elementList" in o:
            el = o["elementList"]
            if not isinstance(el, list) or not 1 <= len(el) <= 3:
                p.add(f"{pre}elementList must be an array of 1-3 items")
            else:
                for i, item in enumerate(el):
                    if not isinstance(item, dict) or set(item) != {"element_id"} or not is_int(item["element_id"]):
                        p.add(f"{pre}elementList[{i}] must be exactly {{'element_id': integer}}, got {item!r}")
            if "voiceList" in o:
                p.add(f"{pre}voiceList cannot be combined with elementList")
        if o.get("multiShot") is True:
            if o.get("shotType") not in ("customize", "intelligence"):
                p.add(f"{pre}shotType is required when multiShot is true")
            elif o["shotType"] == "customize" and "multiPrompt" not in o:
                p.add(f"{pre}multiPrompt is required with shotType 'customize'")
            elif o["shotType"] == "intelligence" and "multiPrompt" in o:
                p.add(f"{pre}multiPrompt is not taken with shotType 'intelligence'")
            if "imageTail" in o or has_last:
                p.add(f"{pre}multiShot does not take an end frame")
        elif "shotType" in o or "multiPrompt" in o:
            p.add(f"{pre}shotType/multiPrompt need multiShot true")
        tail = has_last or "imageTail" in o
        groups = [g for g, present in (
            ("imageTail/last_frame", tail),
            ("staticMask/dynamicMasks", "staticMask" in o or "dynamicMasks" in o),
            ("cameraControl", "cameraControl" in o),
        ) if present]  # fmt: skip
        if len(groups) > 1:
            p.add(f"{' and '.join(groups)} are mutually exclusive")
        d = body.get("duration", 5)
        if is_number(d) and d != int(d):
            p.add(f"field 'duration' must be whole seconds for klingai, got {d}")
        if "multiPrompt" in o:
            check_multi_prompt(
                p, o["multiPrompt"], str(int(d)) if is_number(d) else None, pre + "multiPrompt"
            )
        if not self.enforce_capabilities or p:
            return
        # the capability map, on the snake_case body Kling would get
        snake: dict[str, Any] = {}
        if tail:
            snake["image_tail"] = True
        if body.get("generateAudio") is not None:
            snake["sound"] = "on" if body["generateAudio"] else "off"
        for camel, s in (("sound", "sound"), ("cfgScale", "cfg_scale"), ("cameraControl", "camera_control"),
                         ("staticMask", "static_mask"), ("dynamicMasks", "dynamic_masks"),
                         ("voiceList", "voice_list"), ("multiShot", "multi_shot"), ("elementList", "element_list"),
                         ("multiPrompt", "multi_prompt")):  # fmt: skip
            if camel in o:
                snake[s] = o[camel]
        dur = str(int(d)) if is_number(d) else "5"
        check_capabilities(p, snake, kling_model_name(model_id), o.get("mode", "std"), dur)

    def _check_family(self, p: Problems, body: dict[str, Any], o: dict[str, Any], model_id: str, key: str) -> None:
        """Veo (Vertex) and Seedance (BytePlus) through the Gateway: each model's own limits."""
        lim = LIMITS[model_id]
        pre = f"providerOptions.{key}."
        d = body.get("duration")
        if d is not None and d not in lim.durations:
            p.add(f"field 'duration' must be one of {', '.join(map(str, lim.durations))} s for {model_id}, got {d!r}")
        if "resolution" in body and body["resolution"] not in lim.sizes:
            p.add(f"field 'resolution' must be one of {', '.join(lim.sizes)} for {model_id}, got {body['resolution']!r}")
        if "aspectRatio" in body and body["aspectRatio"] not in lim.ratios:
            p.add(f"field 'aspectRatio' must be one of {', '.join(lim.ratios)} for {model_id}, got {body['aspectRatio']!r}")
        if "seed" in body and not (is_int(body["seed"]) and 0 <= body["seed"] <= 4294967295):
            p.add(f"field 'seed' must be an integer in [0, 4294967295], got {body['seed']!r}")
        images = [body.get("image")] + [f.get("image") for f in body.get("frameImages") or [] if isinstance(f, dict)]
        if key == "vertex":
            if "generateAudio" not in body:
                p.add(f"field 'generateAudio' is required for Veo 3 ({model_id})")
            if any(isinstance(i, dict) and i.get("type") == "url" for i in images):
                p.add("Vertex takes no image URLs (the SDK drops them with a warning): send the image inline")
            if "negativePrompt" in o and not isinstance(o["negativePrompt"], str):
                p.add(f"{pre}negativePrompt must be a string, got {type_name(o['negativePrompt'])}")
            frames = body.get("frameImages")
            if isinstance(frames, list) and frames and frames[0].get("image") != body.get("image"):
                p.add("frameImages' first_frame differs from 'image'")
            return
        if "generateAudio" in body:
            p.add("Seedance takes generateAudio as providerOptions.bytedance.generateAudio (the SDK's option)")
        if "generateAudio" in o:
            if not isinstance(o["generateAudio"], bool):
                p.add(f"{pre}generateAudio must be a bool, got {type_name(o['generateAudio'])}")
            elif o["generateAudio"] and not lim.audio:
                p.add(f"{pre}generateAudio: {model_id} generates no audio")
        if body.get("frameImages"):
            p.add("Seedance's last frame is providerOptions.bytedance.lastFrameImage, not frameImages")
        if "lastFrameImage" in o:
            last = o["lastFrameImage"]
            if not lim.last_frame:
                p.add(f"{pre}lastFrameImage: {model_id} takes no last frame")
            elif not isinstance(last, str):
                p.add(f"{pre}lastFrameImage must be a string (URL or data: URI), got {type_name(last)}")
            elif not is_http_url(last):
                parsed = parse_data_uri(last) if last.startswith("data:") else None
                if parsed is None:
                    p.add(f"{pre}lastFrameImage must be an http(s) URL or a data: URI, got {last[:24]!r}")
                else:
                    check_image_bytes(p, pre + "lastFrameImage", parsed[1], **SEEDANCE_IMAGE, declared=parsed[0])

    def _check_alibaba_options(self, p: Problems, o: dict[str, Any], model_id: str) -> None:
        pre = "providerOptions.alibaba."
        if "negativePrompt" in o and not (
            isinstance(o["negativePrompt"], str) and len(o["negativePrompt"]) <= 500
        ):
            p.add(f"{pre}negativePrompt must be a string of at most 500 characters")
        if "audioUrl" in o and not is_http_url(o["audioUrl"]):
            p.add(f"{pre}audioUrl must be an http(s) URL, got {o['audioUrl']!r}")
        for k in ("promptExtend", "watermark", "audio"):
            if k in o and not isinstance(o[k], bool):
                p.add(f"{pre}{k} must be a bool, got {type_name(o[k])}")
        if "audio" in o and model_id != "alibaba/wan-v2.6-i2v-flash":
            p.add(f"{pre}audio is only supported by alibaba/wan-v2.6-i2v-flash, not {model_id}")
        if "shotType" in o and o["shotType"] not in ("single", "multi"):
            p.add(f"{pre}shotType must be 'single' or 'multi', got {o['shotType']!r}")
        if "resolution" in o and o["resolution"] not in ("720P", "1080P"):
            p.add(f"{pre}resolution must be '720P' or '1080P', got {o['resolution']!r}")
        if "seed" in o and not (is_int(o["seed"]) and 0 <= o["seed"] <= 2147483647):
            p.add(f"{pre}seed must be an integer in [0, 2147483647], got {o['seed']!r}")

    # ---- results --------------------------------------------------------------------------

    def _video(self, task: Task) -> dict[str, Any]:
        if self.result_as_base64:
            with self._lock:
                name = task.file_name
                data = self._files[name].data if name in self._files else None
            return {
                "type": "base64",
                "data": base64.b64encode(data or b"").decode(),
                "mediaType": "video/mp4",
            }
        return {"type": "url", "url": task.video_url, "mediaType": "video/mp4"}

    def _metadata(self, task: Task) -> dict[str, Any]:
        key = self.model_ids.get(str(task.extra.get("model_id")), "gateway")
        ident = {"requestId": task.id} if key == "xai" else {"taskId": task.id}
        return {key: ident}

    def _failure(self, task: Task) -> tuple[str, str, int]:
        etype = str(task.outcome.code or "internal_server_error")
        status = task.outcome.status_code or ERROR_STATUS.get(etype, 500)
        return task.outcome.message or "Video generation failed", etype, status

    def _new_job(self, req: Recorded, prefix: str, **extra: Any) -> Task:
        with self._lock:
            self._seq += 1
            job_id = f"{prefix}_{self._seq}"
        return self._new_task(job_id, req.json, model_id=req.header("ai-model-id"), **extra)

    # ---- Flow B ---------------------------------------------------------------------------

    def _start(self, req: Recorded) -> Reply:
        key = str(req.header("idempotency-key"))
        with self._lock:
            job_id = self.idempotency_keys.get(key)
            if job_id is not None:
                task = self.tasks[job_id]
                if task.body != req.json:
                    self.violation(f"video-model/start: idempotency-key {key!r} reused with a different body")
            else:
                task = self._new_job(req, "job", idempotency_key=key)
                self.idempotency_keys[key] = task.id
                self.starts += 1
        return Reply.of_json(
            200,
            {
                "operation": {"gatewayJobId": task.id},
                "warnings": [],
                "providerMetadata": {"gateway": {"asyncJob": {"jobId": task.id, "status": "queued"}}},
            },
        )

    def _status(self, req: Recorded) -> Reply:
        job_id = req.obj["operation"]["gatewayJobId"]
        task = self.find_task(job_id)
        if task is None or task.expired:
            return self._error(404, "not_found", f"Job {job_id} not found")
        if not self.poll_task(task):
            return Reply.of_json(200, {"status": "pending"})
        kind = task.outcome.kind
        if kind == "cancelled":
            return Reply.of_json(200, {"status": "cancelled"})
        if kind == "failed":
            message, etype, _ = self._failure(task)
            return Reply.of_json(200, {"status": "error", "error": {"message": message, "type": etype}})
        return Reply.of_json(
            200,
            {"status": "completed", "videos": [self._video(task)], "providerMetadata": self._metadata(task)},
        )

    # ---- Flow A ---------------------------------------------------------------------------

    def _generate(self, req: Recorded) -> Reply:
        task = self._new_job(req, "sse")
        with self._lock:
            self.streams += 1
            cut = self._cuts > 0
            if cut:
                self._cuts -= 1
        headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
        return Reply(200, headers=headers, stream=self._events(task, cut))

    def _ready(self, task: Task) -> bool:
        if task.generation_seconds is not None:
            return self.is_done(task)
        if task.polls_until_done is None:  # held until release()
            return task.released
        return True

    def _events(self, task: Task, cut: bool) -> Iterator[bytes]:
        """Heartbeats (at least ``heartbeats``; more while generation_seconds or a hold last), then one event."""
        sent = 0
        while sent < self.heartbeats or not self._ready(task):
            yield b":\n\n"
            sent += 1
            if not self.sleep(self.heartbeat_interval_s):
                raise AbortConnection
        if cut:
            raise AbortConnection
        if task.generation_seconds is None:
            task.released = True
        self.poll_task(task)
        if task.outcome.kind == "succeed":
            event: dict[str, Any] = {
                "type": "result",
                "videos": [self._video(task)],
                "warnings": [],
                "providerMetadata": self._metadata(task),
            }
        elif task.outcome.kind == "cancelled":
            event = {
                "type": "error",
                "message": "Video generation was cancelled.",
                "errorType": "internal_server_error",
                "statusCode": 500,
                "param": None,
            }
        else:
            message, etype, status = self._failure(task)
            event = {
                "type": "error",
                "message": message,
                "errorType": etype,
                "statusCode": status,
                "param": None,
            }
        yield b"data: " + json.dumps(event).encode() + b"\n\n"
