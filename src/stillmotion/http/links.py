"""Signed, expiring links to job files, and the secret that signs them.

A link is ``{base}/files/<job_id>/<name>?exp=<unix seconds>&sig=<hex HMAC-SHA256>`` over
``"<job_id>/<name>:<exp>"``. The HTTP transport serves it (`http_files.py`); results served over
HTTP carry it as ``video.http_url`` (and for the poster and last frame). The secret is shared by
every replica that shares the store: it lives in the store's key/value ``meta`` table when the
store has one, else in a 0600 file next to the database (same home = same secret).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..scrub import register_secret

SECRET_KEY = "file_url_secret"
LINK_TTL_S = 24 * 3600
"""A link is valid 24-25 hours: expiry rounded up to the hour, so repeated results give one URL."""
FILE_NAMES = frozenset({"video.mp4", "poster.png", "last-frame.png"})


def file_url_secret(home: Path, store: Any = None) -> bytes:
    """The signing secret: from the store's `meta` table when it has one (every replica sees the
    same), else from ``<home>/file-url.secret`` (created once, 0600, race-safe)."""
    setdefault = getattr(store, "meta_setdefault", None)
    if callable(setdefault):
        value = str(setdefault(SECRET_KEY, secrets.token_hex(32)))
    else:
        value = _file_secret(home / "file-url.secret")
    register_secret(value)
    return value.encode()


def _file_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(50):
        try:
            text = path.read_text().strip()
            if len(text) >= 32:
                return text
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            time.sleep(0.01)  # another process is writing it
            continue
        value = secrets.token_hex(32)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
            fh.flush()
            os.fsync(fh.fileno())
        return value
    raise RuntimeError(f"cannot read the file-link secret at {path}")


def _sig(secret: bytes, job_id: str, name: str, exp: int) -> str:
    return hmac.new(secret, f"{job_id}/{name}:{exp}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class FileLinks:
    base_url: str
    """Where clients reach the HTTP transport (STILLMOTION_PUBLIC_URL, else the bound address)."""
    secret: bytes
    ttl_s: int = LINK_TTL_S

    def url(self, job_id: str, name: str, *, now: float | None = None) -> str:
        t = time.time() if now is None else now
        exp = (int(t + self.ttl_s) // 3600 + 1) * 3600
        return (
            f"{self.base_url}/files/{quote(job_id, safe='')}/{quote(name, safe='')}"
            f"?exp={exp}&sig={_sig(self.secret, job_id, name, exp)}"
        )

    def check(self, job_id: str, name: str, exp: str, sig: str, *, now: float | None = None) -> bool:
        """True when the signature is ours and has not expired (constant-time comparison)."""
        if not (exp.isascii() and exp.isdigit()) or len(exp) > 12:  # "²" is a digit to isdigit, not to int
            return False
        if not sig.isascii():  # compare_digest refuses non-ASCII text with a TypeError
            return False
        good = hmac.compare_digest(_sig(self.secret, job_id, name, int(exp)), sig)
        return good and int(exp) >= (time.time() if now is None else now)

    def add_to_result(self, job_id: str, result: dict[str, Any]) -> dict[str, Any]:
        """A copy of a job's result with `http_url` on the video, poster and last frame."""
        out = dict(result)
        for key, name in (("video", "video.mp4"), ("poster", "poster.png"), ("last_frame", "last-frame.png")):
            part = out.get(key)
            if isinstance(part, dict):
                out[key] = {**part, "http_url": self.url(job_id, name)}
        return out
