"""Every rule of the seed and the capability map, checked before anything is sent.

`plan_request` checks what needs no I/O (model, route, credentials, lengths, durations, modes,
options, camera) on the tool's validated arguments (`arguments.RequestArgs`); `check_images` and
`check_masks_and_paths` check the loaded images, masks and trajectories (plan/intake.py). A failed
rule raises InvalidInput (or MissingCredentials) naming the argument, the rule and the allowed
values. Options a model ignores become warnings, never silent drops.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..catalog import CAMERA_AXES, GENERATION_TOOLS, MODELS, ModelSpec, models_for_tool, resolve_model_id
from ..errors import InvalidInput
from ..media.images import LoadedImage, check_image, rasterize_shape
from ..providers.families import FAMILIES
from ..providers.local import IGNORED_WITH_SHOTS
from ..providers.registry import REGISTRY
from ..providers.rules import OptionContext
from ..settings import Settings
from .arguments import RequestArgs
from .requests import BoxShape, CameraControl, DynamicMask, KlingOptions, PolygonShape
from .routes import PROVIDER_LABEL, RouteName, choose_route


def did_you_mean(given: str, choices: Iterable[str], cutoff: float = 0.75) -> str | None:
    """The choice closest to a near miss (`duraton` -> `duration`), or None when nothing is close."""
    close = difflib.get_close_matches(given, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


@dataclass
class Plan:
    spec: ModelSpec
    route: RouteName
    duration: int
    provider_options: BaseModel
    """The model's own options object, resolved by its provider's check (stored as the request's field)."""
    warnings: list[str] = field(default_factory=list)
    poll_interval_ms: int = 5000
    poll_timeout_ms: int = 600_000
    prompt: str | None = None
    """The prompt to send (None when blank or made unused by the options)."""
    kling_shots: KlingOptions | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The resolved options as a plain dict (None values left out), for readers such as pricing."""
        return dict(self.provider_options.model_dump(exclude_none=True))

    @property
    def option_fields(self) -> dict[str, BaseModel]:
        """The stored request's option fields: {own field: options} (+ kling shots on local/preview)."""
        out: dict[str, BaseModel] = {REGISTRY[self.spec.provider].field: self.provider_options}
        if self.kling_shots is not None:
            out["kling"] = self.kling_shots
        return out


def max_trajectory_points(duration: int) -> int:
    """77 points for 5 s (Kling's rule), scaled linearly with duration."""
    return max(2, (77 * duration) // 5)


def _dump(opt: BaseModel | None) -> dict[str, Any]:
    return {} if opt is None else opt.model_dump(exclude_none=True)


def plan_request(args: RequestArgs, settings: Settings) -> Plan:
    tool = "animate_image" if args.tool == "extend_video" else args.tool  # a continuation is image-to-video
    assert tool in GENERATION_TOOLS
    model_arg = args.model or settings.default_model
    mid = resolve_model_id(model_arg)
    allowed_models = [m.id for m in models_for_tool(tool, strict=settings.strict_capabilities)]
    if mid is None:
        near = did_you_mean(model_arg, allowed_models, cutoff=0.6)
        hint = f"; did you mean '{near}'?" if near else "."
        raise InvalidInput("model", f"unknown model {model_arg!r} for {tool}{hint}", allowed_models)
    spec = MODELS[mid]
    warnings: list[str] = []
    feature = spec.features.get(tool)
    if feature is None:
        if FAMILIES[spec.provider].capability_map and not settings.strict_capabilities:
            warnings.append(
                f"{spec.id} is not listed for {tool} in Kling's capability map; sent anyway because "
                "STILLMOTION_STRICT_CAPABILITIES=0. Kling may reject or ignore it."
            )
        else:
            capable = [m.id for m in models_for_tool(tool, strict=True)]
            raise InvalidInput(
                "model",
                f"{spec.id} cannot serve {tool} (Kling's published capability map"
                + (
                    "; set STILLMOTION_STRICT_CAPABILITIES=0 to send it anyway)."
                    if FAMILIES[spec.provider].capability_map
                    else ")."
                ),
                capable,
            )
    route = choose_route(spec, settings)

    # -- options objects: the model's own is used; others are ignored with a warning
    entry = REGISTRY[spec.provider]
    own_field = entry.field
    given = args.options_given()
    for name, value in given.items():
        if value is not None and name != own_field:
            keys = sorted(_dump(value))
            if spec.is_local and name == "kling":
                keys = [k for k in keys if k not in IGNORED_WITH_SHOTS]  # local/preview honours shots
                if not keys:
                    continue
            warnings.append(
                f"'{name}' options ({', '.join(keys or ['(empty)'])}) are ignored: {spec.id} is a "
                f"{PROVIDER_LABEL[spec.provider]} model"
                + (f" (its options object is '{own_field}')." if own_field != "local" else ".")
            )
            if spec.is_local:
                _local_ignored_note(value, warnings)

    # -- prompt
    prompt = args.prompt
    if prompt is not None and not prompt.strip():
        prompt = None
    if prompt is not None and len(prompt) > spec.prompt_max:
        raise InvalidInput(
            "prompt", f"is {len(prompt)} characters; {spec.id} accepts at most {spec.prompt_max}.", f"<= {spec.prompt_max} characters"
        )
    negative_prompt: str | None = args.argument("negative_prompt")
    if negative_prompt:
        if spec.negative_prompt_max is None:
            warnings.append(f"negative_prompt is ignored: {spec.id} has no negative prompt.")
        elif len(negative_prompt) > spec.negative_prompt_max:
            raise InvalidInput(
                "negative_prompt",
                f"is {len(negative_prompt)} characters; {spec.id} accepts at most {spec.negative_prompt_max}.",
                f"<= {spec.negative_prompt_max} characters",
            )
        elif spec.is_local:
            warnings.append("negative_prompt is ignored by local/preview (it moves pixels, it does not generate).")
    if spec.is_local and prompt is not None and tool != "animate_image":
        warnings.append(f"prompt is not used by local/preview for {tool}; the motion comes from the tool's arguments.")

    # -- the provider's own option rules (its module owns them)
    ctx = OptionContext(
        extending=args.tool == "extend_video",
        tool=tool,
        spec=spec,
        route=route,
        prompt=prompt,
        duration=args.duration,
        has_end_image=args.argument("end_image") is not None,
        settings=settings,
        kling=args.argument("kling"),
    )
    checked = entry.check(given[own_field], ctx)
    warnings.extend(checked.warnings)
    if spec.prompt_required and checked.prompt_used and prompt is None:
        raise InvalidInput("prompt", f"{spec.id} requires a prompt describing the motion.", f"1-{spec.prompt_max} characters")

    # -- duration
    durations = feature.durations if feature and feature.durations else spec.durations
    if args.duration is not None:
        duration = args.duration
    else:
        duration = checked.duration if checked.duration is not None else spec.default_duration
    if duration not in durations:
        where = f" for {tool}" if feature and feature.durations else ""
        raise InvalidInput(
            "duration", f"{duration} s is not offered by {spec.id}{where}.", [f"{d}" for d in durations]
        )

    # -- camera
    if tool == "camera_move":
        _check_camera(args.argument("camera"), spec, feature)
    if tool == "motion_brush":
        masks: list[DynamicMask] = args.argument("dynamic_masks") or []
        if not 1 <= len(masks) <= 6:
            raise InvalidInput("dynamic_masks", f"has {len(masks)} entries.", "1 to 6 dynamic masks")
        hi = max_trajectory_points(duration)
        for i, dm in enumerate(masks):
            n = len(dm.trajectory)
            if not 2 <= n <= hi:
                raise InvalidInput(
                    f"dynamic_masks[{i}].trajectory",
                    f"has {n} points; a {duration} s clip takes 2-{hi} points (77 per 5 s, scaled with duration).",
                    f"2-{hi} points",
                )
    return Plan(
        spec,
        route,
        duration,
        checked.options,
        warnings,
        checked.poll_interval_ms or settings.poll_interval_ms,
        checked.poll_timeout_ms or settings.poll_timeout_ms,
        prompt=prompt if checked.prompt_used else None,
        kling_shots=checked.kling_shots,
    )


def _local_ignored_note(value: BaseModel, warnings: list[str]) -> None:
    dumped = _dump(value)
    if dumped.get("sound") == "on" or dumped.get("voices") or dumped.get("audio") or dumped.get("audio_url"):
        warnings.append("local/preview renders silent video: sound, voices and audio are not generated.")


def _check_camera(camera: CameraControl | None, spec: ModelSpec, feature: Any) -> None:
    if camera is None:
        raise InvalidInput("camera", "is required.", "{type: simple, config: {...}} or a preset type")
    allowed_types = feature.camera_types if feature is not None else ("simple",)
    if camera.type not in allowed_types:
        raise InvalidInput("camera.type", f"{spec.id} supports only these camera types.", list(allowed_types))
    if camera.type == "simple":
        if camera.config is None:
            raise InvalidInput(
                "camera.config",
                "type simple needs a config with exactly one non-zero axis in [-10, 10].",
                list(CAMERA_AXES),
            )
        nonzero = [a for a in CAMERA_AXES if getattr(camera.config, a) != 0]
        if len(nonzero) != 1:
            raise InvalidInput(
                "camera.config",
                f"type simple needs exactly one non-zero axis; got {len(nonzero)}"
                + (f" ({', '.join(nonzero)})" if nonzero else "")
                + ".",
                [f"{a} in [-10, 10]" for a in CAMERA_AXES],
            )
    elif camera.config is not None:
        raise InvalidInput("camera.config", f"type {camera.type} takes no config; leave it out.", "(absent)")


# -- inputs that need I/O ------------------------------------------------------------------


@dataclass
class LoadedInputs:
    image: LoadedImage
    end_image: LoadedImage | None = None
    dynamic: list[tuple[LoadedImage, list[tuple[float, float]]]] = field(default_factory=list)
    static_mask: LoadedImage | None = None

    def named(self) -> list[tuple[str, LoadedImage]]:
        """Every image with the file name it is kept under."""
        out = [("image", self.image)]
        if self.end_image is not None:
            out.append(("end_image", self.end_image))
        out += [(f"dynamic_mask_{i}", m) for i, (m, _) in enumerate(self.dynamic)]
        if self.static_mask is not None:
            out.append(("static_mask", self.static_mask))
        return out

    def all(self) -> list[LoadedImage]:
        return [img for _, img in self.named()]


def check_masks_and_paths(inputs: LoadedInputs, spec: ModelSpec, args: RequestArgs) -> None:
    img = inputs.image
    masks: list[tuple[str, LoadedImage]] = [
        (f"dynamic_masks[{i}].mask", m) for i, (m, _) in enumerate(inputs.dynamic)
    ]
    if inputs.static_mask is not None:
        masks.append(("static_mask", inputs.static_mask))
    first_res: tuple[int, int] | None = None
    for name, m in masks:
        if m.format not in spec.image_rules.formats:
            raise InvalidInput(name, f"is a {m.format} image; masks take the input image's formats.", [f.lower() for f in spec.image_rules.formats])
        ar_img = img.width / img.height
        ar_mask = m.width / m.height
        if abs(ar_mask - ar_img) / ar_img > 0.01:
            raise InvalidInput(
                name,
                f"is {m.width}x{m.height}; a mask must have the input image's aspect ratio ({img.width}x{img.height}).",
                f"aspect ratio {ar_img:.4f} (within 1%)",
            )
        if first_res is None:
            first_res = (m.width, m.height)
        elif (m.width, m.height) != first_res:
            raise InvalidInput(
                name,
                f"is {m.width}x{m.height} but the other masks are {first_res[0]}x{first_res[1]}; all masks must share one resolution.",
                f"{first_res[0]}x{first_res[1]}",
            )
    for i, (_, traj) in enumerate(inputs.dynamic):
        for j, (x, y) in enumerate(traj):
            if not (0 <= x <= img.width - 1 and 0 <= y <= img.height - 1):
                raise InvalidInput(
                    f"dynamic_masks[{i}].trajectory[{j}]",
                    f"point ({x:g}, {y:g}) lies outside the {img.width}x{img.height} input image.",
                    f"x in [0, {img.width - 1}], y in [0, {img.height - 1}] (pixels, origin bottom-left)",
                )


def check_images(inputs: LoadedInputs, spec: ModelSpec, args: RequestArgs) -> None:
    check_image(inputs.image, spec.image_rules, argument=args.image_argument, model=spec.id)
    if inputs.end_image is not None:
        check_image(inputs.end_image, spec.image_rules, argument="end_image", model=spec.id)


def shape_to_image(mask: BoxShape | PolygonShape, width: int, height: int, argument: str) -> LoadedImage:
    return rasterize_shape(mask.model_dump(), width, height, argument)
