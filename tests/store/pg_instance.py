"""A throw-away PostgreSQL instance for tests and benchmarks: initdb, pg_ctl, a loopback port.

Debian's ``postgresql`` package puts its programs under ``/usr/lib/postgresql/<version>/bin``;
the newest version there is used. Started by root, the instance runs as the unprivileged
``nobody`` user (initdb refuses root), in a private temporary directory; it listens only on
127.0.0.1 at a free port (no Unix socket), requires a password (the endpoint carries one, as a
real one does), and is always stopped and removed by :meth:`PostgresInstance.stop`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "k3py"
PASSWORD = "k3py-test-secret"


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb, or None."""
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return None
    versions = sorted(
        (d for d in root.iterdir() if (d / "bin" / "initdb").exists()),
        key=lambda d: int(d.name) if d.name.isdigit() else 0,
    )
    return versions[-1] / "bin" if versions else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresInstance:
    """One running cluster; :meth:`endpoint` names a database in it."""

    def __init__(self, *, fsync: bool = False) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.fsync = fsync
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="k3py-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._user = pwd.getpwnam("nobody")
        self._databases = 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # As root, drop to nobody (initdb refuses root); as anyone else, run as oneself.
        as_root = os.geteuid() == 0
        return subprocess.run(
            args,
            user=self._user.pw_uid if as_root else None,
            group=self._user.pw_gid if as_root else None,
            cwd=self.root,
            env={"PATH": f"{self.bindir}:/usr/bin:/bin", "LC_ALL": "C"},
            check=check,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self) -> None:
        os.chmod(self.root, 0o700)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
            os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        self.pg_ctl("start")

    def pg_ctl(self, action: str, *extra: str) -> None:
        """``pg_ctl start|stop|restart`` with this instance's options; waits until done."""
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
            f" -c max_connections=200 -c fsync={'on' if self.fsync else 'off'}"
            " -c shared_buffers=32MB"
        )
        args = [str(self.bindir / "pg_ctl"), action, "-D", str(self.data), "-w", *extra]
        if action in ("start", "restart"):
            args += ["-o", options, "-l", str(self.log)]
        if action in ("stop", "restart"):
            args += ["-m", "fast"]
        self._run(*args)

    def endpoint(self, database: str = "postgres") -> str:
        return f"postgres://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def new_database(self) -> str:
        """A fresh, empty database; returns its endpoint."""
        self._databases += 1
        name = f"k3py_t{self._databases}"
        self.psql(f"CREATE DATABASE {name}")
        return self.endpoint(name)

    def psql(self, statement: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                statement,
            ],
            env={"PGPASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"},
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "stop",
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    check=False,
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
