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
from typing import Any

import httpx

from ..catalog import MODELS
from ..errors import (
    AuthError,
    ContentFiltered,
    Expired,
    MissingCredentials,
    ProviderError,
    ProviderRejectedInput,
    QuotaError,
    RateLimited,
    StillmotionError,
)
from ..media.net import path_segment
from ..scrub import scrub
from ._http import json_body, retry_after_seconds, send
from .base import JobContext, Provider, StartResult, Status, VideoResult

CREATE_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"
TASKS_PATH = "/api/v1/tasks"
RESULT_TTL_S = 24 * 3600
"""DashScope keeps task ids and result URLs for 24 hours."""

FILTER_CODES = frozenset({"DataInspectionFailed", "IPInfringementSuspect"})
QUOTA_CODES = frozenset({"Arrearage", "Throttling.AllocationQuota"})
RETRY_CODES = frozenset({"InternalError", "ModelUnavailable", "InternalError.Algo", "SystemError"})
OPTIONAL_PARAMETERS = ("prompt_extend", "seed", "watermark")
"""Option keys sent as `parameters.*` under the same name only when the user set them."""


class WanProvider(Provider):
    name = "alibaba"
    route = "direct"

    def _key(self) -> str:
        if self.settings.alibaba_api_key is None:
            raise MissingCredentials("Alibaba Wan needs ALIBABA_API_KEY (or DASHSCOPE_API_KEY).")
        return self.settings.alibaba_api_key.reveal()

    def _headers(self, *, create: bool = False) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._key()}"}
        if create:
            headers["Content-Type"] = "application/json"
            headers["X-DashScope-Async"] = "enable"
        return headers

    # -- request body ----------------------------------------------------------------------

    def build_body(self, job: JobContext) -> dict[str, Any]:
        req = job.request
        spec = MODELS[req.model]
        opts = req.options
        inp: dict[str, Any] = {}
        if req.prompt:
            inp["prompt"] = req.prompt
        inp["img_url"] = job.url_or_data_uri(req.image)
        if req.negative_prompt:
            inp["negative_prompt"] = req.negative_prompt
        params: dict[str, Any] = {
            "resolution": opts.get("resolution") or spec.default_resolution,
            "duration": int(req.duration),
        }
        if spec.audio:
            # DashScope's own default is audio on (billed); ours is off unless asked
            params["audio"] = bool(opts.get("audio", False))
        for key in OPTIONAL_PARAMETERS:
            if key in opts and opts[key] is not None:
                params[key] = opts[key]
        return {"model": spec.direct_name, "input": inp, "parameters": params}

    # -- interface -------------------------------------------------------------------------

    async def start(self, job: JobContext) -> StartResult:
        body = self.build_body(job)
        resp = await send(
            self.client,
            "POST",
            self._base + CREATE_PATH,
            headers=self._headers(create=True),
            json=body,
            creates=True,
        )
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

    def _scrub(self, text: str) -> str:
        return scrub(text)  # the one scrubber: every credential and derived token

    def _error(self, resp: httpx.Response, body: Any) -> StillmotionError:
        code = str(body.get("code") or "") if isinstance(body, dict) else ""
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
        message = self._scrub(message or resp.reason_phrase or f"HTTP {resp.status_code}")
        rid = body.get("request_id") if isinstance(body, dict) else None
        text = f"DashScope: {message} ({code or 'HTTP'} {resp.status_code}" + (
            f", request_id {rid})" if rid else ")"
        )
        pcode = code or str(resp.status_code)
        status = resp.status_code
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
        if code in RETRY_CODES or status >= 500 or status == 408:
            return ProviderError(text, provider_code=pcode, retryable=True, retry_after=retry_after)
        if status in (401, 403):
            return AuthError(text, provider_code=pcode)
        if status == 429:
            return RateLimited(text, provider_code=pcode, retry_after=retry_after)
        if status == 400:
            return ProviderRejectedInput(text, provider_code=pcode)
        return ProviderError(text, provider_code=pcode)

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
            message = self._scrub(
                str(
                    output.get("message")
                    or ("the task was canceled" if st == "CANCELED" else "no reason given")
                )
            )
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
