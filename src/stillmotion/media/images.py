"""Image arguments in every form, checked by content against a model's rules.

Forms: a local path, a `file://` URI, an http(s) URL, a `data:` URI, raw base64, or a
`stillmotion://jobs/<id>/(last-frame|poster).png` resource of an earlier job.
"""

from __future__ import annotations

import base64
import binascii
import errno
import functools
import hashlib
import inspect
import io
import os
import re
import stat
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread
import httpx
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..catalog import ImageRules
from ..errors import InvalidInput
from .net import FETCH_DEADLINE_S, Fetched, UrlGuard, fetched_temp

Image.MAX_IMAGE_PIXELS = None
"""Pillow's own bomb guard is off: it would refuse (or warn about) a big image before its header can
be read. Every input is checked against its model's `max_pixels` from the header instead, before
any decode (DEFAULT_MAX_PIXELS when a caller names no model)."""
DEFAULT_MAX_PIXELS = 100_000_000

_IMAGE_WORK: list[anyio.CapacityLimiter] = []


def image_work_limiter() -> anyio.CapacityLimiter:
    """Worker threads for image decoding and checks: two at a time, so a burst of big submissions
    neither takes every core nor holds many decoded images in memory at once."""
    if not _IMAGE_WORK:
        _IMAGE_WORK.append(anyio.CapacityLimiter(2))
    return _IMAGE_WORK[0]


_ADMISSION: list[anyio.CapacityLimiter] = []
ADMITTED = 2
"""Submissions whose image pipeline (read, decode, checks, hashing, writing) runs at once."""


def admission_limiter() -> anyio.CapacityLimiter:
    """One slot per submission for its whole image pipeline: a request queued behind it has read
    nothing yet, so memory follows the work in progress (ADMITTED submissions), not the queue. URL
    inputs are fetched to temporary files before a slot is taken (a slow URL holds no slot)."""
    if not _ADMISSION:
        _ADMISSION.append(anyio.CapacityLimiter(ADMITTED))
    return _ADMISSION[0]


async def off_loop(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run CPU-heavy or blocking image work on a worker thread (never on the event loop)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=image_work_limiter())

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
    """Set when the argument was an http(s) URL: providers may be handed the URL itself (only while
    the bytes are exactly what that URL serves: a rotated or animated input is re-encoded, and the
    URL dropped, so every provider gets the same upright still image)."""
    warnings: list[str] = field(default_factory=list)
    _sha256: str | None = field(default=None, repr=False)

    @property
    def mime(self) -> str:
        return MIME_BY_FORMAT.get(self.format, "application/octet-stream")

    @property
    def ext(self) -> str:
        return EXT_BY_FORMAT.get(self.format, "bin")

    @property
    def sha256(self) -> str:
        """Computed once (call it off the event loop for big images)."""
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.data).hexdigest()
        return self._sha256


ResourceResolver = Callable[[str, str], Path | Awaitable[Path | None] | None]
"""(job id, file name) -> the finished job's file, or None; may be async (a store read, off the loop)."""


async def resolve(resolver: ResourceResolver, job_id: str, name: str) -> Path | None:
    found = resolver(job_id, name)
    if inspect.isawaitable(found):
        return await found
    return found
"""(job_id, file name) -> path of that job's file, or None."""


_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def header(data: bytes, argument: str) -> tuple[str, int, int]:
    """Format and size from the file header alone: nothing is decoded (cheap for any size)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "unknown"
            w, h = im.size
    except _PIL_ERRORS as exc:
        raise InvalidInput(argument, "is not a readable image (checked by content, not by file name).") from exc
    return fmt, w, h


def check_pixels(width: int, height: int, max_pixels: int | None, argument: str, model: str | None = None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        who = model or "this model"
        raise InvalidInput(
            argument,
            f"is {width}x{height} px ({width * height / 1e6:.1f} megapixels); {who} accepts at most "
            f"{max_pixels / 1e6:.1f} megapixels (checked from the file header, before decoding).",
            f"<= {max_pixels} pixels (width x height)",
        )


def _decoded(data: bytes, argument: str) -> Image.Image:
    """Check the structure (PNG chunk CRCs), then decode every pixel once: a truncated or corrupt
    file is an ``invalid_input`` naming the argument. The caller closes the returned image."""
    im: Image.Image | None = None
    try:
        with Image.open(io.BytesIO(data)) as check:
            check.verify()  # PNG chunk CRCs and structure (reads chunks, decodes no pixels)
        im = Image.open(io.BytesIO(data))
        im.load()  # every pixel: a truncated file fails here
        # On a PNG, getexif() reads the eXIf chunk after IDAT, which needs the file loaded: done
        # above, so it costs no second decode.
        im.getexif()
        return im
    except _PIL_ERRORS as exc:
        if im is not None:
            im.close()
        raise InvalidInput(argument, f"could not be decoded completely (truncated or corrupt image: {exc}).") from exc


_REENCODE = {"JPEG": ("JPEG", {"quality": 95}), "PNG": ("PNG", {}), "WEBP": ("WEBP", {"lossless": True, "quality": 100})}


def finish_image(img: LoadedImage, argument: str) -> LoadedImage:
    """Decode completely, once (a truncated file is an error), take an animation's first frame
    (with a warning) and apply EXIF orientation once: the result's bytes, size and coordinates are
    those of the upright still the user sees. Runs on a worker thread."""
    with _decoded(img.data, argument) as im:
        frames = int(getattr(im, "n_frames", 1) or 1)
        orientation = int(im.getexif().get(0x0112, 1) or 1)
        if frames <= 1 and orientation in (0, 1):
            return img
        warnings = list(img.warnings)
        if frames > 1:
            im.seek(0)
        frame = im.copy()
        frame.info = dict(im.info)
    if frames > 1:
        warnings.append(
            f"{argument} is an animated image ({frames} frames); only its first frame is used, on every route."
        )
    if orientation not in (0, 1):
        frame = ImageOps.exif_transpose(frame)
    exif = frame.getexif()
    exif.pop(0x0112, None)
    fmt, opts = _REENCODE.get(img.format, ("PNG", {}))
    if fmt == "JPEG" and frame.mode not in ("RGB", "L", "CMYK"):
        frame = frame.convert("RGB")
    icc = frame.info.get("icc_profile")
    if icc:
        opts = {**opts, "icc_profile": icc}
    buf = io.BytesIO()
    frame.save(buf, format=fmt, exif=exif.tobytes(), **opts)
    data = buf.getvalue()
    return LoadedImage(data=data, format=fmt, width=frame.width, height=frame.height, url=None, warnings=warnings)


def _within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


_KIND = {
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "FIFO (named pipe)",
    stat.S_IFSOCK: "socket",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symbolic link",
}


def open_regular(path: Path, argument: str, roots: tuple[Path, ...] | None, max_bytes: int) -> int:
    """Open a local input file for reading: inside `roots` (when given), a regular file only
    (checked on the opened descriptor, which is opened non-blocking so a FIFO cannot hang), at most
    max_bytes by its size. Returns the descriptor (the caller closes it). Blocking: a worker thread."""
    if "\x00" in str(path):
        raise InvalidInput(argument, "holds a NUL byte; no file name can.", "a file path without NUL bytes")
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
    path = path.expanduser()
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a FIFO/device with nobody on the other end)
            raise InvalidInput(argument, f"{path} is not a regular file (a socket or device); only image files are read.") from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise InvalidInput(argument, f"no readable file at {path}.") from exc
        raise InvalidInput(argument, f"cannot read {path}: {exc.strerror}.") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _KIND.get(stat.S_IFMT(st.st_mode), "special file")
            raise InvalidInput(argument, f"{path} is a {kind}, not a regular file; only image files are read.", "a regular image file")
        if st.st_size > max_bytes:
            raise InvalidInput(argument, f"{path} is {st.st_size} bytes, over the {max_bytes}-byte read cap.")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_chunks(fd: int, path: Path, argument: str, max_bytes: int) -> Iterator[bytes]:
    """An opened file's bytes in 1 MiB chunks, at most max_bytes (a file that grows past it while
    being read is refused)."""
    got = 0
    try:
        while got <= max_bytes:
            chunk = os.read(fd, min(1024 * 1024, max_bytes + 1 - got))
            if not chunk:
                return
            got += len(chunk)
            if got > max_bytes:
                raise InvalidInput(argument, f"{path} is over the {max_bytes}-byte read cap (it grew while being read).")
            yield chunk
    except OSError as exc:
        raise InvalidInput(argument, f"cannot read {path}: {exc.strerror}.") from exc


def _read_local(path: Path, argument: str, roots: tuple[Path, ...] | None, max_bytes: int) -> bytes:
    """Read a local input file (see `open_regular`), at most max_bytes. Blocking: a worker thread."""
    fd = open_regular(path, argument, roots, max_bytes)
    try:
        return b"".join(read_chunks(fd, path, argument, max_bytes))
    finally:
        os.close(fd)


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
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    model: str | None = None,
    prefetched: Fetched | None = None,
    deadline_s: float = FETCH_DEADLINE_S,
) -> LoadedImage:
    """Turn any accepted image form into bytes + facts: read (capped, off the event loop), the pixel
    cap checked from the header, then decoded completely and made upright on a worker thread. Does
    not apply a model's other rules (see check_image). A URL already fetched to a file comes as
    `prefetched`; its final URL (after redirects, each hop checked) is the one kept."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(argument, "must be a non-empty string (path, file:// or http(s) URL, data: URI, base64).")
    s = value.strip()
    url: str | None = None
    if prefetched is not None:
        data = await anyio.to_thread.run_sync(prefetched.path.read_bytes)
        url = prefetched.final_url
    elif s.startswith(("http://", "https://")):
        async with fetched_temp(guard, s, max_bytes=max_bytes, argument=argument, deadline_s=deadline_s) as got:
            data = await anyio.to_thread.run_sync(got.path.read_bytes)
            url = got.final_url
    elif s.startswith("stillmotion://"):
        path = await _resource(s, argument, resolve_resource)  # a store lookup (on the store's threads)
        data = await anyio.to_thread.run_sync(functools.partial(_read_local, path, argument, None, max_bytes))
    else:
        data = await anyio.to_thread.run_sync(
            functools.partial(_read_any, s, argument, input_roots, max_bytes)
        )
    if len(data) > max_bytes:
        raise InvalidInput(argument, f"the image is {len(data)} bytes, over the {max_bytes}-byte cap.")
    fmt, w, h = header(data, argument)
    check_pixels(w, h, max_pixels, argument, model)
    img = LoadedImage(data=data, format=fmt, width=w, height=h, url=url)
    done: LoadedImage = await off_loop(finish_image, img, argument)
    if (done.width, done.height) != (w, h):
        check_pixels(done.width, done.height, max_pixels, argument, model)
    return done


async def _resource(s: str, argument: str, resolve_resource: ResourceResolver) -> Path:
    m = _RESOURCE_RE.match(s)
    if not m:
        raise InvalidInput(
            argument,
            f"{s!r} is not an image resource of this server.",
            "stillmotion://jobs/<job_id>/last-frame.png, stillmotion://jobs/<job_id>/poster.png",
        )
    path = await resolve(resolve_resource, m.group(1), m.group(2))
    if path is None:
        raise InvalidInput(argument, f"{s} does not exist (unknown job, or the job has not succeeded).")
    return path


def _read_any(s: str, argument: str, input_roots: tuple[Path, ...] | None, max_bytes: int) -> bytes:
    """Every form but URLs and resources to bytes. Blocking (stat, file reads, base64 of megabytes):
    a worker thread."""
    if s.startswith("data:"):
        head, sep, payload = s.partition(",")
        if not sep or ";base64" not in head:
            raise InvalidInput(argument, "a data: URI must be base64-encoded (data:image/png;base64,...).")
        return _b64decode(payload, argument)
    if s.startswith("file://"):
        parts = urlsplit(s)
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(argument, "file:// URIs must name a local file (file:///path).")
        return _read_local(Path(unquote(parts.path)), argument, input_roots, max_bytes)
    if _exists(s):
        return _read_local(Path(s), argument, input_roots, max_bytes)
    if len(s) >= 16 and _B64_RE.match(s) and (decoded := _try_b64_image(s)) is not None:
        return decoded  # raw base64 (JPEG's starts with "/9j/", so this comes before the path guess)
    if _looks_like_path(s):
        return _read_local(Path(s), argument, input_roots, max_bytes)
    if len(s) >= 16 and _B64_RE.match(s):
        return _b64decode(s, argument)
    raise InvalidInput(
        argument,
        f"{s[:60]!r} is neither an existing file, a URL, a data: URI nor base64 image data.",
        "local path, file:// URI, http(s) URL, data: URI, raw base64, stillmotion://jobs/<id>/last-frame.png",
    )


def _try_b64_image(s: str) -> bytes | None:
    try:
        data = _b64decode(s, "image")
        header(data, "image")
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
    check_pixels(img.width, img.height, rules.max_pixels, argument, model)
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


_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _eight_bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale to 8-bit by scaling (Pillow's own convert clips them to white)."""
    if im.mode not in _HIGH_BIT_MODES:
        return im
    arr = np.asarray(im)
    if im.mode == "F":
        top = 1.0 if float(arr.max(initial=0.0)) <= 1.0 else 255.0
        scaled = np.clip(arr / top * 255.0, 0, 255)
    else:
        wide = arr.astype(np.float64)
        scaled = np.clip(wide / 257.0, 0, 255) if im.mode != "I" or wide.max(initial=0) > 255 else np.clip(wide, 0, 255)
    return Image.fromarray(np.round(scaled).astype(np.uint8), "L")


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode to an RGB uint8 array: EXIF orientation applied, 16-bit grayscale scaled, alpha dropped."""
    with Image.open(io.BytesIO(data)) as opened:
        upright = ImageOps.exif_transpose(opened)
        arr: np.ndarray = np.asarray(_eight_bit(upright).convert("RGB"))
        return arr


def decode_mask(data: bytes) -> np.ndarray:
    """Decode a mask image to bool (bright = selected; alpha counts when present)."""
    with Image.open(io.BytesIO(data)) as opened:
        im = _eight_bit(ImageOps.exif_transpose(opened))
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = np.asarray(im.convert("RGBA"))
            sel: np.ndarray = (rgba[:, :, 3] > 127) & (rgba[:, :, :3].mean(axis=2) > 127)
            return sel
        lum: np.ndarray = np.asarray(im.convert("L")) > 127
        return lum
