"""What a provider's answer becomes: its cost recorded, its video fetched, checked and published.

The runner's last stages (`downloading`, and a local render's file): the result is streamed to a
temp file unique to this attempt (the owner's tag in its name), checked and published (decode
check, poster, last frame) before it takes its final name, and the job ends `succeeded` only while
this process still owns it. A provider's result URL that expired is refreshed once.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import av
import httpx

from ..errors import Expired, ProviderError
from ..media.net import UrlGuard, download_to_file, remove_file, write_base64_file
from ..media.publish import Samples
from ..pricing import actual_usd
from ..providers.base import Status, VideoResult
from ..settings import Settings
from .owned import Job, Lost, OwnedWrites
from .ownership import OwnerId
from .retry import RetryPolicy

Publisher = Callable[[Path, Path, Samples | None], dict[str, Any]]
"""(video path, job dir, samples) -> result dict (video facts, poster, last frame); ValueError if undecodable."""


class Delivery:
    def __init__(
        self,
        *,
        settings: Settings,
        client: httpx.AsyncClient,
        guard: UrlGuard,
        retry: RetryPolicy,
        writes: OwnedWrites,
        publish: Publisher,
        owner_id: OwnerId,
    ) -> None:
        self.settings = settings
        self.client = client
        self.guard = guard
        self.retry = retry
        self.writes = writes
        self.publish = publish
        self.owner_id = owner_id
        # Publishing (decode check, poster, last frame) is CPU work: more at once than there are
        # cores only adds contention and memory. A FIFO queue also finishes the earliest jobs first.
        self._publish_limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))

    # -- files -----------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        d = self.settings.output_dir / job_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def tmp(self, job_id: str, kind: str) -> Path:
        """A temporary file only this attempt writes (the owner's tag in its name)."""
        return self.job_dir(job_id) / f".{kind}.{self.owner_id.file_tag}.mp4.part"

    def clean_leftovers(self, job_id: str) -> None:
        """Temporary files of earlier attempts (a process that died or lost the job) are garbage."""
        d = self.settings.output_dir / job_id
        if not d.is_dir():
            return
        tag = self.owner_id.file_tag
        for part in d.glob(".*.part"):
            if tag not in part.name:
                part.unlink(missing_ok=True)

    # -- the provider's answer ---------------------------------------------------------------

    async def record_cost(self, job: Job, st: Status) -> None:
        if st.actual is not None:
            await self.writes.set_cost(job, actual_usd(st.actual, self.settings.prices), st.actual.to_dict())

    async def on_status(self, job: Job, st: Status) -> str:
        """A finished task: its cost, then a failure raised or its video kept for `downloading`."""
        await self.record_cost(job, st)
        if st.state == "failed":
            raise st.error or ProviderError("the provider reported a failure without a reason")
        assert st.video is not None
        job.video = st.video
        await self.writes.set(job, provider_done_at=time.time())
        return "downloading"

    async def download(self, job: Job) -> str:
        """downloading -> stream the result to this attempt's temp file, check it, publish it."""
        assert job.provider is not None and job.ctx is not None
        provider, ctx = job.provider, job.ctx
        op = job.row.operation or {}
        waiting = self.writes.waiting
        # the task is paid for: status queries and the download are retried (429, 5xx) for as long
        # as a poll would be, counted from now (#21)
        until = time.time() + ctx.request.poll_timeout_ms / 1000
        video = job.video
        if video is None and job.row.video_url:
            video = VideoResult(url=job.row.video_url, url_expires_at=job.row.video_url_expires_at)
        if video is None:  # taken over between "provider done" and the download: ask again
            st = await self.retry.run(lambda: provider.status(ctx, op), on_wait=waiting(job), until=until)
            if st.state != "completed":
                return await self.on_status(job, st)
            await self.record_cost(job, st)
            assert st.video is not None
            video = st.video
        await self.writes.set(job, status="downloading", stage="downloading", video_url=video.url,
                              video_url_expires_at=video.url_expires_at)
        tmp = self.tmp(job.id, "download")
        max_bytes = self.settings.max_download_bytes
        try:
            if video.data_b64 is not None:
                await anyio.to_thread.run_sync(functools.partial(write_base64_file, video.data_b64, tmp, max_bytes=max_bytes))
                await self.finish_file(job, tmp, provider_url=None, expires=None)
                return "done"
            refreshed = False
            while True:
                url = video.url
                assert url is not None
                try:
                    fetch = functools.partial(
                        download_to_file, self.client, self.guard, url, tmp, max_bytes=max_bytes,
                        deadline_s=self.settings.fetch_timeout_s,
                    )
                    await self.retry.run(fetch, on_wait=waiting(job), until=until)
                    break
                except Expired:
                    if refreshed:
                        raise
                    refreshed = True
                    st = await self.retry.run(lambda: provider.status(ctx, op), on_wait=waiting(job), until=until)
                    if st.state != "completed" or st.video is None or not st.video.url:
                        raise
                    video = st.video
                    await self.writes.set(job, video_url=video.url, video_url_expires_at=video.url_expires_at)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        await self.finish_file(job, tmp, provider_url=video.url, expires=video.url_expires_at)
        return "done"

    # -- publishing ------------------------------------------------------------------------

    async def finish_file(
        self, job: Job, tmp: Path, *, provider_url: str | None, expires: float | None, samples: Samples | None = None
    ) -> None:
        job_dir = await anyio.to_thread.run_sync(self.job_dir, job.id)
        final = job_dir / "video.mp4"
        if job.ctx is not None and job.ctx.request.tool == "extend_video":
            from ..media.extend import append_continuation

            # the source followed by its continuation (a native extension already is the whole video)
            native = job.provider is not None and job.provider.extends_video(job.ctx)
            append = functools.partial(append_continuation, job.ctx.request, tmp, native=native)
            try:
                tmp = await anyio.to_thread.run_sync(append, limiter=self._publish_limiter)
            except (ValueError, OSError, av.error.FFmpegError) as exc:
                raise ProviderError(f"the continuation could not be joined to the video: {exc}", retryable=False) from exc
            samples = None
        try:
            try:
                # checks before the rename: a broken file never gets the final name
                result = await anyio.to_thread.run_sync(self.publish, tmp, job_dir, samples, limiter=self._publish_limiter)
            except ValueError as exc:
                raise ProviderError(f"the result is not a decodable MP4: {exc}", retryable=False) from exc
            if job.stop.is_set():
                raise Lost(job.id)
            await self.writes.set(job)  # still ours (a store fault is waited out), so the file may take its name
            await anyio.to_thread.run_sync(os.replace, tmp, final)
        finally:
            await remove_file(tmp)
        result["video"]["path"] = str(final)
        result["video"]["provider_url"] = provider_url
        result["video"]["provider_url_expires_at"] = expires
        await self.writes.set(job, status="succeeded", stage="done", progress=1.0, result=result, video_url=None,
                              video_url_expires_at=None, lease_s=None)
