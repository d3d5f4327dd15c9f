"""The virtual device's Bluetooth LE radio (safesignal/sim/ble.py, stubs/bluetooth.py).

A small peripheral (tests/mpy/ble_peripheral.py, written against MicroPython's documented
bluetooth API) runs as the virtual device's main.py under `safesignal sim --ble`; a bumble
central in this process reaches it through the transport spec of the ready line, the way a
host tool does: scan, connect, MTU exchange, writes, notifications, disconnection.  Two
virtual devices on one air are both seen by one scan."""

from __future__ import annotations

import asyncio
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import serial

from safesignal.tools import die_with_parent
from support.env import REPO, need_module
from support.sim import terminate

need_module("bumble", "pip install -e '.[test]'")

from bumble import hci  # noqa: E402
from bumble.core import UUID, AdvertisingData  # noqa: E402
from bumble.device import Advertisement, Connection, Device, Peer  # noqa: E402
from bumble.gatt_client import CharacteristicProxy  # noqa: E402
from bumble.transport import open_transport  # noqa: E402
from bumble.transport.common import Transport  # noqa: E402

PERIPHERAL = REPO / "tests" / "mpy" / "ble_peripheral.py"
RX_UUID = "5A0E0002-0000-4000-8000-00805F9B34FB"
TX_UUID = "5A0E0003-0000-4000-8000-00805F9B34FB"
T = TypeVar("T")


class BleSim:
    """One `safesignal sim --ble` running tests/mpy/ble_peripheral.py, its console read by a thread."""

    def __init__(self, tmp: Path, name: str, air: str | None = None, mac: str | None = None) -> None:
        self.dir = tmp / name
        fw = self.dir / "fw"
        (fw / "lib").mkdir(parents=True)
        shutil.copy(PERIPHERAL, fw / "main.py")
        self.port = str(self.dir / "tty")
        cmd = [sys.executable, "-m", "safesignal", "sim", "--port-link", self.port, "--flash",
               str(self.dir / "flash.bin"), "--firmware", str(fw), "--heap", "256k"]
        cmd += ["--ble-air", air] if air else ["--ble"]
        if mac:
            cmd += ["--mac", mac]
        self.err = open(self.dir / "sim.stderr", "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err, cwd=REPO,
                                     preexec_fn=die_with_parent(signal.SIGTERM))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("ready "):
            self.stop()
            raise AssertionError(f"sim did not start: {line!r} {(self.dir / 'sim.stderr').read_text()}")
        self.ready = line.strip()
        fields = dict(f.split("=", 1) for f in self.ready.split()[2:])
        self.spec = fields["ble"]
        self.mac = bytes.fromhex(fields["mac"].replace(":", ""))
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.ser = serial.serial_for_url(self.port, timeout=0.2)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                buf += self.ser.read(256)
            except (serial.SerialException, OSError, TypeError):
                return
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                text = raw.decode(errors="replace").strip()
                self.log.append(text)
                self.lines.put(text)

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r}; console: {self.log[-30:]}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            m = rx.search(line)
            if m:
                return m

    def send(self, command: str) -> None:
        self.ser.write(command.encode() + b"\n")

    def do(self, command: str) -> None:
        self.send(command)
        self.expect(rf"^(ok|oserror) {command.split()[0]}\b")

    def stop(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
            self.ser.close()
        terminate(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.err.close()


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


class Central:
    """A bumble central on the virtual air, opened from a spec exactly as a host tool opens it."""

    def __init__(self, transport: Transport, device: Device) -> None:
        self.transport = transport
        self.device = device

    @classmethod
    async def open(cls, spec: str, address: str = "C0:11:22:33:44:55") -> Central:
        transport = await open_transport(spec)
        device = Device.with_hci("central", hci.Address(address), transport.source, transport.sink)
        await device.power_on()
        return cls(transport, device)

    async def scan(self, seconds: float = 1.0, active: bool = True) -> dict[str, list[Advertisement]]:
        seen: dict[str, list[Advertisement]] = {}

        def on_adv(adv: Advertisement) -> None:
            seen.setdefault(str(adv.address).split("/")[0], []).append(adv)

        self.device.on("advertisement", on_adv)
        await self.device.start_scanning(active=active, filter_duplicates=False)
        await asyncio.sleep(seconds)
        await self.device.stop_scanning()
        self.device.remove_listener("advertisement", on_adv)
        return seen

    async def connect(self, sim: BleSim) -> tuple[Connection, Peer]:
        addr = hci.Address(bytes(reversed(ble_addr(sim))), hci.Address.PUBLIC_DEVICE_ADDRESS)
        conn = await self.device.connect(addr, timeout=10)
        return conn, Peer(conn)

    async def close(self) -> None:
        await self.transport.close()


def ble_addr(sim: BleSim) -> bytes:
    return sim.mac[:5] + bytes([(sim.mac[5] + 2) & 0xFF])  # ESP_MAC_BT: base MAC + 2


async def chars(peer: Peer) -> tuple[CharacteristicProxy[bytes], CharacteristicProxy[bytes]]:
    await peer.discover_services()
    await peer.discover_characteristics()
    rx = peer.get_characteristics_by_uuid(UUID(RX_UUID))
    tx = peer.get_characteristics_by_uuid(UUID(TX_UUID))
    assert rx and tx, "the peripheral's service was not discovered"
    return rx[0], tx[0]


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 120)

    return asyncio.run(bounded())


@pytest.fixture
def sims(tmp_path: Path) -> Any:
    started: list[BleSim] = []

    def start(name: str, air: str | None = None, mac: str | None = None) -> BleSim:
        s = BleSim(tmp_path, name, air, mac)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
        assert s.proc.returncode is not None


def test_scan_connect_mtu_write_notify_disconnect(sims: Any) -> None:
    sim = sims("dev", mac="02:aa:bb:cc:dd:01")
    boot = sim.expect(r"^mac (\d) ([0-9a-f]{12})$")
    assert (int(boot[1]), bytes.fromhex(boot[2])) == (0, ble_addr(sim))  # public, base MAC + 2
    sim.expect("^ready$")

    async def flow() -> None:
        central = await Central.open(sim.spec)
        try:
            seen = await central.scan()
            adv = seen[ble_addr(sim).hex(":").upper()]
            names = {a.data.get(AdvertisingData.COMPLETE_LOCAL_NAME) for a in adv}
            assert "SafeSignal-sim" in names
            assert any(a.data.get(AdvertisingData.MANUFACTURER_SPECIFIC_DATA) for a in adv)  # scan response
            conn, peer = await central.connect(sim)
            m = await off_loop(sim.expect, r"^EV connect (\d+) (\d) ([0-9a-f]{12})$")
            assert (int(m[2]), m[3]) == (1, "c01122334455")  # the central's random static address
            rx, tx = await chars(peer)
            assert await tx.read_value() == b"hello"
            # MTU 23 (no exchange): 30 bytes go as a long write; the default 20-byte buffer keeps 20
            payload = bytes(range(30))
            await rx.write_value(payload, with_response=True)
            m = await off_loop(sim.expect, r"^EV write \d+ \d+ (\d+) ([0-9a-f]*)$")
            assert (int(m[1]), m[2]) == (20, payload[:20].hex())
            assert await rx.read_value() == payload[:20]
            # with gatts_set_buffer the whole write arrives
            await off_loop(sim.do, "buf 200")
            await rx.write_value(payload, with_response=True)
            m = await off_loop(sim.expect, r"^EV write \d+ \d+ (\d+) ([0-9a-f]*)$")
            assert (int(m[1]), m[2]) == (30, payload.hex())
            # MTU exchange at 247: the device hears it, and a 200-byte write is one ATT request
            assert await peer.request_mtu(247) == 247
            m = await off_loop(sim.expect, r"^EV mtu (\d+) (\d+)$")
            assert int(m[2]) == 247
            big = bytes(i & 0xFF for i in range(200))
            await rx.write_value(big, with_response=True)
            m = await off_loop(sim.expect, r"^EV write \d+ \d+ (\d+) ([0-9a-f]*)$")
            assert (int(m[1]), m[2]) == (200, big.hex())
            # notifications, as many bytes as the MTU allows
            got: asyncio.Queue[bytes] = asyncio.Queue()
            await tx.subscribe(lambda v: got.put_nowait(bytes(v)))
            note = bytes(range(100))
            await off_loop(sim.do, f"notify {note.hex()}")
            assert await asyncio.wait_for(got.get(), 10) == note
            # the central disconnects; the device hears it with the same address
            await conn.disconnect()
            m = await off_loop(sim.expect, r"^EV disconnect (\d+) (\d) ([0-9a-f]{12})$")
            assert m[3] == "c01122334455"
        finally:
            await central.close()

    run(flow())


def test_port_fidelity_points(sims: Any) -> None:
    """What a kinder radio would let slip: notifications cut to ATT_MTU - 3, registering while
    connected refused (EBUSY), the IRQ's addr memoryview dead after the handler, a raising
    handler disabled, append-mode buffers."""
    sim = sims("dev")
    sim.expect("^ready$")

    async def flow() -> None:
        central = await Central.open(sim.spec)
        try:
            conn, peer = await central.connect(sim)
            await off_loop(sim.expect, r"^EV connect ")
            rx, tx = await chars(peer)
            got: asyncio.Queue[bytes] = asyncio.Queue()
            await tx.subscribe(lambda v: got.put_nowait(bytes(v)))
            await off_loop(sim.do, f"notify {bytes(range(40)).hex()}")
            assert await asyncio.wait_for(got.get(), 10) == bytes(range(20))  # MTU 23: 20 bytes go
            await off_loop(sim.send, "reg")
            assert int((await off_loop(sim.expect, r"^oserror reg (\d+)$"))[1]) == 16  # EBUSY
            await off_loop(sim.send, "kept")
            assert (await off_loop(sim.expect, r"^kept ([0-9a-f]+)$"))[1] == "000000000000"
            await off_loop(sim.do, "buf 8 append")
            await rx.write_value(b"abcde", with_response=True)
            await off_loop(sim.expect, r"^EV write \d+ \d+ 5 ")
            await rx.write_value(b"0123456789", with_response=True)
            m = await off_loop(sim.expect, r"^EV write \d+ \d+ (\d+) ([0-9a-f]*)$")
            assert bytes.fromhex(m[2]) == b"01234567"  # gatts_read emptied it; 10 bytes cut at 8
            await off_loop(sim.do, "raise")
            await rx.write_value(b"x", with_response=True)
            await off_loop(sim.expect, r"^Unhandled exception in IRQ callback handler$")
            await rx.write_value(b"y", with_response=True)  # the handler is gone: nothing printed
            await off_loop(sim.do, "read")
            assert not [line for line in sim.log if line.startswith("EV write") and line.endswith(" 79")]
            await conn.disconnect()
        finally:
            await central.close()

    run(flow())


def test_two_devices_share_one_air(sims: Any) -> None:
    first = sims("one", mac="02:00:00:00:01:00")
    second = sims("two", air=first.spec, mac="02:00:00:00:02:00")
    assert second.spec == first.spec
    for s in (first, second):
        s.expect("^ready$")

    async def flow() -> None:
        central = await Central.open(first.spec)
        try:
            seen = await central.scan()
            for s in (first, second):
                assert ble_addr(s).hex(":").upper() in seen, (seen.keys(), s.mac)
            conn, peer = await central.connect(second)
            await off_loop(second.expect, r"^EV connect ")
            rx, _ = await chars(peer)
            await rx.write_value(b"to-two", with_response=True)
            m = await off_loop(second.expect, r"^EV write \d+ \d+ (\d+) ([0-9a-f]*)$")
            assert bytes.fromhex(m[2]) == b"to-two"
            assert not [line for line in first.log if line.startswith("EV ")]
            await conn.disconnect()
        finally:
            await central.close()

    run(flow())
