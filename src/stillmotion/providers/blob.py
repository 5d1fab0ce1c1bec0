"""Vercel Blob: public URLs for local inputs on routes that need URLs, deleted when the job ends.

Uploaded (at submit, before the job is stored, so a refusal spends nothing):

* always on URL-only routes: the start image of Wan through the Vercel AI Gateway, and Wan's
  driving audio (`wan.audio_url`) on any route, when they are not public URLs already;
* on the Gateway, every inline image when the request body would pass
  STILLMOTION_GATEWAY_MAX_BODY_BYTES (the Gateway answers 413 to large bodies).

Names are unguessable (`stillmotion/<128 random bits>/<argument>.<ext>`). Before the first byte
goes up, the intent is written to the store (`UploadLedger`: the job id, the folder, the process),
so an upload is never without a record, even when its process is killed mid-way. The blob URLs
are stored in the job's request (`blobs`), so whichever process sees the job end deletes them and
marks the record done (a marker file in the job's input folder records it too). A delete that
fails is retried with backoff for as long as the server runs; the sweep at start-up reads every
record not yet done: an ended job's blobs are deleted, and the folder of an upload whose process
died before the job was stored is listed and deleted.

The official Python SDK (`vercel-blob`, also pulled in by `vercel`) runs on its own HTTP stack
(httpx2 + vercel-internal-core) and cannot take this server's httpx client, so this module speaks
the same small HTTP API (version 12) itself, through the shared client and its timeouts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from ..catalog import MODELS
from ..errors import MissingCredentials, ProviderError, StillmotionError, Unavailable
from ..jobs.async_store import AsyncJobStore, StoreUnavailable
from ..jobs.ownership import owner_is_gone
from ..plan.requests import GenerationRequest, StoredAudio, StoredImage
from ..settings import Settings
from ._http import API_TIMEOUT
from .base import JobContext
from .families import FAMILIES
from .gateway import GatewayProvider

log = logging.getLogger(__name__)

API_VERSION = "12"
UPLOAD_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=120.0, pool=30.0)
DONE_MARKER = ".blobs-deleted"
CLEANUP_TIMEOUT_S = 30.0
DELETE_RETRY_CAP_S = 60.0
"""A failing delete is retried with backoff from STILLMOTION_RETRY_BASE_MS up to this, while the server runs."""
STALE_UPLOAD_S = 3600.0
"""An upload record with no job, whose process cannot be seen (another host), is garbage after this long."""
INTENT_PREFIX = "blob_upload:"
INTENT_HEAD = "blob_upload_head"
INTENT_TAIL = "blob_upload_tail"
INTENT_DONE = "-"
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
    if FAMILIES[MODELS[req.model].provider].gateway_inline_extras:
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
    if FAMILIES[spec.provider].gateway_urls_only:
        needs += [Need(a, img, "the Gateway's Wan route takes image URLs only") for a, img in inline]
    elif inline and gateway is not None:
        size = len(json.dumps(gateway.create_request(JobContext("job_measure", req)).body, separators=(",", ":")))
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
            f", or use the direct route (STILLMOTION_ROUTE=direct with {FAMILIES[spec.provider].key_hint}), "
            "which takes local images inline"
        )
    return MissingCredentials(text + ".")


class UploadLedger:
    """Upload records in the store's `meta` table, through its existing key/value methods.

    Records take the slots `blob_upload:0`, `blob_upload:1`, ... in order, each claimed with
    `meta_setdefault` (an atomic insert-if-absent in SQLite and PostgreSQL), starting from a tail
    hint; a slot is never removed, only overwritten with INTENT_DONE. So the claimed slots are
    always 0..n-1 with no gap, and a reader walking from the head hint (below it every record is
    done) to the first absent slot sees every record, whichever process wrote it. Every method
    runs on the store's own threads (`AsyncJobStore.run`); store faults raise StoreUnavailable.
    """

    def __init__(self, store: AsyncJobStore) -> None:
        self.store = store

    async def open(self, entry: dict[str, Any]) -> str:
        return await self.store.run(self._open, entry)

    async def update(self, key: str, entry: dict[str, Any]) -> None:
        await self.store.meta_set(key, json.dumps(entry, separators=(",", ":")))

    async def done(self, key: str) -> None:
        await self.store.meta_set(key, INTENT_DONE)

    async def pending(self) -> list[tuple[str, dict[str, Any]]]:
        return await self.store.run(self._pending)

    def _open(self, entry: dict[str, Any]) -> str:
        db = self.store.sync
        value = json.dumps({**entry, "nonce": secrets.token_hex(8)}, separators=(",", ":"))
        n = int(db.meta_get(INTENT_TAIL) or 0)
        while db.meta_setdefault(f"{INTENT_PREFIX}{n}", value) != value:
            n += 1
        db.meta_set(INTENT_TAIL, str(n + 1))  # a hint: a racing lower value only costs probes
        return f"{INTENT_PREFIX}{n}"

    def _pending(self) -> list[tuple[str, dict[str, Any]]]:
        db = self.store.sync
        head = int(db.meta_get(INTENT_HEAD) or 0)
        out: list[tuple[str, dict[str, Any]]] = []
        n, first_open = head, None
        while (raw := db.meta_get(f"{INTENT_PREFIX}{n}")) is not None:
            if raw != INTENT_DONE:
                out.append((f"{INTENT_PREFIX}{n}", _entry(raw)))
                first_open = n if first_open is None else first_open
            n += 1
        new_head = n if first_open is None else first_open
        if new_head > head:
            db.meta_set(INTENT_HEAD, str(new_head))
        return out


def _entry(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


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

    async def list_urls(self, prefix: str) -> list[str]:
        """The URLs of every blob whose pathname starts with `prefix` (`GET /?prefix=`, paged by cursor)."""
        urls: list[str] = []
        cursor: str | None = None
        for _ in range(100):
            params = {"prefix": prefix, "limit": "1000", **({"cursor": cursor} if cursor else {})}
            resp = await self._send("GET", self.base + "/", params=params, headers=self._headers(), timeout=API_TIMEOUT)
            try:
                body = resp.json()
                blobs = body["blobs"]
                urls += [str(b["url"]) for b in blobs if isinstance(b, dict) and b.get("url")]
            except (ValueError, KeyError, TypeError):
                raise ProviderError("Vercel Blob answered the list without blobs", retryable=True) from None
            cursor = body.get("cursor") if body.get("hasMore") else None
            if not cursor:
                break
        return urls

    async def delete(self, urls: list[str]) -> None:
        for start in range(0, len(urls), 1000):
            await self._send(
                "POST", self.base + "/delete", headers={**self._headers(), "content-type": "application/json"},
                json={"urls": urls[start : start + 1000]}, timeout=API_TIMEOUT,
            )  # fmt: skip


async def host_inputs(
    req: GenerationRequest,
    client: httpx.AsyncClient,
    settings: Settings,
    *,
    ledger: UploadLedger | None = None,
    job_id: str | None = None,
    owner: str | None = None,
) -> None:
    """Upload what the request's route needs as URLs; sets their `url` and lists them in `req.blobs`.
    Raises MissingCredentials (naming BLOB_READ_WRITE_TOKEN) before any upload when there is no token.
    With a ledger, the intent is recorded in the store before the first upload (`req.blob_intent`)."""
    gateway = GatewayProvider(client, settings) if req.route == "gateway" else None
    needs = await anyio.to_thread.run_sync(needed_uploads, req, settings, gateway)
    if not needs:
        return
    if settings.blob_token is None:
        raise refusal(req, needs)
    blob = BlobClient(client, settings)
    folder = f"stillmotion/{secrets.token_hex(16)}"
    entry: dict[str, Any] = {"job": job_id, "owner": owner, "prefix": folder + "/", "urls": [], "at": time.time()}
    if ledger is not None:
        try:
            req.blob_intent = await ledger.open(entry)
        except StoreUnavailable as fault:  # no record, no upload: nothing accepted, the caller retries
            raise Unavailable(f"the job was not accepted: {fault.message}") from fault
    try:
        for need in needs:
            data = await anyio.to_thread.run_sync(Path(need.target.path).read_bytes)
            ext = _EXT.get(need.target.mime, "bin")
            name = need.argument.replace("[", "_").replace("]", "").replace(".", "_")
            url = await blob.put(data, f"{folder}/{name}.{ext}", need.target.mime)
            need.target.url = url
            req.blobs.append(url)
        if ledger is not None and req.blob_intent is not None:
            await ledger.update(req.blob_intent, {**entry, "urls": list(req.blobs)})
    except BaseException:
        with anyio.CancelScope(shield=True):
            if await delete_quietly(blob, req.blobs) and ledger is not None and req.blob_intent is not None:
                with contextlib.suppress(StoreUnavailable):  # (the record stays: the sweep finds an empty folder)
                    await ledger.done(req.blob_intent)
        raise  # (a delete that failed here is left to the record: the sweep deletes the folder)
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
    """Deletes a job's blobs once it has ended, in whichever process sees it end; retries a delete
    that fails (backoff) while the server runs, and sweeps every unfinished upload record at start."""

    def __init__(self, store: AsyncJobStore, settings: Settings, client: httpx.AsyncClient) -> None:
        self.store = store
        self.settings = settings
        self.client = client
        self.ledger = UploadLedger(store)
        self._busy: set[str] = set()
        self._retrying: set[str] = set()
        self._tg: anyio.abc.TaskGroup | None = None

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Deletions run as their own tasks (never holding up notifications); old leftovers first."""
        self._tg = tg
        tg.start_soon(self.sweep, name="blob sweep")

    def _marker(self, job_id: str) -> Path:
        return self.settings.inputs_dir / job_id / DONE_MARKER

    async def on_change(self, job_id: str) -> bool:
        """Delete an ended job's blobs. False when a delete failed (try again later)."""
        row = await self.store.get(job_id)
        if row is None or not row.terminal:
            return True
        urls = [u for u in (row.request.get("blobs") or []) if isinstance(u, str)]
        intent = row.request.get("blob_intent")
        if not urls or job_id in self._busy or self._marker(job_id).exists():
            if isinstance(intent, str) and (not urls or self._marker(job_id).exists()):
                await self.ledger.done(intent)
            return True
        if self.settings.blob_token is None:
            log.warning("job %s (user %s) ended with %d Vercel Blob file(s) but BLOB_READ_WRITE_TOKEN is unset",
                        job_id, row.user_id, len(urls))
            return True
        self._busy.add(job_id)
        try:
            if not await delete_quietly(BlobClient(self.client, self.settings), urls):
                return False
            marker = self._marker(job_id)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("\n".join(urls))
            if isinstance(intent, str):
                await self.ledger.done(intent)
            log.info("job %s (user %s): deleted %d Vercel Blob file(s)", job_id, row.user_id, len(urls))
            return True
        finally:
            self._busy.discard(job_id)

    async def sweep(self, limit: int = 500) -> None:
        """At start: every upload record not yet done (and, for jobs stored before the records
        existed, the newest `limit` jobs) whose blobs no process is left to delete."""
        try:
            pending = await self.ledger.pending()
            rows = await self.store.recent(status=None, limit=limit)
        except Exception:  # the store is down at start-up: the records stay for the next start
            log.warning("blob sweep skipped: the job store did not answer", exc_info=True)
            return
        for key, entry in pending:
            job_id = entry.get("job")
            row = await self.store.get(job_id) if isinstance(job_id, str) else None
            if row is not None:
                if row.terminal:
                    self._spawn(self._clean, row.id, name=f"blob cleanup {row.id}")
                continue  # a job still running needs its blobs: deleted when it ends
            owner = entry.get("owner")
            at = entry.get("at")
            gone = isinstance(owner, str) and owner_is_gone(owner)
            stale = not isinstance(at, int | float) or time.time() - at > STALE_UPLOAD_S
            if gone or stale:  # the upload's process died before the job was stored
                self._spawn(self._retire, key, entry, name=f"blob cleanup {key}")
        for row in rows:
            if row.terminal and row.request.get("blobs") and not row.request.get("blob_intent"):
                self._spawn(self._clean, row.id, name=f"blob cleanup {row.id}")

    async def forget(self, req: GenerationRequest) -> None:
        """A job that was not stored after all (budget, duplicate key, store down): its blobs go,
        retried while the server runs, and its upload record is marked done."""
        if not req.blobs:
            return
        if req.blob_intent is None or self._tg is None:
            await delete_quietly(BlobClient(self.client, self.settings), req.blobs)
            return
        self._spawn(self._retire, req.blob_intent, {"urls": list(req.blobs)}, name=f"blob cleanup {req.blob_intent}")

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any, name: str) -> None:
        if self._tg is not None:
            self._tg.start_soon(fn, *args, name=name)

    async def _retire(self, key: str, entry: dict[str, Any]) -> None:
        """An upload whose job was never stored: delete everything under its folder, then the record."""
        if self.settings.blob_token is None:
            log.warning("upload record %s has Vercel Blob files but BLOB_READ_WRITE_TOKEN is unset", key)
            return
        blob = BlobClient(self.client, self.settings)
        prefix = str(entry.get("prefix") or "")

        async def attempt() -> bool:
            try:
                known = [u for u in entry.get("urls") or [] if isinstance(u, str)]
                urls = list(dict.fromkeys(known + (await blob.list_urls(prefix) if prefix.startswith("stillmotion/") else [])))
            except StillmotionError as exc:
                log.warning("could not list Vercel Blob folder %s: %s", prefix, exc.message)
                return False
            if not await delete_quietly(blob, urls):
                return False
            await self.ledger.done(key)
            log.info("deleted %d Vercel Blob file(s) of an upload whose job was never stored (%s)", len(urls), key)
            return True

        await self._with_retries(key, attempt)

    async def _clean(self, job_id: str) -> None:
        async def attempt() -> bool:
            return await self.on_change(job_id)

        await self._with_retries(job_id, attempt)

    async def _with_retries(self, what: str, attempt: Callable[[], Coroutine[Any, Any, bool]]) -> None:
        """Run a cleanup until it succeeds, with backoff, while the server runs. The first try is
        shielded and bounded (a shutdown right after a job ended still deletes its blobs); what a
        shutdown interrupts later stays recorded for the next start's sweep."""
        if what in self._retrying:
            return
        self._retrying.add(what)
        delay = max(0.01, self.settings.retry_base_ms / 1000)
        try:
            first = True
            while True:
                ok = False
                with anyio.CancelScope(shield=first), anyio.move_on_after(CLEANUP_TIMEOUT_S):
                    try:
                        ok = await attempt()
                    except Exception:  # cleanup must never break anything else
                        log.warning("blob cleanup of %s failed", what, exc_info=True)
                if ok:
                    return
                first = False
                log.info("blob cleanup of %s failed; trying again in %.1f s", what, delay)
                await anyio.sleep(delay)
                delay = min(DELETE_RETRY_CAP_S, delay * 2)
        finally:
            self._retrying.discard(what)

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
