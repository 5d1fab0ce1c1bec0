"""What a provider's option check gets and gives back (pure: no I/O, no provider request).

Each provider module owns one `check_options(options, ctx) -> Checked`: it raises InvalidInput
(naming the argument, the rule and the allowed values) for a request the provider would refuse,
and returns the resolved options (defaults filled in, poll settings taken out), the warnings,
and what the options decide about the shared arguments (a duration implied by Kling shots, a
main prompt that shots make unused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from ..catalog import ModelSpec
from ..media.sources import AudioFacts
from ..plan.requests import KlingOptions
from ..settings import Settings

OptionsT = TypeVar("OptionsT", bound=BaseModel)


@dataclass(frozen=True)
class OptionContext:
    tool: str
    spec: ModelSpec
    route: Literal["direct", "gateway", "local"]
    prompt: str | None
    """The main prompt, blank already turned into None."""
    duration: int | None
    """The duration the caller gave (None = not given)."""
    has_end_image: bool
    settings: Settings
    kling: KlingOptions | None = None
    """The `kling` object as given, whatever the model (local/preview reads its shots)."""
    extending: bool = False
    """extend_video: the request continues a video (tool is then animate_image, its continuation)."""


@dataclass
class Checked(Generic[OptionsT]):
    options: OptionsT
    warnings: list[str] = field(default_factory=list)
    duration: int | None = None
    """A duration the options imply when the caller gave none (Kling shots: their sum)."""
    prompt_used: bool = True
    """False when the options make the main prompt unused (Kling custom shots): not required, not sent."""
    poll_interval_ms: int | None = None
    poll_timeout_ms: int | None = None
    kling_shots: KlingOptions | None = None
    """local/preview: the Kling shots it honours, stored as the request's `kling` object."""


@dataclass(frozen=True)
class AudioInput:
    """An audio track a family's options object takes by URL or path (its `attribute`): fetched
    before the admission slot, checked by content and kept like the images (`plan/intake.py`),
    stored as the request's `audio`."""

    attribute: str
    max_bytes: int
    """The largest track the provider takes (a fetch stops one byte past it)."""
    check: Callable[[bytes, str], AudioFacts]
    """The provider's rules on (the bytes, the argument's name) -> InvalidInput; decodes, so it runs
    on a worker thread."""
    resources: str
    """What the argument accepts, as a refusal names it."""


@dataclass(frozen=True)
class NativeExtension:
    """A family that extends a video itself (`extend_video`), asked for by a boolean in its options
    object (`flag`): its answer is the whole video, so nothing is joined and no crossfade applies."""

    flag: str
    """The options field that asks for it; the only one of the object `extend_video`'s schema shows."""
    check_source: Callable[[float], None]
    """The source video's length (seconds) against the provider's rule (InvalidInput on `video`)."""

    def asked(self, options: object) -> bool:
        return bool(getattr(options, self.flag, None))


SchemaHook = Callable[[dict[str, Any], str, list[ModelSpec]], None]
"""(the options object's JSON schema properties, the tool, this tool's models of the family) -> edits
the properties in place: descriptions from the catalog, fields none of these models can use removed."""


def check_catalog_choices(field_name: str, values: dict[str, object], spec: ModelSpec) -> None:
    """`resolution`, `aspect_ratio` and `audio` of an options object against the model's catalog
    entry (one family's object serves models with different limits). Raises InvalidInput."""
    from ..errors import InvalidInput

    res = values.get("resolution")
    if res is not None and res not in spec.resolutions:
        raise InvalidInput(f"{field_name}.resolution", f"{res} is not offered by {spec.id}.", list(spec.resolutions))
    ratio = values.get("aspect_ratio")
    if ratio is not None and ratio not in spec.aspect_ratios:
        raise InvalidInput(f"{field_name}.aspect_ratio", f"{ratio} is not offered by {spec.id}.", list(spec.aspect_ratios))
    if values.get("audio") is True and not spec.audio:
        raise InvalidInput(
            f"{field_name}.audio", f"{spec.id} generates silent video only.", ["false", "(absent)"]
        )


def check_family_options(field_name: str, cls: type[OptionsT], given: OptionsT | None, ctx: OptionContext) -> Checked[OptionsT]:
    """A Gateway-only family's options object (Veo, Seedance): the catalog's choices checked, the
    resolution defaulted, `audio` false unless asked on the models with sound (always sent, so the
    provider's own default never decides what is billed), poll settings taken out."""
    opts = given if given is not None else cls()
    values = opts.model_dump(exclude_none=True)
    check_catalog_choices(field_name, values, ctx.spec)
    poll_interval_ms = values.pop("poll_interval_ms", None)
    poll_timeout_ms = values.pop("poll_timeout_ms", None)
    values.setdefault("resolution", ctx.spec.default_resolution)
    if ctx.spec.audio:
        values.setdefault("audio", False)
    return Checked(cls.model_validate(values), poll_interval_ms=poll_interval_ms, poll_timeout_ms=poll_timeout_ms)


GatewayFields = dict[str, tuple[str, str, Any]]
"""A direct family's wire field -> (where on the Gateway body: "top" or "po", its AI SDK name, conversion or None)."""


def provider_options(**names: str) -> GatewayFields:
    """Wire fields that go to `providerOptions.<key>` under another name, unconverted."""
    return {ours: ("po", theirs, None) for ours, theirs in names.items()}


def gateway_part(key: str, fields: dict[str, Any], table: GatewayFields, image: dict[str, Any]) -> dict[str, Any]:
    """A direct family's own option fields renamed to the AI SDK's spelling: the top-level call options,
    `providerOptions.<key>` and the start image."""
    top: dict[str, Any] = {}
    po: dict[str, Any] = {}
    for name, value in fields.items():
        where, theirs, convert = table[name]
        (top if where == "top" else po)[theirs] = convert(value) if convert is not None else value
    return {**top, "providerOptions": {key: po} if po else {}, "image": image}


def family_schema(props: dict[str, Any], tool: str, models: list[ModelSpec]) -> None:
    """A Gateway-only family's object (Veo, Seedance): no aspect ratio between two frames, no audio
    field where none of the models has sound (both still taken and checked)."""
    if tool == "interpolate_frames":
        props.pop("aspect_ratio", None)  # the two frames give the shape; still taken
    if not any(m.audio for m in models):
        props.pop("audio", None)


def call_options(opts: Any, sizes: dict[str, str]) -> dict[str, Any]:
    """The AI SDK's top-level call options of a family's object: `aspectRatio`, `resolution` (the
    tier as the WxH the SDK's provider maps back to it) and `seed`."""
    body: dict[str, Any] = {}
    if opts.aspect_ratio:
        body["aspectRatio"] = opts.aspect_ratio
    if opts.resolution:
        body["resolution"] = sizes[opts.resolution]
    if opts.seed is not None:
        body["seed"] = opts.seed
    return body
