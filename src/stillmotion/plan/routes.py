"""Which route a model takes with the configured keys, and the model table's light helpers.

Kept free of the MCP SDK and the media stack, so `stillmotion models` starts in a fraction of a
second (the tool layer and validation import these names from here).
"""

from __future__ import annotations

from typing import Literal

from ..catalog import GENERATION_TOOLS, MODELS, ModelSpec, model_ids_for_tool
from ..errors import InvalidInput, MissingCredentials, StillmotionError
from ..providers.families import FAMILIES
from ..settings import Settings

RouteName = Literal["direct", "gateway", "local"]
PROVIDER_LABEL = {name: f.label for name, f in FAMILIES.items()}
DIRECT_KEY_VARS = {name: f.key_hint for name, f in FAMILIES.items() if f.direct}
SHORT_TOOL = {"animate_image": "animate", "interpolate_frames": "interpolate", "camera_move": "camera", "motion_brush": "brush"}


def choose_route(spec: ModelSpec, settings: Settings) -> RouteName:
    if spec.is_local:
        return "local"
    direct_ok = settings.has_direct_key(spec.provider)
    gateway_ok = settings.gateway_api_key is not None
    label = PROVIDER_LABEL[spec.provider]
    if spec.direct_name is None and spec.gateway_id is not None:  # Veo, Seedance: the Gateway only
        if gateway_ok and settings.route != "direct":
            return "gateway"
        raise MissingCredentials(
            f"{spec.id} is served only through the Vercel AI Gateway: set AI_GATEWAY_API_KEY"
            + (" and STILLMOTION_ROUTE=gateway or auto." if settings.route == "direct" else ".")
            + " Or use model local/preview, which needs no key."
        )
    if settings.route == "direct":
        if direct_ok:
            return "direct"
        raise MissingCredentials(
            f"{spec.id} on the direct route needs {DIRECT_KEY_VARS[spec.provider]} "
            f"(STILLMOTION_ROUTE=direct). Set it, or use the Vercel AI Gateway with AI_GATEWAY_API_KEY."
        )
    if settings.route == "gateway":
        if spec.gateway_id is None:
            raise InvalidInput(
                "model",
                f"{spec.id} is not served by the Vercel AI Gateway (STILLMOTION_ROUTE=gateway); it is served by "
                f"the direct {label} route (STILLMOTION_ROUTE=direct or auto with {DIRECT_KEY_VARS[spec.provider]}).",
                gateway_models(),
            )
        if gateway_ok:
            return "gateway"
        raise MissingCredentials(f"{spec.id} on the gateway route needs AI_GATEWAY_API_KEY.")
    if direct_ok:
        return "direct"
    if gateway_ok:
        if spec.gateway_id is not None:
            return "gateway"
        raise InvalidInput(
            "model",
            f"{spec.id} is not served by the Vercel AI Gateway, and no direct {label} key is set; the direct "
            f"route can serve it: set {DIRECT_KEY_VARS[spec.provider]}.",
            gateway_models(),
        )
    raise MissingCredentials(
        f"{spec.id} needs a key: set {DIRECT_KEY_VARS[spec.provider]} for the direct {label} API"
        + (", or AI_GATEWAY_API_KEY for the Vercel AI Gateway" if spec.gateway_id else "")
        + ". Or use model local/preview, which needs no key."
    )


def gateway_models() -> list[str]:
    return [m.id for m in MODELS.values() if m.gateway_id]


def tools_of(m: ModelSpec, settings: Settings) -> list[str]:
    return [t for t in GENERATION_TOOLS if m.id in model_ids_for_tool(t, strict=settings.strict_capabilities)]


def enabled_by(m: ModelSpec) -> str:
    """The environment variables that enable a model's routes."""
    if m.is_local:
        return "nothing (offline)"
    if m.provider not in DIRECT_KEY_VARS:
        return "AI_GATEWAY_API_KEY (the Vercel AI Gateway only)"
    direct = DIRECT_KEY_VARS[m.provider]
    return direct + (" or AI_GATEWAY_API_KEY" if m.gateway_id else "")


def route_now(m: ModelSpec, settings: Settings) -> tuple[str | None, str | None]:
    """(route the model would take now, why it cannot) from the configured keys and STILLMOTION_ROUTE."""
    try:
        return choose_route(m, settings), None
    except StillmotionError as exc:
        return None, exc.message
