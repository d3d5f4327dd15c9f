"""Blank device to confirmed test alert: the wall time of an installation, on the virtual device.

Method (also in bench/README.md): a real mosquitto on a loopback address of its own, port 1883,
and an AlertReceiver subscribed to the tenant's topics before anything else.  Each of RUNS runs
starts a new `safesignal sim` with a new, blank flash file (the site's DNS resolves the device's
default broker name, safesignal-edge.local, to the mosquitto) and then, timed from opening the
serial port: provision with the library (sync, stage, provision_complete with the device's own
connect test: WiFi join and broker CONNECT, commit, reboot, read back, password check), and wait
for the device's test alert (seq 0) at the subscriber.  Each run has its own device id.  With
--mpy the firmware runs compiled by mpy-cross, as deployed.  Prints one JSON object; asserts no
time.

    .venv/bin/python bench/blank_to_alert.py [--runs 5] [--mpy]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from alerts import BenchError, VirtualDevice, mosquitto_exe  # bench/alerts.py

import ssproto.msg as msg
from safesignal.alerts.mosquitto import Mosquitto
from safesignal.alerts.receiver import AlertReceiver
from safesignal.errors import SafeSignalError
from safesignal.link.session import DeviceSession
from safesignal.provisioning.flow import ProvisionEvents, ProvisionRequest, provision

SSID, WIFI_PASS = "Bench-Net", "bench-wifi-pass"
TENANT, BUILDING = "bench-blank", "hq"


class Marks(ProvisionEvents):
    """Host times of the provisioning steps that split the total."""

    def __init__(self) -> None:
        self.complete_sent: float | None = None
        self.committed_at: float | None = None

    def sending(self, display: str) -> None:
        if display.startswith("provision_complete"):
            self.complete_sent = time.time()

    def committed(self) -> None:
        self.committed_at = time.time()


def one_run(workdir: Path, broker: Mosquitto, rx: AlertReceiver, i: int, mpy: bool) -> dict[str, float]:
    t_spawn = time.time()
    dev = VirtualDevice(workdir, broker.host, mpy)  # a new process and a blank flash file
    try:
        device = f"bench-blank-{i:03d}"
        marks = Marks()
        t_open = time.time()
        with DeviceSession(dev.port, timeout=15) as s:
            provision(s, ProvisionRequest(SSID, WIFI_PASS, device, TENANT, BUILDING, f"room-{i}"), marks)
        t_prov = time.time()
        alert = rx.wait_alert(device, type="test", timeout=60)
        if alert is None:
            raise BenchError(f"run {i}: no test alert from {device} within 60 s of provisioning")
        if alert.seq != 0:
            raise BenchError(f"run {i}: the first test alert has seq {alert.seq}, not 0 (was the flash blank?)")
        assert marks.complete_sent is not None and marks.committed_at is not None
        return {
            "sim_start_to_ready": dev.ready_at - t_spawn,
            "total": alert.received_at - t_open,
            "open_to_provisioned": t_prov - t_open,
            "provisioned_to_alert": alert.received_at - t_prov,
            "open_to_complete_sent": marks.complete_sent - t_open,
            "connect_test": marks.committed_at - marks.complete_sent,
            "committed_to_provisioned": t_prov - marks.committed_at,
            "committed_to_alert": alert.received_at - marks.committed_at,
        }
    finally:
        dev.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mpy", action="store_true", help="run the firmware compiled to .mpy (default: source)")
    args = ap.parse_args()
    try:
        mosquitto_exe()
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="ss-bench-") as d:
        broker = Mosquitto(Path(d) / "mosquitto")
        rx: AlertReceiver | None = None
        try:
            broker.start()
            rx = AlertReceiver(broker.uri, msg.subscription(TENANT))
            rx.start()
            for i in range(args.runs):
                runs.append(one_run(Path(d) / f"run-{i}", broker, rx, i, args.mpy))
        except (BenchError, SafeSignalError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            if rx is not None:
                rx.stop()
            broker.stop()

    def fig(key: str) -> dict[str, float]:
        vals = [r[key] for r in runs]
        return {"median": round(statistics.median(vals), 3), "max": round(max(vals), 3)}

    print(json.dumps({
        "benchmark": "blank_to_alert",
        "firmware": "mpy" if args.mpy else "source",
        "runs": args.runs,
        "test_alerts_received": len(runs),
        "total_port_open_to_test_alert_s": fig("total"),
        "port_open_to_provision_returned_s": fig("open_to_provisioned"),
        "provision_returned_to_test_alert_s": fig("provisioned_to_alert"),
        "split_s": {
            "port_open_to_provision_complete_sent": fig("open_to_complete_sent"),
            "connect_test_on_device": fig("connect_test"),
            "committed_to_provision_returned": fig("committed_to_provisioned"),
            "committed_to_test_alert": fig("committed_to_alert"),
        },
        "sim_start_to_ready_s": fig("sim_start_to_ready"),
        "note": ("virtual device on this machine: its WiFi join is the sim's model (300 ms), the broker is on "
                 "loopback and its reboot is a new MicroPython process; a real ESP32-S3 adds about 1-2 s for the "
                 "reboot after the commit, and real WiFi join/DHCP time twice (connect test, then after the reboot)"),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
