"""Each provider family's plain facts, one `Family` each, and the Gateway's as a route.

Everything outside `providers/` that needs a provider's name, label, options field, key
variables, base URL or concurrency cap reads it here, so adding a family touches its own module
(its `Provider`, option rules and wire mapping), this table, the catalog data and its fake.
Nothing heavy is imported: settings, the catalog tools and `stillmotion models` read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str
    """The catalog provider: the part of a model id before the slash (klingai, alibaba, ...)."""
    label: str
    """Its name in messages ("Alibaba Wan")."""
    short: str
    """Its name where space is short (the tool list's model summary)."""
    field: str = ""
    """Its options object: the tool argument and the stored request's field ("" for a route)."""
    keys: tuple[tuple[str, ...], ...] = ()
    """Its direct API's credentials, each as the variables it is read from (the first set wins); a
    credential is named by its first variable. Empty: no direct route."""
    enabled_by: tuple[tuple[str, ...], ...] = ()
    """Credential sets, any one of which enables the route (default: the first credential alone)."""
    key_hint: str = ""
    """The variables that enable the route, as messages name them."""
    base_url: tuple[str, str] | None = None
    """(the variable that overrides it, the default) of the route's API."""
    max_running_var: str | None = None
    """STILLMOTION_MAX_RUNNING_*: its tasks running at once across the store."""
    capability_map: bool = False
    """The family publishes a per-model tool map that STILLMOTION_STRICT_CAPABILITIES=0 may override."""
    gateway_urls_only: bool = False
    """Through the Gateway its images must be public URLs (Blob), never inline."""
    gateway_inline_extras: bool = False
    """Its Gateway body also carries the end frame and masks inline (measured for the size limit)."""
    price_basis: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    """What its price depends on among its validated options, besides resolution and audio."""

    @property
    def direct(self) -> bool:
        return bool(self.keys)

    def credential_sets(self) -> tuple[tuple[str, ...], ...]:
        if not self.keys:
            return ()
        return self.enabled_by or ((self.keys[0][0],),)


def _kling_price(options: Mapping[str, Any]) -> dict[str, Any]:
    return {"mode": options.get("mode"), "sound": options.get("sound") or "off", "voices": bool(options.get("voices"))}


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "klingai", "KlingAI", "Kling", "kling",
            keys=(("KLINGAI_API_KEY",), ("KLINGAI_ACCESS_KEY",), ("KLINGAI_SECRET_KEY",)),
            enabled_by=(("KLINGAI_API_KEY",), ("KLINGAI_ACCESS_KEY", "KLINGAI_SECRET_KEY")),
            key_hint="KLINGAI_API_KEY (or KLINGAI_ACCESS_KEY + KLINGAI_SECRET_KEY)",
            base_url=("KLINGAI_BASE_URL", "https://api-singapore.klingai.com"),
            max_running_var="STILLMOTION_MAX_RUNNING_KLINGAI",
            capability_map=True, gateway_inline_extras=True, price_basis=_kling_price,
        ),
        Family(
            "alibaba", "Alibaba Wan", "Wan", "wan",
            keys=(("ALIBABA_API_KEY", "DASHSCOPE_API_KEY"),), key_hint="ALIBABA_API_KEY (or DASHSCOPE_API_KEY)",
            base_url=("ALIBABA_BASE_URL", "https://dashscope-intl.aliyuncs.com"),
            max_running_var="STILLMOTION_MAX_RUNNING_ALIBABA", gateway_urls_only=True,
        ),
        Family(
            "xai", "xAI", "xAI", "xai", keys=(("XAI_API_KEY",),), key_hint="XAI_API_KEY",
            base_url=("XAI_BASE_URL", "https://api.x.ai/v1"), max_running_var="STILLMOTION_MAX_RUNNING_XAI",
        ),
        Family("google", "Google Veo", "Veo", "veo"),
        Family("bytedance", "ByteDance Seedance", "Seedance", "seedance"),
        Family("local", "the offline engine", "local/preview", "local"),
    )
}  # fmt: skip

GATEWAY = Family(
    "gateway", "AI Gateway", "Gateway", keys=(("AI_GATEWAY_API_KEY",),), key_hint="AI_GATEWAY_API_KEY",
    base_url=("AI_GATEWAY_BASE_URL", "https://ai-gateway.vercel.sh/v4/ai"), max_running_var="STILLMOTION_MAX_RUNNING_GATEWAY",
)  # fmt: skip
"""The Vercel AI Gateway: a route, not a family (it serves the families' models)."""

ENDPOINTS: dict[str, Family] = {f.name: f for f in (*FAMILIES.values(), GATEWAY) if f.direct}
"""Every remote API with its own key, base URL and cap: the direct families and the Gateway."""

OPTION_FIELDS: dict[str, str] = {f.name: f.field for f in FAMILIES.values()}
"""catalog provider -> its options object's field."""
