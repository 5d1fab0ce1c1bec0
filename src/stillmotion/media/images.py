"""Image arguments in every form, checked by content against a model's rules.

Forms: a local path, a `file://` URI, an http(s) URL, a `data:` URI, raw base64, or a
`stillmotion://jobs/<id>/(last-frame|poster).png` resource of an earlier job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..catalog import ImageRules
from ..errors import InvalidInput
from .net import UrlGuard, fetch_bytes

Image.MAX_IMAGE_PIXELS = 100_000_000

MIME_BY_FORMAT = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp", "GIF": "image/gif"}
EXT_BY_FORMAT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif"}
_B64_RE = re.compile(r"^[A-Za-z0-9+/=\s_-]+$")
_RESOURCE_RE = re.compile(r"^stillmotion://jobs/([a-z0-9][a-z0-9_-]{7,63})/(last-frame\.png|poster\.png)$")


@dataclass
class LoadedImage:
    data: bytes
    format: str
    """Pillow format name, from the content."""
    width: int
    height: int
    url: str | None = None
    """Set when the argument was an http(s) URL: providers may be handed the URL itself."""

    @property
    def mime(self) -> str:
        return MIME_BY_FORMAT.get(self.format, "application/octet-stream")

    @property
    def ext(self) -> str:
        return EXT_BY_FORMAT.get(self.format, "bin")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


ResourceResolver = Callable[[str, str], Path | None]
"""(job_id, file name) -> path of that job's file, or None."""


def sniff(data: bytes, argument: str) -> tuple[str, int, int]:
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "unknown"
            w, h = im.size
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(argument, "is not a readable image (checked by content, not by file name).") from exc
    return fmt, w, h


def _within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _read_local(path: Path, argument: str, roots: tuple[Path, ...] | None, max_bytes: int) -> bytes:
    if roots is not None:
        if not roots:
            raise InvalidInput(
                argument,
                "local file paths are refused on this transport (set STILLMOTION_INPUT_ROOTS to allow folders); "
                "pass an http(s) URL, a data: URI or base64 instead.",
            )
        resolved = path.expanduser().resolve()
        if not _within(resolved, roots):
            raise InvalidInput(
                argument,
                f"{path} is outside the allowed input folders.",
                [str(r) for r in roots],
            )
        path = resolved
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidInput(argument, f"no readable file at {path}.") from exc
    if size > max_bytes:
        raise InvalidInput(argument, f"{path} is {size} bytes, over the {max_bytes}-byte read cap.")
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise InvalidInput(argument, f"cannot read {path}: {exc.strerror}.") from exc


def _exists(s: str) -> bool:
    if len(s) > 4096:
        return False
    try:
        return Path(s).expanduser().exists()
    except (OSError, ValueError):
        return False


def _looks_like_path(s: str) -> bool:
    if len(s) > 4096:  # no path is this long; base64 often is, and may start with "/"
        return False
    return (
        s.startswith(("/", "~", "./", "../", "\\"))
        or bool(re.match(r"^[A-Za-z]:[\\/]", s))
        or (len(s) < 1024 and "." in s and not _B64_RE.match(s))
    )


async def load_image(
    value: str,
    *,
    argument: str,
    client: httpx.AsyncClient,
    guard: UrlGuard,
    input_roots: tuple[Path, ...] | None,
    resolve_resource: ResourceResolver,
    max_bytes: int,
) -> LoadedImage:
    """Turn any accepted image form into bytes + facts. Does not apply a model's rules."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(argument, "must be a non-empty string (path, file:// or http(s) URL, data: URI, base64).")
    s = value.strip()
    url: str | None = None
    if s.startswith("stillmotion://"):
        m = _RESOURCE_RE.match(s)
        if not m:
            raise InvalidInput(
                argument,
                f"{s!r} is not an image resource of this server.",
                "stillmotion://jobs/<job_id>/last-frame.png, stillmotion://jobs/<job_id>/poster.png",
            )
        path = resolve_resource(m.group(1), m.group(2))
        if path is None:
            raise InvalidInput(argument, f"{s} does not exist (unknown job, or the job has not succeeded).")
        data = path.read_bytes()
    elif s.startswith(("http://", "https://")):
        data, _ = await fetch_bytes(client, guard, s, max_bytes=max_bytes, argument=argument)
        url = s
    elif s.startswith("data:"):
        head, sep, payload = s.partition(",")
        if not sep or ";base64" not in head:
            raise InvalidInput(argument, "a data: URI must be base64-encoded (data:image/png;base64,...).")
        data = _b64decode(payload, argument)
    elif s.startswith("file://"):
        parts = urlsplit(s)
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(argument, "file:// URIs must name a local file (file:///path).")
        data = _read_local(Path(unquote(parts.path)), argument, input_roots, max_bytes)
    elif _exists(s):
        data = _read_local(Path(s), argument, input_roots, max_bytes)
    elif len(s) >= 16 and _B64_RE.match(s) and (decoded := _try_b64_image(s)) is not None:
        data = decoded  # raw base64 (JPEG's starts with "/9j/", so this comes before the path guess)
    elif _looks_like_path(s):
        data = _read_local(Path(s), argument, input_roots, max_bytes)
    elif len(s) >= 16 and _B64_RE.match(s):
        data = _b64decode(s, argument)
    else:
        raise InvalidInput(
            argument,
            f"{s[:60]!r} is neither an existing file, a URL, a data: URI nor base64 image data.",
            "local path, file:// URI, http(s) URL, data: URI, raw base64, stillmotion://jobs/<id>/last-frame.png",
        )
    if len(data) > max_bytes:
        raise InvalidInput(argument, f"the image is {len(data)} bytes, over the {max_bytes}-byte cap.")
    fmt, w, h = sniff(data, argument)
    return LoadedImage(data=data, format=fmt, width=w, height=h, url=url)


def _try_b64_image(s: str) -> bytes | None:
    try:
        data = _b64decode(s, "image")
        sniff(data, "image")
    except InvalidInput:
        return None
    return data


def _b64decode(payload: str, argument: str) -> bytes:
    cleaned = "".join(payload.split())
    try:
        if "-" in cleaned or "_" in cleaned:
            return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(argument, "is not valid base64.") from exc


def check_image(img: LoadedImage, rules: ImageRules, *, argument: str, model: str) -> None:
    """Apply a model's image rules. Each failure names the argument, the rule and what is allowed."""
    allowed_formats = [f.lower() for f in rules.formats]
    if img.format not in rules.formats:
        raise InvalidInput(
            argument,
            f"is a {img.format} image by content; {model} accepts only {', '.join(allowed_formats)}.",
            rules.describe(),
        )
    if len(img.data) > rules.max_bytes:
        raise InvalidInput(
            argument,
            f"is {len(img.data)} bytes; {model} accepts at most {rules.max_bytes} bytes ({rules.max_bytes // (1024 * 1024)} MB).",
            rules.describe(),
        )
    if min(img.width, img.height) < rules.min_side:
        raise InvalidInput(
            argument,
            f"is {img.width}x{img.height} px; {model} needs each side >= {rules.min_side} px.",
            rules.describe(),
        )
    if rules.max_side is not None and max(img.width, img.height) > rules.max_side:
        raise InvalidInput(
            argument,
            f"is {img.width}x{img.height} px; {model} accepts sides up to {rules.max_side} px.",
            rules.describe(),
        )
    aspect = img.width / img.height
    if aspect < rules.min_aspect - 1e-9 or aspect > rules.max_aspect + 1e-9:
        raise InvalidInput(
            argument,
            f"has aspect ratio {img.width}:{img.height} ({aspect:.3f}); {model} accepts width/height between "
            f"{rules.min_aspect:.3g} and {rules.max_aspect:g}.",
            rules.describe(),
        )


def to_png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def rasterize_shape(
    shape: dict[str, list[float] | list[list[float]]], width: int, height: int, argument: str
) -> LoadedImage:
    """A box or polygon in bottom-left-origin pixels -> a white-on-black PNG mask at (width, height)."""
    import cv2

    mask = np.zeros((height, width), np.uint8)
    if "box" in shape:
        x0, y0, x1, y1 = (float(v) for v in shape["box"])  # type: ignore[arg-type]
        if x1 <= x0 or y1 <= y0:
            raise InvalidInput(argument, "box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0.")
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    else:
        pts = [(float(p[0]), float(p[1])) for p in shape["polygon"]]  # type: ignore[index]
    for x, y in pts:
        if not (0 <= x <= width and 0 <= y <= height):
            raise InvalidInput(
                argument,
                f"shape point ({x:g}, {y:g}) lies outside the {width}x{height} image.",
                f"x in [0, {width}], y in [0, {height}] (origin bottom-left)",
            )
    rows = np.array([[x, height - y] for x, y in pts], np.float64)
    cv2.fillPoly(mask, [np.round(rows).astype(np.int32)], 255)
    if not mask.any():
        raise InvalidInput(argument, "the shape covers no pixel.")
    rgb = np.repeat(mask[:, :, None], 3, axis=2)
    data = to_png_bytes(rgb)
    return LoadedImage(data=data, format="PNG", width=width, height=height)


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode to an RGB uint8 array, applying EXIF orientation."""
    from PIL import ImageOps

    with Image.open(io.BytesIO(data)) as opened:
        upright = ImageOps.exif_transpose(opened)
        arr: np.ndarray = np.asarray(upright.convert("RGB"))
        return arr


def decode_mask(data: bytes) -> np.ndarray:
    """Decode a mask image to bool (bright = selected; alpha counts when present)."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = np.asarray(im.convert("RGBA"))
            sel: np.ndarray = (rgba[:, :, 3] > 127) & (rgba[:, :, :3].mean(axis=2) > 127)
            return sel
        lum: np.ndarray = np.asarray(im.convert("L")) > 127
        return lum
