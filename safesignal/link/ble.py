"""Provisioning over Bluetooth LE: the host side.

One link interface (:class:`Radio`) with two backends: bleak, the operating system's Bluetooth
(BlueZ, macOS, Windows), the default; and bumble (``--ble-transport SPEC``: a USB dongle, an HCI
socket, or the virtual device's link).  On top of it, :class:`BlePort` authenticates with the
PIN (SPAKE2+, ssproto.spake2p), encrypts every message (ssproto.channel) and looks like a serial
port to :class:`safesignal.link.session.DeviceSession`, so provisioning over BLE runs the very
command flow the serial console runs.  The protocol: ssproto/ble.py.

The PIN lives in this process only; it is never logged.  ``--btsnoop FILE`` logs HCI (bumble
backend): what crosses the air, which holds nothing that lets a PIN be tested offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import serial

import ssproto.ble as P
from safesignal.errors import DeviceTimeout, PortError, SafeSignalError, UsageError

log = logging.getLogger(__name__)
T = TypeVar("T")

MTU = 247  # the ATT MTU the host asks for (the device offers the same)
CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 10.0  # the device's answer to one PIN message (its PAKE takes ~1 s on an S3)


class WrongPin(SafeSignalError):
    """The PIN did not match; the device counted the attempt."""

    exit_code = 11

    def __init__(self, left: int, wait_s: int) -> None:
        self.left = left
        self.wait_s = wait_s
        more = f"; the next attempt is taken in {wait_s} s" if wait_s else ""
        super().__init__(f"wrong PIN: {left} attempts left before the device locks{more}")


class LockedOut(SafeSignalError):
    """The device takes no PIN attempt now (too many wrong ones)."""

    exit_code = 12

    def __init__(self, wait_s: int | None, left: int) -> None:
        self.wait_s = wait_s
        self.left = left
        if wait_s is None:
            msg = (f"the device is locked after {P.HARD_LOCK} wrong PINs: hold its button at power-on for "
                   f"{P.HOLD_MS // 1000} s to re-open Bluetooth")
        else:
            msg = f"too many wrong PINs: wait {wait_s} s before the next attempt ({left} attempts left)"
        super().__init__(msg)


@dataclass(frozen=True)
class Advert:
    name: str
    address: str
    rssi: int | None
    provisioned: bool
    locked: bool
    window_s: int

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "rssi": self.rssi, "provisioned": self.provisioned,
                "locked": self.locked, "window_s": self.window_s}


def check_pin(pin: str) -> str:
    if len(pin) != 6 or not pin.isascii() or not pin.isdigit():
        raise UsageError("--pin: the PIN is 6 digits (printed on the device's label)")
    return pin


# --- the link interface and its backends -------------------------------------------------------
class Radio:
    """What provisioning needs of a Bluetooth stack: scan, connect, write, notifications."""

    mtu: int = 23

    async def open(self) -> None:
        raise NotImplementedError

    async def scan(self, duration: float) -> list[Advert]:
        raise NotImplementedError

    async def connect(self, address: str, on_data: Callable[[bytes], None],
                      on_gone: Callable[[], None]) -> None:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class BumbleRadio(Radio):
    """bumble as the host stack, on the controller behind a transport spec."""

    def __init__(self, spec: str, btsnoop: str | None = None, mtu: int = MTU) -> None:
        self.spec = spec
        self.btsnoop = btsnoop
        self.want_mtu = mtu
        self._transport: Any = None
        self._device: Any = None
        self._conn: Any = None
        self._rx: Any = None
        self._addresses: dict[str, Any] = {}

    async def open(self) -> None:
        from bumble.device import Device
        from bumble.hci import Address
        from bumble.transport import open_transport

        try:
            t = await open_transport(self.spec)
        except Exception as e:  # bumble raises many kinds (OSError, ValueError, its own)
            raise PortError(f"Could not open BLE transport {self.spec}", reason=str(e) or type(e).__name__) from None
        if self.btsnoop:
            from bumble.transport.common import SnoopingTransport

            t = SnoopingTransport.create_with(t, _btsnoop(self.btsnoop))
        self._transport = t
        self._device = Device.with_hci("safesignal-host", Address("F0:F1:F2:F3:F4:F5"), t.source, t.sink)
        await self._device.power_on()

    async def scan(self, duration: float) -> list[Advert]:
        found: dict[str, Advert] = {}

        def seen(adv: Any) -> None:
            info = P.parse_adv(bytes(adv.data))  # advertising data and scan response, as bumble merged them
            if info is None:
                return
            addr = str(adv.address).split("/")[0]
            self._addresses[addr] = adv.address  # with its type (public or random)
            found[addr] = Advert(info["name"], addr, adv.rssi, info["provisioned"], info["locked"], info["window_s"])

        self._device.on("advertisement", seen)
        await self._device.start_scanning(filter_duplicates=False)
        try:
            await asyncio.sleep(duration)
        finally:
            await self._device.stop_scanning()
            self._device.remove_listener("advertisement", seen)
        return sorted(found.values(), key=lambda a: a.name)

    async def connect(self, address: str, on_data: Callable[[bytes], None],
                      on_gone: Callable[[], None]) -> None:
        from bumble.device import Peer
        from bumble.hci import Address

        try:
            peer_address = self._addresses.get(address) or Address(address, Address.PUBLIC_DEVICE_ADDRESS)
            conn = await asyncio.wait_for(self._device.connect(peer_address), CONNECT_TIMEOUT)
        except TimeoutError:
            raise DeviceTimeout(f"no connection to {address} within {CONNECT_TIMEOUT:g} s") from None
        except Exception as e:
            raise PortError(f"Could not connect to {address}", reason=str(e) or type(e).__name__) from None
        self._conn = conn
        conn.on("disconnection", lambda *_: on_gone())
        peer = Peer(conn)
        self.mtu = 23
        if self.want_mtu > 23:
            try:
                self.mtu = await peer.request_mtu(self.want_mtu)
            except Exception:  # a peer that refuses the exchange stays at 23
                self.mtu = 23
        await peer.discover_service(P.SERVICE_UUID)
        svc = peer.get_services_by_uuid(_uuid(P.SERVICE_UUID))
        if not svc:
            raise SafeSignalError(f"{address} has no SafeSignal provisioning service")
        await svc[0].discover_characteristics()
        rx = svc[0].get_characteristics_by_uuid(_uuid(P.RX_UUID))
        tx = svc[0].get_characteristics_by_uuid(_uuid(P.TX_UUID))
        if not rx or not tx:
            raise SafeSignalError(f"{address}: the provisioning service lacks its characteristics")
        self._rx = rx[0]
        await tx[0].subscribe(lambda v: on_data(bytes(v)))

    async def write(self, data: bytes) -> None:
        for c in P.chunks(data, self.mtu):
            await self._rx.write_value(c, with_response=True)

    async def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already gone (the device rebooted), or going
                await asyncio.wait_for(conn.disconnect(), 2.0)

    async def close(self) -> None:
        await self.disconnect()
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.close()
            self._transport = None


@contextlib.contextmanager
def _btsnoop(path: str) -> Iterator[Any]:
    """A btsnoop writer on ``path`` (Wireshark opens it), closed with the transport."""
    from bumble.snoop import BtSnooper

    with open(path, "wb") as f:
        yield BtSnooper(f)


def _uuid(s: str) -> Any:
    from bumble.core import UUID

    return UUID(s)


class BleakRadio(Radio):
    """The operating system's Bluetooth through bleak."""

    def __init__(self) -> None:
        self._client: Any = None
        self._rx: str = P.RX_UUID

    async def open(self) -> None:
        from safesignal.extras import module

        module("bleak", "ble")

    async def scan(self, duration: float) -> list[Advert]:
        from bleak import BleakScanner

        found: dict[str, Advert] = {}

        def seen(dev: Any, adv: Any) -> None:
            md = adv.manufacturer_data.get(P.COMPANY_ID)
            if md is None:
                return
            raw = bytes([len(md) + 3, 0xFF]) + P.COMPANY_ID.to_bytes(2, "little") + bytes(md)
            info = P.parse_adv(raw)
            if info is None:
                return
            found[dev.address] = Advert(adv.local_name or "", dev.address, adv.rssi, info["provisioned"],
                                        info["locked"], info["window_s"])

        async with BleakScanner(detection_callback=seen):
            await asyncio.sleep(duration)
        return sorted(found.values(), key=lambda a: a.name)

    async def connect(self, address: str, on_data: Callable[[bytes], None],
                      on_gone: Callable[[], None]) -> None:
        from bleak import BleakClient

        client = BleakClient(address, disconnected_callback=lambda _c: on_gone(), timeout=CONNECT_TIMEOUT)
        await client.connect()
        self._client = client
        self.mtu = await _bleak_mtu(client)
        await client.start_notify(P.TX_UUID, lambda _h, v: on_data(bytes(v)))

    async def write(self, data: bytes) -> None:
        for c in P.chunks(data, self.mtu):
            await self._client.write_gatt_char(self._rx, c, response=True)

    async def disconnect(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            with contextlib.suppress(Exception):
                await c.disconnect()

    async def close(self) -> None:
        await self.disconnect()


async def _bleak_mtu(client: Any) -> int:
    """The connection's ATT MTU as bleak knows it.  On BlueZ the exchange's result shows only
    once a write or notify pipe was acquired (bleak's ``mtu_size`` is 23 and a warning until
    then): bleak's BlueZ backend acquires one for that, as its ``mtu_size`` documentation
    says.  Elsewhere the RX characteristic's largest write without response + 3."""
    acquire = getattr(getattr(client, "_backend", None), "_acquire_mtu", None)
    if acquire is not None:
        with contextlib.suppress(Exception):
            await acquire()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                n = int(client.mtu_size)
            if 23 <= n <= 517:
                return n
    char = client.services.get_characteristic(P.RX_UUID) if client.services is not None else None
    size = getattr(char, "max_write_without_response_size", None)
    return min(size + 3, 517) if isinstance(size, int) and size >= 20 else 23


def make_radio(transport: str | None, btsnoop: str | None = None, mtu: int = MTU) -> Radio:
    from safesignal.extras import module

    if not 23 <= mtu <= 517:
        raise UsageError("--ble-mtu must be 23-517")
    if transport:
        module("bumble", "ble")
        return BumbleRadio(transport, btsnoop, mtu)
    if btsnoop:
        raise UsageError("--btsnoop needs --ble-transport (bumble logs HCI; the system's stack has its own: btmon)")
    return BleakRadio()


# --- the loop thread -----------------------------------------------------------------------------
class _Loop:
    """An asyncio loop in a daemon thread, for the blocking serial-like interface."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="safesignal-ble", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def scan(transport: str | None, duration: float, btsnoop: str | None = None) -> list[Advert]:
    radio = make_radio(transport, btsnoop)
    loop = _Loop()
    try:
        loop.run(radio.open(), 30)
        return loop.run(radio.scan(duration), duration + 30)
    finally:
        with contextlib.suppress(Exception):
            loop.run(radio.close(), 10)
        loop.stop()


def pick(adverts: list[Advert], wanted: str | None) -> Advert:
    """The advert named or addressed by ``wanted``, or the only one when ``wanted`` is None."""
    if wanted:
        hit = [a for a in adverts if wanted in (a.name, a.address) or a.address.lower() == wanted.lower()]
        if not hit:
            raise DeviceTimeout(f"no SafeSignal button '{wanted}' in range (is its BLE window open?)")
        return hit[0]
    if not adverts:
        raise DeviceTimeout("no SafeSignal button in range (is its BLE window open? power it on, or hold its "
                            f"button at power-on for {P.HOLD_MS // 1000} s)")
    if len(adverts) > 1:
        names = ", ".join(f"{a.name} ({a.address})" for a in adverts)
        raise UsageError(f"several SafeSignal buttons in range: {names}; name one: --ble NAME_OR_ADDRESS")
    return adverts[0]


# --- the secure port ----------------------------------------------------------------------------
class BlePort:
    """A serial-port look-alike over the encrypted BLE session (for DeviceSession).

    ``read``/``write``/``in_waiting``/``is_open``/``close`` as pyserial's; a lost connection
    raises ``serial.SerialException`` and :meth:`reopen` connects again (same PIN)."""

    def __init__(self, transport: str | None, target: str | None, pin: str, *, btsnoop: str | None = None,
                 scan_s: float = 3.0, mtu: int = MTU) -> None:
        self._pin = check_pin(pin)
        self._derived: dict[tuple[bytes, int], tuple[int, int]] = {}  # (salt, iterations) -> (w0, w1), this run only
        self._radio = make_radio(transport, btsnoop, mtu)
        self._loop = _Loop()
        self._target = target
        self._scan_s = scan_s
        self._buf = bytearray()
        self._lock = threading.Condition()
        self._deframer = P.Deframer()
        self._msgs: asyncio.Queue[tuple[int, bytes]] | None = None
        self._chan: Any = None
        self._connected = False
        self.timeout = 0.05
        self.advert: Advert | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        try:
            self._loop.run(self._radio.open(), 30)
            self.advert = pick(self._loop.run(self._radio.scan(scan_s), scan_s + 30), target)
            self._loop.run(self._session(), 60)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        a = self.advert
        return f"{a.name} ({a.address})" if a else "BLE"

    @property
    def mtu(self) -> int:
        return self._radio.mtu

    @property
    def is_open(self) -> bool:
        return self._connected

    @property
    def in_waiting(self) -> int:
        with self._lock:
            return len(self._buf)

    def read(self, n: int = 1) -> bytes:
        end = time.monotonic() + self.timeout
        with self._lock:
            while not self._buf:
                if not self._connected:
                    raise serial.SerialException("BLE connection lost")
                left = end - time.monotonic()
                if left <= 0:
                    return b""
                self._lock.wait(left)
            out = bytes(self._buf[:n])
            del self._buf[:n]
            return out

    def write(self, data: bytes) -> int:
        if not self._connected or self._chan is None:
            raise serial.SerialException("BLE connection lost")
        sealed = self._chan.seal(bytes(data))
        try:
            self._loop.run(self._send(P.M_DATA, sealed), 30)
        except Exception as e:
            self._gone()
            raise serial.SerialException(f"BLE write failed: {e}") from None
        return len(data)

    def reset_input_buffer(self) -> None:
        with self._lock:
            self._buf.clear()

    def close(self) -> None:
        self._connected = False
        with contextlib.suppress(Exception):
            self._loop.run(self._radio.close(), 10)
        self._loop.stop()

    def reopen(self, deadline: float) -> BlePort:
        """Connect again (after the device rebooted); returns self.  One whole attempt (scan,
        connect, PIN) is made even past ``deadline``: it takes a few seconds, more than a
        serial port's reopen, and DeviceSession's read deadlines are short."""
        while True:
            try:
                self._loop.run(self._radio.disconnect(), 10)
                ads = self._loop.run(self._radio.scan(1.0), 30)
                want = self.advert.address if self.advert else self._target
                self.advert = pick(ads, want)
                self._loop.run(self._session(), 60)
                return self
            except (WrongPin, LockedOut):
                raise
            except (SafeSignalError, OSError, TimeoutError) as e:
                if time.monotonic() >= deadline:
                    if isinstance(e, (DeviceTimeout, PortError)):
                        raise
                    raise DeviceTimeout(f"could not reconnect to {self.url} over BLE ({e or type(e).__name__})"
                                        ) from None
                time.sleep(0.3)

    # --- inside the loop thread ---------------------------------------------------------------
    def _on_data(self, data: bytes) -> None:
        self.bytes_received += len(data)
        try:
            msgs = self._deframer.feed(data)
        except P.BleError:
            self._gone()
            return
        for mtype, payload in msgs:
            if mtype == P.M_DATA and self._chan is not None:
                try:
                    plain = self._chan.open(payload)
                except ValueError:
                    log.warning("a message from the device failed authentication; dropping the link")
                    self._gone()
                    return
                with self._lock:
                    self._buf.extend(plain)
                    self._lock.notify_all()
            elif self._msgs is not None:
                self._msgs.put_nowait((mtype, payload))

    def _gone(self) -> None:
        self._connected = False
        self._chan = None
        with self._lock:
            self._lock.notify_all()

    async def _send(self, mtype: int, payload: bytes = b"") -> None:
        f = P.frame(mtype, payload)
        self.bytes_sent += len(f)
        await self._radio.write(f)

    async def _reply(self, want: int) -> bytes:
        assert self._msgs is not None
        try:
            mtype, payload = await asyncio.wait_for(self._msgs.get(), REPLY_TIMEOUT)
        except TimeoutError:
            raise DeviceTimeout(f"the device did not answer over BLE within {REPLY_TIMEOUT:g} s") from None
        if mtype == P.M_ERROR:
            code, wait_s, left, text = P.parse_error(payload)
            if code == P.ERR_WRONG_PIN:
                raise WrongPin(left, wait_s)
            if code == P.ERR_LOCKED:
                raise LockedOut(wait_s, left)
            if code == P.ERR_HARD_LOCKED:
                raise LockedOut(None, 0)
            raise SafeSignalError(f"the device refused the BLE session: {text}")
        if mtype != want:
            raise SafeSignalError("the device answered out of order over BLE")
        return payload

    async def _session(self) -> None:
        from ssproto import spake2p
        from ssproto.channel import Channel

        assert self.advert is not None
        self._msgs = asyncio.Queue()
        self._deframer = P.Deframer()
        self._chan = None
        await self._radio.connect(self.advert.address, self._on_data, self._gone)
        self._connected = True
        await self._send(P.M_HELLO)
        salt, iterations, fails, wait_s, address, name = P.parse_params(await self._reply(P.M_PARAMS))
        w = P.lock_wait_s(fails)
        if w is None:
            raise LockedOut(None, 0)
        if wait_s:
            raise LockedOut(wait_s, P.attempts_left(fails))
        try:
            ctx = spake2p.context(name, address, salt, iterations)
            # PBKDF2 (about 0.5 s) off the loop thread: notifications keep flowing meanwhile
            key = (salt, iterations)
            if key not in self._derived:  # the reconnect after the reboot meets the same record
                self._derived = {key: await asyncio.get_running_loop().run_in_executor(
                    None, spake2p.derive_w, self._pin, salt, iterations)}
            w0, w1 = self._derived[key]
        except ValueError as e:
            raise SafeSignalError(f"the device announced unusable PIN parameters ({e})") from None
        prover = spake2p.Prover(w0, w1, ctx)
        await self._send(P.M_SHARE_P, prover.share)
        got = await self._reply(P.M_SHARE_V)
        try:
            confirm_p = prover.finish(got)
        except ValueError:
            confirm_p = None
        if confirm_p is None:
            # The device's confirmation did not match: the PIN is wrong.  It counted the attempt
            # when it answered; ours is not sent (nothing to confirm).
            await self._radio.disconnect()
            self._gone()
            n = fails + 1
            raise WrongPin(P.attempts_left(n), P.lock_wait_s(n) or 0)
        await self._send(P.M_CONFIRM_P, confirm_p)
        await self._reply(P.M_READY)
        self._chan = Channel(prover.key, False)
        self._msgs = None
