"""A strict fake-provider HTTP server: the shared machinery.

``FakeServer`` is a real HTTP/1.1 server on 127.0.0.1 (random free port, background thread,
one daemon thread per connection). Every request is recorded; each provider subclass routes
requests to a *check* step (auth and wire-format validation, which appends human-readable
reasons to ``violations`` and answers the way the real provider answers invalid input) and an
*act* step (the normal side effect and answer).

Faults: ``inject`` (a canned answer), ``inject_hang`` (a slow answer), ``inject_drop`` (the
connection closes with no answer), and for result files ``truncate_file`` / ``expire_file``.

Progress: a task is done after ``polls_until_done`` status polls, or once ``generation_seconds``
have passed since it was created; ``script_outcome`` decides how the next created tasks end.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fnmatch
import json as jsonlib
import logging
import math
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit

from .media import image_size, sample_mp4, sniff_image_type

__all__ = [
    "AbortConnection",
    "FakeServer",
    "Outcome",
    "Problems",
    "Recorded",
    "Reply",
    "Route",
    "Task",
    "instance_of",
]

_log = logging.getLogger("tests.fakes")

FILES_PREFIX = "/files/"


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any | None
    at: float  # time.monotonic() on receipt

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    @property
    def obj(self) -> dict[str, Any]:
        """The JSON body when it is an object, else {}."""
        return self.json if isinstance(self.json, dict) else {}


def instance_of(req: Recorded) -> str:
    """The process instance a stillmotion request names in its User-Agent ("" when none)."""
    ua = req.header("user-agent") or ""
    marker = "(instance "
    if marker in ua and ua.endswith(")"):
        return ua[ua.index(marker) + len(marker) : -1]
    return ua


class AbortConnection(Exception):
    """Raised inside a reply stream: stop writing and close the connection (no terminator)."""


@dataclass
class Reply:
    """An answer. ``stream`` (with ``length`` or chunked) replaces ``body`` when set."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None
    length: int | None = None  # Content-Length announced for a stream; None = chunked
    close: bool = False  # close the connection after this answer
    drop: bool = False  # send nothing at all and close the connection

    @classmethod
    def of_json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> Reply:
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        return cls(status, jsonlib.dumps(obj).encode(), hdrs)


@dataclass
class Route:
    """``check`` validates (returns an error answer or None); ``act`` does the work."""

    name: str
    act: Callable[[Recorded], Reply]
    check: Callable[[Recorded], Reply | None] | None = None


@dataclass
class Outcome:
    """How a task ends. ``kind`` is provider-specific (``succeed``, ``failed``, ...)."""

    kind: str = "succeed"
    message: str | None = None
    code: str | int | None = None
    status_code: int | None = None  # gateway SSE error events


@dataclass
class Task:
    id: str
    created_at: float  # monotonic
    created_wall: float  # time.time()
    outcome: Outcome
    polls_until_done: int | None
    generation_seconds: float | None
    body: Any = None
    polls: int = 0
    done_at: float | None = None
    done_wall: float | None = None
    released: bool = False
    expired: bool = False
    video_url: str | None = None
    file_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.done_at is not None


@dataclass
class _Injection:
    match: str
    kind: str  # reply | hang | drop | fn
    times: int
    reply: Reply | None = None
    fn: Callable[[Recorded], Reply] | None = None
    delay_s: float = 0.0
    after_effect: bool = True

    def matches(self, method: str, path: str, raw_path: str) -> bool:
        if self.match.endswith("$"):
            want = self.match[:-1]
            return want in (f"{method} {path}", f"{method} {raw_path}")
        return f"{method} {path}".startswith(self.match) or f"{method} {raw_path}".startswith(self.match)


@dataclass
class _File:
    data: bytes | None  # None: generated bytes (add_large_file)
    size: int
    content_type: str = "video/mp4"


@dataclass
class _FileFault:
    pattern: str
    kind: str  # truncate | expire
    times: int | None  # None: every time
    status: int = 403


# --------------------------------------------------------------------------------------------
# Validation helpers shared by the provider fakes
# --------------------------------------------------------------------------------------------


class Problems:
    """Collects violations for one request, each prefixed with where it was found."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(f"{self.where}: {msg}")

    def __bool__(self) -> bool:
        return bool(self.items)

    @property
    def first(self) -> str:
        return self.items[0] if self.items else ""


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A JSON number: int or finite float, never bool (NaN/Infinity are not JSON)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def is_http_url(s: Any) -> bool:
    if not isinstance(s, str) or any(c.isspace() for c in s):
        return False
    parts = urlsplit(s)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def decode_b64(s: str) -> bytes | None:
    """Strict standard base64 (no whitespace, correct padding), or None."""
    if not s or len(s) % 4:
        return None
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_data_uri(s: str) -> tuple[str, bytes] | None:
    """``data:<mime>;base64,<b64>`` -> (mime, bytes), or None when malformed."""
    if not s.startswith("data:") or "," not in s:
        return None
    head, payload = s[5:].split(",", 1)
    parts = head.split(";")
    if len(parts) < 2 or parts[-1] != "base64" or "/" not in parts[0]:
        return None
    data = decode_b64(payload)
    if data is None:
        return None
    return parts[0].lower(), data


def check_image_bytes(
    p: Problems,
    name: str,
    data: bytes,
    *,
    allowed: tuple[str, ...],
    max_bytes: int,
    min_side: int = 0,
    max_side: int | None = None,
    ratio: tuple[float, float] | None = None,
    declared: str | None = None,
) -> tuple[int, int] | None:
    """Checks decoded image bytes; returns (w, h) when they could be read."""
    kind = sniff_image_type(data)
    if kind is None or kind not in allowed:
        p.add(f"field '{name}' must decode to one of {', '.join(allowed)}, got {kind or 'unknown bytes'}")
        return None
    if declared is not None:
        norm = "image/jpeg" if declared == "image/jpg" else declared
        if norm != kind:
            p.add(f"field '{name}' declares {declared} but the bytes are {kind}")
    if len(data) > max_bytes:
        p.add(f"field '{name}' is {len(data)} bytes, more than {max_bytes}")
    size = image_size(data)
    if size is None:
        return None
    w, h = size
    if min(w, h) < min_side:
        p.add(f"field '{name}' is {w}x{h}; each side must be >= {min_side} px")
    if max_side is not None and max(w, h) > max_side:
        p.add(f"field '{name}' is {w}x{h}; each side must be <= {max_side} px")
    if ratio is not None and h > 0:
        r = w / h
        lo, hi = ratio
        if not lo - 1e-9 <= r <= hi + 1e-9:
            p.add(f"field '{name}' aspect ratio {w}:{h} is outside {lo:g}..{hi:g}")
    return size


def check_keys(p: Problems, obj: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    for k in obj:
        if k not in allowed:
            p.add(f"unknown field '{where}{k}' (allowed: {', '.join(sorted(allowed))})")


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------------------
# The HTTP layer
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stillmotion-fake/1"
    sys_version = ""
    timeout = 120.0
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._conn_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._conn_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        if len(body) < n:
            # the client went away mid-body (a replica killed with SIGKILL): a real server never hands
            # such a request to its application, so neither does the fake
            raise ConnectionAbortedError(f"body cut at {len(body)} of {n} bytes")
        return body

    def _dispatch(self) -> None:
        fake = self.server.fake
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        req = fake._record(self.command, self.path, self.headers, body)
        try:
            reply = fake._answer(req, self.path)
        except Exception as exc:  # a bug in the fake itself: make it loud
            _log.exception("fake %s crashed on %s %s", type(fake).__name__, req.method, req.path)
            fake.violation(f"fake internal error on {req.method} {req.path}: {exc!r}")
            reply = Reply.of_json(500, {"error": "fake internal error"})
        self._send(reply, head=self.command == "HEAD")

    def _send(self, reply: Reply, *, head: bool) -> None:
        if reply.drop:
            self.close_connection = True
            return
        stream = reply.stream
        try:
            self.send_response(reply.status)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            chunked = False
            if stream is None:
                self.send_header("Content-Length", str(len(reply.body)))
            elif reply.length is not None:
                self.send_header("Content-Length", str(reply.length))
            else:
                self.send_header("Transfer-Encoding", "chunked")
                chunked = True
            if reply.close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if head:
                return
            if stream is None:
                self.wfile.write(reply.body)
                return
            try:
                for chunk in stream:
                    if not chunk:
                        continue
                    if chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    else:
                        self.wfile.write(chunk)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            except AbortConnection:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            self.close_connection = True
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()


# --------------------------------------------------------------------------------------------
# FakeServer
# --------------------------------------------------------------------------------------------


class FakeServer:
    """Base class of the provider fakes. Use as a context manager or call start()/stop()."""

    #: outcome kinds that this provider understands (first one is the default)
    OUTCOMES: ClassVar[tuple[str, ...]] = ("succeed", "failed")
    #: prefix added to base_url to get the URL a client is configured with
    API_PREFIX: ClassVar[str] = ""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._handler_threads: list[threading.Thread] = []
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        #: credential problems that are not wire-format bugs (a wrong key, a bad signature)
        self.auth_failures: list[str] = []
        self._injections: list[_Injection] = []
        self._files: dict[str, _File] = {}
        self._file_faults: list[_FileFault] = []
        #: how the next created tasks end, in order (script_outcome appends; default: success)
        self.next_outcome: deque[Outcome] = deque()
        self.tasks: dict[str, Task] = {}
        self.task_done_at: dict[str, float] = {}
        #: status polls until done (the poll with this number answers done); None = until release()
        self.polls_until_done: int | None = 2
        #: when set, tasks finish this many seconds after creation instead (poll count ignored)
        self.generation_seconds: float | None = None
        #: the bytes served as every new result video (default: media.sample_mp4())
        self.result_video: bytes | None = None
        #: every task gets a result video of its own (a different frame count each), so a client
        #: that saved another task's video is caught by its bytes (``video_of``)
        self.distinct_videos: bool = False
        self._videos_made = 0
        #: a create body must carry a non-empty prompt (the references say so)
        self.require_prompt: bool = True
        self._port = 0

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self.result_bytes()  # encode the sample video now, not under the lock on a first poll
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"{type(self).__name__}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
            handlers = list(self._handler_threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for t in handlers:
            t.join(timeout=5.0)
        if thread is not None:
            thread.join(timeout=5.0)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("fake server is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        """The base URL a client is configured with (base_url + the provider's path prefix)."""
        return self.base_url + self.API_PREFIX

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def _conn_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            self._handler_threads = [t for t in self._handler_threads if t.is_alive()]
            self._handler_threads.append(threading.current_thread())

    def _conn_closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def sleep(self, seconds: float) -> bool:
        """Sleeps unless the server stops first; True when it slept the whole time."""
        return not self._stopping.wait(seconds) if seconds > 0 else True

    # ---- recording ------------------------------------------------------------------------

    def _record(self, method: str, raw_path: str, headers: Message, body: bytes) -> Recorded:
        parts = urlsplit(raw_path)
        hdrs: dict[str, str] = {}
        for k, v in headers.items():
            lk = k.lower()
            hdrs[lk] = f"{hdrs[lk]}, {v}" if lk in hdrs else v
        parsed: Any | None = None
        if body:
            try:
                parsed = jsonlib.loads(body)
            except ValueError:
                parsed = None
        req = Recorded(
            method=method,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=hdrs,
            body=body,
            json=parsed,
            at=time.monotonic(),
        )
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()
        return req

    def calls(self, method: str | None = None, path_prefix: str | None = None) -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method.upper())
                and (path_prefix is None or r.path.startswith(path_prefix))
            ]

    def by_instance(self, method: str | None = None, path_prefix: str | None = None) -> dict[str, list[Recorded]]:
        """Matching requests grouped by the sending process: the ``instance`` named in the
        User-Agent (``stillmotion/<version> (instance <owner id>)``), or the whole header."""
        out: dict[str, list[Recorded]] = {}
        for r in self.calls(method, path_prefix):
            out.setdefault(instance_of(r), []).append(r)
        return out

    def api_calls(self) -> list[Recorded]:
        """Every recorded request except result-file downloads (GET/HEAD /files/...)."""
        with self._lock:
            return [r for r in self.requests if not r.path.startswith(FILES_PREFIX)]

    def wait_for_calls(
        self, count: int, method: str | None = None, path_prefix: str | None = None, timeout: float = 5.0
    ) -> list[Recorded]:
        """Blocks until at least ``count`` matching requests were recorded (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = self.calls(method, path_prefix)
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"saw {len(got)} of {count} {method or ''} {path_prefix or ''} calls")
                self._cond.wait(left)

    def clear(self) -> None:
        """Forgets recorded requests, violations and auth failures (tasks and files stay)."""
        with self._lock:
            self.requests.clear()
            self.violations.clear()
            self.auth_failures.clear()

    def violation(self, reason: str) -> None:
        _log.info("%s violation: %s", type(self).__name__, reason)
        with self._lock:
            self.violations.append(reason)

    def auth_failure(self, reason: str) -> None:
        _log.info("%s auth failure: %s", type(self).__name__, reason)
        with self._lock:
            self.auth_failures.append(reason)

    def assert_clean(self) -> None:
        """Raises AssertionError listing the violations, if any."""
        with self._lock:
            found = list(self.violations)
        if found:
            raise AssertionError(
                f"{type(self).__name__} saw wire-format violations:\n  " + "\n  ".join(found)
            )

    def reject(self, problems: Problems, reply: Reply) -> Reply:
        for item in problems.items:
            self.violation(item)
        return reply

    # ---- fault injection ------------------------------------------------------------------

    def inject(
        self,
        match: str,
        *,
        status: int,
        json: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay_s: float = 0.0,
    ) -> None:
        """The next ``times`` requests whose ``"METHOD /path"`` starts with ``match`` (or equals it,
        when ``match`` ends with ``$``) get this answer instead of the normal one. They are still
        recorded and validated (violations are still found), but have no side effect."""
        hdrs: dict[str, str] = {}
        if json is not None:
            payload = jsonlib.dumps(json).encode()
            hdrs["Content-Type"] = "application/json"
        elif body is not None:
            payload = body
            hdrs["Content-Type"] = "text/plain; charset=utf-8"
        else:
            payload = b""
        for k, v in (headers or {}).items():
            for existing in [e for e in hdrs if e.lower() == k.lower()]:
                del hdrs[existing]
            hdrs[k] = v
        reply = Reply(status, payload, hdrs)
        with self._lock:
            self._injections.append(_Injection(match, "reply", times, reply=reply, delay_s=delay_s))

    def inject_fn(self, match: str, fn: Callable[[Recorded], Reply], times: int = 1) -> None:
        """The next ``times`` matching requests are answered by ``fn(request)`` (after the route's
        check, with no side effect): e.g. an error body that echoes every request header back."""
        with self._lock:
            self._injections.append(_Injection(match, "fn", times, fn=fn))

    def inject_hang(self, match: str, seconds: float, times: int = 1) -> None:
        """The next ``times`` matching requests are handled normally (side effects happen at once),
        but the answer is only sent after ``seconds`` — long enough for a client timeout."""
        with self._lock:
            self._injections.append(_Injection(match, "hang", times, delay_s=seconds))

    def inject_drop(self, match: str, times: int = 1, after_effect: bool = True) -> None:
        """The next ``times`` matching requests get no answer: the connection is closed. With
        ``after_effect`` the normal side effect happens first (e.g. the task IS created)."""
        with self._lock:
            self._injections.append(_Injection(match, "drop", times, after_effect=after_effect))

    def clear_injections(self, match: str | None = None) -> None:
        """Drops every pending injection (or only those injected with exactly this ``match``)."""
        with self._lock:
            if match is None:
                self._injections.clear()
            else:
                self._injections = [i for i in self._injections if i.match != match]

    def pending_injections(self) -> int:
        with self._lock:
            return sum(i.times for i in self._injections)

    def _take_injection(self, method: str, path: str, raw_path: str) -> _Injection | None:
        with self._lock:
            for inj in self._injections:
                if inj.times > 0 and inj.matches(method, path, raw_path):
                    inj.times -= 1
                    if inj.times <= 0:
                        self._injections.remove(inj)
                    return inj
        return None

    # ---- dispatch -------------------------------------------------------------------------

    def route(self, req: Recorded) -> Route | None:
        """Provider subclasses map a request to a Route (None: unknown endpoint)."""
        return None

    def unknown_route(self, req: Recorded) -> Reply:
        return Reply.of_json(404, {"error": f"no route for {req.method} {req.path}"})

    def _answer(self, req: Recorded, raw_path: str) -> Reply:
        route: Route | None
        if req.path.startswith(FILES_PREFIX) and req.method in ("GET", "HEAD"):
            route = Route("file", self._serve_file)
        else:
            route = self.route(req)
        inj = self._take_injection(req.method, req.path, raw_path)
        if route is None:
            self.violation(f"unknown endpoint {req.method} {req.path}")
        if inj is not None and inj.kind == "reply":
            if route is not None and route.check is not None:
                route.check(req)
            self.sleep(inj.delay_s)
            assert inj.reply is not None
            return Reply(inj.reply.status, inj.reply.body, dict(inj.reply.headers))
        if inj is not None and inj.kind == "fn":
            if route is not None and route.check is not None:
                route.check(req)
            assert inj.fn is not None
            return inj.fn(req)
        if inj is not None and inj.kind == "drop" and not inj.after_effect:
            if route is not None and route.check is not None:
                route.check(req)
            return Reply(0, drop=True)
        if route is None:
            reply = self.unknown_route(req)
        else:
            reply = (route.check(req) if route.check is not None else None) or route.act(req)
        if inj is not None and inj.kind == "drop":
            if reply.stream is not None:
                close = getattr(reply.stream, "close", None)
                if close is not None:
                    close()
            return Reply(0, drop=True)
        if inj is not None and inj.kind == "hang" and not self.sleep(inj.delay_s):
            return Reply(0, drop=True)
        return reply

    # ---- tasks and outcomes ---------------------------------------------------------------

    def script_outcome(
        self,
        kind: str,
        message: str | None = None,
        *,
        code: str | int | None = None,
        status_code: int | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` created tasks end this way (then the default: success)."""
        if kind not in self.OUTCOMES:
            raise ValueError(f"{type(self).__name__} outcome must be one of {self.OUTCOMES}, got {kind!r}")
        with self._lock:
            for _ in range(times):
                self.next_outcome.append(Outcome(kind, message, code, status_code))

    def _new_task(self, task_id: str, body: Any = None, **extra: Any) -> Task:
        with self._lock:
            outcome = self.next_outcome.popleft() if self.next_outcome else Outcome(self.OUTCOMES[0])
            task = Task(
                id=task_id,
                created_at=time.monotonic(),
                created_wall=time.time(),
                outcome=outcome,
                polls_until_done=self.polls_until_done,
                generation_seconds=self.generation_seconds,
                body=body,
                extra=dict(extra),
            )
            self.tasks[task_id] = task
            return task

    def _settle(self, task: Task, now: float) -> bool:
        """Marks the task done when its time has come (caller holds the lock)."""
        if task.done_at is not None:
            return True
        when: float | None = None
        if task.released:
            when = now
        elif task.generation_seconds is not None:
            deadline = task.created_at + task.generation_seconds
            if now >= deadline:
                when = deadline
        elif task.polls_until_done is not None and task.polls >= task.polls_until_done:
            when = now
        if when is None:
            return False
        task.done_at = when
        task.done_wall = time.time() - (now - when)
        self.task_done_at[task.id] = when
        if task.outcome.kind == self.OUTCOMES[0]:
            task.file_name = f"{task.id}.mp4"
            self._put_file(task.file_name, self.task_video(task))
            task.video_url = self.result_url(task)
        return True

    def poll_task(self, task: Task) -> bool:
        """Counts one status poll; True when the task is done."""
        with self._lock:
            task.polls += 1
            return self._settle(task, time.monotonic())

    def is_done(self, task: Task) -> bool:
        """Whether the task is done, without counting a poll."""
        with self._lock:
            return self._settle(task, time.monotonic())

    def unfinished(self) -> int:
        with self._lock:
            now = time.monotonic()
            return sum(1 for t in self.tasks.values() if not self._settle(t, now))

    def progress(self, task: Task) -> float:
        """0..1 for a running task (generation time elapsed, or polls seen)."""
        with self._lock:
            if task.done_at is not None:
                return 1.0
            if task.generation_seconds:
                return min(0.99, (time.monotonic() - task.created_at) / task.generation_seconds)
            return min(0.95, 0.35 * max(0, task.polls - 1))

    def release(self, task_id: str | None = None) -> None:
        """Lets one task (or every task) finish at its next poll."""
        with self._lock:
            for t in self.tasks.values():
                if task_id is None or t.id == task_id:
                    t.released = True

    def expire_task(self, task_id: str) -> None:
        """From now on the provider answers as if the task id had expired."""
        with self._lock:
            self.tasks[task_id].expired = True

    def find_task(self, task_id: str) -> Task | None:
        with self._lock:
            return self.tasks.get(task_id)

    def last_task(self) -> Task:
        with self._lock:
            if not self.tasks:
                raise LookupError("no task was created")
            return next(reversed(self.tasks.values()))

    def result_bytes(self) -> bytes:
        return self.result_video if self.result_video is not None else sample_mp4()

    def task_video(self, task: Task) -> bytes:
        """The bytes of this task's result (the same sample for every task unless ``distinct_videos``)."""
        if not self.distinct_videos:
            return self.result_bytes()
        with self._lock:
            self._videos_made += 1
            frames = 6 + self._videos_made  # distinct for each task: a different frame count
        return sample_mp4(frames / 24, 160, 120)

    def video_of(self, task_id: str) -> bytes:
        """The result bytes served for a finished task (KeyError while it has none)."""
        with self._lock:
            task = self.tasks[task_id]
            if task.file_name is None:
                raise KeyError(task_id)
            data = self._files[task.file_name].data
        assert data is not None
        return data

    def result_url(self, task: Task) -> str:
        assert task.file_name is not None
        return self.url(FILES_PREFIX + task.file_name)

    # ---- result files ---------------------------------------------------------------------

    def _put_file(self, name: str, data: bytes, content_type: str = "video/mp4") -> None:
        with self._lock:
            self._files[name] = _File(data, len(data), content_type)

    def add_file(self, name: str, data: bytes, content_type: str = "video/mp4") -> str:
        """Serves ``data`` at GET /files/<name>; returns its URL."""
        self._put_file(name, data, content_type)
        return self.url(FILES_PREFIX + name)

    def add_large_file(self, name: str, size_bytes: int) -> str:
        """Serves ``size_bytes`` generated bytes at /files/<name> without holding them in memory."""
        with self._lock:
            self._files[name] = _File(None, size_bytes)
        return self.url(FILES_PREFIX + name)

    def file_url(self, name: str) -> str:
        return self.url(FILES_PREFIX + name)

    def truncate_file(self, name: str, times: int | None = None) -> None:
        """Downloads of matching files (fnmatch pattern, e.g. ``"*"``) announce the full
        Content-Length but send only half the bytes, then close. ``times``: None = always."""
        with self._lock:
            self._file_faults.append(_FileFault(name, "truncate", times))

    def expire_file(self, name: str, status: int = 403, times: int | None = None) -> None:
        """Downloads of matching files answer 403 "Request has expired" (OSS/S3 XML) or 404."""
        if status not in (403, 404, 410):
            raise ValueError("status must be 403, 404 or 410")
        with self._lock:
            self._file_faults.append(_FileFault(name, "expire", times, status))

    def clear_file_faults(self) -> None:
        with self._lock:
            self._file_faults.clear()

    def _file_fault(self, name: str) -> _FileFault | None:
        with self._lock:
            for f in self._file_faults:
                if (f.times is None or f.times > 0) and fnmatch.fnmatchcase(name, f.pattern):
                    if f.times is not None:
                        f.times -= 1
                    return f
        return None

    @staticmethod
    def _oss_error(status: int, name: str) -> Reply:
        rid = uuid.uuid4().hex[:24].upper()
        if status == 403:
            code, msg = "AccessDenied", "Request has expired."
            extra = (
                f"  <Expires>{time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(time.time() - 3600))}</Expires>\n"
                f"  <ServerTime>{time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime())}</ServerTime>\n"
            )
        else:
            code, msg, extra = "NoSuchKey", "The specified key does not exist.", f"  <Key>{name}</Key>\n"
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
            f"  <Code>{code}</Code>\n  <Message>{msg}</Message>\n  <RequestId>{rid}</RequestId>\n"
            f"  <HostId>127.0.0.1</HostId>\n{extra}</Error>\n"
        ).encode()
        return Reply(status, xml, {"Content-Type": "application/xml", "x-oss-request-id": rid})

    _BLOCK = bytes(range(256)) * 4096  # 1 MiB of generated bytes

    def _serve_file(self, req: Recorded) -> Reply:
        name = req.path[len(FILES_PREFIX) :]
        with self._lock:
            f = self._files.get(name)
        if f is None:
            return self._oss_error(404, name)
        fault = self._file_fault(name)
        if fault is not None and fault.kind == "expire":
            return self._oss_error(fault.status, name)
        start, end = 0, f.size  # [start, end)
        status = 200
        headers = {"Content-Type": f.content_type, "Accept-Ranges": "bytes"}
        rng = req.header("range")
        if rng:
            spec = rng.strip().removeprefix("bytes=")
            try:
                a, b = spec.split("-", 1)
                if a == "":
                    start, end = max(0, f.size - int(b)), f.size
                else:
                    start = int(a)
                    end = min(f.size, int(b) + 1) if b else f.size
                if start >= f.size or start >= end:
                    raise ValueError(rng)
            except ValueError:
                return Reply(416, b"", {"Content-Range": f"bytes */{f.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        length = end - start
        send_until = start + length // 2 if fault is not None and fault.kind == "truncate" else end
        return Reply(
            status,
            headers=headers,
            stream=self._file_chunks(f, start, send_until, truncated=send_until < end),
            length=length,
            close=send_until < end,
        )

    def _file_chunks(self, f: _File, start: int, end: int, *, truncated: bool) -> Iterator[bytes]:
        pos = start
        step = 1 << 20 if f.data is None else 64 * 1024
        while pos < end:
            n = min(step, end - pos)
            if f.data is not None:
                yield f.data[pos : pos + n]
            else:
                off = pos % len(self._BLOCK)
                chunk = self._BLOCK[off : off + n]
                if len(chunk) < n:
                    chunk = chunk + self._BLOCK[: n - len(chunk)]
                yield chunk
            pos += n
        if truncated:
            raise AbortConnection
