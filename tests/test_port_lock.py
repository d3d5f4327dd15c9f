"""One tool per port (issue 10.4): a second tool on a port in use is exit 3, `port busy: …`
naming the holder, and the first tool is not disturbed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, SecretGuard
from safesignal.errors import PortError
from safesignal.link.serial import open_port
from support.cli import run_cli


def _console(port: str, seconds: float) -> subprocess.Popen[str]:
    """`safesignal console` watching the port (the first tool), started and holding it."""
    p = subprocess.Popen([sys.executable, "-m", "safesignal", "console", "--port", port, "--duration", str(seconds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                         stdin=subprocess.DEVNULL)
    return p


def _wait_holding(port: str, timeout: float = 20) -> None:
    """Until someone holds the port (our own open is refused)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            open_port(port).close()
        except PortError as e:
            if str(e).startswith("port busy: "):
                return
        time.sleep(0.05)
    raise AssertionError("the first tool never held the port")


def test_second_tool_on_a_busy_port_is_exit_3_naming_the_holder(make_sim, guard: SecretGuard) -> None:
    sim = make_sim()
    first = _console(sim.port, 20)
    try:
        _wait_holding(sim.port)
        p = run_cli(guard, "status", "--port", sim.port)
        assert p.returncode == 3, p.stdout + p.stderr
        assert f"port busy: {sim.port} is open in process {first.pid} (python -m safesignal console)" in p.stderr
        assert "dialout" not in p.stderr  # not a permissions problem
        p = run_cli(guard, "provision", "--port", sim.port, "--wifi-ssid", "Net", "--wifi-pass", "password-1",
                    "--device-id", "d", "--tenant", "t", "--building", "b", "--room", "r")
        assert p.returncode == 3 and "port busy: " in p.stderr, p.stdout + p.stderr
        assert first.poll() is None  # the first tool goes on
    finally:
        first.terminate()
        first.communicate(timeout=10)
    # Free again once the first tool is gone.
    p = run_cli(guard, "status", "--port", sim.port, "--json")
    assert p.returncode == 0, p.stderr


def test_url_ports_are_kept_apart_by_a_lock_file() -> None:
    """socket:// has no device to lock: a lock file per URL (tools on this machine only)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    url = f"socket://127.0.0.1:{srv.getsockname()[1]}"
    conns: list[socket.socket] = []
    t = threading.Thread(target=lambda: [conns.append(srv.accept()[0]) for _ in range(2)], daemon=True)
    t.start()
    try:
        first = open_port(url)
        with pytest.raises(PortError, match=f"^port busy: {url} is open in process {os.getpid()}"):
            open_port(url)
        first.close()
        open_port(url).close()  # released with the port
    finally:
        srv.close()
        for c in conns:
            c.close()
