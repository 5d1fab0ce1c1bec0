"""Start-up checks that turn the usual first-hour mistakes into one line naming the cause and the fix.

Run by `stillmotion`, `serve --http` and `worker` before anything is served, each within a few
seconds: the job database (a wrong password or an unreachable server fails at once instead of a
30-second pool timeout and a traceback), the shared folders of a team (the marker check), and the
HTTP port (bound here, so "serving" is logged only once the socket listens).
"""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

from ..settings import Settings

CONNECT_TIMEOUT_S = 4


class StartupError(Exception):
    """A start-up failure with its one-line explanation (no traceback is shown for it)."""


def database_label(url: str) -> str:
    """user@host:port/db of a PostgreSQL URL, without the password."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql://{user}{parts.hostname or 'localhost'}{port}{parts.path}"


def check_database(url: str) -> None:
    """One connection attempt with a short timeout; raises StartupError saying what is wrong."""
    try:
        import psycopg
    except ImportError:
        raise StartupError(
            "STILLMOTION_DATABASE_URL names a PostgreSQL database, but psycopg is not installed: "
            "pip install 'stillmotion[postgres]' (from a clone: pip install '.[postgres]')"
        ) from None
    label = database_label(url)
    try:
        conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        low = reason.lower()
        if "password authentication failed" in low or "no password supplied" in low:
            fix = "check the user and password in STILLMOTION_DATABASE_URL"
        elif "does not exist" in low:
            fix = "create it (createdb, see the README's Team server) or fix the name in STILLMOTION_DATABASE_URL"
        elif "timeout" in low or "refused" in low or "could not translate" in low or "no route" in low:
            fix = "is PostgreSQL running and reachable at that host and port? (STILLMOTION_DATABASE_URL)"
        else:
            fix = "check STILLMOTION_DATABASE_URL"
        raise StartupError(f"cannot open the job database {label}: {_short(reason)}; {fix}") from None
    conn.close()


def _short(reason: str) -> str:
    """libpq's message without its connection preamble (which repeats host and port)."""
    if "connection refused" in reason.lower():
        return "connection refused"
    for marker in ("FATAL:", "failed:"):
        if marker in reason:
            reason = reason.rsplit(marker, 1)[1].strip()
    return reason.rstrip(".")


def check_store(settings: Settings) -> None:
    """Open the store the server will use (the database, the schema, the shared-folder marker), then
    close it. Raises StartupError."""
    from ..jobs.backends import open_for_settings
    from ..jobs.shared_home import NotShared

    if settings.database_url is not None:
        check_database(settings.database_url.reveal())
    try:
        store = open_for_settings(settings)
    except NotShared as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(f"cannot open the job store under {settings.home}: {exc} (STILLMOTION_HOME)") from None
    store.close()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket for `serve --http` (uvicorn serves on it). Raises StartupError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot serve on --host {host}: {exc.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use (another stillmotion or another program); "
                f"stop it or pick another port: stillmotion serve --http --port {port + 1}"
            ) from None
        if exc.errno == errno.EACCES:
            raise StartupError(f"not allowed to listen on port {port}: use a port above 1023 (--port 8765)") from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock
