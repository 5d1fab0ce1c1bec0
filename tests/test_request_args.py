"""The tool's argument model is the request until it is a job: its idempotency fingerprint, without MCP.

The pinned hashes were computed by the code before #25 (the `ToolArgs` mirror): an idempotency key
used before an upgrade must still replay after it."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from stillmotion.jobs.store import args_fingerprint
from stillmotion.plan.arguments import ARGS_BY_TOOL, CONTROL_FIELDS
from stillmotion.plan.requests import LocalOptions, StoredClip
from stillmotion.tools.extend import ExtendVideoArgs

MOTION_BRUSH = {
    "image": "x.png",
    "dynamic_masks": [
        {"mask": {"box": [1, 2, 3, 4]}, "trajectory": [{"x": 1, "y": 2}, {"x": 3, "y": 4.5}]},
        {"mask": "m.png", "trajectory": []},
    ],
    "static_mask": {"polygon": [[1, 2], [3, 4], [5, 6]]},
}
PINNED: list[tuple[str, dict[str, Any], str]] = [
    ("animate_image", {"image": "x.png", "prompt": "p", "duration": 5, "wait_seconds": 3, "idempotency_key": "k",
                       "kling": {"mode": "pro"}, "local": {"fps": 25}, "wan": {"audio_url": "a.mp3", "seed": 3}},
     "e755ac27c3fa8122d1dae29bac2de44988885c23512c4e52a9c8587a6c26fc0d"),
    ("animate_image", {"image": "x.png"}, "76615b1f09509781d7c7429b02b8ec76899e89bcb6bcc41f3baca5030bd8935c"),
    ("interpolate_frames", {"start_image": "a.png", "end_image": "b.png", "model": "local/preview"},
     "2b084f1bb0e82e40b3625b31cad7c6d225bfe7da9c13424679c492d1c01923ff"),
    ("camera_move", {"image": "x.png", "camera": {"type": "simple", "config": {"zoom": 3}}},
     "6546547d5acb0c1b110ead6a3b946ca0adddb3d989cda2a862f8a9eb4ce38053"),
    ("motion_brush", MOTION_BRUSH, "dd1fa7ade7b39c7f2d48a057a5b1e087bbb4fbbe1e314f3b1124d291d7820be8"),
]  # fmt: skip


@pytest.mark.parametrize(("tool", "arguments", "expected"), PINNED, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(PINNED)])
def test_fingerprint_is_unchanged_across_the_upgrade(tool: str, arguments: dict[str, Any], expected: str) -> None:
    args = ARGS_BY_TOOL[tool].model_validate(arguments)
    assert args_fingerprint(args.fingerprint()) == expected


def test_controls_are_not_part_of_the_fingerprint() -> None:
    cls = ARGS_BY_TOOL["animate_image"]
    plain = cls.model_validate({"image": "x.png", "prompt": "p"})
    steered = cls.model_validate({"image": "x.png", "prompt": "p", "wait_seconds": 9, "idempotency_key": "k",
                                  "dry_run": True, "confirm_cost_usd": 2.5})  # fmt: skip
    assert set(plain.fingerprint()) & CONTROL_FIELDS == set()
    assert plain.fingerprint() == steered.fingerprint()
    assert cls.model_validate({"image": "x.png", "prompt": "q"}).fingerprint() != plain.fingerprint()


def _clip(path: str, sha256: str = "abc") -> StoredClip:
    return StoredClip(path=path, source=" job123 ", bytes=10, sha256=sha256, width=640, height=480, fps="24",
                      frame_count=48, has_audio=False)  # fmt: skip


def test_extend_video_fingerprint_is_the_source_by_content() -> None:
    png = base64.b64decode("AAAA")
    local = LocalOptions.model_validate({"resolution": "480p", "fps": 24})
    args = ExtendVideoArgs.model_validate({"video": " job123 ", "model": "local/preview", "prompt": "go", "wait_seconds": 5})
    first = args.continuing(_clip("/a/inputs/j1/source.mp4"), png, local).fingerprint()
    again = args.continuing(_clip("/a/inputs/j2/source.mp4"), png, local).fingerprint()  # another call's copy
    assert first == again
    assert args_fingerprint(first) == "2f7a24cbc87e84236cf0e66a3732358c8ad79d09e96dec686ccf0556b5723a43"
    changed = args.continuing(_clip("/a/inputs/j3/source.mp4", sha256="def"), png, local).fingerprint()
    assert changed != first  # the same name with other content is another request
