"""Shared fixtures: real mosquitto, virtual devices (real MicroPython behind a real pty), and
a guard that fails a test when any output it captured contains a secret."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safesignal.mosquitto import Mosquitto as RealMosquitto
from safesignal.mosquitto import find_mosquitto
from safesignal.nvs import NvsPartition, derive_hmac_keys, parse_partition
from safesignal.session import DeviceSession
from safesignal.sim import efuse as sim_efuse
from safesignal.sim.control import SimControl

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware" / "esp32-button"
SCRIPTS = FIRMWARE / "scripts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(what: str, how: str) -> None:
    """A missing resource fails in CI and skips (with the command that provides it) elsewhere."""
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: {how}")
    pytest.skip(f"{what} is missing: {how}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def flash_partition(flash: Path, strict: bool = False) -> NvsPartition:
    """A virtual device's NVS as its chip reads it (decrypted with the keys its eFuses give)."""
    fuse = sim_efuse.default_path(flash)
    keys = derive_hmac_keys(sim_efuse.load(fuse).hmac_key) if fuse.exists() else None
    return parse_partition(flash.read_bytes(), strict=strict, keys=keys)


class SecretGuard:
    """Secrets a test used; at the end none may appear in any output, file or raw flash image."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.outputs: list[tuple[str, str]] = []
        self.files: list[Path] = []
        self.binaries: list[Path] = []  # raw images (the virtual flash): searched byte for byte

    def secret(self, value: str) -> str:
        self.secrets.append(value)
        return value

    def output(self, name: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        self.outputs.append((name, text))

    def check(self) -> None:
        outs = list(self.outputs)
        for f in self.files:
            if f.exists():
                outs.append((str(f), f.read_text(encoding="utf-8", errors="replace")))
        for name, text in outs:
            for s in self.secrets:
                assert s not in text, f"a secret appeared in {name}"
        for f in self.binaries:
            if f.exists():
                raw = f.read_bytes()
                for s in self.secrets:
                    assert s.encode() not in raw, f"a secret appeared in the raw image {f}"


@pytest.fixture
def guard() -> Iterator[SecretGuard]:
    g = SecretGuard()
    yield g
    g.check()


class Sim:
    """One `safesignal sim` process: the CLI contract, driven the way a user or script would."""

    def __init__(self, tmp: Path, guard: SecretGuard, name: str = "dev", aps: list[tuple[str, str]] | None = None,
                 air: Path | None = None, flash: Path | None = None, mac: str | None = None,
                 usb_cdc: bool = False, hosts: dict[str, str] | None = None, heap: str | None = None,
                 mpy: bool = False) -> None:
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
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self._out.write(line)
        self._out.flush()
        if not line.startswith(b"ready "):
            self.stop()
            raise AssertionError(f"sim did not start: {line!r} {self.stderr_path.read_text()}")
        self.ready_line = line.decode().strip()
        self.control = SimControl(self.control_path)

    def partition(self, strict: bool = False) -> NvsPartition:
        return flash_partition(self.flash, strict)

    def session(self, timeout: float = 10.0) -> DeviceSession:
        return DeviceSession(self.port, timeout=timeout)

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


@pytest.fixture(scope="session")
def site_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """The site's edge broker for tests that do not look at MQTT: every virtual device resolves
    its default broker name, safesignal-edge.local, to it, so the connect test passes."""
    m = Mosquitto(tmp_path_factory.mktemp("site-broker"))
    yield m
    m.stop()


@pytest.fixture
def make_sim(tmp_path: Path, guard: SecretGuard, site_broker: Mosquitto) -> Iterator[object]:
    sims: list[Sim] = []

    def make(**kw: object) -> Sim:
        kw.setdefault("hosts", site_broker.hosts)
        s = Sim(tmp_path, guard, **kw)  # type: ignore[arg-type]
        sims.append(s)
        return s

    yield make
    for s in sims:
        s.stop()


class Mosquitto(RealMosquitto):
    """safesignal.mosquitto.Mosquitto, started; missing mosquitto skips (fails in CI)."""

    def __init__(self, tmp: Path) -> None:
        if find_mosquitto() is None:
            need("mosquitto", "apt-get install mosquitto")
        super().__init__(tmp / "mosquitto")
        self.start()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    m = Mosquitto(tmp_path)
    yield m
    m.stop()
