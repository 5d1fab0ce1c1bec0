"""ByteDance Seedance 1.0 / 1.5 / 2.0 through the Vercel AI Gateway (no direct route).

Everything stillmotion knows about the family is here and in the catalog (`SEEDANCE_MODELS`);
the Gateway's strict fake is `tests/fakes/gateway.py` (`_check_bytedance`). Sources:
docs/decisions.md, "Every image-to-video model the Gateway serves" (issue #24).

Wire (the AI SDK's ByteDance video model, provider key `bytedance`):

* `resolution` top level as `WxH` (the SDK maps `864x480`/`1280x720`/`1920x1080` to the 480p /
  720p / 1080p tier), `aspectRatio` (sent as `ratio`), `seed` top level.
* `providerOptions.bytedance.generateAudio` (the SDK's option, sent as `generate_audio`), always
  set on the models with sound so BytePlus's own default (on) never decides what is billed.
* The last frame is `providerOptions.bytedance.lastFrameImage`, a string the SDK puts in
  `image_url.url`: the image's URL, else a `data:` URI. There is no negative prompt.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ..catalog import MODELS
from ..plan.requests import SeedanceOptions
from .base import JobContext
from .families import FAMILIES
from .rules import call_options, check_family_options

FAMILY = FAMILIES["bytedance"]
KEY = FAMILY.name
RESOLUTIONS = {"480p": "864x480", "720p": "1280x720", "1080p": "1920x1080"}


check_options = partial(check_family_options, FAMILY.field, SeedanceOptions)


def gateway_body(job: JobContext) -> dict[str, Any]:
    """Seedance's part of a Gateway body."""
    req = job.request
    opts = req.seedance or SeedanceOptions()
    po: dict[str, Any] = {}
    if MODELS[req.model].audio:
        po["generateAudio"] = bool(opts.audio)
    if req.end_image is not None:
        po["lastFrameImage"] = job.url_or_data_uri(req.end_image)
    return {**call_options(opts, RESOLUTIONS), "providerOptions": {KEY: po} if po else {}, "image": job.gateway_file(req.start_image)}
