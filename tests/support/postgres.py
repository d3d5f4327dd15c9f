"""A real PostgreSQL (Debian's postgresql package) for the tests, in a temporary directory.

The server runs as a child of the test process (``postgres`` itself, not ``pg_ctl``, which
would detach it) with a parent-death signal, so it ends with the test process even when that
is SIGKILLed (tests/test_dashboard.py checks it).  It listens on 127.0.0.1 at a free port and
on a Unix socket in its own directory, trusts local connections (a throw-away cluster) and runs
without fsync.

``initdb`` and ``postgres`` refuse to run as root: as root (CI) they run as the ``postgres``
user (or ``nobody``), in a directory made for that user outside pytest's root-only tree.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safesignal.tools import die_with_parent, stop_process

from .env import free_port, need

SUPERUSER = "safesignal"


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb and postgres (Debian's layout)."""
    found = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        if (d / "initdb").exists() and (d / "postgres").exists() and d.parent.name.isdigit():
            found.append((int(d.parent.name), d))
    return max(found)[1] if found else None


def _run_as() -> tuple[str | None, Path]:
    """(the user to run the server as, or None for ourselves; a directory that user owns)."""
    if os.geteuid() != 0:
        return None, Path(tempfile.mkdtemp(prefix="ss-pg-"))
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        top = Path(tempfile.mkdtemp(prefix="ss-pg-"))
        os.chown(top, pw.pw_uid, pw.pw_gid)
        return name, top
    raise RuntimeError("running as root and no postgres or nobody user to run PostgreSQL as")


class Postgres:
    """One PostgreSQL cluster, started; :meth:`database` makes a fresh database and returns its URL."""

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            need("PostgreSQL", "apt-get install postgresql")
        assert bindir is not None
        self.bindir = bindir
        self.user, self.dir = _run_as()
        self.data = self.dir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._n = 0
        try:
            self._initdb()
            self._start()
        except BaseException:
            self.stop()
            raise

    def _as_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        p = subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                           capture_output=True, text=True, timeout=120, cwd=self.dir, **self._as_user(),
                           preexec_fn=die_with_parent())
        if p.returncode != 0:
            raise RuntimeError(f"initdb failed: {p.stderr[-2000:]}")

    def _start(self, timeout: float = 60.0) -> None:
        log = open(self.dir / "postgres.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            # SIGINT is PostgreSQL's fast shutdown: sessions are ended, the server exits at once.
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                 "-k", str(self.dir), "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=100"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, **self._as_user(),
                preexec_fn=die_with_parent(signal.SIGINT))
        finally:
            log.close()
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start:\n" + self.log()[-2000:]) from None
                time.sleep(0.1)

    def log(self) -> str:
        p = self.dir / "postgres.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def url(self, dbname: str) -> str:
        """``postgresql://…``: what --db takes, and what libpq (psycopg) takes too."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        self._n += 1
        name = f"t{os.getpid()}_{self._n}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def halt(self) -> None:
        """Stop the server (fast shutdown, SIGINT) and keep its data: :meth:`resume` starts it again."""
        if self.proc is not None:
            stop_process(self.proc, 30, signal.SIGINT)
        self.proc = None

    def resume(self) -> None:
        self._start()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.stop()
