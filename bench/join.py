"""Section 6: join_clips. Three 2 s 720p clips joined by stream copy (same encoding) and by
re-encode (one clip of another size and frame rate), and with a 0.5 s crossfade."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stillmotion.media.join import clip_facts, join
from stillmotion.media.video import encode_frames

from .common import Row, Section, Stat


def _clip(path: Path, w: int, h: int, fps: int, seconds: float, seed: int) -> Path:
    from tests.render.measure import textured_image

    img = textured_image(w + 200, h + 200, seed)
    n = round(seconds * fps)
    encode_frames((np.ascontiguousarray(img[i * 2 : i * 2 + h, i * 2 : i * 2 + w]) for i in range(n)), path, fps=fps)
    return path


def _time(fn: Callable[[], object], reps: int) -> Stat:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return Stat.of(times)


def run(tmp: Path, *, quick: bool, log: Callable[[str], None]) -> Section:
    sec = Section("6. join_clips: three 2 s clips")
    reps = 2 if quick else 5
    log("section 4: join_clips")
    a = clip_facts(_clip(tmp / "a.mp4", 1280, 720, 24, 2.0, 1))
    b = clip_facts(_clip(tmp / "b.mp4", 1280, 720, 24, 2.0, 2))
    c_same = clip_facts(_clip(tmp / "c.mp4", 1280, 720, 24, 2.0, 3))
    c_other = clip_facts(_clip(tmp / "d.mp4", 960, 720, 30, 2.0, 4))
    out = tmp / "out.mp4"
    reports = []

    def copy() -> None:
        reports.append(join([a, b, c_same], out))

    def reencode() -> None:
        reports.append(join([a, b, c_other], out))

    def crossfade() -> None:
        reports.append(join([a, b, c_same], out, crossfade_s=0.5))

    s_copy = _time(copy, reps)
    assert reports[-1].stream_copy
    s_re = _time(reencode, reps)
    assert not reports[-1].stream_copy
    s_x = _time(crossfade, reps)
    sec.add(Row("", "stream copy (720p24 x3, same encoding)", "ms", s_copy, key="join.copy"))
    sec.add(Row("", "re-encode (one clip 960x720 at 30 fps)", "ms", s_re, key="join.reencode"))
    sec.add(Row("", "re-encode with 0.5 s crossfades", "ms", s_x, key="join.crossfade"))
    sec.add(Row("", "re-encode / stream copy (medians)", "x", Stat.of([s_re.median / s_copy.median]), key="join.ratio"))
    return sec
