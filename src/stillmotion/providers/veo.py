"""Google Veo 3.0 / 3.1 through the Vercel AI Gateway (no direct route).

Everything stillmotion knows about the family is here and in the catalog (`VEO_MODELS`); the
Gateway's strict fake is `tests/fakes/gateway.py` (`_check_google`). Sources: docs/decisions.md,
"Every image-to-video model the Gateway serves" (issue #24).

Wire (the AI SDK v4 call options the Gateway forwards to Vertex):

* `resolution` top level as `WxH` (the SDK's Vertex model maps `1280x720` -> 720p, `1920x1080`
  -> 1080p, whatever the aspect ratio), `aspectRatio`, `seed`, `generateAudio` top level (the
  Gateway's Veo pages list it as a top-level parameter); always sent, so Google's default never
  decides what is billed.
* `providerOptions.vertex.negativePrompt` (the SDK's Vertex option).
* Images inline only: Vertex ignores image URLs (the SDK warns and drops them), so a start image
  that came from a URL is still sent as bytes.
* Veo 3.1's last frame: `frameImages: [{frameType: first_frame}, {frameType: last_frame}]`, with the
  first frame also as `image` (the SDK's core gives the provider both).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ..plan.requests import VeoOptions
from .base import JobContext
from .families import FAMILIES
from .rules import call_options, check_family_options

FAMILY = FAMILIES["google"]
KEY = "vertex"
RESOLUTIONS = {"720p": "1280x720", "1080p": "1920x1080"}


check_options = partial(check_family_options, FAMILY.field, VeoOptions)


def gateway_body(job: JobContext) -> dict[str, Any]:
    """Veo's part of a Gateway body (images always inline: Vertex ignores image URLs)."""
    req = job.request
    opts = req.veo or VeoOptions()
    first = job.gateway_inline(req.start_image)
    body = {
        **call_options(opts, RESOLUTIONS),
        "generateAudio": bool(opts.audio),
        "providerOptions": {KEY: {"negativePrompt": req.negative_prompt}} if req.negative_prompt else {},
    }
    body["image"] = first
    if req.end_image is not None:
        body["frameImages"] = [
            {"frameType": "first_frame", "image": first},
            {"frameType": "last_frame", "image": job.gateway_inline(req.end_image)},
        ]
    return body
