"""Tests leave nothing running, even when the test process itself is killed (SIGKILL: no
teardown runs).  The processes tests start — a virtual device (`safesignal sim`, and its
MicroPython interpreter) and mosquitto (the library's runner, which the demo uses too) — get a
parent-death signal (safesignal.tools.die_with_parent); a tmux server (the terminal tests)
watches the test process and ends with it (tests/support/env.py).  Here a stand-in for a test process
starts both the way the tests do, is SIGKILLed, and nothing of them may remain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, need

CHILD = """
import sys, time
from pathlib import Path
sys.path[:0] = [{tests!r}]
from support.guard import SecretGuard
from support.sim import Sim
from safesignal.alerts.mosquitto import Mosquitto, find_mosquitto
tmp = Path({tmp!r})
sim = Sim(tmp, SecretGuard())
pids = [sim.proc.pid]
if find_mosquitto() is not None:
    broker = Mosquitto(tmp / "broker")
    broker.start()
    pids.append(broker.proc.pid)
import subprocess
from support.env import tmux_dies_with_this_process
subprocess.run(["tmux", "-L", {sock!r}, "new-session", "-d", "sleep 600"], check=True)
tmux_dies_with_this_process({sock!r})
print(" ".join(map(str, pids)), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _descendants(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().split(") ", 1)[1].split()[1])
            except (FileNotFoundError, ValueError, IndexError):
                continue
            if ppid == pid:
                out += [int(entry), *_descendants(int(entry))]
    return out


def test_a_killed_test_process_leaves_no_device_and_no_broker(tmp_path: Path) -> None:
    from safesignal.alerts.mosquitto import find_mosquitto

    if find_mosquitto() is None:
        need("mosquitto", "apt-get install mosquitto")
    sock = f"safesignal-orphan-{os.getpid()}"
    code = CHILD.format(tests=str(REPO / "tests"), tmp=str(tmp_path), sock=sock)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO)
    started: list[int] = []
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode().split()
        assert len(line) == 2, line  # the sim supervisor and mosquitto
        started = [int(x) for x in line]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("micropython" in _cmd(p) for p in _descendants(started[0])):
            time.sleep(0.05)
        started += [p for p in _descendants(started[0]) if "micropython" in _cmd(p)]
        assert len(started) == 3, "the virtual device's interpreter did not start"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in started):
            time.sleep(0.05)
        assert not [p for p in started if _alive(p)], "left running after the test process was killed"
        while time.monotonic() < deadline and _tmux_alive(sock):
            time.sleep(0.1)
        assert not _tmux_alive(sock), "the test's tmux server was left running"
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
        child.kill()
        child.wait(10)
        for p in started:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def _tmux_alive(sock: str) -> bool:
    return subprocess.run(["tmux", "-L", sock, "has-session"], capture_output=True).returncode == 0
