"""The create request a job would send, built without sending anything (for `dry_run: true`).

Each provider's `create_request` builds it (the very request its `start` sends), so the preview
and the real request cannot drift apart; credential headers are dropped. Job-specific values are placeholders:
the job id is `<job_id>` (Kling's `external_task_id`, the Gateway's `idempotency-key`), and every
base64 image is elided to `<base64 image: N bytes, sha256 PREFIX>`. `elide` applies the same
replacement to a request that was really sent, so the two can be compared whole.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

import httpx

from ..providers.base import JobContext
from ..settings import Settings
from .requests import GenerationRequest, StoredClip, StoredImage

JOB_ID = "<job_id>"
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_MIN_B64 = 64
_SECRET_HEADERS = frozenset({"authorization"})


def image_placeholder(data: bytes) -> str:
    return f"<base64 image: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}>"


class PreviewContext(JobContext):
    """A JobContext over images held in memory, whose base64 is the placeholder itself."""

    def __init__(self, request: GenerationRequest, images: dict[str, bytes]) -> None:
        super().__init__(JOB_ID, request)
        self._images = images

    def image_bytes(self, image: StoredImage) -> bytes:
        return self._images[image.path]

    def raw_b64(self, image: StoredImage) -> str:
        return image_placeholder(self.image_bytes(image))

    def video_url_or_data_uri(self, clip: StoredClip) -> str:
        if clip.source.startswith(("http://", "https://")):
            return clip.source
        return f"data:video/mp4;base64,<base64 video: {clip.bytes} bytes, sha256 {clip.sha256[:16]}>"


def preview_create_request(
    client: httpx.AsyncClient, settings: Settings, request: GenerationRequest, images: dict[str, bytes]
) -> dict[str, Any]:
    """{method, url, headers (no credentials), body, note?} of the request that would create the job."""
    from ..providers.registry import make_provider  # the provider classes, exactly as a job would get them

    if request.route == "local":
        return {
            "method": None,
            "url": None,
            "headers": {},
            "body": {"tool": request.tool, "duration": request.duration, "options": request.options},
            "note": "local/preview renders on this machine: no request is sent anywhere.",
        }
    from ..catalog import MODELS

    provider = make_provider(client, settings, MODELS[request.model].provider, request.route)
    method, url, headers, body = provider.create_request(PreviewContext(request, images))
    out: dict[str, Any] = {
        "method": method,
        "url": url,
        "headers": {k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS},
        "body": body,
    }
    if provider.create_note:
        out["note"] = provider.create_note
    return out


def elide(value: Any, job_id: str | None = None) -> Any:
    """A sent JSON body (or headers) with base64 images and the job id replaced by the preview's placeholders."""
    if isinstance(value, dict):
        return {k: elide(v, job_id) for k, v in value.items() if str(k).lower() not in _SECRET_HEADERS}
    if isinstance(value, list):
        return [elide(v, job_id) for v in value]
    if isinstance(value, str):
        return _elide_str(value, job_id)
    return value


def _elide_str(s: str, job_id: str | None) -> str:
    if s.startswith("data:") and ";base64," in s:
        head, _, payload = s.partition(";base64,")
        data = _decode(payload)
        if data is not None:
            return f"{head};base64,{image_placeholder(data)}"
    if len(s) >= _MIN_B64 and _B64.match(s):
        data = _decode(s)
        if data is not None:
            return image_placeholder(data)
    if job_id:
        s = s.replace(job_id, JOB_ID)
    return s


def _decode(payload: str) -> bytes | None:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
