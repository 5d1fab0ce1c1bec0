"""Fake xAI Grok Imagine video API (provider-apis.md section 3).

``POST /v1/videos/generations`` -> ``{"request_id"}``; ``GET /v1/videos/{request_id}`` answers
HTTP 202 ``{"status":"pending","progress":n}`` until done. A client is configured with
``api_base`` (= base_url + "/v1").

``POST /v1/videos/extensions`` (docs.x.ai, Video Extension): ``{model, prompt, video: {url},
duration?}``; the source an MP4 of 2-15 s, 2-10 s added (default 6), no ``aspect_ratio`` or
``resolution``; only ``grok-imagine-video`` (1.5: 400 "Video extension is not supported for this
model."). The finished request's video is the whole video (``extension_result`` bytes).
"""

from __future__ import annotations

import hmac
import uuid
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
    is_http_url,
    is_int,
    parse_data_uri,
    type_name,
)

__all__ = ["XaiFake"]


def mp4_seconds(data: bytes) -> float | None:
    """An MP4's duration from its frames (None when it does not decode)."""
    import io

    import av

    try:
        with av.open(io.BytesIO(data)) as c:
            stream = c.streams.video[0]
            n = sum(1 for _ in c.decode(stream))
            rate = stream.average_rate
            return n / float(rate) if rate else None
    except Exception:
        return None

CREATE_PATH = "/v1/videos/generations"
EXTEND_PATH = "/v1/videos/extensions"
STATUS_PREFIX = "/v1/videos/"
MODEL = "grok-imagine-video"
MODELS = ("grok-imagine-video", "grok-imagine-video-1.5")
ALLOWED_KEYS = frozenset({"model", "prompt", "image", "duration", "aspect_ratio", "resolution", "user"})
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
INVALID_ARGUMENT = "Client specified an invalid argument"


def mask_key(key: str) -> str:
    return f"{key[:2]}***{key[-2:]}" if len(key) > 4 else "***"


class XaiFake(FakeServer):
    """Strict fake of xAI's video generation API.

    Outcomes: ``succeed``, ``moderated`` (done, ``respect_moderation`` false, empty url),
    ``failed`` (``{"status":"failed","error":{...}}``), ``expired`` (``{"status":"expired"}``).
    ``pending_status`` (default 202) is the HTTP status of pending polls.
    """

    OUTCOMES: ClassVar[tuple[str, ...]] = ("succeed", "moderated", "failed", "expired")
    API_PREFIX: ClassVar[str] = "/v1"

    def __init__(self, api_key: str = "xai-test-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.pending_status = 202

    # ---- helpers for tests ----------------------------------------------------------------

    @staticmethod
    def error_body(message: str, shape: str = "flat", *, code: Any = None, type: str | None = None) -> Any:
        """xAI error bodies in the three shapes clients meet: ``flat`` {code, error},
        ``nested`` {error:{message, type, param, code}}, ``string`` {error: message}."""
        if shape == "flat":
            return {"code": code if code is not None else INVALID_ARGUMENT, "error": message}
        if shape == "nested":
            return {
                "error": {
                    "message": message,
                    "type": type or "invalid_request_error",
                    "param": None,
                    "code": code,
                }
            }
        if shape == "string":
            return {"error": message}
        raise ValueError("shape must be flat, nested or string")

    def credits_exhausted(self, times: int = 1) -> None:
        """The next ``times`` creates answer 429 ``{"code":429,"error":"You ran out of credits."}``."""
        self.inject(
            f"POST {CREATE_PATH}",
            status=429,
            json={"code": 429, "error": "You ran out of credits."},
            times=times,
        )

    def rate_limited(
        self, retry_after: int | float = 1, times: int = 1, match: str = f"POST {CREATE_PATH}"
    ) -> None:
        """The next ``times`` matching requests answer 429 with ``Retry-After`` and a rate-limit message."""
        self.inject(
            match,
            status=429,
            json={
                "code": "Some resource has been exhausted",
                "error": f"Too many requests: rate limit exceeded for this team. Retry after {retry_after} second(s).",
            },
            headers={"Retry-After": str(retry_after)},
            times=times,
        )

    # ---- routing --------------------------------------------------------------------------

    def route(self, req: Recorded) -> Route | None:
        if req.path == CREATE_PATH and req.method == "POST":
            return Route("create", self._create, self._check_create)
        if req.path == EXTEND_PATH and req.method == "POST":
            return Route("extend", self._create, self._check_extend)
        if req.path.startswith(STATUS_PREFIX) and req.method == "GET":
            rest = req.path[len(STATUS_PREFIX) :]
            if rest and "/" not in rest and rest not in ("generations", "extensions"):
                return Route("status", self._status, self._check_auth)
        return None

    def unknown_route(self, req: Recorded) -> Reply:
        return Reply.of_json(
            404, {"code": "Some requested entity was not found", "error": f"No route {req.path}"}
        )

    def _check_auth(self, req: Recorded) -> Reply | None:
        where = f"{req.method} {req.path}"
        h = req.header("authorization")
        if h is None or not h.strip():
            self.violation(f"{where}: missing Authorization header")
            return Reply.of_json(
                400,
                self.error_body(
                    "No API key provided. Provide it in the Authorization header as 'Bearer <key>'."
                ),
            )
        token = h[7:] if h.startswith("Bearer ") else ""
        if not token or token != token.strip():
            self.violation(f"{where}: Authorization must be 'Bearer <key>', got {h[:12]!r}...")
            return Reply.of_json(400, self.error_body("Invalid Authorization header."))
        if not hmac.compare_digest(token.encode(), self.api_key.encode()):
            self.auth_failure(f"{where}: unknown API key")
            return Reply.of_json(
                400,
                self.error_body(
                    f"Incorrect API key provided: {mask_key(token)}. "
                    "You can obtain an API key from https://console.x.ai."
                ),
            )
        return None

    # ---- create ---------------------------------------------------------------------------

    def _check_create(self, req: Recorded) -> Reply | None:
        denied = self._check_auth(req)
        if denied is not None:
            return denied
        p = Problems("videos/generations")
        ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            p.add(f"Content-Type must be application/json, got {req.header('content-type')!r}")
            return self.reject(
                p,
                Reply.of_json(415, self.error_body("Expected request with `Content-Type: application/json`")),
            )
        body = req.json
        if not isinstance(body, dict):
            p.add(f"body must be a JSON object, got {type_name(body) if req.body else 'nothing'}")
            return self.reject(p, self._unprocessable(p.first))
        # shape problems (unknown/missing fields, wrong types) -> 422, value problems -> 400
        shape = Problems("videos/generations")
        check_keys(shape, body, ALLOWED_KEYS, "")
        for key in ("model", "prompt"):
            if key not in body:
                shape.add(f"missing field `{key}`")
        for key in ("model", "prompt", "aspect_ratio", "resolution", "user"):
            if key in body and not isinstance(body[key], str):
                shape.add(f"field '{key}' must be a string, got {type_name(body[key])}")
        if "duration" in body and not is_int(body["duration"]):
            shape.add(f"field 'duration' must be an integer, got {type_name(body['duration'])}")
        if "image" in body:
            img = body["image"]
            if not isinstance(img, dict):
                shape.add(f"field 'image' must be an object {{url}}, got {type_name(img)}")
            else:
                check_keys(shape, img, frozenset({"url"}), "image.")
                if not isinstance(img.get("url"), str):
                    shape.add(f"field 'image.url' must be a string, got {type_name(img.get('url'))}")
        if shape:
            return self.reject(shape, self._unprocessable(shape.first))
        self.validate_values(body, p)
        if p:
            return self.reject(p, Reply.of_json(400, self.error_body(p.first)))
        return None

    def _unprocessable(self, detail: str) -> Reply:
        return Reply.of_json(
            422,
            {
                "code": "Unprocessable Entity",
                "error": f"Failed to deserialize the JSON body into the target type: {detail}",
            },
        )

    def _check_extend(self, req: Recorded) -> Reply | None:
        denied = self._check_auth(req)
        if denied is not None:
            return denied
        p = Problems("videos/extensions")
        body = req.json
        if not isinstance(body, dict):
            p.add(f"body must be a JSON object, got {type_name(body)}")
            return self.reject(p, self._unprocessable(p.first))
        shape = Problems("videos/extensions")
        check_keys(shape, body, frozenset({"model", "prompt", "video", "duration", "user"}), "")
        for key in ("model", "prompt", "video"):
            if key not in body:
                shape.add(f"missing field `{key}`")
        video = body.get("video")
        if not isinstance(video, dict) or set(video) != {"url"} or not isinstance(video.get("url"), str):
            shape.add(f"field 'video' must be an object {{url}}, got {str(video)[:60]!r}")
        if "duration" in body and not is_int(body["duration"]):
            shape.add(f"field 'duration' must be an integer, got {type_name(body['duration'])}")
        if shape:
            return self.reject(shape, self._unprocessable(shape.first))
        if body["model"] == "grok-imagine-video-1.5":
            p.add("Video extension is not supported for this model.")
        elif body["model"] != MODEL:
            p.add(f"field 'model' must be {MODEL!r}, got {body['model']!r}")
        if not str(body["prompt"]).strip():
            p.add("field 'prompt' must not be empty")
        if "duration" in body and not 2 <= body["duration"] <= 10:
            p.add(f"Duration must be between 2 and 10 seconds, got {body['duration']}")
        url = body["video"]["url"]
        if not is_http_url(url):
            parsed = parse_data_uri(url) if url.startswith("data:") else None
            if parsed is None or parsed[0] != "video/mp4":
                p.add(f"field 'video.url' must be an http(s) URL or a data:video/mp4;base64, URI, got {url[:24]!r}...")
            else:
                seconds = mp4_seconds(parsed[1])
                if seconds is None:
                    p.add("field 'video.url' is not a decodable MP4")
                elif not 2 <= seconds <= 15:
                    p.add(f"The input video duration must be between 2 and 15 seconds, got {seconds:.2f}")
        if p:
            return self.reject(p, Reply.of_json(400, self.error_body(p.first)))
        return None

    def validate_values(self, body: dict[str, Any], p: Problems) -> None:
        if body["model"] not in MODELS:
            p.add(f"field 'model' must be one of {', '.join(MODELS)}, got {body['model']!r}")
        if not body["prompt"].strip():
            p.add("field 'prompt' must not be empty")
        if "duration" in body and not 1 <= body["duration"] <= 15:
            p.add(f"field 'duration' must be in 1..15, got {body['duration']}")
        allowed = "'480p', '720p' or '1080p'" if body["model"] == "grok-imagine-video-1.5" else "'480p' or '720p'"
        if "resolution" in body and f"'{body['resolution']}'" not in allowed:
            p.add(f"field 'resolution' must be {allowed} for {body['model']}, got {body['resolution']!r}")
        if "aspect_ratio" in body and body["aspect_ratio"] not in ASPECT_RATIOS:
            p.add(
                f"field 'aspect_ratio' must be one of {', '.join(ASPECT_RATIOS)}, got {body['aspect_ratio']!r}"
            )
        if "image" in body:
            url = body["image"]["url"]
            if is_http_url(url):
                return
            parsed = parse_data_uri(url) if url.startswith("data:") else None
            if parsed is None:
                p.add(
                    f"field 'image.url' must be an http(s) URL or a data:image/...;base64, URI, got {url[:24]!r}..."
                )
                return
            mime, data = parsed
            check_image_bytes(
                p,
                "image.url",
                data,
                allowed=("image/jpeg", "image/png", "image/webp"),
                max_bytes=20 * 1024 * 1024,
                declared=mime,
            )

    def _create(self, req: Recorded) -> Reply:
        task = self._new_task(str(uuid.uuid4()), req.json)
        return Reply.of_json(200, {"request_id": task.id})

    # ---- status ---------------------------------------------------------------------------

    def _status(self, req: Recorded) -> Reply:
        rid = req.path[len(STATUS_PREFIX) :]
        task = self.find_task(rid)
        if task is None:
            return Reply.of_json(
                404,
                {
                    "code": "Some requested entity was not found",
                    "error": f"Video generation request {rid} not found.",
                },
            )
        if task.expired:
            return Reply.of_json(200, {"status": "expired"})
        done = self.poll_task(task)
        if not done:
            progress = round(self.progress(task) * 100)
            return Reply.of_json(self.pending_status, {"status": "pending", "progress": progress})
        return Reply.of_json(200, self.done_body(task))

    def done_body(self, task: Task) -> dict[str, Any]:
        body: dict[str, Any] = task.body or {}
        duration = body.get("duration", 8)
        kind = task.outcome.kind
        if kind == "expired":
            return {"status": "expired"}
        if kind == "failed":
            return {
                "status": "failed",
                "video": {"duration": 0, "respect_moderation": True},
                "model": "",
                "error": {
                    "code": str(task.outcome.code or "internal_error"),
                    "message": task.outcome.message or "Video generation failed.",
                },
            }
        if kind == "moderated":
            return {
                "status": "done",
                "video": {"url": "", "duration": duration, "respect_moderation": False},
                "model": MODEL,
                "progress": 100,
            }
        return {
            "status": "done",
            "video": {"url": task.video_url, "duration": duration, "respect_moderation": True},
            "model": MODEL,
            "progress": 100,
            "usage": {"cost_in_usd_ticks": 500_000_000 * int(duration)},
        }
