"""A request's inputs, between its plan and its job: every http(s) input fetched before the call
takes an admission slot, the images, masks and audio loaded and checked by content (on worker
threads), then kept as the job's files (a submission) or held in memory (a dry run), and the
stored `GenerationRequest` built from the arguments, the plan and those inputs."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from ..catalog import MODELS
from ..errors import Unavailable
from ..jobs.async_store import unavailable
from ..media.images import LoadedImage, ResourceResolver, load_image, off_loop
from ..media.net import Fetched, UrlGuard, fetched_temp
from ..media.sources import AudioFacts, LoadedMedia, load_media
from ..providers.registry import REGISTRY
from ..settings import Settings
from .arguments import RequestArgs
from .requests import (
    BoxShape,
    DynamicMask,
    GenerationRequest,
    PolygonShape,
    StoredAudio,
    StoredImage,
    StoredMask,
)
from .validation import LoadedInputs, Plan, check_images, check_masks_and_paths, shape_to_image

Keep = Callable[[LoadedImage, str], StoredImage]


def _stored(img: LoadedImage, path: str) -> StoredImage:
    return StoredImage(
        path=path, url=img.url, mime=img.mime, width=img.width, height=img.height, bytes=len(img.data), sha256=img.sha256
    )


def _audio(loaded: tuple[LoadedMedia, AudioFacts], path: str) -> StoredAudio:
    media, facts = loaded
    return StoredAudio(
        path=path, url=media.url, mime=facts.mime, bytes=len(media.data), sha256=media.sha256,
        duration_s=round(facts.duration_s, 3),
    )  # fmt: skip


def keep_audio(loaded: tuple[LoadedMedia, AudioFacts], folder: Path) -> StoredAudio:
    path = folder / f"audio.{loaded[1].format}"
    path.write_bytes(loaded[0].data)
    return _audio(loaded, str(path))


@dataclass(frozen=True)
class Intake:
    """One request's inputs: `prefetched` first (outside the admission slot), then, inside it,
    `kept_request` (a submission) or `held_request` (a dry run)."""

    settings: Settings
    client: httpx.AsyncClient
    resolve_resource: ResourceResolver
    """A `stillmotion://jobs/<id>/<file>` input's path, for the asker (Service.resource_path)."""

    async def kept_request(
        self, args: RequestArgs, plan: Plan, fetched: dict[str, Fetched], folder: Path
    ) -> GenerationRequest:
        """A submission's request, its inputs kept as files in `folder` (call inside its admission slot)."""
        inputs, kept, audio = await self._take(args, plan, fetched, folder)
        return request(args, plan, inputs, lambda img, name: kept[name], audio)

    async def held_request(
        self, args: RequestArgs, plan: Plan, fetched: dict[str, Fetched]
    ) -> tuple[GenerationRequest, dict[str, bytes]]:
        """A dry run's request: nothing written, the images' bytes held by placeholder path."""
        inputs = await self._checked(args, plan, fetched)
        held: dict[str, bytes] = {}

        def hold(img: LoadedImage, name: str) -> StoredImage:
            path = f"<dry-run>/{name}.{img.ext}"
            held[path] = img.data
            return _stored(img, path)

        audio = await self._load_audio(plan, fetched)
        held_audio = _audio(audio, f"<dry-run>/audio.{audio[1].format}") if audio is not None else None
        return request(args, plan, inputs, hold, held_audio), held

    async def _take(
        self, args: RequestArgs, plan: Plan, fetched: dict[str, Fetched], folder: Path
    ) -> tuple[LoadedInputs, dict[str, StoredImage], StoredAudio | None]:
        """Read, decode, check, hash and write a submission's inputs (inside its admission slot).
        The images' bytes are dropped once written: what the submission keeps is the files."""
        inputs = await self._checked(args, plan, fetched)
        audio = await self._load_audio(plan, fetched)
        kept: dict[str, StoredImage] = {}

        def write_all() -> None:
            for name, img in inputs.named():
                path = folder / f"{name}.{img.ext}"
                path.write_bytes(img.data)
                kept[name] = _stored(img, str(path))
                img.data = b""  # kept as a file now; the submission holds no image bytes past here

        try:
            await anyio.to_thread.run_sync(functools.partial(folder.mkdir, parents=True, exist_ok=True))
            await off_loop(write_all)
            stored_audio = await off_loop(keep_audio, audio, folder) if audio is not None else None
        except OSError as exc:  # a full disk: nothing accepted (create_job removes the folder), the caller retries
            fault = unavailable(exc)
            if fault is None:
                raise
            raise Unavailable(f"could not keep the job's inputs: {fault.message}") from exc
        return inputs, kept, stored_audio

    async def _checked(self, args: RequestArgs, plan: Plan, fetched: dict[str, Fetched]) -> LoadedInputs:
        """The images and masks loaded and checked by content (on worker threads); their warnings join the plan's."""
        inputs = await self._load_inputs(args, plan.spec.id, fetched)
        await off_loop(check_images, inputs, plan.spec, args)
        await off_loop(check_masks_and_paths, inputs, plan.spec, args)
        for img in inputs.all():
            plan.warnings.extend(w for w in img.warnings if w not in plan.warnings)
        return inputs

    @asynccontextmanager
    async def prefetched(self, args: RequestArgs, model: str) -> AsyncIterator[dict[str, Fetched]]:
        """Every http(s) input of the call (images, masks, the audio track the model's registry entry
        declares) fetched to a temporary file before the submission takes an admission slot: a slow
        URL holds no slot and no bytes. The files are removed when the block ends."""
        image_cap = max(MODELS[model].image_rules.max_bytes + 1, self.settings.max_fetch_bytes)
        entry = REGISTRY[MODELS[model].provider]
        audio = entry.audio_source(args.argument(entry.field))
        static = args.argument("static_mask")
        wanted: list[tuple[str | None, str, int]] = [
            (args.start_frame(), args.image_argument, image_cap),
            (args.argument("end_image"), "end_image", image_cap),
            (static if isinstance(static, str) else None, "static_mask", image_cap),
            *[(m.mask if isinstance(m.mask, str) else None, f"dynamic_masks[{i}].mask", image_cap)
              for i, m in enumerate(args.argument("dynamic_masks") or [])],
            *([(audio.value, audio.argument, audio.rules.max_bytes + 1)] if audio is not None else []),
        ]  # fmt: skip
        guard = UrlGuard(self.settings.allow_private_network, frozenset())
        async with AsyncExitStack() as stack:
            fetched: dict[str, Fetched] = {}
            for value, argument, cap in wanted:
                if value is None or value in fetched or not value.strip().startswith(("http://", "https://")):
                    continue
                fetched[value] = await stack.enter_async_context(
                    fetched_temp(guard, value.strip(), max_bytes=cap, argument=argument, deadline_s=self.settings.fetch_timeout_s)
                )
            yield fetched

    async def _load_audio(
        self, plan: Plan, fetched: dict[str, Fetched] | None = None
    ) -> tuple[LoadedMedia, AudioFacts] | None:
        """The model's audio track (its registry entry's `audio`): fetched under the image inputs'
        rules and checked by its provider's rules."""
        source = REGISTRY[plan.spec.provider].audio_source(plan.provider_options)
        if source is None:
            return None
        value, argument, rules = source
        got = (fetched or {}).get(value)
        if got is not None:
            data = await anyio.to_thread.run_sync(got.path.read_bytes)
            return LoadedMedia(data, got.final_url), await anyio.to_thread.run_sync(rules.check, data, argument)
        media = await load_media(
            value,
            argument=argument,
            client=self.client,
            guard=UrlGuard(self.settings.allow_private_network, frozenset()),
            input_roots=self.settings.input_roots,
            resolve_resource=self.resolve_resource,
            max_bytes=rules.max_bytes + 1,
            resources=rules.resources,
            deadline_s=self.settings.fetch_timeout_s,
        )
        facts = await anyio.to_thread.run_sync(rules.check, media.data, argument)
        return media, facts

    async def _load_inputs(self, args: RequestArgs, model: str, fetched: dict[str, Fetched] | None = None) -> LoadedInputs:
        # the fetch cap is above every model's size rule, so the rule check can name the real size
        cap = max(MODELS[model].image_rules.max_bytes + 1, self.settings.max_fetch_bytes)
        guard = UrlGuard(self.settings.allow_private_network, frozenset())
        max_pixels = MODELS[model].image_rules.max_pixels

        async def load(value: str, argument: str) -> LoadedImage:
            return await load_image(
                value,
                argument=argument,
                client=self.client,
                guard=guard,
                input_roots=self.settings.input_roots,
                resolve_resource=self.resolve_resource,
                max_bytes=cap,
                max_pixels=max_pixels,
                model=model,
                prefetched=(fetched or {}).get(value),
                deadline_s=self.settings.fetch_timeout_s,
            )

        image = await load(args.start_frame(), args.image_argument)
        inputs = LoadedInputs(image=image)
        end_image = args.argument("end_image")
        if end_image is not None:
            inputs.end_image = await load(end_image, "end_image")
        dynamic_masks: list[DynamicMask] = args.argument("dynamic_masks") or []
        for i, dm in enumerate(dynamic_masks):
            name = f"dynamic_masks[{i}].mask"
            if isinstance(dm.mask, BoxShape | PolygonShape):
                mask = await off_loop(shape_to_image, dm.mask, image.width, image.height, name)
            else:
                mask = await load(dm.mask, name)
            inputs.dynamic.append((mask, [(p.x, p.y) for p in dm.trajectory]))
        sm = args.argument("static_mask")
        if sm is not None:
            if isinstance(sm, BoxShape | PolygonShape):
                inputs.static_mask = await off_loop(shape_to_image, sm, image.width, image.height, "static_mask")
            else:
                inputs.static_mask = await load(sm, "static_mask")
        return inputs


def request(
    args: RequestArgs,
    plan: Plan,
    inputs: LoadedInputs,
    keep: Keep,
    audio: StoredAudio | None = None,
) -> GenerationRequest:
    """The stored request: the arguments as planned, each input as `keep` keeps it."""
    return GenerationRequest(
        tool=args.tool,
        model=plan.spec.id,
        route=plan.route,
        prompt=plan.prompt,
        negative_prompt=args.argument("negative_prompt") or None,
        duration=plan.duration,
        image=keep(inputs.image, "image"),
        end_image=keep(inputs.end_image, "end_image") if inputs.end_image else None,
        camera=args.argument("camera"),
        dynamic_masks=[
            StoredMask(image=keep(m, f"dynamic_mask_{i}"), trajectory=traj)
            for i, (m, traj) in enumerate(inputs.dynamic)
        ],
        static_mask=keep(inputs.static_mask, "static_mask") if inputs.static_mask else None,
        audio=audio,
        clips=[source] if (source := args.source()) is not None else [],
        crossfade_s=args.argument("crossfade_s") or 0.0,
        **plan.option_fields,
        poll_interval_ms=plan.poll_interval_ms,
        poll_timeout_ms=plan.poll_timeout_ms,
    )
