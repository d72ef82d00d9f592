"""A throw-away PostgreSQL server for the tests (Debian's `postgresql` package).

`initdb` and `pg_ctl` in a fresh directory, as a non-root user (PostgreSQL refuses to
run as root: under root the server runs as `drtest`, created on first use), listening
on a free loopback port only. Readiness is polled with `pg_isready`. Each test that
wants an empty schema asks for a new database (`new_database`), which is much faster
than a new server.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

USER = "drtest"


class PgStartError(RuntimeError):
    pass


def _bindir() -> Path | None:
    """The newest Debian server binaries, else whatever `initdb` is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            raise PgStartError("PostgreSQL server binaries (initdb, pg_ctl) are missing: "
                               "run `make test`, which installs Debian's postgresql")
        self.bin = bindir
        self.root_user = os.geteuid() == 0
        self.user = USER if self.root_user else pwd.getpwuid(os.geteuid()).pw_name
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dr-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._names = itertools.count(1)

    def _run(self, tool: str, *args: str, timeout: float = 60) -> str:
        argv = [str(self.bin / tool), *args]
        if self.root_user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             cwd=self.dir)
        if out.returncode != 0:
            raise PgStartError(f"{tool} exited {out.returncode}: {out.stderr.strip()}")
        return out.stdout

    def _conn_args(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", self.user]

    def start(self) -> "PgServer":
        if self.root_user:
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home",
                                "--shell", "/usr/sbin/nologin", self.user], check=True)
            shutil.chown(self.dir, self.user)
        # trust on loopback only: a test server with no password to leak.
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--locale=C.UTF-8")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                f"-c unix_socket_directories='{self.dir}' -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "start", "-W", "-D", str(self.data), "-l", str(self.log),
                  "-o", opts)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        argv = [str(self.bin / "pg_isready"), "-q", *self._conn_args()]
        while subprocess.run(argv).returncode != 0:
            if time.monotonic() > deadline:
                raise PgStartError(f"PostgreSQL not ready after {timeout}s: {self.tail()}")
            time.sleep(0.05)

    def new_database(self, prefix: str = "hdr") -> str:
        """Creates an empty database; returns its SQLAlchemy async URL."""
        name = f"{prefix}{next(self._names)}"
        self._run("createdb", *self._conn_args(), name)
        return self.url(name)

    def url(self, db: str) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{db}"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(PgStartError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.dir, ignore_errors=True)
