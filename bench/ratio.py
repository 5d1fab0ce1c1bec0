"""The key row of section 1 on its own: `camera_move` 5 s 720p, MCP submit -> succeeded,
against ffmpeg's smooth zoompan recipe, alternating one of ours and one of theirs so that
both see the same machine load. Also the CPU time each one used (the server process's for
one job; the ffmpeg child's), which a busy machine disturbs far less than wall time. Short
enough to rerun when the machine is quiet:

    python -m bench.ratio [reps]        (default 7 pairs, about a minute on 2 idle cores)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from .common import ffmpeg_exe
from .engine import FPS, make_inputs, smooth_zoompan_cmd, tool_args
from .stdio import StdioMCP, server_env


def _cpu_cmd(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and user+system CPU seconds of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode})")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


async def _run(tmp: Path, reps: int) -> tuple[list[float], list[float], list[float], list[float]]:
    inputs = make_inputs(tmp / "inputs")
    exe = ffmpeg_exe()
    if exe is None:
        raise SystemExit("imageio-ffmpeg is not installed (pip install -e '.[bench]')")
    ours: list[float] = []
    theirs: list[float] = []
    ours_cpu: list[float] = []
    theirs_cpu: list[float] = []
    args = tool_args("camera_move", inputs, 5)
    cmd = smooth_zoompan_cmd(exe, inputs["start"], tmp / "zp.mp4", 5 * FPS)
    async with StdioMCP(server_env(tmp / "home")) as mcp:
        assert mcp.watch is not None
        await mcp.run_job("camera_move", args)  # warm-up
        _cpu_cmd(cmd)
        for _ in range(reps):
            c0 = mcp.watch.cpu_seconds()
            t0 = time.perf_counter()
            job_id = await mcp.job("camera_move", args)
            done = await mcp.wait_job(job_id)
            ours.append(time.perf_counter() - t0)
            ours_cpu.append(mcp.watch.cpu_seconds() - c0)
            if done["status"] != "succeeded":
                raise RuntimeError(f"camera_move ended {done['status']}")
            wall, cpu = _cpu_cmd(cmd)
            theirs.append(wall)
            theirs_cpu.append(cpu)
    return ours, theirs, ours_cpu, theirs_cpu


def main(argv: list[str]) -> int:
    reps = int(argv[0]) if argv else 7
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    with tempfile.TemporaryDirectory(prefix="stillmotion-ratio-") as tmp:
        ours, theirs, ours_cpu, theirs_cpu = anyio.run(_run, Path(tmp), reps)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    co, ct = statistics.median(ours_cpu), statistics.median(theirs_cpu)
    pairwise = statistics.median(o / t for o, t in zip(ours, theirs, strict=True))
    load = os.getloadavg()[0]
    sys.stdout.write(
        f"camera_move 5 s submit->succeeded: median {mo:.2f} s (min {min(ours):.2f}, max {max(ours):.2f}); "
        f"server CPU {co:.2f} s\n"
        f"ffmpeg smooth zoompan:             median {mt:.2f} s (min {min(theirs):.2f}, max {max(theirs):.2f}); "
        f"CPU {ct:.2f} s\n"
        f"ratio of medians: {mo / mt:.2f}x (pairwise {pairwise:.2f}x); CPU ratio {co / ct:.2f}x; "
        f"load average at the end {load:.1f}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
