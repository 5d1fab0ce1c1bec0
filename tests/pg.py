"""A throwaway PostgreSQL cluster for the tests: `initdb` + `pg_ctl` on a free port in a temporary
folder, as a non-root user (PostgreSQL refuses to run as root), torn down at the end.

No mocks: the store tests and the replica tests talk to a real server. Without `initdb` the
PostgreSQL tests skip on a developer's machine and fail under `CI=true` (CI installs it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def find_pg_bin() -> Path | None:
    """The folder holding initdb/pg_ctl: PATH first, then Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    if found:
        real = Path(os.path.realpath(found)).parent
        if (real / "pg_ctl").exists():
            return real
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(candidate).parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> pwd.struct_passwd | None:
    """Root must hand the cluster to an unprivileged user; anyone else runs it as themselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


@dataclass
class PgCluster:
    bindir: Path
    root: Path
    port: int
    user: pwd.struct_passwd | None
    password: str | None = None
    """With a password, clients over TCP must authenticate (scram-sha-256), as on a real server."""

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, dbname: str = "postgres") -> str:
        secret = f":{self.password}" if self.password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{dbname}"

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kw: dict[str, object] = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            list(args), capture_output=True, text=True, check=check, timeout=120, cwd=str(self.root), **kw
        )

    def start(self) -> None:
        self.socket_dir.mkdir()
        if self.user is not None:
            for path in (self.root, self.socket_dir):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        auth = ["-A", "trust"]
        if self.password:
            pwfile = self.root / "pw"
            pwfile.write_text(self.password + "\n")
            if self.user is not None:
                os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        self._cmd(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", *auth,
            "-E", "UTF8", "--no-locale", "--no-sync",
        )
        self.start_server()

    def start_server(self) -> None:
        """Start the (initialised) cluster's server; again after `stop_server()`."""
        options = " ".join([
            f"-p {self.port}", f"-k {self.socket_dir}", "-c listen_addresses=127.0.0.1",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            "-c max_connections=300", "-c shared_buffers=32MB",
        ])
        done = self._cmd(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-o", options, "-w", "-t", "60", "start", check=False,
        )
        if done.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace") if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}\n{log[-2000:]}")

    def stop_server(self, mode: str = "fast") -> None:
        """An outage: the server stops (fast: every connection is ended with an admin shutdown)."""
        self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """`pg_ctl restart`: every open connection is ended, the server is back a moment later."""
        self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "restart")

    def stop(self) -> None:
        self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def create_database(self) -> str:
        """A fresh, empty database for one test; returns its URL."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def pg_cluster(password: str | None = None) -> Iterator[PgCluster]:
    bindir = find_pg_bin()
    if bindir is None:
        message = "PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql/*/bin)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI must run the PostgreSQL tests (.ci/run installs it)", pytrace=False)
        pytest.skip(message)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("psycopg is not installed; CI installs the 'test' extra, which pulls in 'postgres'", pytrace=False)
        pytest.skip("psycopg is not installed (pip install 'stillmotion[postgres]')")
    root = Path(tempfile.mkdtemp(prefix="stillmotion-pg-"))
    cluster = PgCluster(bindir=bindir, root=root, port=_free_port(), user=_run_as(), password=password)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
