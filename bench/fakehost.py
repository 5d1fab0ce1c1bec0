"""The fake Kling server in a process of its own, driven over a pipe.

Hosting the fake in the bench process would make the bench's own event loop (which times the
MCP calls) share a GIL with the fake's request handlers - parsing and checking a 7 MB base64
create body takes tens of milliseconds, which would be charged to the server under test.
Monotonic and wall clocks are system-wide on Linux, so times recorded here compare directly
with the server's and the bench's.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self


@dataclass
class TaskInfo:
    id: str
    created_at: float
    done_at: float | None
    done_wall: float | None


@dataclass
class RequestInfo:
    method: str
    path: str
    at: float
    instance: str = ""
    """The stillmotion instance named in the User-Agent."""


def _serve(conn: multiprocessing.connection.Connection, api_key: str) -> None:
    from tests.fakes import KlingFake
    from tests.fakes.base import instance_of

    with KlingFake(api_key=api_key) as fake:
        opened = [0]
        conn_opened = fake._conn_opened

        def count_opened(sock: Any) -> None:
            opened[0] += 1
            conn_opened(sock)

        fake._conn_opened = count_opened  # type: ignore[method-assign,assignment]
        conn.send(fake.base_url)
        while True:
            cmd, args = conn.recv()
            if cmd == "stop":
                conn.send(None)
                return
            if cmd == "set":
                setattr(fake, args[0], args[1])
                conn.send(None)
            elif cmd == "clear":
                fake.clear()
                opened[0] = 0
                conn.send(None)
            elif cmd == "counts":
                with fake._lock:
                    conn.send({"tasks": len(fake.tasks), "requests": len(fake.requests), "connections": opened[0]})
            elif cmd == "tasks":
                with fake._lock:
                    conn.send([TaskInfo(t.id, t.created_at, t.done_at, t.done_wall) for t in fake.tasks.values()])
            elif cmd == "requests":
                with fake._lock:
                    conn.send([RequestInfo(r.method, r.path, r.at, instance_of(r)) for r in fake.requests])
            elif cmd == "violations":
                conn.send(list(fake.violations))
            elif cmd == "settle":
                conn.send(fake.unfinished())
            else:
                conn.send(ValueError(f"unknown command {cmd}"))


class FakeKlingProcess:
    """``with FakeKlingProcess(key) as fake:`` - ``fake.base_url``, ``fake.call(cmd, *args)``."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.base_url = ""
        self._ctx = multiprocessing.get_context("spawn")
        self._conn, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, api_key), daemon=True, name="fake-kling")
        self._child = child

    def __enter__(self) -> Self:
        self._proc.start()
        self._child.close()
        self.base_url = str(self._conn.recv())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.call("stop")
        finally:
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
            self._conn.close()

    @property
    def pid(self) -> int:
        return int(self._proc.pid or 0)

    def call(self, cmd: str, *args: Any) -> Any:
        self._conn.send((cmd, args))
        out = self._conn.recv()
        if isinstance(out, Exception):
            raise out
        return out

    def set(self, name: str, value: Any) -> None:
        self.call("set", name, value)

    def task_count(self) -> int:
        return int(self.call("counts")["tasks"])
