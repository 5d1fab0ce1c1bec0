"""Typed tool arguments shared by the tools and the providers.

Option objects mirror the seed's `providerOptions` (snake_case here; each provider maps them to
its own wire names). Every object forbids unknown keys so that a typo is an error, not a silent
drop. Per-model limits (durations, which options a model takes) are checked in `validation.py`
against the catalog; the bounds here are the ones no model exceeds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from ..catalog import CAMERA_TYPES, JobTool
from ..providers.families import OPTION_FIELDS as OPTION_FIELDS  # catalog provider -> options field

Strength = Annotated[float, Field(ge=-10, le=10)]
PollInterval = Annotated[int, Field(ge=50, le=600_000)]
"""How often to check the task, ms (default 5000)."""
PollTimeout = Annotated[int, Field(ge=1000, le=7_200_000)]
"""Give up polling after this many ms (default 600000)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraConfig(_Strict):
    """Exactly one axis non-zero, each in [-10, 10]; seed signs (camera motion)."""

    # signs (negative = left / down / counter-clockwise / narrower view) are in camera_move's description
    horizontal: Strength = 0
    """Camera translation along x; negative = left."""
    vertical: Strength = 0
    """Camera translation along y; negative = down."""
    pan: Strength = 0
    """Camera rotation around the y axis; negative = left."""
    tilt: Strength = 0
    """Camera rotation around the x axis; negative = down."""
    roll: Strength = 0
    """Camera rotation around the z axis; negative = counter-clockwise."""
    zoom: Strength = 0
    """Focal length change; negative = narrower field of view (content grows)."""


CameraType = Literal["simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"]
assert set(CameraType.__args__) == set(CAMERA_TYPES)  # type: ignore[attr-defined]


class CameraControl(_Strict):
    type: CameraType = Field(
        description="simple: one axis from config; the others are presets."
    )
    config: CameraConfig | None = Field(
        None, description="Type simple only: exactly one non-zero axis."
    )


class Point(_Strict):
    x: float
    """Pixels from the input image's LEFT edge."""
    y: float
    """Pixels from the input image's BOTTOM edge (origin bottom-left)."""


class BoxShape(_Strict):
    box: Annotated[list[float], Field(min_length=4, max_length=4)] = Field(
        description="[x0, y0, x1, y1]"
    )


class PolygonShape(_Strict):
    polygon: Annotated[list[Annotated[list[float], Field(min_length=2, max_length=2)]], Field(min_length=3)] = Field(
        description="[[x, y], ...]"
    )


def _mask_kind(value: Any) -> str | None:
    """Which form a mask takes, so that a bad mask is reported against that form only."""
    if isinstance(value, str):
        return "image"
    if isinstance(value, PolygonShape) or (isinstance(value, dict) and "polygon" in value):
        return "polygon"
    if isinstance(value, BoxShape | dict):
        return "box"
    return None


MaskInput = Annotated[
    Annotated[str, Tag("image")] | Annotated[BoxShape, Tag("box")] | Annotated[PolygonShape, Tag("polygon")],
    Discriminator(
        _mask_kind,
        custom_error_type="mask_type",
        custom_error_message="a mask is an image string or a shape object {box: [...]} / {polygon: [...]}",
    ),
    Field(
        description="Image (white = selected) or {box}/{polygon} in input pixels."
    ),
]


class DynamicMask(_Strict):
    mask: MaskInput
    trajectory: list[Point] = Field(
        description="Points the region follows."
    )


class KlingShot(_Strict):
    prompt: str
    duration: int


class KlingOptions(_Strict):
    mode: Literal["std", "pro"] | None = Field(
        None, description="Default std."
    )
    cfg_scale: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="Default 0.5; not on v2.x."
    )
    sound: Literal["on", "off"] | None = Field(None, description="Audio (v2.6 pro, v3); default off.")
    voices: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=2)] | None = Field(
        None,
        description="Voice ids (sound on); prompt says <<<voice_1>>>.",
    )
    watermark: bool | None = None
    shots: list[KlingShot] | None = Field(None, description="1-6, summing to duration.")
    shot_type: Literal["customize", "intelligence"] | None = None
    elements: list[int] | None = None
    poll_interval_ms: PollInterval | None = None
    poll_timeout_ms: PollTimeout | None = None


class WanOptions(_Strict):
    audio: bool | None = Field(
        None, description="Audio (flash model only). Default false."
    )
    resolution: Literal["720P", "1080P"] | None = Field(None, description="Default 720P.")
    prompt_extend: bool | None = Field(None, description="Default true.")
    shot_type: Literal["single", "multi"] | None = None
    audio_url: str | None = Field(None, description="wav/mp3, 3-30 s; URL or path.")
    seed: Annotated[int, Field(ge=0, le=2_147_483_647)] | None = None
    watermark: bool | None = None
    poll_interval_ms: PollInterval | None = None
    poll_timeout_ms: PollTimeout | None = None


class XaiOptions(_Strict):
    resolution: Literal["480p", "720p", "1080p"] | None = Field(None, description="Default 480p.")
    aspect_ratio: Literal["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"] | None = Field(
        None,
        description="STRETCHES the image; omit to keep its shape.",
    )
    native: bool | None = None
    """extend_video only: xAI's own video extension (the whole video goes in)."""
    poll_interval_ms: PollInterval | None = None
    poll_timeout_ms: PollTimeout | None = None


Seed = Annotated[int, Field(ge=0, le=2_147_483_647)]


class VeoOptions(_Strict):
    """Google Veo (Gateway only); values per model in the catalog, checked by providers/veo.py."""

    resolution: Literal["720p", "1080p"] | None = None
    aspect_ratio: Literal["16:9", "9:16"] | None = None
    audio: bool | None = None
    seed: Seed | None = None
    poll_interval_ms: PollInterval | None = None
    poll_timeout_ms: PollTimeout | None = None


class SeedanceOptions(_Strict):
    """ByteDance Seedance (Gateway only); values per model in the catalog, checked by providers/seedance.py."""

    resolution: Literal["480p", "720p", "1080p"] | None = None
    aspect_ratio: Literal["16:9", "4:3", "1:1", "3:4", "9:16", "21:9"] | None = None
    audio: bool | None = None
    seed: Seed | None = None
    poll_interval_ms: PollInterval | None = None
    poll_timeout_ms: PollTimeout | None = None


class LocalOptions(_Strict):
    resolution: Literal["480p", "720p", "1080p"] = Field(
        "720p"
    )
    fps: Literal[24, 25, 30] = 24


class StoredImage(BaseModel):
    """An input image (or mask) as the job keeps it: a checked local copy, plus the URL it came from."""

    path: str
    url: str | None = None
    mime: str
    width: int
    height: int
    bytes: int
    sha256: str


class StoredAudio(BaseModel):
    """A driving audio track as the job keeps it: a checked local copy, plus the URL it came from."""

    path: str
    url: str | None = None
    mime: str
    bytes: int
    sha256: str
    duration_s: float


class StoredClip(BaseModel):
    """A video to join, as the job keeps it: a checked local copy and where it came from."""

    path: str
    source: str
    """The job id, path, URL or resource it came from."""
    bytes: int
    sha256: str
    width: int
    height: int
    fps: str
    """Exact frame rate as a fraction ("24", "30000/1001")."""
    frame_count: int
    has_audio: bool
    rotation: int = 0
    """Display rotation (degrees counterclockwise) the join applies; width and height are upright."""


class StoredMask(BaseModel):
    image: StoredImage
    trajectory: list[tuple[float, float]]


class GenerationRequest(BaseModel):
    """The normalised, validated request a job stores and a provider maps to its wire format."""

    tool: JobTool
    model: str
    route: Literal["direct", "gateway", "local"]
    prompt: str | None = None
    negative_prompt: str | None = None
    duration: int
    image: StoredImage | None = None
    """The start image (every tool but join_clips)."""
    end_image: StoredImage | None = None
    camera: CameraControl | None = None
    dynamic_masks: list[StoredMask] = Field(default_factory=list)
    static_mask: StoredImage | None = None
    audio: StoredAudio | None = None
    """The model's audio track (its registry entry's `audio`), checked and kept like the images."""
    kling: KlingOptions | None = None
    wan: WanOptions | None = None
    xai: XaiOptions | None = None
    veo: VeoOptions | None = None
    seedance: SeedanceOptions | None = None
    local: LocalOptions | None = None
    """The model's own options object, resolved by its provider's `check_options` (defaults filled in,
    poll settings moved to the fields below). local/preview also keeps `kling` when it carries shots."""
    clips: list[StoredClip] = Field(default_factory=list)
    """join_clips: the videos to join, in order. extend_video: the source video (its last frame is `image`)."""
    crossfade_s: float = 0.0
    blobs: list[str] = Field(default_factory=list)
    """Vercel Blob URLs uploaded for this job (deleted when the job ends)."""
    blob_intent: str | None = None
    """The store's record of this job's uploads (blob.UploadLedger), marked done once they are deleted."""
    poll_interval_ms: int = 5000
    poll_timeout_ms: int = 600_000

    @model_validator(mode="before")
    @classmethod
    def _legacy_options(cls, data: Any) -> Any:
        """Rows stored before options were typed carry `options: {...}` (the own provider's object)."""
        if isinstance(data, dict) and "options" in data:
            from ..catalog import MODELS

            data = dict(data)
            legacy = data.pop("options") or {}
            spec = MODELS.get(str(data.get("model")))
            if spec is not None and legacy:
                data.setdefault(OPTION_FIELDS[spec.provider], legacy)
        return data

    @property
    def start_image(self) -> StoredImage:
        if self.image is None:
            raise ValueError(f"a {self.tool} request has no start image")
        return self.image

    @property
    def options(self) -> dict[str, Any]:
        """The model's own options as a plain dict (None values left out)."""
        from ..catalog import MODELS

        own = getattr(self, OPTION_FIELDS[MODELS[self.model].provider])
        return {} if own is None else dict(own.model_dump(exclude_none=True))
