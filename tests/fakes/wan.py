"""Fake Alibaba DashScope Wan image-to-video API (provider-apis.md section 2).

``POST /api/v1/services/aigc/video-generation/video-synthesis`` (Bearer, JSON,
``X-DashScope-Async: enable``) and ``GET /api/v1/tasks/{task_id}`` (Bearer).
"""

from __future__ import annotations

import hmac
import time
import uuid
from datetime import datetime
from typing import Any, ClassVar

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
    parse_data_uri,
    type_name,
)

__all__ = ["WanFake"]

CREATE_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"
TASKS_PATH = "/api/v1/tasks/"
MODELS = ("wan2.6-i2v", "wan2.6-i2v-flash")
INPUT_KEYS = frozenset({"prompt", "img_url", "negative_prompt", "audio_url"})
PARAM_KEYS = frozenset({"resolution", "duration", "prompt_extend", "shot_type", "audio", "watermark", "seed"})
IMAGE_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/webp")

CODE_STATUS: dict[str, int] = {
    "InvalidParameter": 400,
    "DataInspectionFailed": 400,
    "IPInfringementSuspect": 400,
    "Arrearage": 400,
    "InvalidApiKey": 401,
    "AccessDenied": 403,
    "Model.AccessDenied": 403,
    "AccessDenied.Unpurchased": 403,
    "ModelNotFound": 404,
    "Throttling": 429,
    "Throttling.RateQuota": 429,
    "Throttling.AllocationQuota": 429,
    "InternalError": 500,
    "ModelUnavailable": 503,
}
CODE_MESSAGE: dict[str, str] = {
    "InvalidParameter": "Required parameter(s) missing or invalid, please check the request parameters.",
    "DataInspectionFailed": "Input or output data may contain inappropriate content.",
    "IPInfringementSuspect": "Input data is suspected of being involved in IP infringement.",
    "Arrearage": "Access denied, please make sure your account is in good standing.",
    "InvalidApiKey": "Invalid API-key provided.",
    "AccessDenied": "Access denied.",
    "Model.AccessDenied": "Model access denied.",
    "AccessDenied.Unpurchased": "Access to model denied. Please make sure you are eligible for using the model.",
    "ModelNotFound": "Model can not be found.",
    "Throttling": "Requests throttling triggered.",
    "Throttling.RateQuota": "Requests rate limit exceeded, please try again later.",
    "Throttling.AllocationQuota": "Free allocated quota exceeded.",
    "InternalError": "An internal error has occured, please try again later or contact service support.",
    "ModelUnavailable": "Model is unavailable, please try again later.",
}


def _ts(wall: float) -> str:
    """DashScope's "YYYY-MM-DD HH:mm:ss.SSS"."""
    dt = datetime.fromtimestamp(wall)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


class WanFake(FakeServer):
    """Strict fake of DashScope's async video synthesis for wan2.6-i2v(-flash).

    Outcomes: ``succeed``, ``failed`` (``code`` default DataInspectionFailed), ``canceled``,
    ``unknown`` (the done poll answers UNKNOWN, as for an expired id).
    """

    OUTCOMES: ClassVar[tuple[str, ...]] = ("succeed", "failed", "canceled", "unknown")
    MODELS: ClassVar[tuple[str, ...]] = MODELS

    def __init__(self, api_key: str = "sk-test-wan") -> None:
        super().__init__()
        self.api_key = api_key

    # ---- helpers for tests ----------------------------------------------------------------

    @staticmethod
    def error_body(code: str, message: str | None = None) -> dict[str, Any]:
        return {
            "code": code,
            "message": message or CODE_MESSAGE.get(code, code),
            "request_id": str(uuid.uuid4()),
        }

    def inject_code(
        self,
        code: str,
        match: str = f"POST {CREATE_PATH}",
        *,
        message: str | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Injects DashScope's error answer for ``code`` (e.g. ``Throttling.RateQuota`` -> 429)."""
        self.inject(
            match,
            status=CODE_STATUS.get(code, 400),
            json=self.error_body(code, message),
            headers=headers,
            times=times,
            delay_s=delay_s,
        )

    # ---- routing --------------------------------------------------------------------------

    def route(self, req: Recorded) -> Route | None:
        if req.path == CREATE_PATH and req.method == "POST":
            return Route("create", self._create, self._check_create)
        if req.path.startswith(TASKS_PATH) and req.method == "GET":
            rest = req.path[len(TASKS_PATH) :]
            if rest and "/" not in rest:
                return Route("task", self._task, self._check_auth)
        return None

    def unknown_route(self, req: Recorded) -> Reply:
        return self._error(404, "NotFound", f"Not Found: {req.method} {req.path}")

    def _error(self, status: int, code: str, message: str | None = None) -> Reply:
        return Reply.of_json(status, self.error_body(code, message))

    def _check_auth(self, req: Recorded) -> Reply | None:
        where = f"{req.method} {req.path}"
        h = req.header("authorization")
        if h is None or not h.strip():
            self.violation(f"{where}: missing Authorization header")
            return self._error(401, "InvalidApiKey", "No API-key provided.")
        if not h.startswith("Bearer ") or h[7:] != h[7:].strip() or not h[7:]:
            self.violation(f"{where}: Authorization must be 'Bearer <key>', got {h[:12]!r}...")
            return self._error(401, "InvalidApiKey")
        if not hmac.compare_digest(h[7:].encode(), self.api_key.encode()):
            self.auth_failure(f"{where}: unknown API key")
            return self._error(401, "InvalidApiKey")
        return None

    # ---- create ---------------------------------------------------------------------------

    def _check_create(self, req: Recorded) -> Reply | None:
        denied = self._check_auth(req)
        if denied is not None:
            return denied
        p = Problems("video-synthesis")
        if (req.header("x-dashscope-async") or "").strip() != "enable":
            p.add(f"header X-DashScope-Async must be 'enable', got {req.header('x-dashscope-async')!r}")
            return self.reject(
                p, self._error(403, "AccessDenied", "current user api does not support synchronous calls")
            )
        ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            p.add(f"Content-Type must be application/json, got {req.header('content-type')!r}")
            return self.reject(p, self._error(400, "InvalidParameter", p.first))
        body = req.json
        if not isinstance(body, dict):
            p.add(f"body must be a JSON object, got {type_name(body) if req.body else 'nothing'}")
            return self.reject(p, self._error(400, "InvalidParameter", p.first))
        model = body.get("model")
        if model not in MODELS:
            p.add(f"field 'model' must be one of {', '.join(MODELS)}, got {model!r}")
            return self.reject(p, self._error(404, "ModelNotFound"))
        self.validate_create(body, p)
        if p:
            return self.reject(p, self._error(400, "InvalidParameter", p.first))
        return None

    def validate_create(self, body: dict[str, Any], p: Problems) -> None:
        check_keys(p, body, frozenset({"model", "input", "parameters"}), "")
        model = body.get("model")
        inp = body.get("input")
        if not isinstance(inp, dict):
            p.add(f"field 'input' must be an object, got {type_name(inp)}")
            inp = {}
        check_keys(p, inp, INPUT_KEYS, "input.")
        prompt = inp.get("prompt")
        if "prompt" in inp:
            if not isinstance(prompt, str):
                p.add(f"field 'input.prompt' must be a string, got {type_name(prompt)}")
            elif len(prompt) > 1500:
                p.add(f"field 'input.prompt' is {len(prompt)} characters, more than 1500")
        if self.require_prompt and not (isinstance(prompt, str) and prompt.strip()):
            p.add("field 'input.prompt' is required and must not be empty")
        if "negative_prompt" in inp:
            neg = inp["negative_prompt"]
            if not isinstance(neg, str):
                p.add(f"field 'input.negative_prompt' must be a string, got {type_name(neg)}")
            elif len(neg) > 500:
                p.add(f"field 'input.negative_prompt' is {len(neg)} characters, more than 500")
        if "img_url" not in inp:
            p.add("field 'input.img_url' is required")
        else:
            self._check_img_url(p, inp["img_url"])
        if "audio_url" in inp and not is_http_url(inp["audio_url"]):
            p.add(f"field 'input.audio_url' must be an http(s) URL, got {inp['audio_url']!r}")

        params = body.get("parameters", {})
        if not isinstance(params, dict):
            p.add(f"field 'parameters' must be an object, got {type_name(params)}")
            return
        check_keys(p, params, PARAM_KEYS, "parameters.")
        if "resolution" in params and params["resolution"] not in ("720P", "1080P"):
            p.add(f"field 'parameters.resolution' must be '720P' or '1080P', got {params['resolution']!r}")
        if "duration" in params:
            d = params["duration"]
            if not is_int(d):
                p.add(f"field 'parameters.duration' must be an integer, got {type_name(d)}")
            elif not 2 <= d <= 15:
                p.add(f"field 'parameters.duration' must be in 2..15, got {d}")
        for key in ("prompt_extend", "audio", "watermark"):
            if key in params and not isinstance(params[key], bool):
                p.add(f"field 'parameters.{key}' must be a bool, got {type_name(params[key])}")
        if "audio" in params and model != "wan2.6-i2v-flash":
            p.add(f"field 'parameters.audio' is only supported by wan2.6-i2v-flash, not {model}")
        if "shot_type" in params and params["shot_type"] not in ("single", "multi"):
            p.add(f"field 'parameters.shot_type' must be 'single' or 'multi', got {params['shot_type']!r}")
        if "seed" in params:
            s = params["seed"]
            if not is_int(s):
                p.add(f"field 'parameters.seed' must be an integer, got {type_name(s)}")
            elif not 0 <= s <= 2147483647:
                p.add(f"field 'parameters.seed' must be in [0, 2147483647], got {s}")

    def _check_img_url(self, p: Problems, v: Any) -> None:
        name = "input.img_url"
        if not isinstance(v, str):
            p.add(f"field '{name}' must be a string, got {type_name(v)}")
            return
        if is_http_url(v):
            return
        if v.startswith("data:"):
            parsed = parse_data_uri(v)
            if parsed is None:
                p.add(f"field '{name}' is not a valid data:<mime>;base64,<data> URI")
                return
            mime, data = parsed
            if not mime.startswith("image/"):
                p.add(f"field '{name}' data URI must have an image/* type, got {mime}")
                return
            check_image_bytes(
                p, name, data, allowed=IMAGE_TYPES, max_bytes=20 * 1024 * 1024, min_side=240, max_side=8000,
                declared=mime,
            )  # fmt: skip
            return
        if decode_b64(v) is not None:
            p.add(f"field '{name}' is raw base64; DashScope needs a 'data:image/...;base64,' prefix")
        else:
            p.add(f"field '{name}' must be an http(s) URL or a data: URI, got {v[:24]!r}...")

    def _create(self, req: Recorded) -> Reply:
        task = self._new_task(str(uuid.uuid4()), req.json)
        return Reply.of_json(
            200, {"output": {"task_status": "PENDING", "task_id": task.id}, "request_id": str(uuid.uuid4())}
        )

    # ---- query ----------------------------------------------------------------------------

    def result_url(self, task: Task) -> str:
        expires = int(time.time()) + 86400
        return (
            super().result_url(task) + f"?Expires={expires}&OSSAccessKeyId=LTAI5tFake&Signature=fake%2Bsig%3D"
        )

    def _task(self, req: Recorded) -> Reply:
        tid = req.path[len(TASKS_PATH) :]
        rid = str(uuid.uuid4())
        task = self.find_task(tid)
        if task is None or task.expired:
            return Reply.of_json(
                200, {"request_id": rid, "output": {"task_id": tid, "task_status": "UNKNOWN"}}
            )
        done = self.poll_task(task)
        return Reply.of_json(200, self.task_body(task, done, rid))

    def task_body(self, task: Task, done: bool, request_id: str) -> dict[str, Any]:
        body: dict[str, Any] = task.body or {}
        params = body.get("parameters") or {}
        out: dict[str, Any] = {"task_id": task.id, "submit_time": _ts(task.created_wall)}
        kind = task.outcome.kind
        if not done:
            out["task_status"] = "RUNNING"
            out["scheduled_time"] = _ts(task.created_wall + 0.2)
            return {"request_id": request_id, "output": out}
        if kind == "unknown":
            return {"request_id": request_id, "output": {"task_id": task.id, "task_status": "UNKNOWN"}}
        out["scheduled_time"] = _ts(task.created_wall + 0.2)
        out["end_time"] = _ts(task.done_wall or time.time())
        if kind == "canceled":
            out["task_status"] = "CANCELED"
            return {"request_id": request_id, "output": out}
        if kind == "failed":
            code = str(task.outcome.code or "DataInspectionFailed")
            out["task_status"] = "FAILED"
            out["code"] = code
            out["message"] = task.outcome.message or CODE_MESSAGE.get(code, "Task failed.")
            return {"request_id": request_id, "output": out}
        duration = params.get("duration", 5)
        out["task_status"] = "SUCCEEDED"
        out["orig_prompt"] = (body.get("input") or {}).get("prompt", "")
        out["video_url"] = task.video_url
        usage: dict[str, Any] = {
            "duration": duration,
            "input_video_duration": 0,
            "output_video_duration": duration,
            "video_count": 1,
            "SR": 720 if params.get("resolution") == "720P" else 1080,
        }
        if body.get("model") == "wan2.6-i2v-flash":
            usage["audio"] = bool(params.get("audio", True))
        return {"request_id": request_id, "output": out, "usage": usage}
