"""Fake KlingAI legacy image-to-video API (provider-apis.md section 1).

Endpoints: ``POST /v1/videos/image2video``, ``GET /v1/videos/image2video/{task_id|external_task_id}``,
``GET /v1/videos/image2video?external_task_id=...`` and the list
``GET /v1/videos/image2video?pageNum=&pageSize=``. Auth: ``Bearer <api_key>`` or an HS256 JWT.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
import re
import time
import uuid
from typing import Any, ClassVar

import jwt

from .base import (
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
    now_ms,
    type_name,
)

__all__ = ["KlingFake"]

PATH = "/v1/videos/image2video"

MODELS = (
    "kling-v1",
    "kling-v1-5",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
    "kling-v3",
)

ALLOWED_KEYS = frozenset(
    {
        "model_name",
        "image",
        "image_tail",
        "prompt",
        "negative_prompt",
        "cfg_scale",
        "mode",
        "sound",
        "voice_list",
        "static_mask",
        "dynamic_masks",
        "camera_control",
        "duration",
        "watermark_info",
        "callback_url",
        "external_task_id",
        "multi_shot",
        "shot_type",
        "multi_prompt",
        "element_list",
    }
)

CAMERA_TYPES = ("simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward")
CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
DURATIONS = tuple(str(n) for n in range(3, 16))

CODE_STATUS: dict[int, int] = {
    1000: 401, 1001: 401, 1002: 401, 1003: 401, 1004: 401,
    1100: 429, 1101: 429, 1102: 429, 1103: 403,
    1200: 400, 1201: 400, 1202: 404, 1203: 404,
    1300: 400, 1301: 400, 1302: 429, 1303: 429, 1304: 429,
    5000: 500, 5001: 503, 5002: 504,
}  # fmt: skip

CODE_MESSAGE: dict[int, str] = {
    1000: "Authentication failed",
    1001: "Authorization is empty",
    1002: "Authorization is invalid",
    1003: "Authorization is not yet valid",
    1004: "Authorization has expired",
    1100: "Account exception",
    1101: "Account in arrears (postpaid)",
    1102: "Resource pack has been used up or has expired",
    1103: "No permission to access the requested resource (API or model)",
    1200: "Invalid request parameters",
    1201: "Invalid parameter, the key or value is illegal",
    1202: "Invalid request method",
    1203: "Requested resource does not exist",
    1300: "Trigger platform policy",
    1301: "Trigger content security policy",
    1302: "API request rate limit exceeded",
    1303: "parallel task over resource pack limit",
    1304: "Trigger IP whitelist policy",
    5000: "Server internal error",
    5001: "Server temporarily unavailable (under maintenance)",
    5002: "Server internal timeout (backlog)",
}

#: which models may use start+end frames (modes, durations) per the capability map (1.4)
TAIL_CAPS: dict[str, tuple[frozenset[str], frozenset[str] | None]] = {
    "kling-v1": (frozenset({"std", "pro"}), frozenset({"5"})),
    "kling-v1-5": (frozenset({"pro"}), None),
    "kling-v1-6": (frozenset({"pro"}), None),
    "kling-v2-1": (frozenset({"pro"}), None),
    "kling-v2-5-turbo": (frozenset({"pro"}), None),
    "kling-v2-6": (frozenset({"pro"}), None),
    "kling-v3": (frozenset({"std", "pro"}), None),
}
BRUSH_CAPS: dict[str, frozenset[str]] = {
    "kling-v1": frozenset({"std", "pro"}),
    "kling-v1-5": frozenset({"pro"}),
}
_VOICE_REF = re.compile(r"<<<voice_(\d+)>>>")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_hs256(payload: dict[str, Any], secret: str, header: dict[str, Any] | None = None) -> str:
    """An HS256 JWT (header {"alg":"HS256","typ":"JWT"} unless given)."""
    head = header or {"alg": "HS256", "typ": "JWT"}
    signing_input = (
        _b64url(json.dumps(head, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(payload, separators=(",", ":")).encode())
    )
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64url(sig)


def _hs256_ok(token: str, secret: str) -> bool:
    """Checks the HS256 signature by hand (pyjwt warns about short keys, an error under -W error)."""
    signing_input, _, sig = token.rpartition(".")
    try:
        got = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except (ValueError, binascii.Error):
        return False
    want = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(got, want)


class KlingFake(FakeServer):
    """Strict fake of the Kling legacy API. See the module docstring for the endpoints.

    Knobs: ``max_concurrent`` (a create while that many tasks are unfinished answers HTTP 429
    code 1303), ``enforce_capabilities`` (the 1.4 capability map is checked), the base-class
    ``polls_until_done`` / ``generation_seconds`` / ``script_outcome("succeed"|"failed")``, and
    ``list_fault`` (the task list misbehaves, single task queries keep telling the truth):

    - ``"foreign"``: each row carries our task_id but another task's external_task_id, status and video;
    - ``"duplicate_failed"`` / ``"duplicate_processing"``: every task is shown twice, first as
      failed / processing, then as it is;
    - ``"frozen"``: a task's row never changes after the list first showed it;
    - ``"error_500"``: the list answers HTTP 500 (code 5000), for good;
    - ``"not_found"``: the list answers 404 code 1203 ("task not found").
    """

    LIST_FAULTS: ClassVar[tuple[str, ...]] = (
        "foreign", "duplicate_failed", "duplicate_processing", "frozen", "error_500", "not_found",
    )

    OUTCOMES: ClassVar[tuple[str, ...]] = ("succeed", "failed")
    MODELS: ClassVar[tuple[str, ...]] = MODELS
    DEFAULT_FAILURE = "Failure to pass the risk control system"

    def __init__(
        self,
        api_key: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        max_concurrent: int | None = None,
        enforce_capabilities: bool = True,
    ) -> None:
        super().__init__()
        if (access_key is None) != (secret_key is None):
            raise ValueError("access_key and secret_key go together")
        if api_key is None and access_key is None:
            api_key = "kling-test-key"
        self.api_key = api_key
        self.access_key = access_key
        self.secret_key = secret_key
        self.max_concurrent = max_concurrent
        self.enforce_capabilities = enforce_capabilities
        #: payload of every JWT received (in order), and the raw tokens
        self.jwt_payloads: list[dict[str, Any]] = []
        self.jwt_tokens: list[str] = []
        #: external_task_id -> task_id
        self.external_ids: dict[str, str] = {}
        #: how many creates were answered 429/1303 by the concurrency simulation
        self.concurrency_rejections = 0
        #: task-list requests answered
        self.list_requests = 0
        #: how the task list misbehaves (one of LIST_FAULTS; None: it tells the truth)
        self.list_fault: str | None = None
        self._frozen_rows: dict[str, dict[str, Any]] = {}
        self._next_id = random.randrange(800_000_000_000_000_000, 850_000_000_000_000_000)

    # ---- helpers for tests ----------------------------------------------------------------

    @staticmethod
    def error_body(code: int, message: str | None = None) -> dict[str, Any]:
        return {
            "code": code,
            "message": message or CODE_MESSAGE.get(code, "error"),
            "request_id": str(uuid.uuid4()),
        }

    def inject_code(
        self,
        code: int,
        match: str = f"POST {PATH}",
        *,
        message: str | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Injects Kling's error answer for ``code`` (HTTP status from the 1.7 table)."""
        self.inject(
            match,
            status=CODE_STATUS.get(code, 400),
            json=self.error_body(code, message),
            headers=headers,
            times=times,
            delay_s=delay_s,
        )

    def make_jwt(
        self,
        *,
        exp_in: int = 1800,
        nbf_ago: int = 5,
        secret: str | None = None,
        claims: dict[str, Any] | None = None,
    ) -> str:
        """A token like the reference's (for self-tests); signed without pyjwt's short-key warning."""
        now = int(time.time())
        payload: dict[str, Any] = {"iss": self.access_key or "", "exp": now + exp_in, "nbf": now - nbf_ago}
        payload.update(claims or {})
        return sign_hs256(payload, secret if secret is not None else (self.secret_key or ""))

    def task_for_external(self, external_task_id: str) -> Task | None:
        with self._lock:
            tid = self.external_ids.get(external_task_id)
            return self.tasks.get(tid) if tid else None

    # ---- routing --------------------------------------------------------------------------

    def route(self, req: Recorded) -> Route | None:
        if req.path == PATH:
            if req.method == "POST":
                return Route("create", self._create, self._check_create)
            if req.method == "GET":
                return Route("query", self._query_or_list, self._check_query)
        elif req.path.startswith(PATH + "/") and req.method == "GET":
            rest = req.path[len(PATH) + 1 :]
            if rest and "/" not in rest:
                return Route("get", self._get, self._check_query)
        return None

    def unknown_route(self, req: Recorded) -> Reply:
        return self._error(404, 1202, f"Invalid request method or path: {req.method} {req.path}")

    def _error(self, status: int, code: int, message: str | None = None) -> Reply:
        return Reply.of_json(status, self.error_body(code, message))

    def _ok(self, data: Any) -> Reply:
        return Reply.of_json(
            200, {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data}
        )

    # ---- auth -----------------------------------------------------------------------------

    def _check_auth(self, req: Recorded) -> Reply | None:
        where = f"{req.method} {req.path}"
        h = req.header("authorization")
        if h is None or not h.strip():
            self.violation(f"{where}: missing Authorization header")
            return self._error(401, 1001)
        if not h.startswith("Bearer ") or not h[7:] or h[7:] != h[7:].strip():
            self.violation(f"{where}: Authorization must be 'Bearer <token>', got {h[:16]!r}...")
            return self._error(401, 1002)
        token = h[7:]
        if self.api_key is not None and hmac.compare_digest(token.encode(), self.api_key.encode()):
            return None
        if self.secret_key is None or token.count(".") != 2:
            self.auth_failure(f"{where}: unknown API key")
            return self._error(401, 1002)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            self.auth_failure(f"{where}: unreadable token ({exc})")
            return self._error(401, 1002)
        if header.get("alg") != "HS256" or header.get("typ") != "JWT":
            self.violation(f"{where}: JWT header must be {{'alg':'HS256','typ':'JWT'}}, got {header}")
            return self._error(401, 1002)
        if not _hs256_ok(token, self.secret_key):
            self.auth_failure(f"{where}: JWT signature does not verify with the secret key")
            return self._error(401, 1002)
        try:
            payload = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            self.violation(f"{where}: malformed JWT ({exc})")
            return self._error(401, 1002)
        if not isinstance(payload, dict):
            self.violation(f"{where}: JWT payload must be a JSON object")
            return self._error(401, 1002)
        with self._lock:
            self.jwt_payloads.append(dict(payload))
            self.jwt_tokens.append(token)
        iss = payload.get("iss")
        if not isinstance(iss, str):
            self.violation(f"{where}: JWT claim 'iss' must be the access key string, got {type_name(iss)}")
            return self._error(401, 1002)
        if iss != self.access_key:
            self.auth_failure(f"{where}: JWT 'iss' is not the configured access key")
            return self._error(401, 1002)
        bad = [c for c in ("exp", "nbf") if not is_int(payload.get(c))]
        if bad:
            got = ", ".join(f"{c}={type_name(payload.get(c))}" for c in bad)
            self.violation(f"{where}: JWT claims 'exp' and 'nbf' must be integer seconds ({got})")
            return self._error(401, 1002)
        now = time.time()
        if payload["nbf"] > now:
            self.violation(f"{where}: JWT not yet valid (nbf is {payload['nbf'] - now:.0f}s in the future)")
            return self._error(401, 1003)
        if payload["exp"] <= now:
            self.violation(f"{where}: JWT expired {now - payload['exp']:.0f}s ago")
            return self._error(401, 1004)
        return None

    # ---- create ---------------------------------------------------------------------------

    def _check_create(self, req: Recorded) -> Reply | None:
        denied = self._check_auth(req)
        if denied is not None:
            return denied
        p = Problems("image2video")
        ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            p.add(f"Content-Type must be application/json, got {req.header('content-type')!r}")
            return self.reject(p, self._error(400, 1200, p.first))
        body = req.json
        if not isinstance(body, dict):
            p.add(f"body must be a JSON object, got {type_name(body) if req.body else 'nothing'}")
            return self.reject(p, self._error(400, 1200, p.first))
        self.validate_create(body, p)
        if p:
            return self.reject(p, self._error(400, 1201, p.first))
        return None

    def validate_create(self, body: dict[str, Any], p: Problems) -> None:
        check_keys(p, body, ALLOWED_KEYS, "")
        model = body.get("model_name", "kling-v1")
        if model not in MODELS:
            p.add(f"field 'model_name' must be one of {', '.join(MODELS)}, got {model!r}")
        multi_shot = body.get("multi_shot", False)
        if "multi_shot" in body and not isinstance(multi_shot, bool):
            p.add(f"field 'multi_shot' must be a bool, got {type_name(multi_shot)}")
        for name in ("prompt", "negative_prompt"):
            if name in body:
                v = body[name]
                if not isinstance(v, str):
                    p.add(f"field '{name}' must be a string, got {type_name(v)}")
                elif len(v) > 2500:
                    p.add(f"field '{name}' is {len(v)} characters, more than 2500")
        prompt = body.get("prompt")
        needs_prompt = multi_shot is not True or body.get("shot_type") == "intelligence"
        if self.require_prompt and needs_prompt and not (isinstance(prompt, str) and prompt.strip()):
            p.add("field 'prompt' must not be empty (multi_shot is not true)")
        if "cfg_scale" in body:
            v = body["cfg_scale"]
            if not is_number(v):
                p.add(f"field 'cfg_scale' must be a number, got {type_name(v)}")
            elif not 0 <= v <= 1:
                p.add(f"field 'cfg_scale' must be in [0, 1], got {v}")
        mode = body.get("mode", "std")
        if "mode" in body and mode not in ("std", "pro"):
            p.add(f"field 'mode' must be 'std' or 'pro', got {mode!r}")
        if "sound" in body and body["sound"] not in ("on", "off"):
            p.add(f"field 'sound' must be 'on' or 'off', got {body['sound']!r}")
        duration = body.get("duration", "5")
        if "duration" in body:
            if not isinstance(duration, str):
                p.add(f"field 'duration' must be a string, got {type_name(duration)}")
            elif duration not in DURATIONS:
                p.add(f'field \'duration\' must be one of "3".."15", got {duration!r}')

        size = None
        if "image" in body:
            size = check_image_field(p, "image", body["image"], ratio=True)
        if "image_tail" in body:
            tail_size = check_image_field(p, "image_tail", body["image_tail"], ratio=False)
            size = size or tail_size
        if "image" not in body and "image_tail" not in body:
            p.add("at least one of 'image' and 'image_tail' is required")

        masks_present = "static_mask" in body or "dynamic_masks" in body
        groups = [g for g, present in (
            ("image_tail", "image_tail" in body),
            ("static_mask/dynamic_masks", masks_present),
            ("camera_control", "camera_control" in body),
        ) if present]  # fmt: skip
        if len(groups) > 1:
            p.add(f"{' and '.join(groups)} are mutually exclusive")

        mask_sizes: list[tuple[int, int]] = []
        if "static_mask" in body:
            ms = check_image_field(p, "static_mask", body["static_mask"], ratio=False, mask=True)
            if ms:
                mask_sizes.append(ms)
        if "dynamic_masks" in body:
            mask_sizes += check_dynamic_masks(p, body["dynamic_masks"], size)
        if mask_sizes:
            if len(set(mask_sizes)) > 1:
                p.add(f"all masks must have one resolution, got {sorted(set(mask_sizes))}")
            if size is not None:
                w, h = size
                for mw, mh in set(mask_sizes):
                    if abs(mw / mh - w / h) > 0.01 * (w / h):
                        p.add(f"mask {mw}x{mh} does not have the image's aspect ratio ({w}x{h})")
        if "camera_control" in body:
            check_camera_control(p, body["camera_control"])

        voices = body.get("voice_list")
        if "voice_list" in body:
            if not isinstance(voices, list) or not 1 <= len(voices) <= 2:
                p.add(f"field 'voice_list' must be an array of 1-2 items, got {type_name(voices)}")
            else:
                for i, item in enumerate(voices):
                    if not isinstance(item, dict) or set(item) != {"voice_id"}:
                        p.add(f"voice_list[{i}] must be exactly {{'voice_id': string}}, got {item!r}")
                    elif not isinstance(item["voice_id"], str) or not item["voice_id"]:
                        p.add(f"voice_list[{i}].voice_id must be a non-empty string")
            if "element_list" in body:
                p.add("voice_list cannot be combined with element_list")
            if body.get("sound") != "on":
                p.add("voice_list needs sound 'on'")
        if isinstance(prompt, str):
            count = len(voices) if isinstance(voices, list) else 0
            for ref in _VOICE_REF.findall(prompt):
                if not 1 <= int(ref) <= count:
                    p.add(f"prompt refers to <<<voice_{ref}>>> but voice_list has {count} voice(s)")
        if "element_list" in body:
            el = body["element_list"]
            if not isinstance(el, list) or not 1 <= len(el) <= 3:
                p.add("field 'element_list' must be an array of 1-3 items")
            else:
                for i, item in enumerate(el):
                    if (
                        not isinstance(item, dict)
                        or set(item) != {"element_id"}
                        or not is_int(item["element_id"])
                    ):
                        p.add(f"element_list[{i}] must be exactly {{'element_id': integer}}, got {item!r}")
        if "shot_type" in body and body["shot_type"] not in ("customize", "intelligence"):
            p.add(f"field 'shot_type' must be 'customize' or 'intelligence', got {body['shot_type']!r}")
        if multi_shot is True and "shot_type" not in body:
            p.add("field 'shot_type' is required when multi_shot is true")
        if multi_shot is True and body.get("shot_type") == "customize" and "multi_prompt" not in body:
            p.add("field 'multi_prompt' is required with shot_type 'customize'")
        if multi_shot is True and body.get("shot_type") == "intelligence" and "multi_prompt" in body:
            p.add("field 'multi_prompt' is not taken with shot_type 'intelligence'")
        if multi_shot is True and "image_tail" in body:
            p.add("multi_shot does not support first/end frames (image_tail)")
        if multi_shot is not True and ("shot_type" in body or "multi_prompt" in body):
            p.add("fields 'shot_type'/'multi_prompt' need multi_shot true")
        if "multi_prompt" in body:
            check_multi_prompt(p, body["multi_prompt"], duration)
        if "watermark_info" in body:
            wm = body["watermark_info"]
            if not isinstance(wm, dict) or set(wm) != {"enabled"} or not isinstance(wm["enabled"], bool):
                p.add(f"field 'watermark_info' must be exactly {{'enabled': bool}}, got {wm!r}")
        if "callback_url" in body and not is_http_url(body["callback_url"]):
            p.add(f"field 'callback_url' must be an http(s) URL, got {body['callback_url']!r}")
        if "external_task_id" in body:
            ext = body["external_task_id"]
            if not isinstance(ext, str) or not ext:
                p.add(f"field 'external_task_id' must be a non-empty string, got {type_name(ext)}")
        if self.enforce_capabilities and model in MODELS and not p:
            check_capabilities(p, body, model, mode, duration)

    def _create(self, req: Recorded) -> Reply:
        body = req.obj
        ext = body.get("external_task_id")
        with self._lock:
            if ext is not None and ext in self.external_ids:
                return self._error(400, 1201, f"external_task_id is duplicated: {ext!r} already exists")
            if self.max_concurrent is not None and self.unfinished() >= self.max_concurrent:
                self.concurrency_rejections += 1
                return self._error(429, 1303)
            self._next_id += random.randrange(1, 1000)
            tid = str(self._next_id)
            ms = now_ms()
            task = self._new_task(tid, body, external_task_id=ext, created_ms=ms)
            if ext is not None:
                self.external_ids[ext] = tid
        return self._ok(
            {
                "task_id": task.id,
                "task_status": "submitted",
                "task_info": {"external_task_id": ext},
                "created_at": ms,
                "updated_at": ms,
            }
        )

    # ---- query ----------------------------------------------------------------------------

    def _check_query(self, req: Recorded) -> Reply | None:
        denied = self._check_auth(req)
        if denied is not None:
            return denied
        if req.path == PATH and "external_task_id" not in req.query:
            p = Problems("list image2video")
            for key, lo, hi in (("pageNum", 1, 1000), ("pageSize", 1, 500)):
                v = req.query.get(key)
                if v is not None and (not v.isdigit() or not lo <= int(v) <= hi):
                    p.add(f"query '{key}' must be an integer in {lo}..{hi}, got {v!r}")
            extra = set(req.query) - {"pageNum", "pageSize"}
            if extra:
                p.add(f"unknown query parameter(s) {sorted(extra)}")
            if p:
                return self.reject(p, self._error(400, 1201, p.first))
        return None

    def _lookup(self, key: str) -> Task | None:
        with self._lock:
            task = self.tasks.get(key)
            if task is None and key in self.external_ids:
                task = self.tasks.get(self.external_ids[key])
        if task is None or task.expired:
            return None
        return task

    def _get(self, req: Recorded) -> Reply:
        return self._single(req.path[len(PATH) + 1 :])

    def _query_or_list(self, req: Recorded) -> Reply:
        if "external_task_id" in req.query:
            return self._single(req.query["external_task_id"])
        page = int(req.query.get("pageNum", "1"))
        size = int(req.query.get("pageSize", "30"))
        with self._lock:
            tasks = sorted(self.tasks.values(), key=lambda t: t.created_at, reverse=True)
        tasks = [t for t in tasks if not t.expired][(page - 1) * size : page * size]
        self.list_requests += 1
        fault = self.list_fault
        if fault == "error_500":
            return self._error(500, 5000)
        if fault == "not_found":
            return self._error(404, 1203, "task not found")
        # a listed task is observed as a poll would observe it (a task set to finish after N polls
        # finishes after N observations, single or listed)
        rows = [self.task_object(t, self.poll_task(t)) for t in tasks]
        return self._ok(self._misbehave(fault, rows))

    def _misbehave(self, fault: str | None, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if fault == "foreign" and len(rows) > 1:
            # row i: our task_id, everything else (external id, status, video) from the next task
            return [{**rows[(i + 1) % len(rows)], "task_id": row["task_id"]} for i, row in enumerate(rows)]
        if fault in ("duplicate_failed", "duplicate_processing"):
            out: list[dict[str, Any]] = []
            for row in rows:
                early = {k: v for k, v in row.items() if k not in ("task_result", "final_unit_deduction", "watermark_info")}
                if fault == "duplicate_failed":
                    early.update(task_status="failed", task_status_msg="Task failed (list replica)")
                else:
                    early.update(task_status="processing", task_status_msg="")
                out += [early, row]
            return out
        if fault == "frozen":
            with self._lock:
                return [dict(self._frozen_rows.setdefault(row["task_id"], row)) for row in rows]
        return rows

    def _single(self, key: str) -> Reply:
        task = self._lookup(key)
        if task is None:
            return self._error(404, 1203, f"task not found: {key}")
        done = self.poll_task(task)
        return self._ok(self.task_object(task, done))

    def task_object(self, task: Task, done: bool) -> dict[str, Any]:
        body: dict[str, Any] = task.body or {}
        created = int(task.extra["created_ms"])
        if not done:
            status = "processing" if task.polls else "submitted"
            updated = created if not task.polls else max(created, now_ms() - 1)
        else:
            status = "succeed" if task.outcome.kind == "succeed" else "failed"
            updated = int((task.done_wall or time.time()) * 1000)
        obj: dict[str, Any] = {
            "task_id": task.id,
            "task_status": status,
            "task_status_msg": "",
            "task_info": {"external_task_id": task.extra.get("external_task_id")},
            "created_at": created,
            "updated_at": updated,
        }
        if done and status == "failed":
            obj["task_status_msg"] = task.outcome.message or self.DEFAULT_FAILURE
        if done and status == "succeed":
            wm = body.get("watermark_info")
            duration = body.get("duration", "5")
            obj["watermark_info"] = {"enabled": bool(wm.get("enabled")) if isinstance(wm, dict) else False}
            obj["final_unit_deduction"] = "5" if body.get("mode") == "pro" else "2"
            obj["task_result"] = {
                "videos": [
                    {
                        "id": task.extra.setdefault("video_id", str(uuid.uuid4())),
                        "url": task.video_url,
                        "watermark_url": "",
                        "duration": str(duration),
                    }
                ]
            }
        return obj


def check_image_field(
    p: Problems, name: str, v: Any, *, ratio: bool, mask: bool = False
) -> tuple[int, int] | None:
    """Kling image rules: an http(s) URL or raw base64 (no data: prefix) of a PNG/JPEG."""
    if not isinstance(v, str):
        p.add(f"field '{name}' must be a string, got {type_name(v)}")
        return None
    if v.startswith("data:"):
        p.add(f"field '{name}' must be a URL or raw base64 without a 'data:' prefix")
        return None
    if is_http_url(v):
        return None
    data = decode_b64(v)
    if data is None:
        p.add(f"field '{name}' must be an http(s) URL or valid base64 (got {v[:24]!r}...)")
        return None
    return check_image_bytes(
        p,
        name,
        data,
        allowed=("image/png", "image/jpeg"),
        max_bytes=10 * 1024 * 1024,
        min_side=0 if mask else 300,
        ratio=(1 / 2.5, 2.5) if ratio else None,
    )


def check_dynamic_masks(
    p: Problems, dm: Any, size: tuple[int, int] | None, name: str = "dynamic_masks"
) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = []
    if not isinstance(dm, list) or not 1 <= len(dm) <= 6:
        p.add(f"field '{name}' must be an array of 1-6 items, got {type_name(dm)}")
        return sizes
    for i, item in enumerate(dm):
        if not isinstance(item, dict) or set(item) != {"mask", "trajectories"}:
            p.add(
                f"{name}[{i}] must be exactly {{'mask', 'trajectories'}}, got {sorted(item) if isinstance(item, dict) else type_name(item)}"
            )
            continue
        ms = check_image_field(p, f"{name}[{i}].mask", item["mask"], ratio=False, mask=True)
        if ms:
            sizes.append(ms)
        traj = item["trajectories"]
        if not isinstance(traj, list) or not 2 <= len(traj) <= 77:
            n = len(traj) if isinstance(traj, list) else type_name(traj)
            p.add(f"{name}[{i}].trajectories must have 2-77 points, got {n}")
            continue
        for j, pt in enumerate(traj):
            if (
                not isinstance(pt, dict)
                or set(pt) != {"x", "y"}
                or not is_int(pt["x"])
                or not is_int(pt["y"])
            ):
                p.add(f"{name}[{i}].trajectories[{j}] must be exactly {{'x': int, 'y': int}}, got {pt!r}")
            elif size is not None and not (0 <= pt["x"] < size[0] and 0 <= pt["y"] < size[1]):
                p.add(f"{name}[{i}].trajectories[{j}] {pt} is outside the {size[0]}x{size[1]} image")
    return sizes


def check_camera_control(p: Problems, cc: Any, name: str = "camera_control") -> None:
    if not isinstance(cc, dict):
        p.add(f"field '{name}' must be an object, got {type_name(cc)}")
        return
    check_keys(p, cc, frozenset({"type", "config"}), f"{name}.")
    ctype = cc.get("type")
    if ctype not in CAMERA_TYPES:
        p.add(f"{name}.type must be one of {', '.join(CAMERA_TYPES)}, got {ctype!r}")
        return
    if ctype != "simple":
        if "config" in cc:
            p.add(f"{name}.config must be left out for type {ctype!r}")
        return
    cfg = cc.get("config")
    if not isinstance(cfg, dict):
        p.add(f"{name}.config is required for type 'simple' (got {type_name(cfg)})")
        return
    check_keys(p, cfg, frozenset(CAMERA_AXES), f"{name}.config.")
    nonzero = []
    for k, v in cfg.items():
        if k not in CAMERA_AXES:
            continue
        if not is_number(v):
            p.add(f"{name}.config.{k} must be a number, got {type_name(v)}")
        elif not -10 <= v <= 10:
            p.add(f"{name}.config.{k} must be in [-10, 10], got {v}")
        elif v != 0:
            nonzero.append(k)
    if len(nonzero) != 1:
        p.add(f"{name}.config must have exactly one non-zero axis, got {nonzero or 'none'}")


def check_multi_prompt(p: Problems, mp: Any, duration: Any, name: str = "multi_prompt") -> None:
    if not isinstance(mp, list) or not 1 <= len(mp) <= 6:
        p.add(f"field '{name}' must be an array of 1-6 shots")
        return
    total = 0
    for i, shot in enumerate(mp):
        if not isinstance(shot, dict) or set(shot) != {"index", "prompt", "duration"}:
            p.add(f"{name}[{i}] must be exactly {{'index', 'prompt', 'duration'}}")
            continue
        if not is_int(shot["index"]):
            p.add(f"{name}[{i}].index must be an integer")
        if not isinstance(shot["prompt"], str) or len(shot["prompt"]) > 512:
            p.add(f"{name}[{i}].prompt must be a string of at most 512 characters")
        d = shot["duration"]
        if not isinstance(d, str) or not d.isdigit() or int(d) < 1:
            p.add(f"{name}[{i}].duration must be a string of whole seconds >= 1, got {d!r}")
        else:
            total += int(d)
    if isinstance(duration, str) and duration.isdigit() and total and total != int(duration):
        p.add(f"{name} durations sum to {total}, not duration {duration}")


def check_capabilities(p: Problems, body: dict[str, Any], model: str, mode: str, duration: str) -> None:
    """The image-to-video capability map (provider-apis.md 1.4), on a snake_case body."""
    cap = f"capability map (1.4): {model}"
    if model != "kling-v3" and duration not in ("5", "10"):
        p.add(f'{cap} supports duration "5" or "10", got {duration!r}')
    if "image_tail" in body:
        tail = TAIL_CAPS.get(model)
        if tail is None:
            p.add(f"{cap} has no start+end frame (image_tail)")
        else:
            modes, durs = tail
            if mode not in modes:
                p.add(f"{cap} start+end frame needs mode {'/'.join(sorted(modes))}, got {mode!r}")
            if durs is not None and duration not in durs:
                p.add(f"{cap} start+end frame needs duration {'/'.join(sorted(durs))}, got {duration!r}")
            if model == "kling-v2-6" and body.get("sound") == "on":
                p.add(f"{cap} start+end frame is silent only (sound must not be 'on')")
    if "static_mask" in body or "dynamic_masks" in body:
        modes_ok = BRUSH_CAPS.get(model)
        if modes_ok is None:
            p.add(f"{cap} has no motion brush (static_mask/dynamic_masks); kling-v1 and kling-v1-5 do")
        else:
            if mode not in modes_ok:
                p.add(f"{cap} motion brush needs mode {'/'.join(sorted(modes_ok))}, got {mode!r}")
            if duration != "5":
                p.add(f'{cap} motion brush needs duration "5", got {duration!r}')
    if "camera_control" in body:
        if model != "kling-v1-5":
            p.add(f"{cap} has no image-to-video camera control; kling-v1-5 (pro, 5 s, simple) does")
        else:
            if mode != "pro":
                p.add(f"{cap} camera control needs mode 'pro', got {mode!r}")
            if duration != "5":
                p.add(f'{cap} camera control needs duration "5", got {duration!r}')
            cc = body["camera_control"]
            if isinstance(cc, dict) and cc.get("type") != "simple":
                p.add(f"{cap} camera control supports type 'simple' only, got {cc.get('type')!r}")
    if "cfg_scale" in body and model.startswith("kling-v2"):
        p.add(f"{cap} does not support cfg_scale (kling-v2.x)")
    if body.get("sound") == "on":
        if model not in ("kling-v2-6", "kling-v3"):
            p.add(f"{cap} has no sound (kling-v2-6 pro and kling-v3 do)")
        elif model == "kling-v2-6" and mode != "pro":
            p.add(f"{cap} sound needs mode 'pro', got {mode!r}")
    if "voice_list" in body and model not in ("kling-v2-6", "kling-v3"):
        p.add(f"{cap} has no voice control")
    if "voice_list" in body and model == "kling-v2-6" and mode != "pro":
        p.add(f"{cap} voice control needs mode 'pro', got {mode!r}")
    for key in ("multi_shot", "element_list", "multi_prompt"):
        if key in body and model != "kling-v3":
            p.add(f"{cap} does not support {key} (kling-v3 only)")
