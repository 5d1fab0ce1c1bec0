"""The arguments of each tool that makes a generation job: one pydantic model per tool, validated once.

A tool call's `arguments` are validated into one of these models (tools/base.py), and that
validated object IS the request until it is a job: `plan_request` checks it, the service loads
its inputs and builds the stored `GenerationRequest` from it, and its dump without the call's
controls is the idempotency fingerprint (`RequestArgs.fingerprint`). There is no second shape
to keep in step. The tool's input schema is this model's JSON schema, specialised from the
catalog (model enum, duration and prompt bounds) by tools/schema.py.

Adding an argument: add a field here (to `GenerationArgs` for every generation tool, or to one
tool's class) with the same name as the `GenerationRequest` field it fills; the planner and the
service read the arguments not every tool has through `RequestArgs.argument(name)`. An argument
that only steers the call (like `wait_seconds`) goes in `CONTROL_FIELDS` instead.
test_tool_layer checks that every field lands somewhere.

Provider option objects: a tool carries the options of exactly the providers whose models
serve it (`PROVIDER_OPTIONS` in the catalog sense); test_tool_layer checks this against the
catalog, so a new Wan model serving interpolate_frames fails loudly until `wan` is added here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..catalog import MODELS, ToolName
from ..providers.families import OPTION_FIELDS
from .requests import (
    CameraControl,
    DynamicMask,
    KlingOptions,
    LocalOptions,
    MaskInput,
    SeedanceOptions,
    StoredClip,
    VeoOptions,
    WanOptions,
    XaiOptions,
)

IMAGE_FORMS = "Path, URL, data: URI, base64, or stillmotion://jobs/<id>/last-frame.png (chaining)."
WAIT_MAX_S = 50
NEGATIVE_PROMPT_MAX = max(m.negative_prompt_max or 0 for m in MODELS.values())

ImageArg = Annotated[str, Field(min_length=1, description=IMAGE_FORMS)]

CONTROL_FIELDS = frozenset({"wait_seconds", "idempotency_key", "dry_run", "confirm_cost_usd"})
"""Arguments that steer the call, not the job: never part of the request or its fingerprint."""


class Args(BaseModel):
    """Base of every tool's argument model: unknown names are mistakes, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class RequestArgs(Args):
    """A validated call of a tool that makes a generation job: the request until it is stored."""

    tool: ClassVar[str]
    image_argument: ClassVar[str] = "image"
    """The argument that holds the start image (named in its errors)."""
    if TYPE_CHECKING:  # every such tool declares these fields, each in its own schema order
        model: str | None
        prompt: str | None
        duration: int | None
        wait_seconds: float
        idempotency_key: str | None
        dry_run: bool
        confirm_cost_usd: float | None

    def argument(self, name: str) -> Any:
        """An argument not every tool takes (`end_image`, `camera`, masks, an option object,
        `crossfade_s`): None when this tool has none or it was not given."""
        return getattr(self, name, None)

    def options_given(self) -> dict[str, BaseModel | None]:
        """Every provider's option object, None where not given or not taken by this tool."""
        return {name: self.argument(name) for name in OPTION_ARGUMENTS}

    def start_frame(self) -> str:
        """The start image argument's value (extend_video: its source's last frame)."""
        return str(getattr(self, self.image_argument))

    def source(self) -> StoredClip | None:
        """extend_video: the checked source video (the start image is its last frame)."""
        return None

    def fingerprint(self) -> dict[str, Any]:
        """The validated request as JSON data: what "the same arguments" means for an idempotency key."""
        return {"tool": self.tool, **self.model_dump(mode="json", exclude=set(CONTROL_FIELDS), exclude_none=True)}


class GenerationArgs(RequestArgs):
    """What every generation tool takes. Descriptions and bounds that depend on the catalog
    (model enum, duration range, prompt length) are filled in by tools/schema.py."""

    tool: ClassVar[ToolName]

    model: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = Field(None, max_length=NEGATIVE_PROMPT_MAX)
    duration: int | None = Field(None, description="Seconds (default 5).")
    wait_seconds: float = Field(0, ge=0, le=WAIT_MAX_S)
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200
    )
    dry_run: bool = False
    confirm_cost_usd: float | None = Field(None, ge=0)
    kling: KlingOptions | None = None
    local: LocalOptions | None = None


class AnimateImageArgs(GenerationArgs):
    tool: ClassVar[ToolName] = "animate_image"

    image: ImageArg
    wan: WanOptions | None = None
    xai: XaiOptions | None = None
    veo: VeoOptions | None = None
    seedance: SeedanceOptions | None = None


class InterpolateFramesArgs(GenerationArgs):
    tool: ClassVar[ToolName] = "interpolate_frames"
    image_argument: ClassVar[str] = "start_image"

    start_image: ImageArg
    end_image: str = Field(min_length=1, description="Last frame; same forms.")
    veo: VeoOptions | None = None
    seedance: SeedanceOptions | None = None


class CameraMoveArgs(GenerationArgs):
    tool: ClassVar[ToolName] = "camera_move"

    image: ImageArg
    camera: CameraControl


class MotionBrushArgs(GenerationArgs):
    tool: ClassVar[ToolName] = "motion_brush"

    image: ImageArg
    dynamic_masks: list[DynamicMask] = Field(min_length=1, max_length=6)
    static_mask: MaskInput | None = None


ARGS_BY_TOOL: dict[str, type[GenerationArgs]] = {
    cls.tool: cls for cls in (AnimateImageArgs, InterpolateFramesArgs, CameraMoveArgs, MotionBrushArgs)
}
OPTION_ARGUMENTS = tuple(OPTION_FIELDS.values())
