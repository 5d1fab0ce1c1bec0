"""The stillmotion MCP server as a stdio subprocess, driven by a small async JSON-RPC client.

The client speaks the MCP wire protocol (newline-delimited JSON-RPC 2.0 over stdio) directly,
so that many calls can be in flight at once and the client adds as little as possible to the
latencies measured. The server runs in its own process: its RSS and CPU time are its own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

from .common import ProcWatch

PROTOCOL = "2025-11-25"
TERMINAL = ("succeeded", "failed", "cancelled")


class ServerError(RuntimeError):
    pass


def server_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KLINGAI_", "ALIBABA_", "XAI_", "AI_GATEWAY", "DASHSCOPE", "STILLMOTION_"))
    }
    env["STILLMOTION_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class StdioMCP:
    """``async with StdioMCP(env) as mcp:`` starts the server and initializes the session."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.proc: anyio.abc.Process | None = None
        self.watch: ProcWatch | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._pending: dict[int, tuple[anyio.Event, list[dict[str, Any]]]] = {}
        self._next_id = 1
        self._write_lock = anyio.Lock()
        self.stderr_tail: deque[str] = deque(maxlen=200)
        self._closed = False
        self.started_s = 0.0

    async def __aenter__(self) -> Self:
        t0 = time.perf_counter()
        self.proc = await anyio.open_process([sys.executable, "-m", "stillmotion"], env=self.env)
        self.watch = ProcWatch(self.proc.pid)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read_stdout)
        self._tg.start_soon(self._read_stderr)
        await self.request(
            "initialize",
            {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "stillmotion-bench", "version": "0"}},
        )
        await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.started_s = time.perf_counter() - t0
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        assert self.proc is not None and self._tg is not None
        if self.proc.stdin is not None:
            await self.proc.stdin.aclose()
        with anyio.move_on_after(15):
            await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        if self.watch is not None:
            self.watch.close()

    # -- plumbing ------------------------------------------------------------------------

    async def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        data = (json.dumps(msg) + "\n").encode()
        async with self._write_lock:
            await self.proc.stdin.send(data)

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        # Linear in the bytes read: pieces are joined only when a line ends (re-scanning and
        # re-slicing one growing string made the client, not the server, the bottleneck once
        # hundreds of large answers queued up).
        pieces: list[str] = []
        async for text in TextReceiveStream(self.proc.stdout):
            if "\n" not in text:
                pieces.append(text)
                continue
            *done, rest = text.split("\n")
            lines = ["".join([*pieces, done[0]]), *done[1:]]
            pieces = [rest] if rest else []
            for line in lines:
                if not line.strip():
                    continue
                msg = json.loads(line)
                rid = msg.get("id")
                if rid is not None and "method" not in msg and rid in self._pending:
                    ev, box = self._pending.pop(rid)
                    box.append(msg)
                    ev.set()
        for ev, box in list(self._pending.values()):
            box.append({"error": {"message": "server closed stdout"}})
            ev.set()

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for text in TextReceiveStream(self.proc.stderr):
            for line in text.splitlines():
                self.stderr_tail.append(line)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        rid = self._next_id
        self._next_id += 1
        ev = anyio.Event()
        box: list[dict[str, Any]] = []
        self._pending[rid] = (ev, box)
        await self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        await ev.wait()
        msg = box[0]
        if "error" in msg:
            tail = "\n".join(list(self.stderr_tail)[-20:])
            raise ServerError(f"{method}: {msg['error']}\nserver stderr tail:\n{tail}")
        result: dict[str, Any] = msg["result"]
        return result

    # -- MCP calls -----------------------------------------------------------------------

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        res = await self.request("tools/call", {"name": name, "arguments": arguments})
        if res.get("isError"):
            text = res["content"][0]["text"] if res.get("content") else res
            raise ServerError(f"{name} failed: {text}")
        return res

    async def job(self, name: str, arguments: dict[str, Any]) -> str:
        """Call a generation tool; return the job id."""
        res = await self.call_tool(name, arguments)
        return str(res["structuredContent"]["job_id"])

    async def wait_job(self, job_id: str, wait_seconds: float = 50) -> dict[str, Any]:
        """check_job with wait_seconds until the job ends; the final structured result."""
        while True:
            res = await self.call_tool("check_job", {"job_id": job_id, "wait_seconds": wait_seconds})
            sc: dict[str, Any] = res["structuredContent"]
            if sc["status"] in TERMINAL:
                return sc

    async def run_job(self, name: str, arguments: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """Submit, then wait until the job ends: (seconds from submit to the end, final result)."""
        t0 = time.perf_counter()
        job_id = await self.job(name, arguments)
        done = await self.wait_job(job_id)
        elapsed = time.perf_counter() - t0
        if done["status"] != "succeeded":
            raise ServerError(f"{name} job {job_id} ended {done['status']}: {done.get('error')}")
        return elapsed, done
