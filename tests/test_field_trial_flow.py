"""Issue 10's field trial, replayed the way it was found: the CLI as a subprocess against a
virtual device, and where a person types, in a real terminal (tmux)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, SecretGuard, Sim, need
from support.cli import run_cli
from support.env import tmux_dies_with_this_process

SCRIPTS = REPO / "firmware" / "esp32-button"
SSID = "SafeSignal-Edge"


def prov(port: str, dev: str, room: str, *extra: str) -> list[str]:
    return ["provision", "--port", port, "--wifi-ssid", SSID, "--device-id", dev, "--tenant", "t",
            "--building", "b", "--room", room, *extra]


def status(guard: SecretGuard, sim: Sim) -> dict[str, object]:
    r = run_cli(guard, "status", "--port", sim.port, "--json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, object] = json.loads(r.stdout)
    return doc


# --- 2. power cut during provision_complete ------------------------------------------------
def test_power_cut_during_provision_complete_is_reported_at_once(make_sim, guard: SecretGuard) -> None:
    """The trial cut the power at the N-th NVS write of provision_complete, N = 1..14; the old
    tool waited 75 s and reported a timeout even when the device had saved.  Now each run ends
    with what the device holds, read back: the old settings (exit 4, "before it saved") or the
    new ones, verified (exit 0).  The subprocess timeout (40 s) is below the old 75 s wait."""
    pw = guard.secret("power-cut-wifi-pw")
    sim = make_sim(aps=[(SSID, pw)])
    env = {"SAFESIGNAL_WIFI_PASS": pw}
    r = run_cli(guard, *prov(sim.port, "dev-0", "r0"), env=env)
    assert r.returncode == 0, r.stderr
    outcomes = set()
    for n in range(1, 15):
        held = status(guard, sim)
        sim.control.power_cut_after(n)
        r = run_cli(guard, *prov(sim.port, f"dev-{n}", f"r{n}", "--json"), env=env, timeout=40)
        sim.control.power_cut_after(0)
        doc = json.loads(r.stdout)  # one document, success or not
        now = status(guard, sim)
        if r.returncode == 4:
            assert "restarted during provision_complete" in r.stderr and "before it saved" in r.stderr, r.stderr
            assert f"previous settings (device {held['device_id']})" in doc["error"]
            assert (now["device_id"], now["room"]) == (held["device_id"], held["room"]), n
            outcomes.add("kept")
        else:
            assert r.returncode == 0, (n, r.stderr[-1500:])
            assert (now["device_id"], now["room"]) == (f"dev-{n}", f"r{n}")
            assert doc["provisioned"] is True and doc["device_id"] == f"dev-{n}"
            if doc.get("restarted_during_commit"):
                assert "restarted before it answered" in r.stderr
                outcomes.add("saved")
            else:
                outcomes.add("no cut")  # N past the last write: an ordinary provisioning
    assert {"kept", "saved"} <= outcomes, outcomes


# --- tmux: a person at a terminal ------------------------------------------------------------
class Terminal:
    """One tmux server on its own socket, one window running a shell command."""

    def __init__(self, tmp: Path, command: str, env: dict[str, str] | None = None) -> None:
        if shutil.which("tmux") is None:
            need("tmux", "apt-get install tmux")
        self.sock = f"ft10-{uuid.uuid4().hex[:10]}"
        self.log = tmp / f"{self.sock}.out"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        script = (f"cd {shlex.quote(str(REPO))}; {exports} {command}; echo \"[exit $?]\"; sleep 600")
        subprocess.run(["tmux", "-L", self.sock, "new-session", "-d", "-x", "200", "-y", "50", "bash", "-c", script],
                       check=True)
        tmux_dies_with_this_process(self.sock)

    def screen(self) -> str:
        return subprocess.run(["tmux", "-L", self.sock, "capture-pane", "-p", "-J", "-S", "-200"], capture_output=True,
                              text=True).stdout

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.screen()
            if text in s:
                return s
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on the terminal:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.sock, "send-keys", *keys], check=True)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)


@pytest.fixture
def terminal(tmp_path: Path, guard: SecretGuard) -> Iterator[object]:
    terms: list[Terminal] = []

    def start(command: str, env: dict[str, str] | None = None) -> Terminal:
        t = Terminal(tmp_path, command, env)
        terms.append(t)
        return t

    yield start
    for t in terms:
        guard.output("terminal", t.screen())
        t.kill()


SAFESIGNAL = f"{shlex.quote(sys.executable)} -m safesignal"


def test_ctrl_c_after_provision_complete_says_what_the_device_may_hold(make_sim, guard: SecretGuard,
                                                                      terminal, tmp_path: Path) -> None:
    """3.  Ctrl-C while the device runs its connect test (a slow access point): the tool says
    the device may save anyway and how to check; the device does save."""
    pw = guard.secret("ctrl-c-wifi-pass")
    air = tmp_path / "air.json"
    air.write_text(json.dumps({"access_points": [{"ssid": SSID, "passphrase": pw, "connect_ms": 4000}]}))
    sim = make_sim(air=air)
    t = terminal(f"{SAFESIGNAL} " + " ".join(shlex.quote(a) for a in prov(sim.port, "dev-c", "rc")),
                 {"SAFESIGNAL_WIFI_PASS": pw})
    t.wait_for("→ Sending: provision_complete")
    t.wait_for("device: [WIFI] Connecting to")  # the connect test, live on the terminal
    t.keys("C-c")
    screen = t.wait_for("[exit 130]")
    assert "✗ Error: interrupted after provision_complete was sent" in screen
    assert "safesignal status" in screen and "Provisioning complete" not in screen
    deadline = time.monotonic() + 20
    while status(guard, sim)["provisioned"] is not True:  # the device went on and saved
        assert time.monotonic() < deadline, "the device did not save"
        time.sleep(0.5)
    assert status(guard, sim)["device_id"] == "dev-c"


# --- 7. the connect test, live ------------------------------------------------------------------
def test_connect_test_is_shown_live_on_a_terminal_and_quiet_with_json(make_sim, guard: SecretGuard, terminal,
                                                                     tmp_path: Path) -> None:
    """A DHCP server that never answers: the device's connect test waits 20 s for an address.
    On a terminal the tool shows what the device does meanwhile; with --json stdout holds only
    the one document, and the device's lines are not printed."""
    pw = guard.secret("no-dhcp-wifi-pass")
    air = tmp_path / "air.json"
    air.write_text(json.dumps({"access_points": [{"ssid": SSID, "passphrase": pw, "fail": "dhcp_timeout"}]}))
    sim = make_sim(air=air)
    t = terminal(f"{SAFESIGNAL} " + " ".join(shlex.quote(a) for a in prov(sim.port, "dev-d", "rd")),
                 {"SAFESIGNAL_WIFI_PASS": pw})
    t.wait_for("device: [PROVISION] Testing the new settings")
    t.wait_for(f"device: [WIFI] Connecting to '{SSID}'...")
    t.wait_for("device: [WIFI] No IP address yet after 5 s")  # while it waits, not after
    assert "[exit" not in t.screen()
    screen = t.wait_for("[exit 9]", 60)
    assert "connect test failed (WIFI_TIMEOUT)" in screen
    r = run_cli(guard, *prov(sim.port, "dev-d", "rd", "--json"), env={"SAFESIGNAL_WIFI_PASS": pw})
    assert r.returncode == 9
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 9 and "WIFI_TIMEOUT" in doc["error"]
    assert "device: " not in r.stdout + r.stderr


# --- 8. test alerts cannot crowd out a panic --------------------------------------------------
def test_test_alerts_do_not_crowd_out_a_panic(make_sim, guard: SecretGuard) -> None:
    """Broker unreachable; 64 `alert_test` at the console, then the button: the panic is stored.
    `verify --port` does not add a test alert that cannot be delivered."""
    pw = guard.secret("outbox-wifi-pass")
    sim = make_sim(aps=[(SSID, pw)])
    r = run_cli(guard, *prov(sim.port, "dev-o", "ro", "--mqtt-uri", "mqtt://127.0.0.1:9", "--offline"),
                env={"SAFESIGNAL_WIFI_PASS": pw})  # a broker that never answers
    assert r.returncode == 0, r.stderr
    with sim.session() as s:
        s.sync()
        for _ in range(64):
            assert s.command(["alert_test"]).ok
        pending = int(s.status()["alerts_pending"])
        assert pending == 4, pending  # TEST_MAX: the provisioning test alert was replaced too
        r = run_cli(guard, "sim", "press", "--control", str(sim.control_path))  # the console stays open
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 10
        while not any("Panic alert" in x for x in s.log_lines):
            assert time.monotonic() < deadline, list(s.log_lines)[-10:]
            s.read_line(time.monotonic() + 0.5)
        assert not any("PANIC NOT STORED" in x for x in s.log_lines)
        guard.output("console", "\n".join(s.received))
    before = status(guard, sim)
    r = run_cli(guard, "verify", "--port", sim.port, "--json", "--wait", "3")
    doc = json.loads(r.stdout)
    assert r.returncode == 8 and doc["verified"] is False and "not connected to its broker" in doc["error"]
    after = status(guard, sim)
    assert after["next_alert_seq"] == before["next_alert_seq"]  # no test alert was requested


# --- 9. factory reset with undelivered alerts ----------------------------------------------------
def test_factory_reset_asks_before_erasing_undelivered_alerts(make_sim, guard: SecretGuard, terminal) -> None:
    pw = guard.secret("reset-wifi-pass-9")
    sim = make_sim(aps=[(SSID, pw)])
    r = run_cli(guard, *prov(sim.port, "dev-f", "rf", "--mqtt-uri", "mqtt://127.0.0.1:9", "--offline"),
                env={"SAFESIGNAL_WIFI_PASS": pw})
    assert r.returncode == 0, r.stderr
    assert status(guard, sim)["alerts_pending"] == 1  # the provisioning test alert cannot leave
    r = run_cli(guard, "factory-reset", "--port", sim.port)  # no terminal, no --force
    assert r.returncode == 2 and "--force" in r.stderr and "1 undelivered alert(s)" in r.stderr
    assert status(guard, sim)["provisioned"] is True
    t = terminal(f"{SAFESIGNAL} factory-reset --port {shlex.quote(sim.port)}")
    t.wait_for("Erase them with the configuration? [y/N]")
    t.keys("n", "Enter")
    screen = t.wait_for("[exit 1]")
    assert "nothing was erased" in screen and "dev-f" in screen
    assert status(guard, sim)["provisioned"] is True
    t = terminal(f"{SAFESIGNAL} factory-reset --port {shlex.quote(sim.port)}")
    t.wait_for("[y/N]")
    t.keys("y", "Enter")
    screen = t.wait_for("[exit 0]")
    assert "✓ Factory reset complete" in screen
    assert status(guard, sim)["provisioned"] is False
    # The seed's script, without a terminal: refuses as above, and --force erases.
    r = run_cli(guard, *prov(sim.port, "dev-g", "rg", "--mqtt-uri", "mqtt://127.0.0.1:9", "--offline"),
                env={"SAFESIGNAL_WIFI_PASS": pw})
    assert r.returncode == 0 and status(guard, sim)["alerts_pending"] == 1, r.stderr
    script = [sys.executable, "scripts/factory_reset.py", "--port", sim.port]
    r = subprocess.run(script, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=SCRIPTS)
    guard.output("factory_reset.py", r.stdout + r.stderr)
    assert r.returncode == 2 and "--force" in r.stderr, r.stderr
    r = subprocess.run(script + ["--force"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       cwd=SCRIPTS)
    guard.output("factory_reset.py --force", r.stdout + r.stderr)
    assert r.returncode == 0 and "✓ Factory reset complete" in r.stdout, r.stderr
    assert status(guard, sim)["provisioned"] is False


# --- 10. re-provisioning shows what it replaces ------------------------------------------------
def test_reprovisioning_shows_and_asks(make_sim, guard: SecretGuard, terminal) -> None:
    pw = guard.secret("reprov-wifi-pass")
    sim = make_sim(aps=[(SSID, pw)])
    env = {"SAFESIGNAL_WIFI_PASS": pw}
    assert run_cli(guard, *prov(sim.port, "dev-a", "ra"), env=env).returncode == 0
    t = terminal(f"{SAFESIGNAL} " + " ".join(shlex.quote(a) for a in prov(sim.port, "dev-b", "rb")), env)
    screen = t.wait_for("Go on? [y/N]")
    assert "Device ID:      dev-a → dev-b" in screen and "Room:           ra → rb" in screen
    assert "MQTT URI:       mqtt://safesignal-edge.local:1883" in screen
    t.keys("n", "Enter")
    screen = t.wait_for("[exit 1]")
    assert "nothing was changed" in screen
    assert status(guard, sim)["device_id"] == "dev-a"
    # a script (no terminal) goes on as before, and still says what it replaced
    r = run_cli(guard, *prov(sim.port, "dev-b", "rb"), env=env)
    assert r.returncode == 0, r.stderr
    assert "Device ID:      dev-a → dev-b" in r.stdout
    assert status(guard, sim)["device_id"] == "dev-b"
    # --yes on a terminal: no question
    t = terminal(f"{SAFESIGNAL} " + " ".join(shlex.quote(a) for a in prov(sim.port, "dev-c", "rc", "--yes")), env)
    screen = t.wait_for("[exit 0]")
    assert "Go on?" not in screen and "dev-b → dev-c" in screen
