"""The arguments of each generation tool: one pydantic model per tool, validated once.

A tool call's `arguments` are validated into one of these models (tools/base.py), and that
validated object becomes the request (`to_tool_args()`) and its idempotency fingerprint
(`ToolArgs.fingerprint()`). The tool's input schema is this model's JSON schema, specialised
from the catalog (model enum, duration and prompt bounds) by tools/schema.py.

Adding an argument: add a field here (to `GenerationArgs` for every generation tool, or to one
tool's class), and a same-named field to `validation.ToolArgs` if the job request needs it; an
argument that only steers the call (like `wait_seconds`) goes in `CONTROL_FIELDS` instead.
test_tool_layer checks that every field lands somewhere.

Provider option objects: a tool carries the options of exactly the providers whose models
serve it (`PROVIDER_OPTIONS` in the catalog sense); test_tool_layer checks this against the
catalog, so a new Wan model serving interpolate_frames fails loudly until `wan` is added here.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

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
    VeoOptions,
    WanOptions,
    XaiOptions,
)
from .validation import ToolArgs

IMAGE_FORMS = "Path, URL, data: URI, base64, or stillmotion://jobs/<id>/last-frame.png (chaining)."
WAIT_MAX_S = 50
NEGATIVE_PROMPT_MAX = max(m.negative_prompt_max or 0 for m in MODELS.values())

ImageArg = Annotated[str, Field(min_length=1, description=IMAGE_FORMS)]

CONTROL_FIELDS = frozenset({"wait_seconds", "idempotency_key", "dry_run", "confirm_cost_usd"})
"""Arguments that steer the call, not the job: never part of the request or its fingerprint."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerationArgs(_Args):
    """What every generation tool takes. Descriptions and bounds that depend on the catalog
    (model enum, duration range, prompt length) are filled in by tools/schema.py."""

    tool: ClassVar[ToolName]
    image_argument: ClassVar[str] = "image"

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

    def to_tool_args(self) -> ToolArgs:
        """The validated arguments as the job request (no second validation)."""
        data: dict[str, Any] = {
            name: getattr(self, name) for name in type(self).model_fields if name not in CONTROL_FIELDS
        }
        data["image"] = data.pop(self.image_argument)
        return ToolArgs(tool=self.tool, image_argument=self.image_argument, **data)


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
