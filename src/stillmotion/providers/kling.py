"""KlingAI direct: the legacy image-to-video API (`POST /v1/videos/image2video`).

Auth is `KLINGAI_API_KEY` as a Bearer token, or an HS256 JWT `{iss: AK, exp: now+1800,
nbf: now-5}` signed with the secret key, fresh for every request. Every create carries
`external_task_id` = our job id, so a create whose answer was lost can be found again (and a
second create with the same id is refused by Kling, never billed twice).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt

from ..catalog import MODELS
from ..errors import (
    AuthError,
    ConcurrencyLimited,
    ContentFiltered,
    MissingCredentials,
    ProviderError,
    ProviderRejectedInput,
    QuotaError,
    RateLimited,
    StillmotionError,
)
from ..media.net import path_segment
from ..pricing import kling_actual
from ..scrub import register_derived
from ._http import json_body, retry_after_seconds, send
from .base import JobContext, Provider, StartResult, Status, VideoResult, camera_payload, trajectory_payload

PATH = "/v1/videos/image2video"
RESULT_TTL_S = 30 * 24 * 3600
_FILTER_WORDS = ("risk control", "safety", "sensitive", "inappropriate", "content policy", "violat")


class _DuplicateExternalId(StillmotionError):
    pass


class KlingProvider(Provider):
    name = "klingai"
    route = "direct"

    def _token(self) -> str:
        s = self.settings
        if s.kling_api_key is not None:
            return s.kling_api_key.reveal()
        if s.kling_access_key is not None and s.kling_secret_key is not None:
            now = int(time.time())
            token = jwt.encode(
                {"iss": s.kling_access_key.reveal(), "exp": now + 1800, "nbf": now - 5},
                s.kling_secret_key.reveal(),
                algorithm="HS256",
                headers={"alg": "HS256", "typ": "JWT"},
            )
            register_derived(token)  # an echoed JWT is scrubbed like the keys it was made from
            return token
        raise MissingCredentials("KlingAI needs KLINGAI_API_KEY (or KLINGAI_ACCESS_KEY + KLINGAI_SECRET_KEY).")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token()}", "Content-Type": "application/json"}

    # -- request body ----------------------------------------------------------------------

    def build_body(self, job: JobContext) -> dict[str, Any]:
        req = job.request
        spec = MODELS[req.model]
        opts = req.options
        body: dict[str, Any] = {"model_name": spec.direct_name}
        if req.prompt:
            body["prompt"] = req.prompt
        body["image"] = job.url_or_raw_b64(req.image)
        if req.end_image is not None:
            body["image_tail"] = job.url_or_raw_b64(req.end_image)
        if req.negative_prompt:
            body["negative_prompt"] = req.negative_prompt
        if "sound" in opts:
            body["sound"] = opts["sound"]
        if "cfg_scale" in opts:
            body["cfg_scale"] = opts["cfg_scale"]
        if "mode" in opts:
            body["mode"] = opts["mode"]
        if req.camera is not None:
            body["camera_control"] = camera_payload(req.camera)
        if req.static_mask is not None:
            body["static_mask"] = job.url_or_raw_b64(req.static_mask)
        if req.dynamic_masks:
            body["dynamic_masks"] = [
                {
                    "mask": job.url_or_raw_b64(m.image),
                    "trajectories": trajectory_payload(m.trajectory),
                }
                for m in req.dynamic_masks
            ]
        if opts.get("voices"):
            body["voice_list"] = [{"voice_id": v} for v in opts["voices"]]
        if "watermark" in opts:
            body["watermark_info"] = {"enabled": bool(opts["watermark"])}
        body["duration"] = str(req.duration)
        body["external_task_id"] = job.job_id
        return body

    # -- interface -------------------------------------------------------------------------

    async def start(self, job: JobContext) -> StartResult:
        body = self.build_body(job)
        resp = await send(self.client, "POST", self._base + PATH, headers=self._headers(), json=body, creates=True)
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
            if 1000 <= code <= 1004 or code in (1103, 1304):
                return AuthError(text, provider_code=pcode)
            if 1100 <= code <= 1102:
                return QuotaError(text, provider_code=pcode)
            if code == 1201 and creating:
                return _DuplicateExternalId(text, provider_code=pcode)
            if code in (1200, 1201):
                return ProviderRejectedInput(text, provider_code=pcode)
            if code in (1202, 1203):
                return ProviderError(text, provider_code=pcode)
            if code in (1300, 1301):
                return ContentFiltered(text, provider_code=pcode)
            if code == 1302:
                return RateLimited(text, provider_code=pcode, retry_after=retry_after)
            if code == 1303:
                return ConcurrencyLimited(text, provider_code=pcode, retry_after=max(1.0, retry_after or 1.0))
            if 5000 <= code <= 5002:
                return ProviderError(text, provider_code=pcode, retryable=True, retry_after=retry_after)
        if resp.status_code == 401:
            return AuthError(text, provider_code=pcode)
        if resp.status_code == 429:
            return RateLimited(text, provider_code=pcode, retry_after=retry_after)
        if resp.status_code >= 500 or resp.status_code == 408:
            return ProviderError(text, provider_code=pcode, retryable=True, retry_after=retry_after)
        return ProviderError(text, provider_code=pcode)

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
                err = ContentFiltered(f"Kling: {msg}")
            else:
                err = ProviderError(f"Kling task failed: {msg}")
            return Status("failed", error=err)
        return Status("pending")
