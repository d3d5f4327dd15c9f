"""The virtual device gives the firmware the heap --heap names, free of the stubs.

On the chip esp32, machine, network, socket, select, time and bluetooth are C modules in
flash: they cost the Python heap nothing, not even their names (static qstrs).  Under the
virtual device they are Python modules (the stubs) in the same heap, so `safesignal sim` adds
their measured size to -X heapsize (safesignal/sim/launch.py device_heap)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from safesignal.errors import UsageError
from safesignal.sim import launch
from safesignal.sim.supervisor import STUBS

MICROPYTHON = str(Path(sys.executable).parent / "micropython")
# every module the virtual device stubs (safesignal/sim/stubs/), and asyncio (frozen in both)
# (in launch's order, any it lacks after: what is free depends on the import order by ~0.5 kB)
_ALL = {p.stem for p in STUBS.glob("*.py")} - {"__init__"} | {"asyncio"}
STUBBED = [n for n in launch.STUB_MODULES if n in _ALL] + sorted(_ALL - set(launch.STUB_MODULES))

_FREE_AFTER = """
import gc, sys
for n in sys.argv[1:]:
    __import__(n)
gc.collect()
print(gc.mem_free())
"""


def _env(stubs: bool) -> dict[str, str]:
    path = ([str(STUBS)] if stubs else []) + [".frozen"]
    return dict(os.environ, MICROPYPATH=os.pathsep.join(path))


def _port_has(name: str) -> bool:
    p = subprocess.run([MICROPYTHON, "-c", f"import {name}"], env=_env(False), capture_output=True, timeout=30,
                       cwd="/")
    return p.returncode == 0


def _free_after_imports(heapsize: str, stubs: bool) -> int:
    # the chip's case: the modules the unix port has of its own (C or frozen), none attempted
    # that it lacks (a failed import interns the name, which can open a new qstr pool: ~1.9 kB
    # that a chip, its module names in flash, never pays)
    names = STUBBED if stubs else [n for n in STUBBED if _port_has(n)]
    p = subprocess.run([MICROPYTHON, "-X", f"heapsize={heapsize}", "-c", _FREE_AFTER, *names],
                       env=_env(stubs), capture_output=True, text=True, timeout=30, cwd="/", check=True)
    return int(p.stdout)


def test_every_stub_is_accounted() -> None:
    # bluetooth (~14.5 kB of heap) included; on the unix port it has no module of its own, so
    # all of it is added to -X heapsize
    assert "bluetooth" in STUBBED and set(STUBBED) <= set(launch.STUB_MODULES)
    assert not _port_has("bluetooth") and "bluetooth" not in launch.port_modules(MICROPYTHON)
    assert set(launch.port_modules(MICROPYTHON)) == {n for n in launch.STUB_MODULES if _port_has(n)}


@pytest.mark.parametrize("heap", ["128k", "192k", "1920k"])
def test_the_stubs_do_not_eat_the_firmwares_heap(heap: str) -> None:
    # What the firmware would find free on a unix port whose modules were C (the chip's case) ...
    chip = _free_after_imports(heap, stubs=False)
    # ... and what it finds in the virtual device, stubs loaded.  Without the accounting
    # (-X heapsize=HEAP) about 34 kB less: this fails against the old launch.config; without
    # bluetooth in STUB_MODULES, about 14.5 kB less.
    sim = _free_after_imports(launch.device_heap(MICROPYTHON, heap), stubs=True)
    assert chip <= sim < chip + 1024, (chip, sim)


def test_stub_heap_is_measured_not_assumed() -> None:
    extra = launch.stub_heap_bytes(MICROPYTHON, "128k")
    assert 8 * 1024 < extra < 64 * 1024, extra  # the stubs are real Python modules in the heap
    assert launch.heap_bytes(launch.device_heap(MICROPYTHON, "128k")) >= 128 * 1024 + extra


def test_heap_sizes() -> None:
    assert launch.heap_bytes("128k") == 131072
    assert launch.heap_bytes("2m") == 2 * 1024 * 1024
    assert launch.heap_bytes("150000") == 150000
    for bad in ("", "k", "12x", "0k", "-5k"):
        with pytest.raises(UsageError):
            launch.heap_bytes(bad)


def test_relative_firmware_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the device's interpreter runs main.py with the firmware directory as its cwd: a relative
    # --firmware must be made absolute first (it was not: exit 2, restarted by the watchdog forever)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fw").mkdir()
    opts = launch.SimOptions(port_link="tty", flash="flash.bin", firmware="fw", heap="128k")
    assert launch.config(opts).firmware == tmp_path / "fw"
