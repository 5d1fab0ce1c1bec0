"""A minimal line-based JSON-RPC client for a `stillmotion` subprocess on stdio.

Raw on purpose: the tests see every byte the server writes to stdout, and can SIGKILL it.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


class StdioServer:
    def __init__(self, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("KLINGAI_", "ALIBABA_", "XAI_", "AI_GATEWAY", "DASHSCOPE"))}
        full_env.update(env)
        full_env["PYTHONUNBUFFERED"] = "1"
        exe = Path(sys.executable).with_name("stillmotion")
        cmd = [str(exe), *args] if exe.exists() else [sys.executable, "-m", "stillmotion", *args]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env
        )
        self.stdout_lines: list[bytes] = []
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 1
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err = threading.Thread(target=self._drain_err, daemon=True)
        self.stderr = b""
        self._err.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line)
            try:
                self._q.put(json.loads(line))
            except json.JSONDecodeError:
                self._q.put({"_not_json": line.decode(errors="replace")})
        self._q.put(None)

    def _drain_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        rid = self._next_id
        self._next_id += 1
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        while True:
            msg = self._q.get(timeout=timeout)
            if msg is None:
                raise RuntimeError(f"server exited; stderr:\n{self.stderr.decode(errors='replace')[-3000:]}")
            if msg.get("id") == rid:
                return msg

    def send_request(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Send without waiting (pipelined requests); returns the id to `collect`."""
        rid = self._next_id
        self._next_id += 1
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        return rid

    def collect(self, ids: list[int], timeout: float = 60) -> list[dict[str, Any]]:
        """The answers to `ids`, in that order (other messages are dropped)."""
        got: dict[int, dict[str, Any]] = {}
        while len(got) < len(ids):
            msg = self._q.get(timeout=timeout)
            if msg is None:
                raise RuntimeError(f"server exited; stderr:\n{self.stderr.decode(errors='replace')[-3000:]}")
            if msg.get("id") in ids:
                got[msg["id"]] = msg
        return [got[i] for i in ids]

    def initialize(self) -> dict[str, Any]:
        res = self.request(
            "initialize",
            {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return res

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return self.request("tools/call", {"name": name, "arguments": arguments})

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._close_pipes()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        self._reader.join(timeout=5)
        self._err.join(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()
