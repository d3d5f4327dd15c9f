"""A virtual device (``safesignal sim``) as tests drive it, and what tests read from it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from safesignal.link.session import DeviceSession
from safesignal.nvs.format import NvsPartition, derive_hmac_keys, parse_partition
from safesignal.sim import efuse as sim_efuse
from safesignal.sim.control import SimControl
from safesignal.tools import die_with_parent, stop_process

from .env import REPO
from .guard import SecretGuard

# The seed guide's boot log of a provisioned device (PROVISIONING.md, "Step 3").
SEED_BOOT_LOG = [
    "[PROVISION] Provisioning system initialized",
    "[WIFI] Loading credentials from NVS...",
    "[WIFI] Credentials loaded: SSID='SafeSignal-Edge'",
    "[WIFI] Connecting to 'SafeSignal-Edge'...",
    "[WIFI] Connected to AP",
    "[WIFI] Got IP address: 192.168.1.50",
    "[MQTT] Connecting to broker...",
    "[MQTT] Connected to broker",
]


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s: how every test stops a `safesignal sim`."""
    stop_process(proc)


def flash_partition(flash: Path, strict: bool = False) -> NvsPartition:
    """A virtual device's NVS as its chip reads it (decrypted with the keys its eFuses give)."""
    fuse = sim_efuse.default_path(flash)
    keys = derive_hmac_keys(sim_efuse.load(fuse).hmac_key) if fuse.exists() else None
    return parse_partition(flash.read_bytes(), strict=strict, keys=keys)


class Sim:
    """One `safesignal sim` process: the CLI contract, driven the way a user or script would."""

    def __init__(self, tmp: Path, guard: SecretGuard, name: str = "dev", aps: list[tuple[str, str]] | None = None,
                 air: Path | None = None, flash: Path | None = None, mac: str | None = None,
                 usb_cdc: bool = False, hosts: dict[str, str] | None = None, heap: str | None = None,
                 mpy: bool = False, ble: bool = False, ble_air: str | None = None, pin: str | None = None) -> None:
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = str(self.dir / "ttySIM0")
        self.flash = flash or self.dir / "flash.bin"
        self.control_path = self.dir / "ctl"
        self.stdout_path = self.dir / "sim.stdout"
        self.stderr_path = self.dir / "sim.stderr"
        guard.files += [self.stdout_path, self.stderr_path]
        guard.binaries.append(self.flash)  # NVS encryption: no secret in a raw flash dump
        self.guard = guard
        cmd = [sys.executable, "-m", "safesignal", "sim", "--port-link", self.port, "--flash", str(self.flash),
               "--control", str(self.control_path)]
        for ssid, pw in aps or []:
            cmd += ["--ap", ssid, pw]
        if air is not None:
            cmd += ["--air", str(air)]
        if mac is not None:
            cmd += ["--mac", mac]
        if usb_cdc:
            cmd += ["--usb-cdc"]
        for name, addr in (hosts or {}).items():
            cmd += ["--host", f"{name}={addr}"]
        if heap is not None:
            cmd += ["--heap", heap]
        if mpy:
            cmd += ["--mpy"]
        if ble:
            cmd += ["--ble"]
        if ble_air is not None:
            cmd += ["--ble-air", ble_air]
        if pin is not None:
            cmd += ["--pin", pin]
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, cwd=REPO,
                                     preexec_fn=die_with_parent(signal.SIGTERM))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self._out.write(line)
        self._out.flush()
        if not line.startswith(b"ready "):
            self.stop()
            raise AssertionError(f"sim did not start: {line!r} {self.stderr_path.read_text()}")
        self.ready_line = line.decode().strip()
        # the BLE air's transport spec (`ble=SPEC` on the ready line), with --ble / --ble-air
        self.ble_spec = next((w[4:] for w in self.ready_line.split() if w.startswith("ble=")), None)
        self.control = SimControl(self.control_path)

    def partition(self, strict: bool = False) -> NvsPartition:
        return flash_partition(self.flash, strict)

    def session(self, timeout: float = 10.0) -> DeviceSession:
        return DeviceSession(self.port, timeout=timeout)

    def booted_flash(self) -> bytes:
        """The flash image once the device has booted and answers its console.  Its boot opens
        its NVS namespaces, and nvs_open writes a new namespace's entry (as on a chip), so a
        blank chip's image is compared from here on, not from before the first boot."""
        with self.session() as s:
            s.sync()
        return self.flash.read_bytes()

    def wait_boot(self, after: int, timeout: float = 15.0) -> None:
        """Wait until the device has booted again since state()["boots"] was ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.control.state()
            if st["boots"] > after and st["running"]:
                return
            time.sleep(0.02)
        raise AssertionError("device did not reboot")

    def stop(self) -> int:
        if self._out.closed:
            return self.proc.returncode
        terminate(self.proc)
        if self.proc.stdout is not None:
            self._out.write(self.proc.stdout.read())
        self._out.close()
        self._err.close()
        return self.proc.returncode
