"""The main job, end to end: a blank virtual button provisioned over a real pty by the seed
guide's own command, its test alert confirmed at the broker, its boot log through
"[MQTT] Connected to broker", and a press of its panic button seen by the monitor.

    python -m safesignal.demo [--keep DIR]

Runs: an embedded MQTT broker on 127.0.0.1 -> `safesignal sim` (the real firmware under the
MicroPython interpreter) -> `scripts/provision_device.py` with the seed's flags (+ --mqtt-uri,
--verify) -> `safesignal console --reboot` until the MQTT line -> `safesignal monitor` while
`safesignal sim press` presses the button.  Then, where mosquitto is installed, production
style: `safesignal ca init` / `ca operator`, mosquitto with the shipped mutual-TLS configuration,
`safesignal provision --mqtt-uri mqtts://… --ca DIR --verify` (the device makes its own key), and
`safesignal nvs dump` of the raw flash.  Everything is cleaned up afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from safesignal import extras
from safesignal.tools import die_with_parent

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware" / "esp32-button"  # the sim's DEFAULT_FIRMWARE

# The seed guide's example values (PROVISIONING.md, Step 2).  The password is the guide's
# placeholder and is never printed.
SSID = "SafeSignal-Edge"
PASSWORD = "your-wifi-password"


def say(text: str) -> None:
    print(text, flush=True)


def shown(cmd: list[str]) -> str:
    return " ".join("********" if c == PASSWORD else shlex.quote(c) for c in cmd)


def run(work: Path) -> int:
    from safesignal.alerts.broker import EmbeddedBroker

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
        sim = subprocess.Popen(sim_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=die_with_parent(signal.SIGTERM))
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
            say(f"== Step 2 of the guide, from {FIRMWARE.relative_to(FIRMWARE.parents[1])}:")
            say(f"   $ {shown(prov)}")
            say("")
            rc = subprocess.run(prov, cwd=FIRMWARE).returncode
            if rc != 0:
                return rc
            say("")
            mon = [py, "-m", "safesignal", "console", "--port", port, "--reboot",
                   "--until", r"^\[MQTT\] Connected to broker$", "--duration", "60"]
            say("== Step 3 of the guide (verify): the device's boot log")
            say(f"   $ {shown(mon)}")
            say("")
            rc = subprocess.run(mon, stdin=subprocess.DEVNULL).returncode  # watch only: no keyboard
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
            mon_proc = subprocess.Popen(monitor, stdout=subprocess.PIPE, text=True,
                                        preexec_fn=die_with_parent(signal.SIGTERM))
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
            rc = production(work, port, flash, air)
            if rc not in (0, SKIPPED):
                return rc
            say("")
            say("== Done: provisioned over the serial console (connect test first), test alert confirmed,")
            if rc == SKIPPED:
                say("   rebooted into WiFi and MQTT, a panic alert delivered. The mutual-TLS part was skipped")
                say("   (no mosquitto: apt-get install mosquitto, then run the demo again).")
            else:
                say("   rebooted into WiFi and MQTT, a panic alert delivered; then re-provisioned for mutual TLS")
                say("   with a key made on the device, and its flash shown unreadable without the chip.")
            return 0
        finally:
            sim.terminate()
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()


SKIPPED = -1  # production(): not run (no mosquitto)


def production(work: Path, port: str, flash: Path, air: Path) -> int:
    """The same device, production-style: a tenant CA, the shipped mutual-TLS mosquitto
    configuration, a key pair made on the device and a certificate for it; then the flash as a
    thief would read it.  Needs the mosquitto binary (not pip-installable): without it, returns
    :data:`SKIPPED`."""
    from safesignal.alerts.mosquitto import Mosquitto, find_mosquitto
    from safesignal.pki import ca

    py = sys.executable
    if find_mosquitto() is None:
        say("== Skipping the production part (tenant CA, mutual TLS): mosquitto is not installed")
        say("   (apt-get install mosquitto; the tests always run it)")
        return SKIPPED
    say("== Production: tenant CA, mutual TLS with the shipped mosquitto configuration, key made on the device")
    passphrase = secrets.token_urlsafe(18)  # handed to the tools in the environment, never shown
    env = {**os.environ, "SAFESIGNAL_CA_PASS": passphrase}
    ca_dir = work / "tenant-ca"
    init = [py, "-m", "safesignal", "ca", "init", "--dir", str(ca_dir), "--tenant", "tenant-a"]
    say(f"   $ {shown(init)}")
    if subprocess.run(init, env=env).returncode != 0:
        return 1
    op = [py, "-m", "safesignal", "ca", "operator", "--dir", str(ca_dir), "--name", "demo"]
    say(f"   $ {shown(op)}")
    if subprocess.run(op, env=env).returncode != 0:
        return 1
    tenant_ca = ca.open(ca_dir).unlock(passphrase)
    broker = Mosquitto.mtls(work / "mtls-broker", tenant_ca)
    tenant_ca.lock()
    broker.start()
    try:
        say(f"== mosquitto with require_certificate, identity from the certificate, per-device ACL: {broker.uri}")
        # The site's name service now points the device's broker name at it.
        data = json.loads(air.read_text())
        data["hosts"] = broker.hosts
        air.write_text(json.dumps(data))
        prov = [py, "-m", "safesignal", "provision", "--port", port, "--wifi-ssid", SSID, "--wifi-pass", PASSWORD,
                "--device-id", "esp32-prod-001", "--tenant", "tenant-a", "--building", "building-a",
                "--room", "room-1", "--mqtt-uri", "mqtts://safesignal-edge.local:8883", "--ca", str(ca_dir),
                "--verify", "--broker", broker.uri, "--operator", "demo"]
        say(f"   $ {shown(prov)}")
        say("")
        rc = subprocess.run(prov, env=env).returncode
        if rc != 0:
            return rc
        say("")
        dump = [py, "-m", "safesignal", "nvs", "dump", str(flash)]
        say("== The flash as a thief reads it (no key: the chip's eFuse key never leaves the chip)")
        say(f"   $ {shown(dump)}")
        p = subprocess.run(dump, capture_output=True, text=True)
        for line in (p.stdout + p.stderr).splitlines()[:12]:
            say("   " + line)
        if PASSWORD in p.stdout + p.stderr or p.returncode == 0:
            say("✗ the raw flash should be unreadable without the chip's key")
            return 1
        say(f"   (exit {p.returncode}: nothing readable)")
        return 0
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m safesignal.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="keep the virtual device's files in this directory")
    args = ap.parse_args(argv)
    try:
        extras.tool("micropython", "demo")
        extras.module("amqtt", "demo")
    except extras.MissingExtra as e:
        print(f"✗ Error: the demo needs the virtual device and its broker: {e}", file=sys.stderr)
        return e.exit_code
    if args.keep:
        d = Path(args.keep)
        d.mkdir(parents=True, exist_ok=True)
        return run(d)
    with tempfile.TemporaryDirectory(prefix="safesignal-demo-") as tmp:
        return run(Path(tmp))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
