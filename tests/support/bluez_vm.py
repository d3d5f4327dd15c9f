"""A Linux virtual machine with BlueZ, for the tests of the default BLE backend (bleak).

bleak talks to BlueZ's bluetoothd over D-Bus, and bluetoothd to the kernel's Bluetooth
subsystem.  A container's kernel has none (no AF_BLUETOOTH, no /dev/vhci), so the tests boot
Debian's own kernel under QEMU with virtme-ng: the guest sees this machine's files (read-only,
apart from the run's output directory), loads hci_vhci, starts D-Bus and bluetoothd, and gets a
controller on the virtual device's air through tests/support/vhci_bridge.py.  Then
tests/support/bluez_guest.sh runs `safesignal` commands in it as an installer would, with no
--ble-transport: bleak → D-Bus → bluetoothd → kernel → hci_vhci → the air → the virtual
device.

QEMU runs without KVM (TCG): on this machine KVM refuses the guest's CPU (a nested MSR), and
TCG works everywhere, slower (about 20 s to boot; a BLE provisioning about a minute).

Everything the run starts is in one process group (vng → virtme-run → qemu); a watcher kills
that group when the test process is gone, even when it was killed and no teardown ran.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .env import REPO, need, need_program

GUEST = REPO / "tests" / "support" / "bluez_guest.sh"
BLUETOOTHD = Path("/usr/libexec/bluetooth/bluetoothd")


def _version_key(p: Path) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", p.name)]


def find_kernel() -> Path | None:
    """The newest Debian kernel image in /boot (linux-image-amd64)."""
    images = sorted(Path("/boot").glob("vmlinuz-*"), key=_version_key)
    return images[-1] if images else None


def need_vm() -> tuple[Path, Path]:
    """(vng, the kernel image), or the test fails in CI / skips elsewhere with what to install."""
    for prog, how in (("qemu-system-x86_64", "apt-get install qemu-system-x86"),
                      ("busybox", "apt-get install busybox-static"),
                      ("btmgmt", "apt-get install bluez"), ("dbus-daemon", "apt-get install dbus")):
        need_program(prog, how)
    if not BLUETOOTHD.exists():
        need("BlueZ's bluetoothd", "apt-get install bluez")
    kernel = find_kernel()
    if kernel is None:
        need("a Linux kernel image in /boot", "apt-get install linux-image-amd64")
    vng = REPO / ".venv" / "bin" / "vng"
    if not vng.exists():
        need("virtme-ng (vng)", "pip install -e '.[test]'")
    assert kernel is not None
    return vng, kernel


@dataclass
class Step:
    rc: int | None  # None: the step never ended (the VM stopped first)
    out: str
    err: str


class BluezVm:
    """One VM run: ``run`` boots it, runs the steps in order and powers it off."""

    def __init__(self, out: Path) -> None:
        self.vng, self.kernel = need_vm()
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.console = out / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.watcher: subprocess.Popen[bytes] | None = None

    def start(self, air_port: int, steps: list[tuple[str, list[str]]], secrets: tuple[str, str]) -> None:
        """Boot the guest and start the steps (``safesignal`` argument lists, each named);
        ``secrets`` (the WiFi password, the PIN) go to the guest on its stdin."""
        for name, args in steps:
            assert re.fullmatch(r"[a-z0-9-]+", name) and all(" " not in a and a for a in args), (name, args)
        guest = [str(GUEST), str(self.out), str(air_port), *(f"{name}={' '.join(args)}" for name, args in steps)]
        cmd = [str(self.vng), "--run", str(self.kernel), "--disable-microvm", "--disable-kvm", "--network", "user",
               "--memory", "1G", "--rwdir", str(self.out), "--exec", shlex.join(guest)]
        env = {**os.environ, "PATH": f"{self.vng.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        with open(self.console, "wb") as console:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=console, stderr=subprocess.STDOUT,
                                         env=env, cwd=self.out, start_new_session=True)
        # The group ends with this process (a killed test runs no teardown) or by itself.
        group = self.proc.pid
        watch = (f"while kill -0 {os.getpid()} 2>/dev/null && kill -0 -{group} 2>/dev/null; do sleep 1; done; "
                 f"kill -KILL -{group} 2>/dev/null")
        self.watcher = subprocess.Popen(["sh", "-c", watch], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{secrets[0]}\n{secrets[1]}\n".encode())
        self.proc.stdin.close()

    def wait(self, timeout: float) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        finally:
            self.stop()

    def stop(self) -> None:
        """Kill whatever of the VM still runs, and the watcher."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self.watcher is not None:
            try:
                self.watcher.wait(5)
            except subprocess.TimeoutExpired:
                self.watcher.kill()
                self.watcher.wait()

    def run(self, air_port: int, steps: list[tuple[str, list[str]]], secrets: tuple[str, str],
            timeout: float = 900.0) -> dict[str, Step]:
        """Boot, run the steps, power off; each step's exit code and output."""
        self.start(air_port, steps, secrets)
        self.wait(timeout)
        return {name: self.step(name) for name, _ in steps}

    def step(self, name: str) -> Step:
        rc = self.out / f"{name}.rc"
        return Step(int(rc.read_text()) if rc.exists() else None, self.read(f"{name}.out"), self.read(f"{name}.err"))

    def read(self, name: str) -> str:
        p = self.out / name
        return p.read_text(errors="replace") if p.exists() else ""

    def outputs(self) -> dict[str, str]:
        """Every file the run wrote (the console included): for the secret checks."""
        return {p.name: p.read_text(errors="replace") for p in sorted(self.out.iterdir()) if p.is_file()}

    def diagnostics(self) -> str:
        return "\n".join(f"--- {n}\n{self.read(n)[-3000:]}" for n in ("guest.log", "bluetoothd.log", "bridge.log")) \
            + f"\n--- console\n{self.read('console.log').replace(chr(0), '')[-3000:]}"
