"""Provisioning cost on the virtual device: serial bytes, wire time at 115200 baud, wall time.

Method (also in bench/README.md): start one `safesignal sim` (blank flash) and an embedded
broker; provision it RUNS times with the library (port open -> sync -> stage -> complete ->
reboot -> read back -> password check), each run with different values, counting every byte
written to and read from the port, and the console round trips (lines the host wrote, each answered by one status
line; the ping barrier's pings count).  Wire time = bytes x 10 bits / 115200 (8N1).  Prints one
JSON object.  Wall times include the virtual device's reboot (a new MicroPython process).

    .venv/bin/python bench/provision.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import serial

from safesignal.alerts.broker import EmbeddedBroker
from safesignal.link.serial import open_port
from safesignal.link.session import DeviceSession
from safesignal.provisioning.flow import ProvisionRequest, provision
from safesignal.tools import die_with_parent


class Counting:
    """Wraps a pyserial port and counts bytes each way."""

    def __init__(self, ser: serial.SerialBase) -> None:
        self._ser = ser
        self.tx = 0
        self.rx = 0
        self.commands: list[str] = []  # the first word of every line written: one round trip each

    def write(self, data: bytes) -> int | None:
        self.tx += len(data)
        for line in data.split(b"\r\n"):
            if line.startswith(b"@"):  # a checked line "@LEN:CRC command …" (ssproto.checked_lines)
                line = line.partition(b" ")[2]
            elif line.startswith(b"+"):  # a further piece of a long checked line: one more round trip
                line = b"(piece)"
            if line.strip():
                self.commands.append(line.split()[0].decode(errors="replace"))
        return self._ser.write(data)

    def read(self, n: int = 1) -> bytes:
        d = self._ser.read(n)
        self.rx += len(d)
        return d

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ser, name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    walls: list[float] = []
    txs: list[int] = []
    rxs: list[int] = []
    trips: list[int] = []
    statuses: list[int] = []
    kinds: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as d, EmbeddedBroker() as broker:
        port = str(Path(d) / "tty")
        pw = "bench-wifi-pass"
        sim = subprocess.Popen([sys.executable, "-m", "safesignal", "sim", "--port-link", port,
                                "--flash", str(Path(d) / "flash.bin"), "--ap", "Bench-Net", pw],
                               stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent(signal.SIGTERM))
        try:
            assert sim.stdout is not None and sim.stdout.readline().startswith("ready ")
            for i in range(args.runs):
                req = ProvisionRequest("Bench-Net", pw, f"esp32-bench-{i:03d}", "tenant-a", "building-a",
                                       f"room-{i}", broker.uri)
                t0 = time.perf_counter()
                ser = Counting(open_port(port))
                with DeviceSession(port, ser=ser) as s:  # type: ignore[arg-type]
                    provision(s, req)
                walls.append(time.perf_counter() - t0)
                txs.append(ser.tx)
                rxs.append(ser.rx)
                trips.append(len(ser.commands))
                statuses.append(ser.commands.count("provision_status"))
                kinds = {c: ser.commands.count(c) for c in sorted(set(ser.commands))}
        finally:
            sim.terminate()
            sim.wait(10)
    per = [t + r for t, r in zip(txs, rxs, strict=True)]
    print(json.dumps({
        "benchmark": "provision_serial",
        "runs": args.runs,
        "bytes_host_to_device_median": statistics.median(txs),
        "bytes_device_to_host_median": statistics.median(rxs),
        "bytes_total_median": statistics.median(per),
        "round_trips_median": statistics.median(trips),
        "provision_status_median": statistics.median(statuses),
        "commands_last_run": kinds,
        "wire_time_115200_s_median": round(statistics.median(per) * 10 / 115200, 4),
        "wall_open_to_verified_s_median": round(statistics.median(walls), 4),
        "wall_open_to_verified_s_max": round(max(walls), 4),
        "note": "virtual device on this machine; a real ESP32-S3 reboot adds about 1-2 s",
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
