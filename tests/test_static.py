"""Static checks as tests, so the suite fails when they do: mypy --strict on the host code,
ruff on everything (configuration in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_mypy_strict() -> None:
    p = subprocess.run([str(BIN / "mypy")], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_ruff() -> None:
    p = subprocess.run([str(BIN / "ruff"), "check", "safesignal", "tests", "firmware", "bench"], cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
