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
`safesignal nvs dump` of the raw flash.  Last, the dashboard (where its extra is installed):
`safesignal dashboard` on a free port with SQLite in the demo's directory, ingesting from that
mosquitto with the operator certificate; an installer account (`dashboard user add`, a random
password that is never shown); the provisioning above posts its record (`--dashboard URL
--installer NAME`, the token in $SAFESIGNAL_DASHBOARD_TOKEN); the installer confirms the device
through the API after its test alert, and the demo prints the URL and the device's row.
Everything is cleaned up afterwards (``--hold S`` keeps it all running S seconds first).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from safesignal import extras
from safesignal.tools import die_with_parent, stop_process

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware" / "esp32-button"  # the sim's DEFAULT_FIRMWARE

# The seed guide's example values (PROVISIONING.md, Step 2).  The password is the guide's
# placeholder and is never printed.
SSID = "SafeSignal-Edge"
PASSWORD = "your-wifi-password"
INSTALLER = "Demo Installer"  # who confirms, as the provisioning record and the confirmation name them
HOLD = 0.0  # --hold: seconds everything stays up after the last step, for a person to look


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
                say("   (no mosquitto: apt-get install mosquitto, then run the demo again), and the dashboard")
                say("   with it.")
            else:
                say("   rebooted into WiFi and MQTT, a panic alert delivered; then re-provisioned for mutual TLS")
                say("   with a key made on the device, and its flash shown unreadable without the chip.")
                if DASHBOARD_SHOWN:
                    say("   The dashboard registered it and shows it confirmed by the installer.")
            return 0
        finally:
            stop_process(sim)


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
    if dashboard_missing() is None:
        # The dashboard's own operator certificate: the broker takes a certificate's name as the
        # client id, so two clients on one certificate would keep disconnecting each other.
        op = [py, "-m", "safesignal", "ca", "operator", "--dir", str(ca_dir), "--name", "dashboard"]
        say(f"   $ {shown(op)}")
        if subprocess.run(op, env=env).returncode != 0:
            return 1
    tenant_ca = ca.open(ca_dir).unlock(passphrase)
    broker = Mosquitto.mtls(work / "mtls-broker", tenant_ca)
    tenant_ca.lock()
    broker.start()
    dash: Dashboard | None = None
    try:
        say(f"== mosquitto with require_certificate, identity from the certificate, per-device ACL: {broker.uri}")
        dash = Dashboard.start(work, broker.uri, ca_dir, env)
        if dash is None:
            return 1
        # The site's name service now points the device's broker name at it.
        data = json.loads(air.read_text())
        data["hosts"] = broker.hosts
        air.write_text(json.dumps(data))
        prov = [py, "-m", "safesignal", "provision", "--port", port, "--wifi-ssid", SSID, "--wifi-pass", PASSWORD,
                "--device-id", "esp32-prod-001", "--tenant", "tenant-a", "--building", "building-a",
                "--room", "room-1", "--mqtt-uri", "mqtts://safesignal-edge.local:8883", "--ca", str(ca_dir),
                "--verify", "--broker", broker.uri, "--operator", "demo"]
        prov_env = env
        if dash.url:
            from safesignal.dashboard.client import TOKEN_ENV

            prov += ["--dashboard", dash.url, "--installer", INSTALLER]
            prov_env = {**env, TOKEN_ENV: dash.token}  # not on the command line: any local user reads those
            say(f"   (the installer's API token in ${TOKEN_ENV}, not shown)")
        say(f"   $ {shown(prov)}")
        say("")
        rc = subprocess.run(prov, env=prov_env).returncode
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
        if dash.url:
            say("")
            rc = dash.confirm("tenant-a", "esp32-prod-001")
            if rc != 0:
                return rc
        if HOLD > 0:
            say("")
            say(f"== Holding for {HOLD:g} s: open {dash.url or 'the dashboard'} (sign in with an account of your own:")
            say(f"   safesignal dashboard user add NAME --role viewer --db {dash.db})")
            time.sleep(HOLD)
        return 0
    finally:
        if dash is not None:
            dash.stop()
        broker.stop()


DASHBOARD_SHOWN = False  # set once the dashboard showed the device confirmed


def dashboard_missing() -> str | None:
    """Why the dashboard step cannot run (its extra is not installed), or None."""
    try:
        for name in ("starlette", "uvicorn", "jinja2", "sqlalchemy", "alembic", "argon2"):
            extras.module(name, "dashboard")
    except extras.MissingExtra as e:
        return str(e)
    return None


class Dashboard:
    """`safesignal dashboard` for the demo: started on a free port with SQLite in the demo's
    directory, ingesting from the mutual-TLS mosquitto with its own operator certificate; an
    installer account with a random password (never shown) and its API token (kept here)."""

    def __init__(self, work: Path) -> None:
        self.db = f"sqlite:///{work / 'dashboard.db'}"
        self.url = ""  # empty: skipped (no dashboard extra)
        self.token = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.err_path = work / "dashboard.err"

    @classmethod
    def start(cls, work: Path, broker_uri: str, ca_dir: Path, env: dict[str, str]) -> Dashboard | None:
        """The running dashboard (``url`` empty where the extra is missing); None if it failed."""
        d = cls(work)
        missing = dashboard_missing()
        if missing is not None:
            say(f"== Skipping the dashboard: {missing}")
            return d
        py = sys.executable
        user = [py, "-m", "safesignal", "dashboard", "user", "add", "demo-installer", "--role", "installer",
                "--db", d.db]
        say("== The dashboard: registry, device list and live panic feed (SQLite in the demo's directory)")
        say(f"   $ {shown(user)}")
        # A random password, handed over in the environment and never shown: nobody signs in with
        # it; the demo uses the account's API token.
        p = subprocess.run(user, env={**os.environ, "SAFESIGNAL_USER_PASS": secrets.token_urlsafe(24)},
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        lines = p.stdout.strip().splitlines()
        if p.returncode != 0 or not lines or not lines[-1].startswith("token: "):
            say(f"✗ dashboard user add failed: {p.stderr.strip()}")
            return None
        for line in lines[:-1]:
            say("   " + line)
        say("   token: (kept by the demo, not shown)")
        d.token = lines[-1].removeprefix("token: ")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve = [py, "-m", "safesignal", "dashboard", "--broker", broker_uri, "--db", d.db,
                 "--listen", f"127.0.0.1:{port}", "--ca", str(ca_dir), "--operator", "dashboard"]
        say(f"   $ {shown(serve)} &")
        with open(d.err_path, "wb") as err:
            d.proc = subprocess.Popen(serve, env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                      preexec_fn=die_with_parent(signal.SIGTERM))
        ready = d._ready(60.0)
        if not ready:
            say(f"✗ the dashboard did not start: {d.err_path.read_text(errors='replace').strip()}")
            d.stop()
            return None
        say("   " + ready)
        d.url = f"http://127.0.0.1:{port}"
        say("")
        return d

    def _ready(self, timeout: float) -> str:
        """Its "✓ Dashboard on URL" line, or "" when it did not come."""
        assert self.proc is not None and self.proc.stdout is not None
        fd, seen, deadline = self.proc.stdout.fileno(), b"", time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if select.select([fd], [], [], 0.5)[0]:
                seen += os.read(fd, 4096)
                for line in seen.decode(errors="replace").splitlines():
                    if line.startswith("✓ Dashboard on"):
                        return line
        return ""

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def device(self, tenant: str, device_id: str) -> dict[str, Any] | None:
        code, devices = self.api("GET", "/api/devices")
        if code != 200:
            return None
        return next((d for d in devices if (d["tenant"], d["device_id"]) == (tenant, device_id)), None)

    def confirm(self, tenant: str, device_id: str) -> int:
        """The installer's confirmation through the API, once the registry has the test alert that
        came after the provisioning; then the device's row as GET /api/devices shows it."""
        global DASHBOARD_SHOWN
        say(f"== The installer confirms in the dashboard ({self.url}), after the test alert")
        deadline = time.monotonic() + 30
        while True:
            d = self.device(tenant, device_id)
            if d is not None and d["provisioned_at"] and d["last_test_alert"] and \
                    d["last_test_alert"] >= d["provisioned_at"]:
                break
            if time.monotonic() > deadline:
                say(f"✗ the dashboard has no test alert from {device_id} since its provisioning: {d}")
                return 1
            time.sleep(0.2)
        path = f"/api/devices/{tenant}/{device_id}/confirm"
        say(f"   POST {path} {json.dumps({'installer': INSTALLER})}")
        code, answer = self.api("POST", path, {"installer": INSTALLER})
        if code != 200:
            say(f"✗ not confirmed (HTTP {code}): {answer.get('reason') or answer.get('error')}")
            return 1
        test = answer.get("test_alert") or {}
        say(f"   ✓ Confirmed by {answer['confirmed_by']} (test alert seq {test.get('seq')} "
            f"received {test.get('received_at')})")
        d = self.device(tenant, device_id)
        if d is None or not d["confirmed"]:
            say(f"✗ the device list does not show the confirmation: {d}")
            return 1
        say(f"   Dashboard: {self.url}  (device list /, live panic feed /feed; it stops when the demo ends, "
            "--hold S keeps it up)")
        say(f"   GET /api/devices, {device_id}:")
        for line in json.dumps(d, indent=2).splitlines():
            say("     " + line)
        say(f"   {device_id}: online: {json.dumps(d['online'])}, confirmed: {json.dumps(d['confirmed'])} "
            f"(by {d['confirmed_by']}), chip {d['chip_id']}, anomalies: {len(d['anomalies'])}")
        DASHBOARD_SHOWN = True
        return 0

    def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        stop_process(self.proc, 30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m safesignal.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="keep the virtual device's files in this directory")
    ap.add_argument("--hold", type=float, default=0.0, metavar="S",
                    help="keep the broker, device and dashboard running S seconds after the last step")
    args = ap.parse_args(argv)
    global HOLD
    HOLD = max(0.0, args.hold)
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
