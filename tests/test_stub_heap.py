"""The virtual device gives the firmware the heap --heap names, free of the stubs.

On the chip esp32, machine, network, socket, select and time are C modules in flash: they
cost the Python heap nothing.  Under the virtual device they are Python modules (the stubs)
in the same heap, so `safesignal sim` adds their measured size to -X heapsize
(safesignal/sim/launch.py device_heap)."""

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

_FREE_AFTER = """
import gc, sys
for n in sys.argv[1:]:
    try:
        __import__(n)
    except ImportError:
        pass
gc.collect()
print(gc.mem_free())
"""


def _free_after_imports(heapsize: str, stubs: bool) -> int:
    path = ([str(STUBS)] if stubs else []) + [".frozen"]
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(path))
    p = subprocess.run([MICROPYTHON, "-X", f"heapsize={heapsize}", "-c", _FREE_AFTER, *launch.STUB_MODULES],
                       env=env, capture_output=True, text=True, timeout=30, cwd="/", check=True)
    return int(p.stdout)


@pytest.mark.parametrize("heap", ["128k", "192k", "1920k"])
def test_the_stubs_do_not_eat_the_firmwares_heap(heap: str) -> None:
    # What the firmware would find free on a unix port whose modules were C (the chip's case) ...
    chip = _free_after_imports(heap, stubs=False)
    # ... and what it finds in the virtual device, stubs loaded.  Without the accounting
    # (-X heapsize=HEAP) about 20 kB less: this fails against the old launch.config.
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
