"""A price file that cannot hurt (issue #22): regular files only, at most 1 MB, bounded nesting,
prices finite and 0 or at least $0.0001 (and at most $10,000); each bad file refused at start-up
within a second, with one line naming the entry and the rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stillmotion.pricing import MAX_FILE_BYTES, PriceBook, load_price_book
from stillmotion.settings import Settings

XAI = "xai/grok-imagine-video"


def _json(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return path


def _raw(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "prices.fifo"
    os.mkfifo(path)
    return path


def _sparse(tmp_path: Path) -> Path:
    path = tmp_path / "big.json"
    with open(path, "wb") as fh:
        fh.truncate(106 * 1024 * 1024)  # the 106 MB file, without writing it
    return path


def _folder(tmp_path: Path) -> Path:
    path = tmp_path / "folder.json"
    path.mkdir()
    return path


BAD: list[tuple[str, Callable[[Path], Path], str]] = [
    ("nesting", lambda t: _raw(t, "deep.json", b"[" * 100_000 + b"]" * 100_000), "nested deeper than 8 levels"),
    ("nesting in prices", lambda t: _json(t, "deep2.json", {"prices": [[[[[[[[[]]]]]]]]]}), "nested deeper than 8"),
    ("/dev/zero", lambda t: Path("/dev/zero"), "not a regular file"),
    ("fifo", _fifo, "not a regular file"),
    ("folder", _folder, "not a regular file"),
    ("106 MB", _sparse, f"at most {MAX_FILE_BYTES} bytes"),
    ("not UTF-8", lambda t: _raw(t, "latin.json", b'{"prices": [], "kling_unit_source": "caf\xe9"}'), "not UTF-8"),
    ("1e308", lambda t: _json(t, "huge.json", {"prices": [{"model": XAI, "usd_per_second": 1e308}]}),
     "prices[0] (xai/grok-imagine-video): usd_per_second must be a number >= 0 (US dollars): 0 for free, or from 0.0001 to 10000"),
    ("1e-300", lambda t: _json(t, "tiny.json", {"prices": [{"model": XAI, "usd_per_clip": 1e-300}]}),
     "prices[0] (xai/grok-imagine-video): usd_per_clip must be a number >= 0"),
    ("NaN", lambda t: _raw(t, "nan.json", b'{"prices": [{"model": "xai/grok-imagine-video", "usd_per_second": NaN}]}'),
     "got NaN"),
    ("Infinity", lambda t: _raw(t, "inf.json", b'{"kling_usd_per_unit": Infinity}'), "kling_usd_per_unit must be a number"),
    ("second entry", lambda t: _json(t, "two.json", {"prices": [{"model": XAI, "usd_per_second": 0.05},
                                                               {"model": XAI, "usd_per_second": 0.00001}]}),
     "prices[1] (xai/grok-imagine-video): usd_per_second"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "make", "needle"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_file_refused_within_a_second(tmp_path: Path, label: str, make: Callable[[Path], Path], needle: str) -> None:
    path = make(tmp_path)
    # the work the refusal took, in CPU seconds: a loaded 2-core box stretches the wall clock, not this
    # (a read that blocked instead would hang the test into pytest's timeout)
    t0 = time.process_time()
    with pytest.raises(ValueError) as caught:
        Settings.from_env({"STILLMOTION_HOME": str(tmp_path / "home"), "STILLMOTION_PRICES": str(path)})
    cpu_s = time.process_time() - t0
    message = str(caught.value)
    assert cpu_s < 1.0, (label, cpu_s)
    assert needle in message and f"STILLMOTION_PRICES={path}" in message, message
    assert "\n" not in message


def test_start_up_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "STILLMOTION_HOME": str(tmp_path / "home"), "STILLMOTION_PRICES": str(_fifo(tmp_path))}
    proc = subprocess.run(
        [sys.executable, "-m", "stillmotion"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a regular file" in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_zero_and_small_prices_accepted_and_estimates_use_the_index(tmp_path: Path) -> None:
    # a full 1 MB file of other entries: the estimate looks only at its model's entries
    filler = [{"model": "klingai/kling-v2.6-i2v", "usd_per_clip": 1.0, "mode": f"m{i}"} for i in range(9000)]
    path = _json(tmp_path, "ok.json", {"prices": [
        {"model": XAI, "usd_per_second": 0.0001, "resolution": "480p"},
        {"model": XAI, "usd_per_clip": 0, "resolution": "720p"},
        *filler,
    ]})  # fmt: skip
    assert path.stat().st_size <= MAX_FILE_BYTES
    book = load_price_book(path)
    cheap = book.estimate(model=XAI, route="direct", tool="animate_image", duration=10, options={"resolution": "480p"})
    free = book.estimate(model=XAI, route="direct", tool="animate_image", duration=10, options={"resolution": "720p"})
    assert cheap.estimated_usd == pytest.approx(0.001) and free.estimated_usd == 0.0
    assert len(book.entries) == 9002 + len(PriceBook().entries)
    assert book._index[XAI][0] == tuple(p for p in book.entries if p.user and p.model == XAI)
