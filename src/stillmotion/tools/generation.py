"""The generation tools: animate_image, interpolate_frames, camera_move, motion_brush.

Each is one argument model (arguments.py) and one shared handler. Numbers in the descriptions
and schemas come from the catalog (models, durations, prompt lengths) and from the argument
models' own bounds (camera strengths, mask counts), so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.types import CallToolResult, InputRequiredResult

from ..catalog import (
    CAMERA_TYPES,
    GENERATION_TOOLS,
    ModelSpec,
    model_ids_for_tool,
    models_for_tool,
)
from ..plan.arguments import ARGS_BY_TOOL, OPTION_ARGUMENTS, GenerationArgs, RequestArgs
from ..plan.requests import CameraConfig
from ..plan.validation import Plan, max_trajectory_points
from ..providers.families import FAMILIES
from ..providers.registry import REGISTRY
from ..render.camera import PAN_TILT_DEG_PER_UNIT, ROLL_DEG_PER_UNIT, TRANSLATION_FRACTION_PER_UNIT
from .base import GEN_ANNOTATIONS, Build, Call, ToolSpec
from .cost import Asker, GenerationResult, confirm, dry_run_result
from .results import call_result
from .schema import JSON

UNPUBLISHED_OPTIONS = frozenset({"poll_interval_ms", "poll_timeout_ms", "watermark", "seed"})
"""Fields the server accepts in every option object but does not advertise to models: the operator
knobs (STILLMOTION_POLL_INTERVAL_MS / _TIMEOUT_MS set them for the server), and `watermark` and
`seed`, rarely wanted and listed by list_models (options.seed) and the README: they cost every
tool's schema tokens (the tool list's budget, docs/decisions.md)."""

PROVIDER_NAMES = {name: f.short for name, f in FAMILIES.items()}


def _durations(model: ModelSpec, tool: str) -> tuple[int, ...]:
    feature = model.features.get(tool)
    return feature.durations if feature is not None and feature.durations else model.durations


def _camera_bound() -> float:
    for meta in CameraConfig.model_fields["zoom"].metadata:
        le = getattr(meta, "le", None)
        if le is not None:
            return float(le)
    raise AssertionError("CameraConfig.zoom has no upper bound")


def _tool_text(tool: str) -> str:
    if tool == "animate_image":
        return (
            "Animate a still image: the image becomes the first frame and the prompt describes the motion. "
            "On local/preview, motion words (zoom in, pan left, ...) steer a camera move."
        )
    if tool == "interpolate_frames":
        return "Make a clip that starts on start_image and ends on end_image (first/last-frame)."
    if tool == "camera_move":
        b = _camera_bound()
        return (
            f"Move the camera over the still scene: one axis in [-{b:g}, {b:g}] (type simple) or a preset type. "
            "Negative = left / down / counter-clockwise / narrower view. On local/preview "
            f"{b:g} = {PAN_TILT_DEG_PER_UNIT * b:g} deg pan/tilt, {ROLL_DEG_PER_UNIT * b:g} deg roll, 2x zoom, "
            f"{TRANSLATION_FRACTION_PER_UNIT * b:g} frame shift."
        )
    if tool == "motion_brush":
        masks = ARGS_BY_TOOL["motion_brush"].model_fields["dynamic_masks"].metadata
        lo = next(v for v in (getattr(m, "min_length", None) for m in masks) if v is not None)
        hi = next(v for v in (getattr(m, "max_length", None) for m in masks) if v is not None)
        return (
            f"Move {lo}-{hi} masked regions along trajectories (input-image pixels, origin BOTTOM-LEFT, "
            f"2-{max_trajectory_points(5)} points per 5 s) while static_mask holds still."
        )
    raise KeyError(tool)


def model_rules(tool: str, strict: bool) -> str:
    """Per-model rules of one tool, models with the same rules grouped: `a, b: std|pro, 5/10 s`."""
    groups: dict[str, list[str]] = {}
    for m in models_for_tool(tool, strict=strict):
        feat = m.features.get(tool)
        parts = []
        if m.modes:
            parts.append("|".join(feat.modes if feat and feat.modes else m.modes))
        durs = _durations(m, tool)
        parts.append("/".join(map(str, durs)) + " s" if len(durs) <= 3 else f"{durs[0]}-{durs[-1]} s")
        if tool == "camera_move" and feat is not None and feat.camera_types != CAMERA_TYPES:
            parts.append("camera " + "|".join(feat.camera_types))
        if feat is None:
            parts.append("off-map")
        groups.setdefault(", ".join(parts), []).append(m.id)
    rules = "; ".join(f"{_brace_each(ids)}: {rule}" for rule, ids in groups.items())
    if any("off-map" in rule for rule in groups):
        rules += " (off-map: outside Kling's capability map, sent with a warning)"
    return rules


def _common_start(texts: list[str]) -> str:
    """The characters every text starts with."""
    first = texts[0]
    n = 0
    while n < len(first) and all(len(t) > n and t[n] == first[n] for t in texts):
        n += 1
    return first[:n]


def _brace(ids: list[str]) -> str:
    """`klingai/kling-{v1,v1.5}-i2v` for ids that share a prefix and suffix (they are in the enum in full)."""
    if len(ids) < 2:
        return ", ".join(ids)
    prefix = _common_start(ids)
    prefix = prefix[: prefix.rfind("-") + 1] if "-" in prefix else prefix
    suffix = _common_start([i[::-1] for i in ids])[::-1]
    suffix = suffix[suffix.find("-"):] if "-" in suffix else ""
    if len(prefix) + len(suffix) > min(map(len, ids)):
        suffix = ""
    middles = [i[len(prefix) : len(i) - len(suffix)] for i in ids]
    if prefix.endswith("-") and any(not m for m in middles):  # `veo-3.1{,-fast}-generate-001`
        prefix = prefix[:-1]
        middles = [i[len(prefix) : len(i) - len(suffix)] for i in ids]
    if not prefix or sum(not m for m in middles) > 1:
        return ", ".join(ids)
    return f"{prefix}{{{','.join(middles)}}}{suffix}"


def _brace_each(ids: list[str]) -> str:
    """`_brace` per provider: `local/preview, xai/grok-imagine-{video,video-1.5}`."""
    by_provider: dict[str, list[str]] = {}
    for i in ids:
        by_provider.setdefault(i.split("/", 1)[0], []).append(i)
    return ", ".join(_brace(group) for group in by_provider.values())


def _prompt_maxima(models: list[ModelSpec]) -> str:
    """`Kling/Veo/Seedance 2500, Wan 1500, xAI 4096`: providers with the same maximum named together."""
    by_provider: dict[str, int] = {}
    for m in models:
        if m.prompt_required:
            by_provider[PROVIDER_NAMES[m.provider]] = max(by_provider.get(PROVIDER_NAMES[m.provider], 0), m.prompt_max)
    by_max: dict[int, list[str]] = {}
    for p, n in by_provider.items():
        by_max.setdefault(n, []).append(p)
    return ", ".join(f"{'/'.join(ps)} {n}" for n, ps in by_max.items())


def _option_fields(props: JSON, tool: str, models: list[ModelSpec]) -> None:
    """Option fields from the catalog: which models take them (for this tool), their defaults
    (each family's `schema` hook in its provider module writes its own object's).

    Fields no model of this tool can use leave the schema; the server still refuses them with
    the reason (e.g. sound on camera_move, where no model serving it has sound)."""

    def fields_of(name: str) -> JSON | None:
        if name not in props:
            return None
        found: JSON = next(m for m in props[name]["anyOf"] if m.get("type") == "object")["properties"]
        return found

    for entry in REGISTRY.values():
        obj, served = fields_of(entry.field), [m for m in models if m.provider == entry.name]
        if obj is not None and served and entry.schema is not None:
            entry.schema(obj, tool, served)

def lean_controls(props: JSON) -> None:
    """The call controls' bounds that no caller trips by accident (a 200-character key, a negative
    price) stay in the server's check only: the tool list's budget (docs/decisions.md)."""
    for name, bound in (("idempotency_key", "maxLength"), ("confirm_cost_usd", "minimum")):
        if name in props:
            for member in props[name].get("anyOf", [props[name]]):
                member.pop(bound, None)


def specialise(tool: str, build: Build) -> Callable[[JSON], JSON]:
    """The catalog's numbers in a generation tool's schema: model enum and rules, duration and prompt bounds."""
    strict = build.settings.strict_capabilities
    default_model = build.settings.default_model
    models = models_for_tool(tool, strict=strict)
    ids = model_ids_for_tool(tool, strict=strict)

    def edit(schema: JSON) -> JSON:
        props = schema["properties"]
        model: JSON = {
            "anyOf": [{"enum": ids, "type": "string"}, {"type": "null"}],
            "description": f"Per model: {model_rules(tool, strict)}.",
        }
        if default_model in ids:
            model["default"] = default_model
        props["model"] = model
        durations = sorted({d for m in models for d in _durations(m, tool)})
        props["duration"]["anyOf"][0].update(minimum=durations[0], maximum=durations[-1])
        others = sorted({(PROVIDER_NAMES[m.provider], m.default_duration) for m in models if m.default_duration != 5})
        if others:  # Veo's default is 8 s
            props["duration"]["description"] = "Seconds (default 5, " + ", ".join(f"{p} {d}" for p, d in dict(others).items()) + ")."
        optional = sorted({m.id for m in models if not m.prompt_required})
        props["prompt"]["anyOf"][0]["maxLength"] = max(m.prompt_max for m in models)
        limits = {m.prompt_max for m in models}
        props["prompt"]["description"] = (
            "The motion"
            + (f"; optional on {', '.join(optional)}." if optional else ".")
            + (f" Max: {_prompt_maxima(models)}." if len(limits) > 1 else "")
        )
        if any(m.negative_prompt_max is None for m in models):
            no_negative = sorted({PROVIDER_NAMES[m.provider] for m in models if m.negative_prompt_max is None})
            props["negative_prompt"]["description"] = f"Not on {', '.join(no_negative)}."
        _option_fields(props, tool, models)
        lean_controls(props)
        for name in OPTION_ARGUMENTS:
            if name in props:
                obj = next(m for m in props[name]["anyOf"] if m.get("type") == "object")
                for hidden in UNPUBLISHED_OPTIONS:
                    obj["properties"].pop(hidden, None)
        return schema

    return edit


async def run_generation(args: GenerationArgs, call: Call) -> CallToolResult | InputRequiredResult:
    return await run_request(args, call)


async def run_request(
    args: RequestArgs, call: Call, job_id: str | None = None, plan: Plan | None = None
) -> CallToolResult | InputRequiredResult:
    """A validated request through dry run, the cost confirmation, the job and the optional wait.
    It is planned once (`plan`, when the caller already planned it), for the confirmation and the job."""
    svc = call.service
    if args.dry_run:
        return await dry_run_result(svc, args, plan)
    if call.request is not None and svc.settings.confirm_above_usd is not None:
        ctx, params = call.request, call.params
        asker = Asker(
            ctx.protocol_version, ctx.session.client_capabilities, ctx.session, ctx.request_id,
            params.input_responses if params is not None else None,
            params.request_state if params is not None else None,
        )
        plan = plan or svc.plan(args)
        ask = await confirm(
            svc, args.tool, plan, confirm_cost_usd=args.confirm_cost_usd, idempotency_key=args.idempotency_key,
            asker=asker,
        )  # fmt: skip
        if ask is not None:
            return ask  # 2026-07-28: the client asks the person and calls again with the answer
    row = await svc.submit(args, idempotency_key=args.idempotency_key, plan=plan, job_id=job_id)
    if args.wait_seconds > 0:
        row = await svc.wait(row.id, args.wait_seconds, call.progress())
    return call_result(row, links=call.settings.resource_links, shell=call.shell, file_links=call.settings.file_links)


def specs(build: Build) -> list[ToolSpec[Any]]:
    out: list[ToolSpec[Any]] = []
    for tool in GENERATION_TOOLS:
        out.append(
            ToolSpec(
                name=tool,
                title=tool.replace("_", " ").capitalize(),
                description=_tool_text(tool) + " Returns a job; then check_job.",
                args=ARGS_BY_TOOL[tool],
                handler=run_generation,
                annotations=GEN_ANNOTATIONS,
                output=GenerationResult,
                specialise=specialise(tool, build),
            )
        )
    return out
