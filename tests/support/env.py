"""Where things are, and what a test does when something it needs is missing."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware" / "esp32-button"
SCRIPTS = FIRMWARE / "scripts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(what: str, how: str) -> None:
    """A missing resource fails in CI and skips (with the command that provides it) elsewhere."""
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: {how}")
    pytest.skip(f"{what} is missing: {how}")


def need_module(name: str, how: str) -> None:
    """At a test module's top: a missing Python package fails in CI (a collection error) and
    skips the module, with the command that installs it, elsewhere (not pytest.importorskip,
    which would skip in CI too)."""
    import importlib.util

    if importlib.util.find_spec(name) is not None:
        return
    if IN_CI:
        raise ImportError(f"{name} is missing in CI: {how}")
    pytest.skip(f"{name} is missing: {how}", allow_module_level=True)


def need_program(name: str, how: str) -> str:
    """The path of a program on PATH; a missing one fails in CI and skips elsewhere (need)."""
    import shutil

    path = shutil.which(name)
    if path is None:
        need(f"the program {name}", how)
        raise AssertionError("unreachable: need() fails or skips")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tmux_dies_with_this_process(sock: str) -> None:
    """A tmux server outlives whoever started it; make the one on socket ``sock`` end with this
    test process, even when the process is killed and no teardown runs."""
    import subprocess

    watch = f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; tmux -L {sock} kill-server"
    subprocess.run(["tmux", "-L", sock, "run-shell", "-b", watch], check=True)
