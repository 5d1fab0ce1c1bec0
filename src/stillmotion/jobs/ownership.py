"""Who drives a job: process instance ids, and telling a gone owner from a live one.

An owner id is `host:pid:start:nonce`. `start` is the process start time as the OS records it
(Linux: clock ticks since boot from /proc/<pid>/stat), so a recycled pid is not mistaken for
the old process; `nonce` tells apart several runners inside one process (tests run servers
in-process). On the same host an owner is gone at once when its pid is dead, its start time
differs, or (same process) its runner has stopped; on another host only its lease tells.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

_LIVE: set[str] = set()
"""Owner ids of the runners alive in this process."""


def host_name() -> str:
    return socket.gethostname().replace(":", "_") or "localhost"


def process_start_time(pid: int) -> str | None:
    """The OS's start time of `pid` as an opaque string, or None when unknown or the pid is gone."""
    if sys.platform.startswith("linux"):
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # field 2 (comm) may hold spaces and parentheses: split after its closing parenthesis
        rest = raw.rsplit(")", 1)[-1].split()
        return rest[19] if len(rest) > 19 else None
    return "0"  # elsewhere: pid liveness only


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class OwnerId:
    host: str
    pid: int
    start: str
    nonce: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}:{self.nonce}"

    @property
    def file_tag(self) -> str:
        """A file-name-safe tag for this instance (temporary files carry it)."""
        return f"{self.pid}-{self.nonce}"


def new_owner_id() -> OwnerId:
    pid = os.getpid()
    return OwnerId(host_name(), pid, process_start_time(pid) or "0", secrets.token_hex(3))


def parse_owner(owner: str) -> OwnerId | None:
    parts = owner.rsplit(":", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return OwnerId(parts[0], int(parts[1]), parts[2], parts[3])


def register_live(owner: str) -> None:
    _LIVE.add(owner)


def unregister_live(owner: str) -> None:
    _LIVE.discard(owner)


def owner_is_gone(owner: str) -> bool:
    """True when `owner` is known to be dead (same host only); False when alive or unknowable."""
    oid = parse_owner(owner)
    if oid is None or oid.host != host_name():
        return False
    if oid.pid == os.getpid():
        return owner not in _LIVE
    if not pid_alive(oid.pid):
        return True
    start = process_start_time(oid.pid)
    return start is not None and start != oid.start


def owner_is_alive(owner: str | None) -> bool | None:
    """For display: True/False on this host, None when it cannot be told (another host)."""
    if owner is None:
        return None
    oid = parse_owner(owner)
    if oid is None or oid.host != host_name():
        return None
    return not owner_is_gone(owner)
