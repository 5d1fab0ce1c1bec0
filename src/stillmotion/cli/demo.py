"""`stillmotion demo`: the four generation tools through the MCP layer on a bundled image, offline.

Five videos (camera_move twice: one simple axis and one preset), each followed with check_job,
each decoded again to report its real duration, resolution and size. Exit 0 only if all decode.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import anyio

from ..media.video import VideoInfo, probe_video


def sample_image_path() -> Path:
    """The bundled sample still (stillmotion/assets/sample.jpg)."""
    return Path(str(resources.files("stillmotion") / "assets" / "sample.jpg"))


def _measure(path: Path) -> tuple[VideoInfo, int]:
    """The decoded video's measures and its size in bytes (blocking: runs on a worker thread)."""
    return probe_video(path), path.stat().st_size


# Motion-brush trajectory and masks in the sample's pixels (1280x720, origin bottom-left):
# the sun (upper left) drifts right and down; the foreground hills hold still.
DEMO_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("animate_image", {"prompt": "slowly zoom in on the valley", "duration": 4}),
    ("interpolate_frames", {"duration": 3}),
    ("camera_move", {"camera": {"type": "simple", "config": {"zoom": -5}}, "duration": 4}),
    ("camera_move", {"camera": {"type": "right_turn_forward"}, "duration": 4}),
    (
        "motion_brush",
        {
            "dynamic_masks": [
                {
                    "mask": {"box": [180, 470, 380, 670]},
                    "trajectory": [{"x": 280, "y": 570}, {"x": 500, "y": 600}, {"x": 760, "y": 560}],
                }
            ],
            "static_mask": {"box": [0, 0, 1280, 200]},
            "duration": 4,
        },
    ),
]


def say(text: str, *, err: bool = False) -> None:
    """The demo's report (a CLI command: it never runs inside the stdio server)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _end_image(dest: Path) -> Path:
    """The demo's end frame: the sample image at dusk, shifted slightly (so the morph has motion)."""
    import numpy as np

    from ..media.images import decode_rgb, to_png_bytes

    img = decode_rgb(sample_image_path().read_bytes()).astype(np.float32)
    shifted = np.roll(img, 40, axis=1)
    dusk = np.clip(shifted * np.array([1.05, 0.8, 0.75], np.float32), 0, 255).astype(np.uint8)
    dest.write_bytes(to_png_bytes(dusk))
    return dest


def run_demo(out: Path) -> int:
    out = out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="stillmotion-demo-"))
    os.environ.setdefault("STILLMOTION_HOME", str(home))
    os.environ["STILLMOTION_OUTPUT_DIR"] = str(out / "jobs")
    os.environ.setdefault("STILLMOTION_DEFAULT_MODEL", "local/preview")
    try:
        return anyio.run(_demo, out)
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def _demo(out: Path) -> int:
    from mcp import Client

    from ..server import build_server

    image = str(sample_image_path())
    end = str(_end_image(out / "end-frame.png"))
    say(f"stillmotion demo: local/preview on {image}")
    ok = True
    async with Client(build_server()) as client:
        for tool, extra in DEMO_CALLS:
            args = {"model": "local/preview", **extra}
            if tool == "interpolate_frames":
                args.update(start_image=image, end_image=end)
            else:
                args["image"] = image
            t0 = time.monotonic()
            res = await client.call_tool(tool, args)
            if res.is_error or not res.structured_content:
                say(f"  {tool}: error: {res.content[0].text if res.content else '?'}")  # type: ignore[union-attr]
                ok = False
                continue
            job_id = res.structured_content["job_id"]
            status = res.structured_content["status"]
            while status not in ("succeeded", "failed", "cancelled"):
                res = await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 30})
                status = (res.structured_content or {}).get("status", "failed")
            took = time.monotonic() - t0
            sc = res.structured_content or {}
            if status != "succeeded":
                say(f"  {tool}: {status}: {(sc.get('error') or {}).get('message')}")
                ok = False
                continue
            path = Path(sc["video"]["path"])
            label = tool if tool != "camera_move" else f"camera_move ({args['camera']['type']})"
            try:
                info, size = await anyio.to_thread.run_sync(_measure, path)  # a full decode: off the loop
            except ValueError as exc:
                say(f"  {label}: {path} does not decode: {exc}")
                ok = False
                continue
            size_kb = size / 1024
            say(
                f"  {label:<32} {path}  {info.duration_s:.2f} s  {info.width}x{info.height}  "
                f"{info.frame_count} frames  {size_kb:.0f} KB  ({took:.1f} s)"
            )
    say("all five videos decode" if ok else "demo FAILED", err=not ok)
    return 0 if ok else 1
