"""The default BLE backend, bleak on the operating system's Bluetooth (BlueZ), end to end.

Every other BLE test reaches the virtual air with --ble-transport (bumble).  An installer's
laptop has no such spec: `safesignal provision --ble` then goes through bleak to BlueZ.  Here
that whole stack runs for real in a Linux VM (tests/support/bluez_vm.py): bleak, D-Bus,
bluetoothd, the kernel's HCI core and a vhci controller on the virtual device's air.  The device
is the real firmware under `safesignal sim --ble` on this machine, with a real mosquitto for its
connect test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safesignal.tools import stop_process
from support.broker import Mosquitto
from support.cli import run_cli
from support.env import REPO, need_module
from support.guard import SecretGuard
from support.sim import Sim

need_module("bumble", "pip install -e '.[test]'")

# QEMU without KVM takes a whole core for minutes: test.sh runs these after the rest, alone, so
# that they do not starve the timing of the virtual devices' tests beside them.
pytestmark = pytest.mark.bluez_vm

from support.bluez_vm import BluezVm, need_vm  # noqa: E402 - after the module check
from test_ble_e2e import PIN, SSID, pin_step  # noqa: E402

DEVICE = ["--wifi-ssid", SSID, "--device-id", "esp32-bluez-01", "--tenant", "tenant-a", "--building", "main",
          "--room", "room-7"]


def test_bleak_on_bluez_scans_refuses_a_wrong_pin_and_provisions(make_sim, guard: SecretGuard,
                                                                  mosquitto: Mosquitto, tmp_path: Path) -> None:
    """In the VM, as an installer types them: `ble scan --json` finds the button; a wrong PIN is
    refused with exit 11 and the attempts left; `provision --ble` (the PIN and the WiFi password
    from the environment) stages, connect-tests, saves, reconnects after the reboot and reads
    back; then a scan finds nothing (Bluetooth off)."""
    need_vm()
    pw = guard.secret("bluez-wifi-pass-5")
    guard.secret(PIN)
    sim: Sim = make_sim(aps=[(SSID, pw)], hosts=mosquitto.hosts, ble=True)
    pin_step(guard, sim)
    assert sim.ble_spec and sim.ble_spec.startswith("tcp-client:127.0.0.1:")
    vm = BluezVm(tmp_path / "vm")
    steps = [("scan", ["ble", "scan", "--duration", "6", "--json"]),
             ("wrong", ["provision", "--ble", "--pin", "000000", *DEVICE]),
             ("provision", ["provision", "--ble", *DEVICE]),
             ("after", ["ble", "scan", "--duration", "6", "--json"])]
    try:
        got = vm.run(int(sim.ble_spec.rsplit(":", 1)[1]), steps, (pw, PIN))
    finally:
        for name, text in vm.outputs().items():
            guard.output(f"BlueZ VM {name}", text)
    why = vm.diagnostics()
    assert "adapter up after" in vm.read("guest.log"), why
    assert got["scan"].rc == 0, got["scan"].err + why
    found = json.loads(got["scan"].out)
    assert len(found) == 1 and found[0]["name"].startswith("SafeSignal-") and found[0]["provisioned"] is False, found
    name, address = found[0]["name"], found[0]["address"]

    assert got["wrong"].rc == 11, got["wrong"].out + got["wrong"].err + why
    assert "wrong PIN: 19 attempts left before the device locks" in got["wrong"].err

    p = got["provision"]
    assert p.rc == 0, p.out + p.err + why
    assert f"Port: {name} ({address})" in p.out
    assert "PIN accepted, session encrypted (ATT MTU 247)" in p.out  # BlueZ exchanged it; bleak read it
    for line in ("→ Sending: provision_set_wifi SafeSignal-Edge ********", "✓ Provisioning complete!",
                 "Bluetooth off on the device (until a long press at power-on)"):
        assert line in p.out, p.out
    assert "Warning" not in p.err, p.err  # bleak's MTU warning, for one

    assert got["after"].rc == 0 and json.loads(got["after"].out) == [], got["after"].out + got["after"].err
    st = json.loads(run_cli(guard, "status", "--port", sim.port, "--json").stdout)
    assert (st["provisioned"], st["device_id"], st["room"], st["wifi_ssid"]) == (True, "esp32-bluez-01", "room-7",
                                                                                 SSID)


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from support.bluez_vm import BluezVm
vm = BluezVm(Path({out!r}))
vm.start(9, [("idle", ["--version"])], ("x", "000000"))
print(vm.proc.pid, flush=True)
time.sleep(600)
"""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_a_killed_test_process_leaves_no_vm(tmp_path: Path) -> None:
    """The VM (vng, virtme-run, qemu: one process group) ends with the test process that started
    it, even when that process is killed and runs no teardown."""
    need_vm()
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(REPO / "tests"), out=str(tmp_path / "vm"))],
                             stdout=subprocess.PIPE, cwd=REPO)
    pgid = 0
    try:
        assert child.stdout is not None
        pgid = int(child.stdout.readline())
        deadline = time.monotonic() + 60
        while b"qemu-system" not in b"".join(_cmdlines(pgid)):
            assert time.monotonic() < deadline, "qemu did not start"
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 15
        while _group_alive(pgid):
            assert time.monotonic() < deadline, [c.decode(errors="replace") for c in _cmdlines(pgid)]
            time.sleep(0.2)
    finally:
        stop_process(child, 5, signal.SIGKILL)
        if pgid and _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


def _cmdlines(pgid: int) -> list[bytes]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                out.append(f.read().replace(b"\0", b" "))
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return out
