"""What a team's HTTP deployment needs around /mcp: the host names clients use, probes for load
balancers, and whether requests may land on any replica.

- `STILLMOTION_ALLOWED_HOSTS=mcp.example.com,10.0.0.5`: those names (any port) pass the Host and
  Origin checks, besides loopback and the bound address.
- `/healthz`: 200 while the process serves HTTP. `/readyz`: 200 once the service has started and
  its job store answers, else 503. Both answer without the bearer token and before the Host
  check (load balancers probe by IP), and reveal nothing but "ok"/the reason.
- Replicas (a PostgreSQL store) serve MCP statelessly: 2026-07-28 traffic is sessionless anyway,
  and 2025-era clients get no `Mcp-Session-Id`, so any replica answers any request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from ..settings import Settings

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 3.0
STALL_S = 1.0
"""A store call waiting longer than this makes /readyz answer 503 (they take milliseconds)."""
QUIET_PROBE_S = 2.0
"""/readyz asks the store itself only when no call answered for this long."""


def team_hosts(settings: Settings) -> tuple[list[str], list[str]]:
    """(extra allowed Host values, extra allowed Origins) for STILLMOTION_ALLOWED_HOSTS."""
    hosts: list[str] = []
    origins: list[str] = []
    for name in settings.allowed_hosts:
        has_port = "]:" in name if name.startswith("[") else ":" in name
        if has_port:  # host:port as given
            hosts.append(name)
            origins += [f"http://{name}", f"https://{name}"]
            continue
        hosts += [name, f"{name}:*"]
        origins += [f"http://{name}", f"https://{name}", f"http://{name}:*", f"https://{name}:*"]
    return hosts, origins


def replicated(settings: Settings) -> bool:
    """HTTP replicas on one shared store: requests must not depend on in-process sessions."""
    return settings.transport == "http" and settings.database_url is not None


class Probes:
    """Answers /healthz and /readyz ahead of the token and Host checks; everything else passes on."""

    def __init__(self, app: ASGIApp, store_check: Callable[[], Any | None]) -> None:
        self.app = app
        self.store_check = store_check
        """Returns the started service's AsyncJobStore (or None before start-up and after shutdown)."""
        self._trouble: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") in ("/healthz", "/readyz"):
            if scope.get("method") not in ("GET", "HEAD"):
                await _answer(send, 405, {"status": "method not allowed"})
                return
            if scope["path"] == "/healthz":
                await _answer(send, 200, {"status": "ok"})
                return
            status, body = await self._ready()
            await _answer(send, status, body)
            return
        if scope["type"] == "http":
            # host names are case-insensitive (RFC 9110); the SDK's allow-list compares exactly
            scope = dict(scope)
            scope["headers"] = [(k, v.lower() if k == b"host" else v) for k, v in scope.get("headers") or []]
        await self.app(scope, receive, send)

    async def _ready(self) -> tuple[int, dict[str, str]]:
        db = self.store_check()
        if db is None:
            return 503, {"status": "starting"}
        # The runner reads the store twice a second, so how its calls went says whether the store
        # answers; only a store nobody used for a while is asked (and never for longer than
        # READY_TIMEOUT_S: a probe never piles up behind a store that does not answer).
        trouble = db.trouble(STALL_S)
        if trouble is None and db.quiet_s > QUIET_PROBE_S:
            try:
                with anyio.fail_after(READY_TIMEOUT_S):
                    await db.meta_get("schema_version")
            except Exception as exc:
                trouble = getattr(exc, "message", None) or type(exc).__name__
        if trouble != self._trouble:  # log changes, not every probe
            if trouble is None:
                log.info("readiness probe: the job store answers again")
            else:
                log.warning("readiness probe: %s", trouble)
            self._trouble = trouble
        if trouble is not None:
            return 503, {"status": "job store unreachable"}
        return 200, {"status": "ok"}


async def _answer(send: Send, status: int, body: dict[str, str]) -> None:
    data = json.dumps(body).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                    (b"content-length", str(len(data)).encode())],
    })
    await send({"type": "http.response.body", "body": data})
