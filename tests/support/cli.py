"""The CLI as a user runs it: `python -m safesignal …` as a subprocess, no stdin, its output
registered with the test's SecretGuard (no secret may appear in it)."""

from __future__ import annotations

import os
import subprocess
import sys

from support.env import REPO
from support.guard import SecretGuard


def run_cli(guard: SecretGuard, *args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "safesignal", *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, cwd=REPO)
    guard.output(f"safesignal {args[0]} stdout", p.stdout)
    guard.output(f"safesignal {args[0]} stderr", p.stderr)
    return p
