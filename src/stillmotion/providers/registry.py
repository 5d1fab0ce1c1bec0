"""The one provider registry: for each catalog provider, its facts (`families.py`), its options
object, its option rules and its route classes. Validation, the service and the runner all look
providers up here; what must stay light (settings, `stillmotion models`) reads `families.py`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx
from pydantic import BaseModel

from ..plan.requests import KlingOptions, LocalOptions, SeedanceOptions, VeoOptions, WanOptions, XaiOptions
from ..settings import Settings
from . import kling, local, seedance, veo, wan, xai
from .base import Provider
from .families import FAMILIES, Family
from .gateway import GatewayProvider
from .rules import AudioInput, Checked, NativeExtension, OptionContext, SchemaHook, family_schema


class AudioSource(NamedTuple):
    value: str
    argument: str
    """Its name in refusals (`wan.audio_url`)."""
    rules: AudioInput


@dataclass(frozen=True)
class ProviderEntry:
    family: Family
    """Its plain facts (`families.py`): name, labels, options field, keys, base URL, cap."""
    options: type[BaseModel]
    check: Callable[[Any, OptionContext], Checked[Any]]
    direct: type[Provider] | None
    """The direct route's class (None: rendered locally, or served by the Gateway only)."""
    schema: SchemaHook | None = None
    """Tailors its options object in a tool's JSON schema to the catalog (`rules.SchemaHook`)."""
    audio: AudioInput | None = None
    """An audio track its options take (`rules.AudioInput`), fetched and kept by `plan/intake.py`."""
    extension: NativeExtension | None = None
    """Its own video extension for `extend_video` (`rules.NativeExtension`), when it has one."""

    @property
    def name(self) -> str:
        """The catalog provider (klingai, alibaba, xai, local, ...)."""
        return self.family.name

    @property
    def field(self) -> str:
        """Its options object: the tool argument and the stored request field (kling, wan, xai, local, ...)."""
        return self.family.field

    def audio_source(self, options: object) -> AudioSource | None:
        """The audio track its `options` give, if any."""
        if self.audio is None:
            return None
        value = getattr(options, self.audio.attribute, None)
        return None if value is None else AudioSource(value, f"{self.field}.{self.audio.attribute}", self.audio)


REGISTRY: dict[str, ProviderEntry] = {
    e.name: e
    for e in (
        ProviderEntry(kling.FAMILY, KlingOptions, kling.check_options, kling.KlingProvider, kling.schema),
        ProviderEntry(wan.FAMILY, WanOptions, wan.check_options, wan.WanProvider, wan.schema, audio=wan.AUDIO_INPUT),
        ProviderEntry(xai.FAMILY, XaiOptions, xai.check_options, xai.XaiProvider, xai.schema, extension=xai.EXTENSION),
        ProviderEntry(veo.FAMILY, VeoOptions, veo.check_options, None, family_schema),
        ProviderEntry(seedance.FAMILY, SeedanceOptions, seedance.check_options, None, family_schema),
        ProviderEntry(local.FAMILY, LocalOptions, local.check_options, None, local.schema),
    )
}
assert list(REGISTRY) == list(FAMILIES), "every family in families.py has one entry, in the same order"


def native_extension(options_of: Callable[[str], object]) -> ProviderEntry | None:
    """The family whose options object (`options_of(field)`) asks for its own video extension, if any."""
    return next((e for e in REGISTRY.values() if e.extension is not None and e.extension.asked(options_of(e.field))), None)


def make_provider(client: httpx.AsyncClient, settings: Settings, provider: str, route: str) -> Provider:
    """The route object for (catalog provider, route)."""
    if route == "gateway":
        return GatewayProvider(client, settings)
    entry = REGISTRY.get(provider)
    if entry is None or entry.direct is None or route != "direct":
        raise ValueError(f"no provider for {provider} via {route}")
    return entry.direct(client, settings)
