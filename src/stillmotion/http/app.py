"""Streamable HTTP transport: /mcp on 127.0.0.1 by default, bearer token required off loopback."""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import logging
import socket
from typing import Any

import anyio
import anyio.to_thread
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from ..jobs.backends import open_for_settings
from ..server import build_server
from ..settings import Settings
from .files import FileRoute, guarded_protocol
from .links import FileLinks, file_url_secret
from .signin import signin_required, wrap_signin
from .team import Probes, replicated, team_hosts

log = logging.getLogger(__name__)

GRACEFUL_S = 5
MAX_BODY = 8 * 14 * 1024 * 1024  # eight 10 MB images as base64, with room for the JSON around them


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_http_app(settings: Settings, host: str, port: int) -> Any:
    if not _is_loopback(host) and not signin_required(settings):
        raise SystemExit(
            f"refusing to serve on {host}: binding off loopback requires sign-in: STILLMOTION_HTTP_TOKEN (a bearer "
            "token), STILLMOTION_HTTP_USERS (a users file) or STILLMOTION_OAUTH_ISSUER (OAuth)"
        )
    base_url = _file_base_url(settings, host, port)
    links = FileLinks(base_url, _link_secret(settings))
    settings = dataclasses.replace(settings, file_links=links)
    server = build_server(settings)
    hosts = [f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1", "localhost", f"[::1]:{port}"]
    origins = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    if not _is_loopback(host):
        hosts += [host, f"{host}:{port}"]
        origins += [f"http://{host}:{port}", f"https://{host}"]
    extra_hosts, extra_origins = team_hosts(settings)
    hosts += extra_hosts
    origins += extra_origins
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)
    app: Any = server.streamable_http_app(
        streamable_http_path="/mcp", max_request_body_size=MAX_BODY, transport_security=security,
        stateless_http=replicated(settings),
    )
    manager = server.session_manager

    def started_store() -> Any:
        # the started service (None before start-up and after shutdown) lives in the manager's lifespan state
        return getattr(getattr(manager, "_lifespan_state", None), "db", None)

    # /metrics: behind STILLMOTION_METRICS_TOKEN alone when it is set (outside the sign-in), else
    # behind the same sign-in as /mcp (inside it)
    if settings.metrics_token is None:
        app = MetricsRoute(app, None, started_store)
    app = wrap_signin(app, settings, base_url)  # who is asking (users.py): a shared token, a users file, OAuth
    # signed file links carry their own authorisation, so the route sits outside the token gate
    # (a deleted job's files are gone from the shared folder: its links answer 404 on every replica)
    app = FileRoute(app, links, settings.output_dir)
    if settings.metrics_token is not None:
        app = MetricsRoute(app, settings.metrics_token.reveal(), started_store)
    return Probes(app, started_store)


class MetricsRoute:
    """`GET /metrics`: Prometheus text (metrics.py). With a token (STILLMOTION_METRICS_TOKEN) it checks
    that token itself; without one it sits behind /mcp's sign-in (none on loopback without one, like /mcp)."""

    def __init__(self, app: ASGIApp, token: str | None, store: Any) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/metrics":
            await self.app(scope, receive, send)
            return
        if self.token is not None:
            auth = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not (auth.startswith(b"Bearer ") and hmac.compare_digest(auth[7:].strip(), self.token)):
                await _reply(send, 401, b'{"error":"missing or wrong bearer token"}', b"application/json",
                             [(b"www-authenticate", b"Bearer")])
                return
        if scope.get("method") not in ("GET", "HEAD"):
            await _reply(send, 405, b"only GET\n", b"text/plain; charset=utf-8", [(b"allow", b"GET, HEAD")])
            return
        from ..ops.metrics import CONTENT_TYPE, exposition

        db = self.store()  # the started service's AsyncJobStore (None while starting)
        try:
            counts = await db.job_counts() if db is not None else None
        except Exception as exc:  # the store is down: say so (a scrape failure shows as up == 0)
            log.warning("metrics: the job store does not answer: %s", type(exc).__name__)
            await _reply(send, 503, b"job store unreachable\n", b"text/plain; charset=utf-8")
            return
        body = await anyio.to_thread.run_sync(exposition, (lambda: counts) if counts is not None else None)
        await _reply(send, 200, b"" if scope.get("method") == "HEAD" else body, CONTENT_TYPE.encode())


async def _reply(send: Send, status: int, body: bytes, content_type: bytes,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _link_secret(settings: Settings) -> bytes:
    """The file-link signing secret from the store's `meta` table: every replica of the store signs
    and checks with the same one."""
    settings.home.mkdir(parents=True, exist_ok=True)
    store = open_for_settings(settings, serving=False)  # replicas: the PostgreSQL store they share
    try:
        return file_url_secret(settings.home, store)
    finally:
        store.close()


def _file_base_url(settings: Settings, host: str, port: int) -> str:
    """STILLMOTION_PUBLIC_URL when set (behind a proxy or a load balancer), else the bound address."""
    if settings.public_url:
        return settings.public_url
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if shown != host or not _is_loopback(host):
        log.warning("file links use http://%s:%d; set STILLMOTION_PUBLIC_URL to the address clients use", shown, port)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, saying "serving" only once the service started and the socket listens."""

    where = ""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            log.info("serving MCP over streamable HTTP at %s", self.where)


def serve_http(settings: Settings, host: str, port: int, sock: socket.socket | None = None) -> int:
    """Serve on `sock` (bound by startup.bind, so a taken port fails in one line before anything
    starts) or, without one, bind here."""
    if sock is None:
        from ..ops.startup import bind

        sock = bind(host, port)
    app = build_http_app(settings, host, port)
    # uvicorn's h11 protocol with header/body read timeouts (slow clients are disconnected).
    # SIGTERM: stop accepting, give open requests (a check_job wait, a listen stream) a few seconds,
    # then the lifespan stops the runner and releases this process's leases for the other replicas.
    protocol = guarded_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s)
    # log_config=None: uvicorn's loggers reach the root handler (STILLMOTION_LOG_FORMAT applies to them)
    config = uvicorn.Config(app, log_level="warning", log_config=None, http=protocol, timeout_graceful_shutdown=GRACEFUL_S)
    server = _Server(config)
    shown = f"[{host}]" if ":" in host else host
    server.where = f"http://{shown}:{port}/mcp"
    server.run(sockets=[sock])
    return 0 if server.started else 1
