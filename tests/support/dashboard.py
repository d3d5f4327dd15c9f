"""`safesignal dashboard` as a user runs it, for the tests: accounts made with `user add`, the
server as a subprocess on a free port (it ends with the test process), HTTP with urllib."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from safesignal.tools import die_with_parent

from .cli import run_cli
from .env import free_port
from .guard import SecretGuard


def add_user(guard: SecretGuard, db: str, name: str, role: str, cwd: Path | None = None) -> str:
    """`safesignal dashboard user add`; the token from its last line."""
    password = guard.secret(f"pw-{name}-{os.getpid()}-long")
    r = run_cli(guard, "dashboard", "user", "add", name, "--role", role, "--db", db,
                env={"SAFESIGNAL_USER_PASS": password})
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("token: "), r.stdout
    return last.removeprefix("token: ")  # shown once, here (the guard knows the password, not the token)


class Dashboard:
    """One `safesignal dashboard` process."""

    def __init__(self, guard: SecretGuard, broker: str, db: str, workdir: Path, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        self.guard = guard
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.err_path = workdir / f"dashboard-{self.port}.err"
        self._err = open(self.err_path, "wb")  # noqa: SIM115 - the child writes it until stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "safesignal", "dashboard", "--broker", broker, "--db", db,
             "--listen", f"127.0.0.1:{self.port}", *extra],
            stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL, cwd=workdir,
            env={**os.environ, **(env or {})},
            preexec_fn=die_with_parent(signal.SIGTERM))
        self.stdout = ""
        self.returncode: int | None = None
        self._wait_ready(60.0)

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while "✓ Dashboard on" not in self.stdout:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"the dashboard did not start: {self.stdout}\n{self.stderr()}")
            if select.select([fd], [], [], min(left, 0.5))[0]:
                chunk = os.read(fd, 4096)
                self.stdout += chunk.decode(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """SIGTERM (what a service manager sends) or ``sig`` (SIGINT: Ctrl-C); the exit code."""
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                out, _ = self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
            self.stdout += out.decode(errors="replace")
            self.returncode = self.proc.returncode
            self._err.close()
            self.guard.output("dashboard stdout", self.stdout)
            self.guard.output("dashboard stderr", self.stderr())
        return self.returncode

    # --- HTTP --------------------------------------------------------------------------------
    def request(self, method: str, path: str, token: str | None = None, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, decoded JSON or text) of one request."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, _decode(resp.read(), resp.headers.get("content-type", ""))
        except urllib.error.HTTPError as e:
            return e.code, _decode(e.read(), e.headers.get("content-type", ""))

    def get(self, path: str, token: str | None) -> Any:
        status, doc = self.request("GET", path, token)
        assert status == 200, (status, doc)
        return doc

    def wait_for(self, path: str, token: str, predicate: Any, timeout: float = 30.0) -> Any:
        """GET ``path`` until ``predicate(doc)`` holds; the document."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.get(path, token)
            if predicate(doc):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} never matched; last answer: {doc}")
            time.sleep(0.1)


def _decode(raw: bytes, ctype: str) -> Any:
    if "json" in ctype:
        return json.loads(raw)
    return raw.decode(errors="replace")
