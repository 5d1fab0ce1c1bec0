"""Every model stillmotion serves, with its real limits. The single source of truth.

Tool schemas (model enums, descriptions), validation, `list_models`, the
`stillmotion://models` resource and `stillmotion models` are all generated from this table.

Sources: the seed (`seed-image-to-video.txt`) for Kling's image rules and prompt lengths;
Kling's published capability map (provider-apis.md 1.4) for which model serves which feature;
DashScope (2.2) and xAI (3.2) for Wan and Grok; SPEC section 6 for the offline engine. Veo and
Seedance (Gateway only): Google's Vertex model cards, the Gateway's model pages and the AI SDK's
provider option schemas, each limit with its source in docs/decisions.md (issue #24); a limit no
primary source publishes is listed in the model's `unpublished` (shown by list_models) and gets
stillmotion's own bound, never a guessed provider value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Provider = Literal["klingai", "alibaba", "xai", "google", "bytedance", "local"]
ToolName = Literal["animate_image", "interpolate_frames", "camera_move", "motion_brush"]
GENERATION_TOOLS: tuple[ToolName, ...] = ("animate_image", "interpolate_frames", "camera_move", "motion_brush")
JobTool = Literal["animate_image", "interpolate_frames", "camera_move", "motion_brush", "join_clips", "extend_video"]
JOB_TOOLS: tuple[JobTool, ...] = get_args(JobTool)
"""Every tool that makes a job: its result carries a job id, and tasks clients get a task back."""
CAMERA_TYPES = ("simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward")
CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")

MB = 1024 * 1024


@dataclass(frozen=True)
class ImageRules:
    formats: tuple[str, ...]
    """Pillow format names accepted by content: JPEG, PNG, WEBP, BMP."""
    max_bytes: int
    min_side: int
    max_side: int | None
    min_aspect: float
    """width/height lower bound (0.4 = 1:2.5)."""
    max_aspect: float
    max_pixels: int = 64_000_000
    """width x height, checked from the file header before any decode (64 MP where the provider
    states no limit)."""

    def describe(self) -> str:
        fmts = "/".join(f.lower().replace("jpeg", "jpg/jpeg") for f in self.formats)
        side = f"each side >= {self.min_side} px" + (f" and <= {self.max_side} px" if self.max_side else "")
        lo = 1 / self.min_aspect
        return (
            f"{fmts}, <= {self.max_bytes // MB} MB, {side}, aspect ratio between "
            f"1:{lo:g} and {self.max_aspect:g}:1, at most {self.max_pixels / 1e6:g} megapixels"
        )


KLING_IMAGES = ImageRules(("JPEG", "PNG"), 10 * MB, 300, None, 1 / 2.5, 2.5)
WAN_IMAGES = ImageRules(("JPEG", "PNG", "BMP", "WEBP"), 20 * MB, 240, 8000, 1 / 8, 8.0)
XAI_IMAGES = ImageRules(("JPEG", "PNG", "WEBP"), 20 * MB, 64, None, 1 / 8, 8.0)
LOCAL_IMAGES = ImageRules(("JPEG", "PNG", "WEBP"), 50 * MB, 64, 8192, 1 / 4, 4.0, max_pixels=8192 * 8192)


@dataclass(frozen=True)
class Feature:
    """Where a model serves a tool: in which modes and for which durations."""

    modes: tuple[str, ...] | None = None
    """None = any of the model's modes."""
    durations: tuple[int, ...] | None = None
    """None = any of the model's durations."""
    camera_types: tuple[str, ...] = CAMERA_TYPES


@dataclass(frozen=True)
class ModelSpec:
    id: str
    provider: Provider
    title: str
    summary: str
    direct_name: str | None
    gateway_id: str | None
    durations: tuple[int, ...]
    default_duration: int
    modes: tuple[str, ...]
    """Kling quality modes; () = the model takes no mode field."""
    prompt_max: int
    negative_prompt_max: int | None
    prompt_required: bool
    image_rules: ImageRules
    features: dict[str, Feature]
    """Tools the provider's capability map publishes for this model."""
    cfg_scale: bool = False
    sound: tuple[str, ...] = ()
    """Modes in which `sound: on` (and voices) is available; () = no sound."""
    voices: bool = False
    audio: bool = False
    """Wan `audio` (flash only)."""
    resolutions: tuple[str, ...] = ()
    default_resolution: str | None = None
    aspect_ratios: tuple[str, ...] = ()
    seed: bool = False
    interpolation_silent_only: bool = False
    shots: bool = False
    """Kling multi-shot (`multi_shot`, `shot_type`, `multi_prompt`)."""
    elements: bool = False
    """Kling element references (`element_list`)."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    image_urls: bool = True
    """False: the provider takes inline image bytes only (Vertex ignores image URLs)."""
    unpublished: tuple[str, ...] = ()
    """Limits no primary source publishes: stillmotion's own bound applies (listed by list_models)."""

    @property
    def is_local(self) -> bool:
        return self.provider == "local"

    def serves(self, tool: str) -> bool:
        return tool in self.features

    def describe_durations(self) -> str:
        d = self.durations
        if len(d) > 2 and d == tuple(range(d[0], d[-1] + 1)):
            return f"{d[0]}-{d[-1]} s"
        return "/".join(str(x) for x in d) + " s"

    def to_public(self, *, routes: list[str] | None = None, tools: Iterable[str] | None = None) -> dict[str, Any]:
        feats: dict[str, Any] = {}
        for tool, feat in self.features.items():
            feats[tool] = {
                "modes": list(feat.modes) if feat.modes is not None else list(self.modes),
                "durations": list(feat.durations) if feat.durations is not None else list(self.durations),
            }
            if tool == "camera_move":
                feats[tool]["camera_types"] = list(feat.camera_types)
        out: dict[str, Any] = {
            "id": self.id,
            "provider": self.provider,
            "title": self.title,
            "summary": self.summary,
            "direct_name": self.direct_name,
            "gateway_id": self.gateway_id,
            "tools": sorted(tools) if tools is not None else sorted(self.features),
            "features": feats,
            "durations": list(self.durations),
            "default_duration": self.default_duration,
            "modes": list(self.modes),
            "prompt": {
                "max_chars": self.prompt_max,
                "required": self.prompt_required,
            },
            "negative_prompt": (
                {"max_chars": self.negative_prompt_max} if self.negative_prompt_max is not None else None
            ),
            "image": {
                "formats": [f.lower() for f in self.image_rules.formats],
                "max_bytes": self.image_rules.max_bytes,
                "min_side_px": self.image_rules.min_side,
                "max_side_px": self.image_rules.max_side,
                "max_pixels": self.image_rules.max_pixels,
                "aspect_ratio_range": [round(self.image_rules.min_aspect, 4), self.image_rules.max_aspect],
                "rule": self.image_rules.describe(),
            },
            "options": {
                "cfg_scale": self.cfg_scale,
                "sound": {"modes": list(self.sound)} if self.sound else False,
                "voices": self.voices,
                "audio": self.audio,
                "resolutions": list(self.resolutions),
                "default_resolution": self.default_resolution,
                "aspect_ratios": list(self.aspect_ratios),
                "seed": self.seed,
                "shots": self.shots,
                "elements": self.elements,
            },
            "notes": list(self.notes),
        }
        if self.unpublished:
            out["unpublished"] = list(self.unpublished)
        if routes is not None:
            out["routes"] = routes
        return out


# -- Kling ---------------------------------------------------------------------------------

_KLING_SUMMARIES = {
    "v1": "Kling 1.0: first/last frame and motion brush in std and pro (5 s).",
    "v1.5": "Kling 1.5: the only model with camera control (simple, pro, 5 s); motion brush in pro.",
    "v1.6": "Kling 1.6: first/last frame in pro; pro renders 1080p.",
    "v2-master": "Kling 2.0 Master: no mode, no cfg_scale.",
    "v2.1": "Kling 2.1: first/last frame in pro only.",
    "v2.1-master": "Kling 2.1 Master: 1080p, no mode.",
    "v2.5-turbo": "Kling 2.5 Turbo: faster generation, lower cost; first/last frame in pro.",
    "v2.6": "Kling 2.6: audio-visual co-generation (sound and voices in pro), cinematic motion.",
    "v3.0": "Kling 3.0: 3-15 s clips, enhanced consistency, sound in std and pro.",
}


def kling_direct_name(model_id: str) -> str:
    """`klingai/kling-v2.6-i2v` -> `kling-v2-6`; `klingai/kling-v3.0-i2v` -> `kling-v3`."""
    name = model_id.removeprefix("klingai/").removesuffix("-i2v")
    head, _, tail = name.partition("-v")
    version = tail
    # drop a trailing ".0" of the version number only
    parts = version.split("-", 1)
    if parts[0].endswith(".0"):
        parts[0] = parts[0][:-2]
    version = "-".join(parts).replace(".", "-")
    return f"{head}-v{version}"


def _kling(
    version: str,
    *,
    modes: tuple[str, ...],
    durations: tuple[int, ...] = (5, 10),
    features: dict[str, Feature],
    cfg_scale: bool,
    sound: tuple[str, ...] = (),
    voices: bool = False,
    gateway: bool = False,
    silent_interp: bool = False,
    v3: bool = False,
    notes: tuple[str, ...] = (),
) -> ModelSpec:
    mid = f"klingai/kling-{version}-i2v"
    return ModelSpec(
        id=mid,
        provider="klingai",
        title=f"Kling {version.removeprefix('v')} image-to-video",
        summary=_KLING_SUMMARIES[version],
        direct_name=kling_direct_name(mid),
        gateway_id=mid if gateway else None,
        durations=durations,
        default_duration=5,
        modes=modes,
        prompt_max=2500,
        negative_prompt_max=2500,
        prompt_required=True,
        image_rules=KLING_IMAGES,
        features={"animate_image": Feature(), **features},
        cfg_scale=cfg_scale,
        sound=sound,
        voices=voices,
        interpolation_silent_only=silent_interp,
        shots=v3,
        elements=v3,
        notes=notes,
    )


_STD_PRO = ("std", "pro")
_PRO = ("pro",)
KLING_MODELS = (
    _kling(
        "v1",
        modes=_STD_PRO,
        features={
            "interpolate_frames": Feature(modes=_STD_PRO, durations=(5,)),
            "motion_brush": Feature(modes=_STD_PRO, durations=(5,)),
        },
        cfg_scale=True,
    ),
    _kling(
        "v1.5",
        modes=_STD_PRO,
        features={
            "interpolate_frames": Feature(modes=_PRO),
            "motion_brush": Feature(modes=_PRO, durations=(5,)),
            "camera_move": Feature(modes=_PRO, durations=(5,), camera_types=("simple",)),
        },
        cfg_scale=True,
    ),
    _kling("v1.6", modes=_STD_PRO, features={"interpolate_frames": Feature(modes=_PRO)}, cfg_scale=True),
    _kling("v2-master", modes=(), features={}, cfg_scale=False),
    _kling("v2.1", modes=_STD_PRO, features={"interpolate_frames": Feature(modes=_PRO)}, cfg_scale=False),
    _kling("v2.1-master", modes=(), features={}, cfg_scale=False),
    _kling("v2.5-turbo", modes=_STD_PRO, features={"interpolate_frames": Feature(modes=_PRO)}, cfg_scale=False, gateway=True),
    _kling(
        "v2.6",
        modes=_STD_PRO,
        features={"interpolate_frames": Feature(modes=_PRO)},
        cfg_scale=False,
        sound=_PRO,
        voices=True,
        gateway=True,
        silent_interp=True,
        notes=("std renders silent only; sound and voices need pro",),
    ),
    _kling(
        "v3.0",
        modes=_STD_PRO,
        durations=tuple(range(3, 16)),
        features={"interpolate_frames": Feature()},
        cfg_scale=True,
        sound=_STD_PRO,
        voices=True,
        gateway=True,
        v3=True,
        notes=(
            "voices: Kling's capability map says no voice control on v3, its field docs and the AI SDK "
            "say v2.6 and later; stillmotion sends them",
        ),
    ),
)

# -- Wan, xAI, local -----------------------------------------------------------------------

def _wan(version: str, variant: str, title: str, summary: str, *, audio: bool = False) -> ModelSpec:
    return ModelSpec(
        id=f"alibaba/wan-v{version}-{variant}", provider="alibaba", title=title, summary=summary,
        direct_name=f"wan{version}-{variant}", gateway_id=f"alibaba/wan-v{version}-{variant}", durations=tuple(range(2, 16)), default_duration=5, modes=(), prompt_max=1500,
        negative_prompt_max=500, prompt_required=True, image_rules=WAN_IMAGES, features={"animate_image": Feature()},
        audio=audio, resolutions=("720P", "1080P"), default_resolution="720P", seed=True,
    )  # fmt: skip


WAN_MODELS = (
    _wan("2.6", "i2v", "Alibaba Wan 2.6 image-to-video",
         "Wan 2.6: standard quality image animation, 2-15 s, 720P or 1080P."),
    _wan("2.6", "i2v-flash", "Alibaba Wan 2.6 Flash image-to-video",
         "Wan 2.6 Flash: faster generation, optional generated audio.", audio=True),
)  # fmt: skip

XAI_ASPECTS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")


def _grok(name: str, title: str, summary: str, resolutions: tuple[str, ...], notes: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        id=f"xai/{name}", provider="xai", title=title, summary=summary, direct_name=name,
        gateway_id=f"spacexai/{name}", durations=tuple(range(1, 16)), default_duration=5, modes=(), prompt_max=4096,
        negative_prompt_max=None, prompt_required=True, image_rules=XAI_IMAGES, features={"animate_image": Feature()},
        resolutions=resolutions, default_resolution="480p", aspect_ratios=XAI_ASPECTS, notes=notes,
    )  # fmt: skip


XAI_MODEL = _grok(
    "grok-imagine-video", "xAI Grok Imagine Video",
    "Grok Imagine: 1-15 s, 480p or 720p; output keeps the image's aspect unless aspect_ratio is set.",
    ("480p", "720p"),
    ("extend_video xai.native: xAI's /v1/videos/extensions (direct route), 2-10 s added to a 2-15 s MP4",),
)  # fmt: skip
XAI_15_MODEL = _grok(
    "grok-imagine-video-1.5", "xAI Grok Imagine Video 1.5",
    "Grok Imagine 1.5: 1-15 s with generated sound, 480p, 720p or 1080p.",
    ("480p", "720p", "1080p"),
    (
        "no last frame: the AI SDK's xAI model sends none for 1.5 (sources disagree)",
        "no native extension: xAI answers 'Video extension is not supported for this model'",
    ),
)  # fmt: skip

# -- Google Veo, ByteDance Seedance (Vercel AI Gateway only) --------------------------------

VEO_IMAGES = ImageRules(("JPEG", "PNG"), 20 * MB, 64, None, 1 / 8, 8.0)
SEEDANCE_IMAGES = ImageRules(("JPEG", "PNG", "WEBP", "BMP"), 30 * MB, 300, 6000, 0.4, 2.5)
_VEO_UNPUBLISHED = (
    "prompt length (stillmotion caps it at 2500 characters)",
    "negative prompt length (capped at 2500)",
    "input image side and aspect limits (stillmotion applies 64 px and 1:8-8:1; output is 16:9 or 9:16)",
)


def _veo(version: str, fast: bool, *, durations: tuple[int, ...], last_frame: bool, summary: str) -> ModelSpec:
    mid = f"google/veo-{version}-{'fast-' if fast else ''}generate-001"
    feats = {"animate_image": Feature(), **({"interpolate_frames": Feature()} if last_frame else {})}
    return ModelSpec(
        id=mid, provider="google", title=f"Google Veo {version}{' Fast' if fast else ''}", summary=summary,
        direct_name=None, gateway_id=mid, durations=durations, default_duration=8, modes=(), prompt_max=2500,
        negative_prompt_max=2500, prompt_required=True, image_rules=VEO_IMAGES, features=feats, audio=True,
        resolutions=("720p", "1080p"), default_resolution="720p", aspect_ratios=("16:9", "9:16"), seed=True,
        image_urls=False, unpublished=_VEO_UNPUBLISHED,
    )  # fmt: skip


VEO_MODELS = (
    _veo("3.1", False, durations=(4, 6, 8), last_frame=True,
         summary="Veo 3.1: 4/6/8 s, 720p/1080p, 16:9 or 9:16, first and last frame, generated sound."),
    _veo("3.1", True, durations=(4, 6, 8), last_frame=True,
         summary="Veo 3.1 Fast: faster Veo 3.1 with first and last frame and sound."),
    _veo("3.0", False, durations=(4, 6, 8), last_frame=False,
         summary="Veo 3.0: 4/6/8 s, 720p/1080p, 16:9 or 9:16, generated sound; first frame only."),
    _veo("3.0", True, durations=(8,), last_frame=False,
         summary="Veo 3.0 Fast: 8 s only, one input image (no last frame)."),
)

_SEEDANCE_ASPECTS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9")
_SEEDANCE_UNPUBLISHED = ("prompt length (stillmotion caps it at 2500 characters)",)


def _seedance(
    name: str, title: str, *, durations: tuple[int, ...], resolutions: tuple[str, ...], last_frame: bool,
    audio: bool, summary: str,
) -> ModelSpec:
    feats = {"animate_image": Feature(), **({"interpolate_frames": Feature()} if last_frame else {})}
    return ModelSpec(
        id=f"bytedance/{name}", provider="bytedance", title=f"ByteDance {title}", summary=summary, direct_name=None,
        gateway_id=f"bytedance/{name}", durations=durations, default_duration=5, modes=(), prompt_max=2500,
        negative_prompt_max=None, prompt_required=True, image_rules=SEEDANCE_IMAGES, features=feats, audio=audio,
        resolutions=resolutions, default_resolution="720p", aspect_ratios=_SEEDANCE_ASPECTS, seed=True,
        unpublished=_SEEDANCE_UNPUBLISHED,
    )  # fmt: skip


_P3 = ("480p", "720p", "1080p")
SEEDANCE_MODELS = (
    _seedance("seedance-2.0", "Seedance 2.0", durations=tuple(range(4, 16)), resolutions=_P3, last_frame=True,
              audio=True, summary="Seedance 2.0: 4-15 s, up to 1080p, first and last frame, generated sound."),
    _seedance("seedance-2.0-fast", "Seedance 2.0 Fast", durations=tuple(range(4, 16)), resolutions=_P3[:2],
              last_frame=True, audio=True, summary="Seedance 2.0 Fast: 4-15 s, up to 720p, first and last frame, sound."),
    _seedance("seedance-v1.5-pro", "Seedance 1.5 Pro", durations=tuple(range(4, 13)), resolutions=_P3,
              last_frame=True, audio=True, summary="Seedance 1.5 Pro: 4-12 s, up to 1080p, first and last frame, sound."),
    _seedance("seedance-v1.0-pro", "Seedance 1.0 Pro", durations=tuple(range(3, 13)), resolutions=_P3,
              last_frame=True, audio=False, summary="Seedance 1.0 Pro: 3-12 s, up to 1080p, first and last frame, silent."),
    _seedance("seedance-v1.0-pro-fast", "Seedance 1.0 Pro Fast", durations=tuple(range(3, 13)), resolutions=_P3,
              last_frame=False, audio=False, summary="Seedance 1.0 Pro Fast: 3-12 s, up to 1080p, first frame only, silent."),
)  # fmt: skip

LOCAL_MODEL = ModelSpec(
    id="local/preview",
    provider="local",
    title="Offline preview engine",
    summary=(
        "Offline CPU engine: real, deterministic H.264 previews of every operation, no key, no network, free. "
        "It moves the pixels it is given (camera moves, optical-flow morphs, masked motion); "
        "it does not invent new content."
    ),
    direct_name=None,
    gateway_id=None,
    durations=tuple(range(1, 16)),
    default_duration=5,
    modes=(),
    prompt_max=2500,
    negative_prompt_max=2500,
    prompt_required=False,
    image_rules=LOCAL_IMAGES,
    features={t: Feature() for t in GENERATION_TOOLS},
    resolutions=("480p", "720p", "1080p"),
    default_resolution="720p",
)

ALL_MODELS: tuple[ModelSpec, ...] = (
    LOCAL_MODEL, *KLING_MODELS, *WAN_MODELS, XAI_MODEL, XAI_15_MODEL, *VEO_MODELS, *SEEDANCE_MODELS
)  # fmt: skip
MODELS: dict[str, ModelSpec] = {m.id: m for m in ALL_MODELS}
ALIASES: dict[str, str] = {
    "spacexai/" + m.id.removeprefix("xai/"): m.id for m in ALL_MODELS if m.provider == "xai"
}
"""xAI's models moved from the Gateway's `xai/` prefix to `spacexai/`: every `xai/` id is taken in both spellings."""


def resolve_model_id(model_id: str) -> str | None:
    mid = ALIASES.get(model_id, model_id)
    return mid if mid in MODELS else None


def models_for_tool(tool: str, *, strict: bool = True) -> list[ModelSpec]:
    """Models a tool's `model` enum lists: the capability map's, or every Kling model when not strict."""
    out = []
    for m in ALL_MODELS:
        if m.serves(tool) or (not strict and m.provider == "klingai" and tool in GENERATION_TOOLS):
            out.append(m)
    return out


def model_ids_for_tool(tool: str, *, strict: bool = True) -> list[str]:
    ids = [m.id for m in models_for_tool(tool, strict=strict)]
    return ids + [alias for alias, mid in ALIASES.items() if mid in ids]


def catalog_table() -> list[dict[str, Any]]:
    return [m.to_public() for m in ALL_MODELS]
