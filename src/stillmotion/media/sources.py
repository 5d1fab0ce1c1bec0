"""Non-image inputs (a driving audio track, video clips to join) under the image inputs' access rules:
a local path or file:// URI inside STILLMOTION_INPUT_ROOTS, an http(s) URL through the network
guard, or a `stillmotion://jobs/<id>/<file>` resource of this server."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread
import httpx

from ..errors import InvalidInput
from .images import ResourceResolver, open_regular, read_chunks, resolve
from .net import FETCH_DEADLINE_S, UrlGuard, fetch_to_file, remove_file

_RESOURCE_RE = re.compile(r"^stillmotion://jobs/([a-z0-9][a-z0-9_-]{7,63})/([a-z0-9.-]+)$")


@dataclass
class LoadedMedia:
    data: bytes
    url: str | None
    """The http(s) URL it came from, after redirects (None for local files and resources)."""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class SavedMedia:
    path: Path
    bytes: int
    url: str | None
    """The http(s) URL it came from, after redirects: every hop was checked (None when local)."""


async def _resource_path(
    s: str, argument: str, resolve_resource: ResourceResolver, resources: str, names: frozenset[str] | None
) -> Path:
    m = _RESOURCE_RE.match(s)
    if m and names is not None and m.group(2) not in names:
        raise InvalidInput(argument, f"{s} is not a file this argument takes.", resources)
    path = await resolve(resolve_resource, m.group(1), m.group(2)) if m else None
    if path is None:
        raise InvalidInput(argument, f"{s} does not exist (unknown job, or the job has not succeeded).", resources)
    return path


def _local_path(s: str, argument: str) -> Path:
    if "\x00" in s:
        raise InvalidInput(argument, "holds a NUL byte; no path or URL can.", "a path, file:// or http(s) URL without NUL bytes")
    if s.startswith("file://"):
        parts = urlsplit(s)
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(argument, "file:// URIs must name a local file (file:///path).")
        return Path(unquote(parts.path))
    return Path(s)


def _copy_local(path: Path, dest: Path, argument: str, roots: tuple[Path, ...] | None, max_bytes: int) -> int:
    """Copy a local input (regular file, inside the roots, capped) to `dest` in chunks. Blocking."""
    fd = open_regular(path, argument, roots, max_bytes)
    total = 0
    try:
        with open(dest, "wb") as out:
            for chunk in read_chunks(fd, path, argument, max_bytes):
                out.write(chunk)
                total += len(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return total


async def save_media(
    value: str,
    dest: Path,
    *,
    argument: str,
    guard: UrlGuard,
    input_roots: tuple[Path, ...] | None,
    resolve_resource: ResourceResolver,
    max_bytes: int,
    resources: str,
    names: frozenset[str] | None = None,
    deadline_s: float = FETCH_DEADLINE_S,
) -> SavedMedia:
    """Copy or fetch one non-image input to `dest`, streamed (never whole in memory), capped at
    max_bytes, a URL within `deadline_s`. `names` limits the `stillmotion://jobs/<id>/<name>` files
    accepted; `resources` names the resource form accepted, for the error text."""
    s = value.strip()
    if not s:
        raise InvalidInput(argument, "must be a non-empty string (path, file:// or http(s) URL, stillmotion:// resource).")
    if s.startswith(("http://", "https://")):
        got = await fetch_to_file(guard, s, dest, max_bytes=max_bytes, argument=argument, deadline_s=deadline_s)
        return SavedMedia(dest, got.bytes, got.final_url)
    if s.startswith("stillmotion://"):
        path, roots = await _resource_path(s, argument, resolve_resource, resources, names), None
    else:
        path, roots = _local_path(s, argument), input_roots
    size = await anyio.to_thread.run_sync(functools.partial(_copy_local, path, dest, argument, roots, max_bytes))
    return SavedMedia(dest, size, None)


async def load_media(
    value: str,
    *,
    argument: str,
    client: httpx.AsyncClient,
    guard: UrlGuard,
    input_roots: tuple[Path, ...] | None,
    resolve_resource: ResourceResolver,
    max_bytes: int,
    resources: str,
    deadline_s: float = FETCH_DEADLINE_S,
) -> LoadedMedia:
    """A small input's bytes (through `save_media` into a temporary file). `client` is unused."""
    tmp = Path(await anyio.to_thread.run_sync(_temp_name))
    try:
        saved = await save_media(
            value, tmp, argument=argument, guard=guard, input_roots=input_roots, resolve_resource=resolve_resource,
            max_bytes=max_bytes, resources=resources, deadline_s=deadline_s,
        )  # fmt: skip
        data = await anyio.to_thread.run_sync(tmp.read_bytes)
    finally:
        await remove_file(tmp)
    return LoadedMedia(data, saved.url)


def _temp_name() -> str:
    fd, name = tempfile.mkstemp(prefix="stillmotion-input-")
    os.close(fd)
    return name


@dataclass(frozen=True)
class AudioFacts:
    format: str
    """wav or mp3."""
    mime: str
    duration_s: float


def sniff_audio(data: bytes) -> str | None:
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3" or (len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0):
        return "mp3"
    return None


MIN_COVERAGE = 0.9
"""The decoded audio's packets must account for this share of the file (less tags): a header that
declares 10 s in front of 120 s of data, or a frame header in front of random bytes, is refused."""
MAX_BAD_PACKETS = 0.02


def _tag_bytes(data: bytes) -> int:
    """Bytes of ID3v2 (front) and ID3v1 (last 128) tags: metadata, not audio."""
    n = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        size = data[6:10]
        n += 10 + ((size[0] & 0x7F) << 21 | (size[1] & 0x7F) << 14 | (size[2] & 0x7F) << 7 | (size[3] & 0x7F))
    if len(data) >= 128 and data[-128:-125] == b"TAG":
        n += 128
    return n


def audio_facts(data: bytes, argument: str, formats: tuple[str, ...]) -> AudioFacts:
    """Format by content; the duration by decoding every packet (samples / rate), never from the
    header; the packets must cover the file and decode (CPU: call from a worker thread)."""
    import av
    import av.error

    fmt = sniff_audio(data)
    if fmt is None or fmt not in formats:
        raise InvalidInput(argument, "is not a wav or mp3 file (checked by content).", list(formats))
    packets = bad = packet_bytes = samples = 0
    rate = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format=fmt) as container:
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                if packet.size <= 0:
                    continue
                packets += 1
                packet_bytes += packet.size
                try:
                    for frame in packet.decode():
                        samples += frame.samples
                        rate = frame.sample_rate or rate
                except av.error.FFmpegError:
                    bad += 1
    except (av.error.FFmpegError, IndexError) as exc:
        raise InvalidInput(argument, f"cannot be read as {fmt} audio ({type(exc).__name__}).", list(formats)) from None
    if samples == 0 or rate <= 0 or bad > MAX_BAD_PACKETS * packets:
        raise InvalidInput(
            argument,
            f"cannot be decoded as {fmt} audio ({bad} of {packets} packets fail, {samples} samples decoded).",
            list(formats),
        )
    body = len(data) - _tag_bytes(data)
    if packet_bytes < MIN_COVERAGE * body:
        raise InvalidInput(
            argument,
            f"holds {len(data)} bytes but only {packet_bytes} of them are audio its header declares "
            f"({samples / rate:.2f} s decoded); the rest would be sent unchecked.",
            f"a {fmt} file that is audio throughout",
        )
    return AudioFacts(fmt, "audio/wav" if fmt == "wav" else "audio/mpeg", samples / rate)
