"""Vercel Blob: public URLs for local inputs on routes that need URLs, deleted when the job ends.

Uploaded (at submit, before the job is stored, so a refusal spends nothing):

* always on URL-only routes: the start image of Wan through the Vercel AI Gateway, and Wan's
  driving audio (`wan.audio_url`) on any route, when they are not public URLs already;
* on the Gateway, every inline image when the request body would pass
  STILLMOTION_GATEWAY_MAX_BODY_BYTES (the Gateway answers 413 to large bodies).

Names are unguessable (`stillmotion/<128 random bits>/<argument>.<ext>`). The blob URLs are stored
in the job's request (`blobs`), so whichever process sees the job end deletes them; a marker file
in the job's input folder records that it was done.

The official Python SDK (`vercel-blob`, also pulled in by `vercel`) runs on its own HTTP stack
(httpx2 + vercel-internal-core) and cannot take this server's httpx client, so this module speaks
the same small HTTP API (version 12) itself, through the shared client and its timeouts.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from .catalog import MODELS
from .errors import MissingCredentials, ProviderError, StillmotionError
from .jobs.async_store import AsyncJobStore
from .providers._http import API_TIMEOUT
from .providers.base import JobContext
from .providers.gateway import GatewayProvider
from .requests import GenerationRequest, StoredAudio, StoredImage
from .settings import DIRECT_KEY_VARS, Settings

log = logging.getLogger(__name__)

API_VERSION = "12"
UPLOAD_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=120.0, pool=30.0)
DONE_MARKER = ".blobs-deleted"
CLEANUP_TIMEOUT_S = 30.0
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/bmp": "bmp", "audio/wav": "wav",
        "audio/mpeg": "mp3"}  # fmt: skip


@dataclass
class Need:
    argument: str
    target: StoredImage | StoredAudio
    why: str


def _inline_images(req: GenerationRequest) -> list[tuple[str, StoredImage]]:
    """The images a Gateway body would carry inline (base64)."""
    out: list[tuple[str, StoredImage]] = []
    if req.image is not None:
        out.append(("start_image" if req.tool == "interpolate_frames" else "image", req.image))
    if MODELS[req.model].provider == "klingai":
        if req.end_image is not None:
            out.append(("end_image", req.end_image))
        if req.static_mask is not None:
            out.append(("static_mask", req.static_mask))
        out += [(f"dynamic_masks[{i}].mask", m.image) for i, m in enumerate(req.dynamic_masks)]
    return [(a, img) for a, img in out if img.url is None]


def needed_uploads(req: GenerationRequest, settings: Settings, gateway: GatewayProvider | None) -> list[Need]:
    """What must become a public URL before this request can be sent. Builds the Gateway body to
    measure it (base64 of the images): CPU, call from a worker thread."""
    spec = MODELS[req.model]
    needs: list[Need] = []
    if req.audio is not None and req.audio.url is None:
        needs.append(Need("wan.audio_url", req.audio, "DashScope takes the driving audio as a URL only"))
    if req.route != "gateway":
        return needs
    inline = _inline_images(req)
    if spec.provider == "alibaba":
        needs += [Need(a, img, "the Gateway's Wan route takes image URLs only") for a, img in inline]
    elif inline and gateway is not None:
        size = len(json.dumps(gateway.build_body(JobContext("job_measure", req)), separators=(",", ":")))
        if size > settings.gateway_max_body_bytes:
            why = (
                f"the Gateway request would be {size} bytes, over STILLMOTION_GATEWAY_MAX_BODY_BYTES="
                f"{settings.gateway_max_body_bytes} (the Gateway answers 413 to larger bodies)"
            )
            needs += [Need(a, img, why) for a, img in inline]
    return needs


def refusal(req: GenerationRequest, needs: list[Need]) -> MissingCredentials:
    spec = MODELS[req.model]
    names = ", ".join(dict.fromkeys(n.argument for n in needs))
    text = (
        f"{names} must reach {spec.id} as a public URL ({needs[0].why}). Set BLOB_READ_WRITE_TOKEN and "
        "stillmotion hosts it on Vercel Blob for the job's life (deleted when the job ends), or pass an http(s) URL"
    )
    if req.route == "gateway" and any(not isinstance(n.target, StoredAudio) for n in needs):
        text += (
            f", or use the direct route (STILLMOTION_ROUTE=direct with {DIRECT_KEY_VARS[spec.provider]}), "
            "which takes local images inline"
        )
    return MissingCredentials(text + ".")


class BlobClient:
    """The Vercel Blob HTTP API (put, delete) over the server's shared httpx client."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        if settings.blob_token is None:
            raise MissingCredentials("Vercel Blob needs BLOB_READ_WRITE_TOKEN.")
        self.client = client
        self.base = settings.base_urls.get("blob", "https://vercel.com/api/blob").rstrip("/")
        self._token = settings.blob_token

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._token.reveal()}", "x-api-version": API_VERSION}

    async def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            resp = await self.client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise ProviderError(f"Vercel Blob: {method} failed: {type(exc).__name__}", retryable=True) from exc
        if resp.status_code != 200:
            message = ""
            try:
                body = resp.json()
                err = body.get("error") if isinstance(body, dict) else None
                message = str(err.get("message") or "") if isinstance(err, dict) else ""
            except ValueError:
                pass
            raise ProviderError(
                f"Vercel Blob: {message or resp.reason_phrase} (HTTP {resp.status_code})",
                provider_code=str(resp.status_code), retryable=resp.status_code >= 500 or resp.status_code == 429,
            )  # fmt: skip
        return resp

    async def put(self, data: bytes, pathname: str, content_type: str) -> str:
        headers = {
            **self._headers(),
            "x-vercel-blob-access": "public",
            "x-content-type": content_type,
            "x-add-random-suffix": "0",
            "x-allow-overwrite": "0",
        }
        resp = await self._send(
            "PUT", self.base + "/", params={"pathname": pathname}, headers=headers, content=data, timeout=UPLOAD_TIMEOUT
        )
        try:
            url = resp.json()["url"]
        except (ValueError, KeyError, TypeError):
            raise ProviderError("Vercel Blob answered the upload without a url") from None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ProviderError("Vercel Blob answered the upload with an unusable url")
        return url

    async def delete(self, urls: list[str]) -> None:
        for start in range(0, len(urls), 1000):
            await self._send(
                "POST", self.base + "/delete", headers={**self._headers(), "content-type": "application/json"},
                json={"urls": urls[start : start + 1000]}, timeout=API_TIMEOUT,
            )  # fmt: skip


async def host_inputs(req: GenerationRequest, client: httpx.AsyncClient, settings: Settings) -> None:
    """Upload what the request's route needs as URLs; sets their `url` and lists them in `req.blobs`.
    Raises MissingCredentials (naming BLOB_READ_WRITE_TOKEN) before any upload when there is no token."""
    gateway = GatewayProvider(client, settings) if req.route == "gateway" else None
    needs = await anyio.to_thread.run_sync(needed_uploads, req, settings, gateway)
    if not needs:
        return
    if settings.blob_token is None:
        raise refusal(req, needs)
    blob = BlobClient(client, settings)
    folder = f"stillmotion/{secrets.token_hex(16)}"
    try:
        for need in needs:
            data = await anyio.to_thread.run_sync(Path(need.target.path).read_bytes)
            ext = _EXT.get(need.target.mime, "bin")
            name = need.argument.replace("[", "_").replace("]", "").replace(".", "_")
            url = await blob.put(data, f"{folder}/{name}.{ext}", need.target.mime)
            need.target.url = url
            req.blobs.append(url)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await delete_quietly(blob, req.blobs)
        raise
    log.info("hosted %d input(s) on Vercel Blob", len(req.blobs))


async def delete_quietly(blob: BlobClient, urls: list[str]) -> bool:
    if not urls:
        return True
    try:
        await blob.delete(urls)
        return True
    except StillmotionError as exc:
        log.warning("could not delete %d Vercel Blob file(s): %s", len(urls), exc.message)
        return False


class BlobJanitor:
    """Deletes a job's blobs once it has ended, in whichever process sees it end."""

    def __init__(self, store: AsyncJobStore, settings: Settings, client: httpx.AsyncClient) -> None:
        self.store = store
        self.settings = settings
        self.client = client
        self._busy: set[str] = set()
        self._tg: anyio.abc.TaskGroup | None = None

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Deletions run as their own tasks (never holding up notifications); old leftovers first."""
        self._tg = tg
        tg.start_soon(self.sweep, name="blob sweep")

    def _marker(self, job_id: str) -> Path:
        return self.settings.inputs_dir / job_id / DONE_MARKER

    async def on_change(self, job_id: str) -> None:
        row = await self.store.get(job_id)
        if row is None or not row.terminal:
            return
        urls = [u for u in (row.request.get("blobs") or []) if isinstance(u, str)]
        if not urls or job_id in self._busy or self._marker(job_id).exists():
            return
        if self.settings.blob_token is None:
            log.warning("job %s ended with %d Vercel Blob file(s) but BLOB_READ_WRITE_TOKEN is unset", job_id, len(urls))
            return
        self._busy.add(job_id)
        try:
            if await delete_quietly(BlobClient(self.client, self.settings), urls):
                marker = self._marker(job_id)
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text("\n".join(urls))
                log.info("job %s: deleted %d Vercel Blob file(s)", job_id, len(urls))
        finally:
            self._busy.discard(job_id)

    async def sweep(self, limit: int = 500) -> None:
        """At start: jobs that ended while no process could delete their blobs."""
        try:
            rows = await self.store.recent(status=None, limit=limit)
        except Exception:  # the store is down at start-up: the next start sweeps
            log.warning("blob sweep skipped: the job store did not answer", exc_info=True)
            return
        for row in rows:
            if row.terminal and row.request.get("blobs"):
                await self._clean(row.id)

    async def _clean(self, job_id: str) -> None:
        # shielded and bounded: a shutdown right after a job ended still deletes its blobs (the
        # sweep at the next start catches what a crash left)
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT_S):
            try:
                await self.on_change(job_id)
            except Exception:  # cleanup must never break anything else
                log.warning("blob cleanup of job %s failed", job_id, exc_info=True)

    def wrap(
        self, on_change: Callable[[str], Coroutine[Any, Any, None]] | None
    ) -> Callable[[str], Coroutine[Any, Any, None]]:
        """The runner's change callback, plus: a job that ended gets its blobs deleted."""

        async def changed(job_id: str) -> None:
            if on_change is not None:
                await on_change(job_id)  # subscribers first: cleanup never delays a notification
            if self._tg is not None:
                row = await self.store.get(job_id)
                if row is not None and row.terminal and row.request.get("blobs"):
                    self._tg.start_soon(self._clean, job_id, name=f"blob cleanup {job_id}")

        return changed
