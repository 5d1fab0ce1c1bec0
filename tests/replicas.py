"""Helpers for tests that run real `stillmotion serve --http` processes (replicas) and a small
round-robin HTTP proxy in front of them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

EXE = [sys.executable, "-m", "stillmotion"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KLINGAI_", "ALIBABA_", "XAI_", "AI_GATEWAY", "DASHSCOPE_", "STILLMOTION_"))}
    env.update({"STILLMOTION_BACKGROUND": "0", **extra})
    return env


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"replica {self.name} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/readyz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"replica {self.name} not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def start_replica(name: str, env: dict[str, str], logdir: Path, *, host: str = "127.0.0.1") -> Replica:
    port = free_port()
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    fh = open(log, "wb")
    proc = subprocess.Popen(
        [*EXE, "serve", "--http", "--host", host, "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=fh, stdin=subprocess.DEVNULL,
    )
    fh.close()
    return Replica(name, port, proc, log)


@contextlib.contextmanager
def replicas(names: list[str], env: dict[str, str], logdir: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for n in names:
            started.append(start_replica(n, env, logdir))
        for r in started:
            r.wait_ready()
        yield started
    finally:
        for r in started:
            r.stop(signal.SIGKILL if r.proc.poll() is None and r.extra.get("kill") else signal.SIGTERM)


class RoundRobinProxy:
    """A real HTTP proxy on loopback that sends each request to the next backend in turn
    (responses streamed back, SSE included), like a load balancer without stickiness."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.port = free_port()
        self.sent: list[str] = []
        self._i = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="round-robin-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def __enter__(self) -> RoundRobinProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(20)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        """Close the listener and every open connection (no task or socket outlives the proxy)."""
        assert self._server is not None
        self._server.close()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as client:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, _ = lines[0].split(" ", 2)
                    headers = [tuple(line.split(": ", 1)) for line in lines[1:] if ": " in line]
                    length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
                    body = await reader.readexactly(length) if length else b""
                    backend = self.backends[self._i % len(self.backends)]
                    self._i += 1
                    self.sent.append(backend)
                    fwd = {k: v for k, v in headers if k.lower() not in ("host", "content-length", "connection")}
                    req = client.build_request(method, backend + target, headers=fwd, content=body)
                    resp = await client.send(req, stream=True)
                    out = [f"HTTP/1.1 {resp.status_code} {resp.reason_phrase}"]
                    for k, v in resp.headers.items():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                            out.append(f"{k}: {v}")
                    out.append("transfer-encoding: chunked")
                    writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
                    async for chunk in resp.aiter_bytes():
                        if chunk:
                            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                            await writer.drain()
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    await resp.aclose()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)
