"""Non-image inputs (a driving audio track, video clips to join) under the image inputs' access rules:
a local path or file:// URI inside STILLMOTION_INPUT_ROOTS, an http(s) URL through the network
guard, or a `stillmotion://jobs/<id>/<file>` resource of this server."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from ..errors import InvalidInput
from .images import ResourceResolver, _read_local, off_loop, resolve
from .net import UrlGuard, fetch_bytes

_RESOURCE_RE = re.compile(r"^stillmotion://jobs/([a-z0-9][a-z0-9_-]{7,63})/([a-z0-9.-]+)$")


@dataclass
class LoadedMedia:
    data: bytes
    url: str | None
    """The http(s) URL it came from (None for local files and resources)."""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


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
) -> LoadedMedia:
    """`resources` names the resource form accepted, for the error text."""
    s = value.strip()
    if not s:
        raise InvalidInput(argument, "must be a non-empty string (path, file:// or http(s) URL, stillmotion:// resource).")
    url: str | None = None
    if s.startswith("stillmotion://"):
        m = _RESOURCE_RE.match(s)
        path = await resolve(resolve_resource, m.group(1), m.group(2)) if m else None
        if path is None:
            raise InvalidInput(argument, f"{s} does not exist (unknown job, or the job has not succeeded).", resources)
        data = await off_loop(_read_local, path, argument, None, max_bytes)
    elif s.startswith(("http://", "https://")):
        data, _ = await fetch_bytes(client, guard, s, max_bytes=max_bytes, argument=argument)
        url = s
    elif s.startswith("file://"):
        parts = urlsplit(s)
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(argument, "file:// URIs must name a local file (file:///path).")
        data = await off_loop(_read_local, Path(unquote(parts.path)), argument, input_roots, max_bytes)
    else:
        data = await off_loop(_read_local, Path(s), argument, input_roots, max_bytes)
    if len(data) > max_bytes:
        raise InvalidInput(argument, f"is {len(data)} bytes, over the {max_bytes}-byte cap.")
    return LoadedMedia(data, url)


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


def audio_facts(data: bytes, argument: str, formats: tuple[str, ...]) -> AudioFacts:
    """Format by content and duration by decoding the container (CPU: call from a worker thread)."""
    import av
    import av.error

    fmt = sniff_audio(data)
    if fmt is None or fmt not in formats:
        raise InvalidInput(argument, "is not a wav or mp3 file (checked by content).", list(formats))
    try:
        with av.open(io.BytesIO(data), mode="r", format=fmt) as container:
            stream = container.streams.audio[0]
            seconds = 0.0
            if container.duration is not None:
                seconds = container.duration / 1_000_000
            if seconds <= 0:
                last = 0.0
                for packet in container.demux(stream):
                    if packet.pts is not None and packet.duration is not None and packet.time_base is not None:
                        last = max(last, float((packet.pts + packet.duration) * packet.time_base))
                seconds = last
    except (av.error.FFmpegError, IndexError) as exc:
        raise InvalidInput(argument, f"could not be read as {fmt} audio ({type(exc).__name__}).", list(formats)) from None
    return AudioFacts(fmt, "audio/wav" if fmt == "wav" else "audio/mpeg", seconds)
