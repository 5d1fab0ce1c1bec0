"""``animate_image`` preview: a camera move chosen from motion words in the prompt.

The offline engine cannot synthesise new content, so it previews the prompt as a camera
move. The earliest motion phrase in the (lower-cased) prompt wins; when two phrases start
at the same place the longer one wins ("zoom out" over "zoom"). Intensity words scale the
strength: slow words ("slowly", "gently", "subtle", ...) x0.6, fast words ("fast",
"dramatic", "rapid", ...) x1.6, both or neither x1. Simple moves have base strength 5
(so 3 when slow, 8 when fast); with no motion word the default is a gentle zoom in,
``zoom -3`` (2 slow, 5 fast). Presets ignore intensity. Deterministic: same prompt, same move.

Word table (camera signs as in ``camera.py``; content moves the other way):

* zoom in / push in / dolly in / closer / close-up / approach / move forward -> zoom -
* zoom out / pull back / dolly out / move away / widen / reveal -> zoom +
* pan left -> pan -, pan right / pan -> pan +; tilt up / look up / tilt -> tilt +,
  tilt down / look down -> tilt -
* rotate / spin / twist / clockwise -> roll - (content turns clockwise);
  counter-clockwise / anticlockwise -> roll +
* move / slide / truck / track left -> horizontal -, ... right -> horizontal +
* rise / ascend / crane up / move up / float up -> vertical +;
  descend / sinking / lowering / crane down / move down -> vertical -
* orbit / circling / turn right / turn around -> preset right_turn_forward;
  orbit left / circling left / turn left -> preset left_turn_forward
* fly up / soar / take off / lift off -> preset forward_up;
  retreat / fall back / back away -> preset down_back
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .camera import AXES, CameraSpec, camera_frames
from .frames import Frame

BASE_STRENGTH = 5.0
DEFAULT_ZOOM = -3.0
SLOW_FACTOR = 0.6
FAST_FACTOR = 1.6


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    kind: str  # "simple" or "preset"
    target: str  # axis or preset name
    sign: float = 0.0


def _rx(text: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + text + r")\b")


_MOVE = r"mov(?:e|es|ing|ed)"
_TO = r"(?:\s+(?:to\s+the\s+)?)"
_TRUCK = r"(?:" + _MOVE + r"|slid(?:e|es|ing)|truck(?:s|ing)?|track(?:s|ing)?|strafe(?:s)?)" + _TO

_RULES: tuple[_Rule, ...] = (
    # zoom / dolly
    _Rule(_rx(r"zoom(?:s|ing|ed)?\s+in(?:to|wards?)?"), "simple", "zoom", -1),
    _Rule(_rx(r"push(?:es|ing|ed)?\s+(?:in|forward)"), "simple", "zoom", -1),
    _Rule(_rx(r"doll(?:y|ies|ying|ied)\s+(?:in|forward)"), "simple", "zoom", -1),
    _Rule(_rx(_MOVE + r"\s+(?:in|closer|forward)"), "simple", "zoom", -1),
    _Rule(_rx(r"fl(?:y|ies|ying|ew)\s+(?:in|forward|towards?)"), "simple", "zoom", -1),
    _Rule(_rx(r"closer|close[- ]up|approach(?:es|ing|ed)?"), "simple", "zoom", -1),
    _Rule(_rx(r"zoom(?:s|ing|ed)?\s+out"), "simple", "zoom", 1),
    _Rule(_rx(r"pull(?:s|ing|ed)?\s+(?:back|out|away)"), "simple", "zoom", 1),
    _Rule(_rx(r"doll(?:y|ies|ying|ied)\s+(?:out|back)"), "simple", "zoom", 1),
    _Rule(_rx(_MOVE + r"\s+(?:away|back)"), "simple", "zoom", 1),
    _Rule(_rx(r"widen(?:s|ing|ed)?|reveal(?:s|ing|ed)?"), "simple", "zoom", 1),
    _Rule(_rx(r"zoom(?:s|ing|ed)?"), "simple", "zoom", -1),
    # pan / tilt
    _Rule(_rx(r"pan(?:s|ning|ned)?" + _TO + r"left"), "simple", "pan", -1),
    _Rule(_rx(r"pan(?:s|ning|ned)?" + _TO + r"right"), "simple", "pan", 1),
    _Rule(_rx(r"pan(?:s|ning|ned)?"), "simple", "pan", 1),
    _Rule(_rx(r"tilt(?:s|ing|ed)?\s+up(?:wards?)?|look(?:s|ing|ed)?\s+up(?:wards?)?"), "simple", "tilt", 1),
    _Rule(
        _rx(r"tilt(?:s|ing|ed)?\s+down(?:wards?)?|look(?:s|ing|ed)?\s+down(?:wards?)?"), "simple", "tilt", -1
    ),
    _Rule(_rx(r"tilt(?:s|ing|ed)?"), "simple", "tilt", 1),
    # roll
    _Rule(_rx(r"counter[- ]?clockwise|anti[- ]?clockwise"), "simple", "roll", 1),
    _Rule(
        _rx(r"clockwise|rotat(?:e|es|ing|ed|ion)|spin(?:s|ning)?|twist(?:s|ing|ed)?"), "simple", "roll", -1
    ),
    # truck
    _Rule(_rx(_TRUCK + r"left"), "simple", "horizontal", -1),
    _Rule(_rx(_TRUCK + r"right"), "simple", "horizontal", 1),
    # presets (before the plain rise/ascend words they may contain)
    _Rule(
        _rx(
            r"fl(?:y|ies|ying|ew)\s+up(?:wards?)?|soar(?:s|ing|ed)?|(?:take|takes|taking|lift|lifts|lifting)\s+off"
        ),
        "preset",
        "forward_up",
    ),
    _Rule(
        _rx(r"retreat(?:s|ing|ed)?|f(?:all|alls|alling|ell)\s+back|back(?:s|ing|ed)?\s+away"),
        "preset",
        "down_back",
    ),
    _Rule(
        _rx(r"(?:orbit(?:s|ing|ed)?|circl(?:es|ing)|turn(?:s|ing|ed)?)" + _TO + r"left"),
        "preset",
        "left_turn_forward",
    ),
    _Rule(
        _rx(r"orbit(?:s|ing|ed)?|circl(?:es|ing)|turn(?:s|ing|ed)?" + _TO + r"(?:right|around)"),
        "preset",
        "right_turn_forward",
    ),
    # pedestal
    _Rule(
        _rx(
            r"ris(?:e|es|ing)|ascend(?:s|ing|ed)?|crane(?:s|d)?\s+up|pedestal\s+up|(?:"
            + _MOVE
            + r"|float(?:s|ing)?)\s+up(?:wards?)?"
        ),
        "simple",
        "vertical",
        1,
    ),
    _Rule(
        _rx(
            r"descend(?:s|ing|ed)?|sink(?:s|ing)|sank|lower(?:s|ing)|crane(?:s|d)?\s+down|pedestal\s+down|(?:"
            + _MOVE
            + r")\s+down(?:wards?)?"
        ),
        "simple",
        "vertical",
        -1,
    ),
)

_SLOW = _rx(
    r"slow(?:ly|er)?|gentl(?:e|y)|subtl(?:e|y)|slight(?:ly)?|soft(?:ly)?|calm(?:ly)?|barely|leisurely"
)
_FAST = _rx(
    r"fast(?:er)?|quick(?:ly)?|rapid(?:ly)?|dramatic(?:ally)?|swift(?:ly)?|dynamic|intense(?:ly)?|aggressive(?:ly)?|sweeping|whip"
)


def choose_camera(prompt: str | None) -> tuple[dict[str, Any], str]:
    """The camera spec for ``prompt`` and a one-line explanation of the choice."""
    text = (prompt or "").lower()
    best: tuple[int, int, _Rule, str] | None = None
    for rule in _RULES:
        m = rule.pattern.search(text)
        if m is None:
            continue
        key = (m.start(), -(m.end() - m.start()))
        if best is None or key < (best[0], best[1]):
            best = (key[0], key[1], rule, m.group(0))
    slow = _SLOW.search(text)
    fast = _FAST.search(text)
    factor = 1.0
    intensity: list[str] = []
    if slow and not fast:
        factor = SLOW_FACTOR
        intensity.append(slow.group(0))
    elif fast and not slow:
        factor = FAST_FACTOR
        intensity.append(fast.group(0))
    if best is None:
        value = _strength(abs(DEFAULT_ZOOM) * factor) * -1
        spec = _simple("zoom", value)
        why = "no prompt" if not text.strip() else "no motion words in the prompt"
        if intensity:
            why += f" (intensity word '{intensity[0]}')"
        return spec, f"{why} -> default gentle zoom in: simple zoom {value}"
    rule, word = best[2], best[3]
    if rule.kind == "preset":
        return {"type": rule.target}, f"prompt words '{word}' -> preset {rule.target}"
    value = _strength(BASE_STRENGTH * factor) * int(rule.sign)
    words = ", ".join(f"'{w}'" for w in [*intensity, word])
    return _simple(rule.target, value), f"prompt words {words} -> simple {rule.target} {value}"


def _strength(value: float) -> int:
    return int(min(10, max(1, round(value))))


def _simple(axis: str, value: int) -> dict[str, Any]:
    config = dict.fromkeys(AXES, 0)
    config[axis] = value
    return {"type": "simple", "config": config}


def animate_frames(
    img: np.ndarray, prompt: str | None, n_frames: int
) -> tuple[Iterator[Frame], CameraSpec, str]:
    """Frames of a camera move picked from ``prompt``, the spec chosen, and why."""
    spec, why = choose_camera(prompt)
    return camera_frames(img, spec, n_frames), spec, why
