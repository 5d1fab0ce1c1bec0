"""Audio decoded, not judged by its header (issue #22): random bytes behind an MP3 frame header, and
a WAV whose header says 10 s in front of 120 s of samples, are refused before anything is sent; a
real file's duration is the decoded one."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from stillmotion.errors import InvalidInput
from stillmotion.media.sources import audio_facts
from tests.conftest import SettingsFactory, connect, error_text, write_image
from tests.fakes import WanFake, sample_wav
from tests.test_bounded_clips import RSS_CAP_MB, peak_rss_mb

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _rss_bounded() -> Iterator[None]:
    """The server runs in this process: its peak RSS stays under 800 MB in every case."""
    yield
    assert peak_rss_mb() < RSS_CAP_MB
KEY = "sk-wan-test-0123456789"
WAN = "alibaba/wan-v2.6-i2v"


def lying_wav(seconds: float, declared: float, rate: int = 8000) -> bytes:
    n = int(seconds * rate)
    pcm = (np.sin(np.arange(n) * 0.3) * 8000).astype("<i2").tobytes()
    size = int(declared * rate) * 2
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", size) + pcm


def mp3(seconds: float, id3: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as c:
        s = c.add_stream("libmp3lame", rate=44100)
        s.layout = "mono"
        n = int(seconds * 44100)
        tone = (np.sin(np.arange(n) * 0.05) * 0.5).astype(np.float32)
        for i in range(0, n, 1152):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[None, i : i + 1152]), format="flt", layout="mono")
            f.sample_rate, f.pts = 44100, i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return id3 + buf.getvalue()


def id3_tag(payload: int) -> bytes:
    """An ID3v2.3 header declaring `payload` bytes of tag (album art, say), then that many bytes."""
    size = bytes([(payload >> 21) & 0x7F, (payload >> 14) & 0x7F, (payload >> 7) & 0x7F, payload & 0x7F])
    return b"ID3\x03\x00\x00" + size + b"\0" * payload


def test_real_files_measured_by_decoding() -> None:
    facts = audio_facts(sample_wav(4.0), "wan.audio_url", ("wav", "mp3"))
    assert facts.format == "wav" and facts.duration_s == pytest.approx(4.0)
    tagged = audio_facts(mp3(5.0, id3_tag(300_000)), "wan.audio_url", ("wav", "mp3"))  # big cover art is fine
    assert tagged.format == "mp3" and tagged.duration_s == pytest.approx(5.0, abs=0.1)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (mp3(1.0)[:4] + np.random.default_rng(22).bytes(200_000), "as mp3 audio"),
        (lying_wav(120, declared=10), "only 160000 of them are audio"),
    ],
    ids=["random bytes behind an MP3 frame header", "WAV header says 10 s, holds 120 s"],
)
def test_header_lies_refused(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        audio_facts(data, "wan.audio_url", ("wav", "mp3"))
    assert caught.value.argument == "wan.audio_url" and needle in caught.value.message, caught.value.message


@pytest.fixture
def fake() -> Iterator[WanFake]:
    with WanFake(api_key=KEY) as f:
        yield f
        assert f.violations == []


async def test_nothing_sent_for_a_lying_file(fake: WanFake, make_settings: SettingsFactory, tmp_path: Path) -> None:
    img = write_image(tmp_path / "in" / "photo.png", 640, 480, seed=7)
    junk = tmp_path / "in" / "junk.mp3"
    junk.write_bytes(mp3(1.0)[:4] + np.random.default_rng(22).bytes(200_000))
    lie = tmp_path / "in" / "lie.wav"
    lie.write_bytes(lying_wav(120, declared=10))
    env = {"ALIBABA_API_KEY": KEY, "ALIBABA_BASE_URL": fake.base_url, "STILLMOTION_ALLOW_PRIVATE_NETWORK": "1"}
    async with connect(make_settings(**env)) as client:
        for path in (junk, lie, fake.add_file("lie.wav", lying_wav(120, declared=10), "audio/wav")):
            args = {"model": WAN, "image": str(img), "prompt": "go", "wan": {"audio_url": str(path)}}
            text = error_text(await client.call_tool("animate_image", args))
            assert "invalid_input" in text and "'wan.audio_url'" in text, text
    assert [r for r in fake.requests if r.method == "POST"] == []
