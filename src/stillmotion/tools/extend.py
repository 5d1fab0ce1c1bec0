"""The `extend_video` tool: a video (job id, path, URL or stillmotion:// video) and its continuation,
as one MP4, made as an ordinary job (result, cost, dry run, budget and confirmation as usual).

By default the continuation is the chosen model's image-to-video from the source's exact last
decoded frame (sent losslessly as PNG), and the job joins the source and the continuation with
join_clips' engine (media/extend.py). A family with its own extension (its registry entry's
`extension`, e.g. xAI's `native` flag) is asked instead: the whole video goes in, the whole video
comes back. The source goes through join_clips' intake (`keep_clip`), the
request through the generation tools' path (`run_request`: validation, estimate, budget, job).
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.to_thread
from mcp.types import CallToolResult, InputRequiredResult
from pydantic import Field, PrivateAttr

from ..catalog import MODELS, resolve_model_id
from ..errors import InvalidInput
from ..jobs.store import new_job_id
from ..media.extend import facts_of, last_frame_png
from ..plan.arguments import WAIT_MAX_S, RequestArgs
from ..plan.requests import (
    KlingOptions,
    LocalOptions,
    SeedanceOptions,
    StoredClip,
    VeoOptions,
    WanOptions,
    XaiOptions,
)
from ..plan.validation import Plan
from ..providers.registry import REGISTRY, native_extension
from .base import GEN_ANNOTATIONS, Build, Call, ToolSpec
from .cost import GenerationResult
from .generation import lean_controls, run_request
from .join import MAX_CROSSFADE_S, keep_clip
from .schema import JSON

DESCRIPTION = "The video then its continuation from its last frame, as one MP4 (models and options as animate_image). Returns a job."


class ExtendVideoArgs(RequestArgs):
    # The call's arguments, and (`continuing`) the continuation's request: the image-to-video of the
    # kept source's last frame, planned and submitted like any generation tool's. (No docstring: it
    # would become the schema's description.)

    tool: ClassVar[str] = "extend_video"
    image_argument: ClassVar[str] = "video"

    video: str = Field(min_length=1, description="Job id, path, URL or stillmotion:// video.")
    prompt: str | None = None
    model: str | None = None
    duration: int | None = Field(None, description="Seconds added.")
    crossfade_s: float = Field(0.0, ge=0, le=MAX_CROSSFADE_S)
    kling: KlingOptions | None = None
    wan: WanOptions | None = None
    xai: XaiOptions | None = None
    veo: VeoOptions | None = None
    seedance: SeedanceOptions | None = None
    local: LocalOptions | None = None
    wait_seconds: float = Field(0, ge=0, le=WAIT_MAX_S)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    dry_run: bool = False
    confirm_cost_usd: float | None = Field(None, ge=0)

    _source: StoredClip | None = PrivateAttr(None)
    _frame: str | None = PrivateAttr(None)

    def continuing(self, clip: StoredClip, frame_png: bytes, local: LocalOptions | None) -> ExtendVideoArgs:
        """This request continuing `clip` (checked and kept) from its last frame, with `local`'s options."""
        out = self.model_copy(update={"local": local})
        out._source, out._frame = clip, "data:image/png;base64," + base64.b64encode(frame_png).decode("ascii")
        return out

    def start_frame(self) -> str:
        assert self._frame is not None, "continuing() gives the start frame"
        return self._frame

    def source(self) -> StoredClip | None:
        return self._source

    def fingerprint(self) -> dict[str, Any]:
        """The source by its content (its kept copy's path differs per call), the frame under `video`."""
        out = super().fingerprint()
        if not self.crossfade_s:
            out.pop("crossfade_s")
        assert self._source is not None
        out.update(video=self._frame, source={"source": self._source.source, "sha256": self._source.sha256})
        return out


def _local_defaults(clip: StoredClip) -> LocalOptions:
    """local/preview renders the continuation at the source's size class and rate, so the two join by stream copy."""
    short = min(clip.width, clip.height)
    resolution = "480p" if short <= 480 else "720p" if short <= 720 else "1080p"
    fps = int(clip.fps) if clip.fps in ("24", "25", "30") else 24
    return LocalOptions.model_validate({"resolution": resolution, "fps": fps})


async def build_request(args: ExtendVideoArgs, call: Call, clip: StoredClip) -> tuple[ExtendVideoArgs, Plan]:
    """The continuation as an image-to-video request from the source's last frame (checked, not sent)."""
    settings = call.service.settings
    duration_s = float(facts_of(clip).duration)
    native = native_extension(args.argument)
    if native is not None and native.extension is not None:
        native.extension.check_source(duration_s)
        if args.crossfade_s:
            raise InvalidInput(
                "crossfade_s", f"does not apply to {native.family.label}'s native extension (it returns the whole video).",
                ["0"],
            )  # fmt: skip
    if args.crossfade_s and args.crossfade_s >= duration_s:
        raise InvalidInput(
            "crossfade_s", f"is {args.crossfade_s} s, not shorter than the video ({duration_s:.2f} s).",
            f"0 to {min(MAX_CROSSFADE_S, duration_s):.2f} seconds",
        )  # fmt: skip
    png = await anyio.to_thread.run_sync(last_frame_png, Path(clip.path), clip.rotation)
    local = args.local
    mid = resolve_model_id(args.model or settings.default_model)
    if local is None and mid is not None and MODELS[mid].is_local:
        local = _local_defaults(clip)
    request = args.continuing(clip, png, local)
    plan = call.service.plan(request)  # pure: the continuation's rules before anything is kept
    if args.crossfade_s and args.crossfade_s >= plan.duration:
        raise InvalidInput(
            "crossfade_s", f"is {args.crossfade_s} s, not shorter than the {plan.duration} s continuation.",
            f"0 to {min(MAX_CROSSFADE_S, plan.duration)} seconds (less than the continuation)",
        )  # fmt: skip
    return request, plan


async def extend_video(args: ExtendVideoArgs, call: Call) -> CallToolResult | InputRequiredResult:
    svc = call.service
    job_id = new_job_id()  # the source is kept with the job's other inputs (inputs/<job id>)
    folder = svc.settings.inputs_dir / job_id
    await anyio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
    keep = False
    try:
        clip = await keep_clip(svc, args.video, "video", folder / "source.mp4")
        request, plan = await build_request(args, call, clip)
        result = await run_request(request, call, job_id=job_id, plan=plan)
        made = result.structured_content if isinstance(result, CallToolResult) else None
        keep = not args.dry_run and isinstance(made, dict) and made.get("job_id") == job_id
        return result
    finally:
        if not keep:
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))


def _specialise(schema: JSON) -> JSON:
    """Lean: the option objects are taken as in animate_image but not repeated here (the list's
    budget); a family with its own extension shows its one extend-only flag."""
    props = schema["properties"]
    lean_controls(props)
    for name in ("idempotency_key", "wait_seconds"):  # taken, not advertised
        props.pop(name, None)
    for entry in REGISTRY.values():
        if entry.extension is None:
            props.pop(entry.field, None)
        else:
            options = next(m for m in props[entry.field]["anyOf"] if m.get("type") == "object")
            options["properties"] = {entry.extension.flag: {"type": "boolean"}}
    return schema


def specs(build: Build) -> list[ToolSpec[Any]]:
    return [ToolSpec(name="extend_video", title="Extend video", description=DESCRIPTION, args=ExtendVideoArgs,
                     handler=extend_video, annotations=GEN_ANNOTATIONS, output=GenerationResult, specialise=_specialise)]
