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

from collections.abc import Callable
from typing import Any

from ..plan.requests import StoredImage, VeoOptions
from .base import JobContext
from .rules import Checked, OptionContext, call_options, check_family_options

KEY = "vertex"
RESOLUTIONS = {"720p": "1280x720", "1080p": "1920x1080"}


def check_options(given: VeoOptions | None, ctx: OptionContext) -> Checked[VeoOptions]:
    return check_family_options("veo", VeoOptions, given, ctx)


def gateway_body(job: JobContext, inline: Callable[[StoredImage], dict[str, Any]]) -> dict[str, Any]:
    req = job.request
    opts = req.veo or VeoOptions()
    body = call_options(opts, RESOLUTIONS)
    body["generateAudio"] = bool(opts.audio)
    body["providerOptions"] = {KEY: {"negativePrompt": req.negative_prompt}} if req.negative_prompt else {}
    first = inline(req.start_image)
    body["image"] = first
    if req.end_image is not None:
        body["frameImages"] = [
            {"frameType": "first_frame", "image": first},
            {"frameType": "last_frame", "image": inline(req.end_image)},
        ]
    return body
