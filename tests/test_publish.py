"""Publishing a finished MP4: one decode pass for provider files, none for local renders."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stillmotion.media.publish import Samples, publish_video
from stillmotion.media.video import encode_frames
from tests.render.measure import psnr_quarter, textured_image


def _clip(path: Path, n: int = 30) -> list[np.ndarray]:
    base = textured_image(320, 240, 3)
    frames = [np.roll(base, 4 * i, axis=1) for i in range(n)]
    encode_frames(iter([f.copy() for f in frames]), path, fps=24)
    return frames


def test_provider_file_is_decoded_once_and_sampled(tmp_path: Path) -> None:
    job = tmp_path / "job_aaaaaaaaaaaaaaaa"
    job.mkdir()
    frames = _clip(job / "in.mp4")
    res = publish_video(job / "in.mp4", job)
    v = res["video"]
    assert (v["width"], v["height"], v["frame_count"]) == (320, 240, 30)
    assert v["duration_s"] == pytest.approx(1.25, abs=0.05)
    last = np.asarray(Image.open(io.BytesIO((job / "last-frame.png").read_bytes())).convert("RGB"))
    assert psnr_quarter(last, frames[-1]) > 30 > psnr_quarter(last, frames[0])
    with Image.open(job / "poster.png") as sheet:
        assert sheet.width == 3 * 200 + 2 * 2
    assert (job / "poster.png").stat().st_size < 100_000


def test_truncated_provider_file_is_refused(tmp_path: Path) -> None:
    job = tmp_path / "job_bbbbbbbbbbbbbbbb"
    job.mkdir()
    _clip(job / "in.mp4")
    data = (job / "in.mp4").read_bytes()
    (job / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a decodable MP4"):
        publish_video(job / "cut.mp4", job)


def test_local_render_uses_its_samples_and_checks_the_count(tmp_path: Path) -> None:
    job = tmp_path / "job_cccccccccccccccc"
    job.mkdir()
    frames = _clip(job / "in.mp4")
    samples = Samples(len(frames))
    for i, f in enumerate(frames):
        samples.offer(i, f)
    res = publish_video(job / "in.mp4", job, samples)
    assert res["video"]["frame_count"] == 30
    short = Samples(40)
    for i, f in enumerate(frames[:29]):
        short.offer(i, f)
    with pytest.raises(ValueError, match="30 frames, 29 were rendered"):
        publish_video(job / "in.mp4", job, short)
