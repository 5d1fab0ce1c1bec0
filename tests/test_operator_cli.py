"""The first hour of an operator (issue #26): start-up failures in one line within seconds, a
bare `stillmotion` in a terminal, Ctrl-C, pipes into `head`, `run` output printed once, lazy
imports, and the README's "try it on one machine" block run verbatim on a fresh PostgreSQL.

Real processes throughout (the CLI as a user runs it), real PostgreSQL with password
authentication (tests/pg.py), a real pseudo-terminal for the terminal case.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stillmotion.cli import TOOL_INDEX
from stillmotion.server import tool_specs
from stillmotion.settings import Settings
from tests.pg import PgCluster, pg_cluster
from tests.replicas import EXE, base_env, free_port

ROOT = Path(__file__).resolve().parents[1]
PG_PASSWORD = "su-pass-7f3a"


@pytest.fixture(scope="module")
def pg_pw() -> Iterator[PgCluster]:
    """A cluster that checks passwords over TCP (trust only on its Unix socket)."""
    with pg_cluster(password=PG_PASSWORD) as cluster:
        yield cluster


def _serve(env: dict[str, str], *args: str, timeout: float = 20) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    out = subprocess.run([*EXE, "serve", *args], env=env, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    return out, time.monotonic() - started


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{out.stderr}"
    assert "Traceback" not in out.stderr
    assert out.returncode == 2, out.returncode
    return lines[0]


# -- start-up failures ---------------------------------------------------------------------


def test_wrong_database_password_is_one_line_at_once(pg_pw: PgCluster, tmp_path: Path) -> None:
    url = pg_pw.url().replace(PG_PASSWORD, "not-the-password")
    out, took = _serve(base_env(STILLMOTION_HOME=str(tmp_path / "h"), STILLMOTION_DATABASE_URL=url), "--http",
                       "--port", str(free_port()))
    line = _one_line(out)
    assert took < 5, took
    assert "password authentication failed" in line and "STILLMOTION_DATABASE_URL" in line, line
    assert "not-the-password" not in out.stderr and f"127.0.0.1:{pg_pw.port}" in line


def test_unreachable_database_is_one_line_at_once(tmp_path: Path) -> None:
    url = f"postgresql://stillmotion:secret@127.0.0.1:{free_port()}/stillmotion"
    out, took = _serve(base_env(STILLMOTION_HOME=str(tmp_path / "h"), STILLMOTION_DATABASE_URL=url), "--http",
                       "--port", str(free_port()))
    line = _one_line(out)
    assert took < 5, took
    assert "connection refused" in line and "is PostgreSQL running" in line and "secret" not in line, line


def test_port_taken_is_one_line_and_nothing_claims_to_serve(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out, took = _serve(base_env(STILLMOTION_HOME=str(tmp_path / "h")), "--http", "--port", str(port))
    line = _one_line(out)
    assert took < 5, took
    assert f"port {port} on 127.0.0.1 is already in use" in line and f"--port {port + 1}" in line, line
    assert "serving" not in out.stderr


def test_wrong_shared_home_is_one_line(pg_pw: PgCluster, tmp_path: Path) -> None:
    url = pg_pw.create_database()
    first = tmp_path / "shared"
    env = base_env(STILLMOTION_HOME=str(first), STILLMOTION_DATABASE_URL=url)
    port = free_port()
    proc = subprocess.Popen([*EXE, "serve", "--http", "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for _ in range(20):  # (schema migrations are logged first)
            line = proc.stderr.readline()
            if "serving" in line or not line:
                break
        assert "serving MCP over streamable HTTP at http://127.0.0.1:" in line, line
        # "serving" is said once it listens and the service has started: ready at once
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        out, took = _serve({**env, "STILLMOTION_HOME": str(tmp_path / "elsewhere")}, "--http", "--port", str(free_port()))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert proc.stderr is not None
        proc.stderr.close()
    line = _one_line(out)
    assert took < 5, took
    assert "refusing to start: STILLMOTION_HOME=" in line and "shared" in line, line


# -- a bare `stillmotion`, Ctrl-C, pipes -----------------------------------------------------


def test_bare_command_in_a_terminal_says_what_it_is_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    help_text = subprocess.run([*EXE, "--help"], capture_output=True, text=True, check=True).stdout
    assert "Run with no command, `stillmotion` is the stdio MCP server" in help_text and "Ctrl-C" in help_text
    master, slave = pty.openpty()
    proc = subprocess.Popen([*EXE], env=base_env(STILLMOTION_HOME=str(tmp_path / "h")), stdin=slave,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "this is the MCP stdio server" in line and "Ctrl-C stops it" in line, line
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
        assert proc.stderr is not None
        proc.stderr.close()


def test_sigint_stops_a_stdio_server_with_a_client(tmp_path: Path) -> None:
    proc = subprocess.Popen([*EXE], env=base_env(STILLMOTION_HOME=str(tmp_path / "h")), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        proc.stdin.write((json.dumps(hello) + "\n").encode())
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and b'"result"' in proc.stdout.readline()  # it serves
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdin.close()
        proc.stdout.close()


def _closed_pipe_run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """stdout is a pipe whose reader has already gone (what `| head -1` leaves once it read its line)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([*EXE, *args], env=env, stdout=write, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write)


def test_output_into_a_closed_pipe_exits_0_quietly(home: Path) -> None:
    env = base_env(STILLMOTION_HOME=str(home))
    for args in (["run", "list_models", "{}"], ["spend", "--json"], ["models"]):
        out = _closed_pipe_run(args, env)
        assert out.returncode == 0 and out.stderr == b"", (args, out.stderr.decode()[-2000:])
    literal = subprocess.run(["bash", "-o", "pipefail", "-c", "python -m stillmotion run list_models '{}' | head -1"],
                             env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
                             capture_output=True, text=True, timeout=120)
    assert literal.returncode == 0 and literal.stdout.strip() == "{" and literal.stderr == "", literal


def test_run_list_jobs_prints_the_list_once(home: Path, image_480: Path) -> None:
    env = base_env(STILLMOTION_HOME=str(home))
    args = json.dumps({"image": str(image_480), "duration": 1, "local": {"resolution": "480p"}, "wait_seconds": 30})
    made = subprocess.run([*EXE, "run", "animate_image", args], env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    job = json.loads(made.stdout)
    out = subprocess.run([*EXE, "run", "list_jobs", "{}"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert [j["job_id"] for j in json.loads(out.stdout)["jobs"]] == [job["job_id"]]
    assert out.stdout.count(f"\"job_id\": \"{job['job_id']}\"") == 1


# -- lazy imports ----------------------------------------------------------------------------


def test_run_help_tool_index_matches_the_server(make_settings: object) -> None:
    specs = tool_specs(Settings.from_env({"STILLMOTION_HOME": "/nonexistent"}))
    assert list(TOOL_INDEX) == [(s.name, s.description.split(". ")[0].rstrip(".")) for s in specs], (
        "cli.TOOL_INDEX must list every tool with its description's first sentence"
    )


def test_models_and_run_help_do_not_import_the_server(home: Path) -> None:
    """What makes them fast: neither imports the MCP SDK nor the media stack (bench: CPU times)."""
    code = ("import sys; from stillmotion.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('mcp', 'numpy', 'av', 'cv2', 'stillmotion.server') if m in sys.modules)\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    for args in (["models"], ["run", "--help"], ["--help"]):
        out = subprocess.run([sys.executable, "-c", code, *args], env=base_env(STILLMOTION_HOME=str(home)),
                             capture_output=True, text=True, timeout=60)
        assert "HEAVY []" in out.stderr, (args, out.stderr)
    table = subprocess.run([*EXE, "models"], env=base_env(STILLMOTION_HOME=str(home)), capture_output=True, text=True)
    assert "join_clips" in table.stdout


# -- the README's team block, verbatim ---------------------------------------------------------


def readme_team_block() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- team-block -->\s*```sh\n(.*?)```", text, re.S)
    assert m, "README.md lost its 'try it on one machine' block (marked <!-- team-block -->)"
    return m.group(1)


def test_readme_team_block_runs_verbatim(tmp_path: Path, image_480: Path) -> None:
    """The block as written, in a fresh clone-like folder, against a fresh password-checking
    cluster (PGHOST/PGPORT/PGUSER/PGPASSWORD name it, as the README says). Only the two ports are
    swapped for free ones, so parallel test runs do not collide."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    block = readme_team_block()
    assert "8765" in block and "8766" in block
    p1, p2 = free_port(), free_port()
    script = block.replace("8765", str(p1)).replace("8766", str(p2))
    work = tmp_path / "clone"
    work.mkdir()
    shutil.copy(image_480, work / "photo.png")
    with pg_cluster(password=PG_PASSWORD) as cluster:
        pg_bin = str(cluster.bindir)
        env = base_env(
            PATH=f"{Path(sys.executable).parent}:{pg_bin}:{os.environ['PATH']}",
            PGHOST="127.0.0.1", PGPORT=str(cluster.port), PGUSER="postgres", PGPASSWORD=PG_PASSWORD,
        )
        env.pop("STILLMOTION_BACKGROUND", None)
        # the block starts two replicas in the background: run it in its own session, keep their pids
        runner = subprocess.run(["bash", "-e", "-c", script + "\necho \"PIDS $(jobs -p | tr '\\n' ' ')\"\n"
                                 "echo \"TOKEN $STILLMOTION_HTTP_TOKEN\""],
                                cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert runner.returncode == 0, runner.stderr
        pids = [int(p) for p in re.search(r"PIDS (.*)", runner.stdout).group(1).split()]  # type: ignore[union-attr]
        token = re.search(r"TOKEN (\S+)", runner.stdout).group(1)  # type: ignore[union-attr]
        try:
            headers = {"Authorization": f"Bearer {token}"}
            for port in (p1, p2):
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, f"replica on {port} never became ready"
                    time.sleep(0.2)
            _job_across_replicas(p1, p2, headers, work / "photo.png")
        finally:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for pid in pids:
                _wait_gone(pid)


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _job_across_replicas(p1: int, p2: int, headers: dict[str, str], photo: Path) -> None:
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def go() -> None:
        async with httpx2.AsyncClient(headers=headers, timeout=60) as mcp_http, httpx.AsyncClient(timeout=60) as web:
            async with Client(streamable_http_client(f"http://127.0.0.1:{p1}/mcp", http_client=mcp_http)) as a:
                made = await a.call_tool("animate_image", {"image": str(photo), "duration": 1,
                                                           "local": {"resolution": "480p"}, "wait_seconds": 40})
                assert not made.is_error, made.content
            job = made.structured_content or {}
            async with Client(streamable_http_client(f"http://127.0.0.1:{p2}/mcp", http_client=mcp_http)) as b:
                seen = await b.call_tool("check_job", {"job_id": job["job_id"], "wait_seconds": 40})
            done = seen.structured_content or {}
            assert done["status"] == "succeeded", done
            link = done["video"]["http_url"]
            assert link.startswith(f"http://127.0.0.1:{p1}/files/"), link  # STILLMOTION_PUBLIC_URL
            got = await web.get(link)  # the signed link needs no token
            assert got.status_code == 200 and got.content[4:8] == b"ftyp"

    anyio.run(go)
