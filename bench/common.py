"""Shared helpers: statistics, per-process memory/CPU readings, machine facts, result rows."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- statistics ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    xs = sorted(values)
    if not xs:
        return math.nan
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Stat:
    """Median / min / max (and n) of repeated measurements."""

    median: float
    min: float
    max: float
    n: int
    p99: float | None = None

    @classmethod
    def of(cls, values: list[float], *, p99: bool = False) -> Stat:
        if not values:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(
            statistics.median(values), min(values), max(values), len(values),
            percentile(values, 99) if p99 else None,
        )


@dataclass
class Row:
    """One line of a results table."""

    section: str
    metric: str
    unit: str
    stat: Stat
    target: str = ""
    passed: bool | None = None  # None: informational, no target
    note: str = ""
    key: str = ""  # stable id, used to compare with a saved baseline

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Row:
        d = dict(d)
        d["stat"] = Stat(**d["stat"])
        return cls(**d)


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra_md: list[str] = field(default_factory=list)  # extra markdown blocks (profiles, ratios)

    def add(self, row: Row) -> Row:
        row.section = self.title
        self.rows.append(row)
        return row


def check(value: float, limit: float, *, at_most: bool = True) -> bool:
    return value <= limit if at_most else value >= limit


# -- per-process memory and CPU --------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (bytes) of a process from /proc."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0]) * 1024
    return out


class ProcWatch:
    """RSS, peak RSS and CPU time of one process (Linux /proc; psutil sampling elsewhere)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.linux = Path(f"/proc/{pid}/status").exists()
        self._sampled_peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not self.linux:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:  # non-Linux: poll RSS every 10 ms
        import psutil

        proc = psutil.Process(self.pid)
        while not self._stop.wait(0.01):
            try:
                self._sampled_peak = max(self._sampled_peak, int(proc.memory_info().rss))
            except psutil.Error:
                return

    def rss(self) -> int:
        if self.linux:
            return _status(self.pid)["VmRSS"]
        import psutil

        return int(psutil.Process(self.pid).memory_info().rss)

    def peak(self) -> int:
        if self.linux:
            return _status(self.pid)["VmHWM"]
        return max(self._sampled_peak, self.rss())

    def reset_peak(self) -> None:
        """Resets the peak to the current RSS (Linux: writing 5 to clear_refs resets VmHWM)."""
        if self.linux:
            try:
                with open(f"/proc/{self.pid}/clear_refs", "w") as fh:
                    fh.write("5")
                return
            except OSError:
                pass
        self._sampled_peak = self.rss()

    def cpu_seconds(self) -> float:
        """user + system CPU time of the process (all its threads)."""
        if self.linux:
            with open(f"/proc/{self.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK
        import psutil

        t = psutil.Process(self.pid).cpu_times()
        return float(t.user + t.system)

    def close(self) -> None:
        self._stop.set()


# -- machine and versions --------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = "?"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    ram = f"{int(line.split()[1]) / MB:.1f} GiB"
                    break
    except OSError:
        pass
    cores = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return {
        "cpu": cpu,
        "cores": cores,
        "ram": ram,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
    }


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def ffmpeg_exe() -> str | None:
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:
        return None


def versions() -> dict[str, str]:
    out = {
        name: _version(name)
        for name in ("stillmotion", "mcp", "httpx", "av", "numpy", "opencv-python-headless", "pillow", "anyio",
                     "imageio-ffmpeg", "psutil")
    }
    try:
        import av

        out["av: bundled FFmpeg"] = str(av.ffmpeg_version_info)
    except Exception:
        pass
    exe = ffmpeg_exe()
    if exe:
        try:
            first = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
            m = re.search(r"ffmpeg version (\S+)", first)
            out["ffmpeg CLI (imageio-ffmpeg)"] = m.group(1) if m else first
        except (OSError, subprocess.SubprocessError, IndexError):
            out["ffmpeg CLI (imageio-ffmpeg)"] = "unavailable"
    else:
        out["ffmpeg CLI (imageio-ffmpeg)"] = "not installed"
    return out


def now_stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def fmt(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in ("MB", "MiB"):
        return f"{value:.0f}"
    if unit == "ms":
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    if unit in ("x", "ratio"):
        return f"{value:.2f}"
    if unit == "%":
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 0.1 else f"{value:.2f}"
