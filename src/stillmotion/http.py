"""Streamable HTTP transport: /mcp on 127.0.0.1 by default, bearer token required off loopback."""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import logging
from typing import Any

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from .file_links import FileLinks, file_url_secret
from .http_files import FileRoute, guarded_protocol
from .http_team import Probes, replicated, team_hosts
from .jobs.backends import open_for_settings
from .server import build_server
from .settings import Settings

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


class BearerGate:
    """Requires `Authorization: Bearer <STILLMOTION_HTTP_TOKEN>` on every request when a token is set."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"")
            ok = auth.startswith(b"Bearer ") and hmac.compare_digest(auth[7:].strip(), self.token)
            if not ok:
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b'{"error":"missing or wrong bearer token"}'})
                return
        await self.app(scope, receive, send)


def build_http_app(settings: Settings, host: str, port: int) -> Any:
    if not _is_loopback(host) and settings.http_token is None:
        raise SystemExit(
            f"refusing to serve on {host}: binding off loopback requires STILLMOTION_HTTP_TOKEN (a bearer token)"
        )
    links = FileLinks(_file_base_url(settings, host, port), _link_secret(settings))
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
    if settings.http_token is not None:
        app = BearerGate(app, settings.http_token.reveal())
    # signed file links carry their own authorisation, so the route sits outside the token gate
    app = FileRoute(app, links, settings.output_dir)
    manager = server.session_manager
    # the started service (None before start-up and after shutdown) lives in the manager's lifespan state
    return Probes(app, lambda: getattr(getattr(manager, "_lifespan_state", None), "db", None))


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


def serve_http(settings: Settings, host: str, port: int) -> int:
    app = build_http_app(settings, host, port)
    log.info("serving MCP over streamable HTTP at http://%s:%d/mcp", host, port)
    # uvicorn's h11 protocol with header/body read timeouts (slow clients are disconnected).
    # SIGTERM: stop accepting, give open requests (a check_job wait, a listen stream) a few seconds,
    # then the lifespan stops the runner and releases this process's leases for the other replicas.
    protocol = guarded_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s)
    uvicorn.run(app, host=host, port=port, log_level="warning", http=protocol, timeout_graceful_shutdown=GRACEFUL_S)
    return 0
