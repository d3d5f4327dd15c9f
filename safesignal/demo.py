"""The main job, end to end: a blank virtual button provisioned over a real pty by the seed
guide's own command, its test alert confirmed at the broker, its boot log through
"[MQTT] Connected to broker", and a press of its panic button seen by the monitor.

    python -m safesignal.demo [--keep DIR]

Runs: an embedded MQTT broker on 127.0.0.1 -> `safesignal sim` (the real firmware under the
MicroPython interpreter) -> `scripts/provision_device.py` with the seed's flags (+ --mqtt-uri,
--verify) -> `safesignal console --reboot` until the MQTT line -> `safesignal monitor` while
`safesignal sim press` presses the button.  Everything is cleaned up afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from .broker import EmbeddedBroker
from .sim.supervisor import DEFAULT_FIRMWARE

# The seed guide's example values (PROVISIONING.md, Step 2).  The password is the guide's
# placeholder and is never printed.
SSID = "SafeSignal-Edge"
PASSWORD = "your-wifi-password"


def say(text: str) -> None:
    print(text, flush=True)


def shown(cmd: list[str]) -> str:
    return " ".join("********" if c == PASSWORD else shlex.quote(c) for c in cmd)


def run(work: Path) -> int:
    py = sys.executable
    port = str(work / "ttySIM0")
    flash = work / "flash.bin"
    with EmbeddedBroker() as broker:
        say(f"== Embedded MQTT broker (amqtt) listening on {broker.uri}")
        # The access point goes in an air file only we can read, not on the command line
        # (any local user can read a process's arguments).
        air = work / "air.json"
        fd = os.open(air, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"access_points": [{"ssid": SSID, "passphrase": PASSWORD}]}, f)
        control = work / "ttySIM0.ctl"
        sim_cmd = [py, "-m", "safesignal", "sim", "--port-link", port, "--flash", str(flash), "--air", str(air),
                   "--control", str(control)]
        say(f"== Starting a blank virtual SafeSignal button: {shown(sim_cmd)}")
        sim = subprocess.Popen(sim_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert sim.stdout is not None
            ready = sim.stdout.readline().strip()
            if not ready.startswith("ready "):
                say(f"✗ virtual device did not start: {ready} {sim.stderr.read() if sim.stderr else ''}")
                return 1
            say(f"   {ready}")
            say("")
            prov = [py, "scripts/provision_device.py", "--port", port, "--wifi-ssid", SSID, "--wifi-pass", PASSWORD,
                    "--device-id", "esp32-prod-001", "--tenant", "tenant-a", "--building", "building-a",
                    "--room", "room-1", "--mqtt-uri", broker.uri, "--verify"]
            say(f"== Step 2 of the guide, from {DEFAULT_FIRMWARE.relative_to(DEFAULT_FIRMWARE.parents[1])}:")
            say(f"   $ {shown(prov)}")
            say("")
            rc = subprocess.run(prov, cwd=DEFAULT_FIRMWARE).returncode
            if rc != 0:
                return rc
            say("")
            mon = [py, "-m", "safesignal", "console", "--port", port, "--reboot",
                   "--until", r"^\[MQTT\] Connected to broker$", "--duration", "60"]
            say("== Step 3 of the guide (verify): the device's boot log")
            say(f"   $ {shown(mon)}")
            say("")
            rc = subprocess.run(mon).returncode
            if rc != 0:
                return rc
            say("")
            monitor = [py, "-m", "safesignal", "monitor", "--broker", broker.uri, "--tenant", "tenant-a",
                       "--duration", "6"]
            press = [py, "-m", "safesignal", "sim", "press", "--control", str(control)]
            say("== The panic button: the monitor shows the alert (QoS 1, stored in flash until acknowledged)")
            say(f"   $ {shown(monitor)} &")
            say(f"   $ {shown(press)}")
            say("")
            mon_proc = subprocess.Popen(monitor, stdout=subprocess.PIPE, text=True)
            assert mon_proc.stdout is not None
            lines = []
            try:
                lines.append(mon_proc.stdout.readline())  # the header comes once it has subscribed
                say(lines[0].rstrip("\n"))
                subprocess.run(press, stdout=subprocess.DEVNULL, check=True)
                for line in mon_proc.stdout:
                    lines.append(line)
                    say(line.rstrip("\n"))
            finally:
                rc = mon_proc.wait(30)
            if rc != 0:
                return rc
            if not any(" PANIC " in ln and "esp32-prod-001" in ln for ln in lines):
                say("✗ the monitor did not see the panic alert")
                return 1
            say("")
            say("== Done: provisioned over the serial console (connect test first), test alert confirmed,")
            say("   rebooted into WiFi and MQTT, and a panic alert delivered.")
            return 0
        finally:
            sim.terminate()
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m safesignal.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="keep the virtual device's files in this directory")
    args = ap.parse_args(argv)
    if args.keep:
        d = Path(args.keep)
        d.mkdir(parents=True, exist_ok=True)
        return run(d)
    with tempfile.TemporaryDirectory(prefix="safesignal-demo-") as tmp:
        return run(Path(tmp))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
