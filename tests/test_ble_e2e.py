"""Provisioning over Bluetooth LE, end to end, as an installer does it: the real firmware under
`safesignal sim --ble`, the factory step (`safesignal pin`) over its serial console, and
`safesignal provision --ble` / `safesignal ble scan` as subprocesses reaching the virtual air
through the ready line's transport spec (bumble backend).  The device's log is read from its
serial console."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import ssproto.ble as P
from safesignal.nvs.format import NvsEntry, build_partition, derive_hmac_keys
from safesignal.sim import efuse
from safesignal.sim.flash import NVS_SIZE
from safesignal.tools import die_with_parent
from ssproto import spake2p
from support.broker import Mosquitto
from support.cli import run_cli
from support.env import REPO, need, need_module
from support.guard import SecretGuard
from support.sim import Sim

need_module("bumble", "pip install -e '.[test]'")

PIN = "482915"
SSID = "SafeSignal-Edge"


def pin_step(guard: SecretGuard, sim: Sim, pin: str = PIN) -> None:
    """The factory step, then a power cycle: the window opens at power-on."""
    # The PIN is printed once, on the last line, for the label: the issue's `PIN: NNNNNN`.  Every
    # other line of output is checked for it (and any other secret) like all output.
    r = subprocess.run([sys.executable, "-m", "safesignal", "pin", "--port", sim.port, "--pin", pin],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == f"PIN: {pin}"
    guard.output("safesignal pin stdout before its PIN line", "\n".join(lines[:-1]))
    guard.output("safesignal pin stderr", r.stderr)
    assert re.search(r"^✓ PIN verifier written to chip \S+ and read back \([0-9a-f]{16}\)$", r.stdout, re.M)
    reboot(sim)


def reboot(sim: Sim) -> None:
    boots = sim.control.state()["boots"]
    sim.control.reset()
    sim.wait_boot(boots)


def boot_log(guard: SecretGuard, sim: Sim, until: str, timeout: float = 40.0) -> str:
    """The device's console from a reboot until a line matching ``until`` (safesignal console)."""
    r = run_cli(guard, "console", "--port", sim.port, "--reboot", "--until", until, "--duration", str(timeout),
                timeout=timeout + 30)
    assert re.search(until, r.stdout), r.stdout[-2000:] + r.stderr
    return r.stdout


def ble_status(sim: Sim) -> dict[str, str]:
    with sim.session() as s:
        s.sync()
        return dict(ln.split(": ", 1) for ln in s.command(["ble_status"]).lines)


def wait_ble_state(sim: Sim, want: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := ble_status(sim)["BLE"]) != want:
        assert time.monotonic() < deadline, f"BLE {got}, want {want}"
        time.sleep(0.5)


def provision_args(sim: Sim, *extra: str, room: str = "room-1") -> list[str]:
    assert sim.ble_spec
    return ["provision", "--ble", *extra, "--ble-transport", sim.ble_spec, "--wifi-ssid", SSID, "--device-id",
            "esp32-ble-001", "--tenant", "tenant-a", "--building", "main", "--room", room]


def scan(guard: SecretGuard, sim: Sim) -> list[dict[str, object]]:
    assert sim.ble_spec
    r = run_cli(guard, "ble", "scan", "--ble-transport", sim.ble_spec, "--duration", "1.5", "--json")
    assert r.returncode == 0, r.stderr
    found: list[dict[str, object]] = json.loads(r.stdout)
    return found


def test_the_guide_flow_by_ble(make_sim, guard: SecretGuard, mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A blank button with its factory PIN: scan, provision over BLE with --verify (connect test,
    atomic save, reboot, reconnect, read-back, test alert at the broker), then Bluetooth is off:
    a scan finds nothing and a connection attempt fails."""
    pw = guard.secret("ble-wifi-pass-7")
    guard.secret(PIN)
    sim: Sim = make_sim(aps=[(SSID, pw)], hosts=mosquitto.hosts, ble=True)
    pin_step(guard, sim)
    found = scan(guard, sim)
    assert len(found) == 1
    name = str(found[0]["name"])
    assert name.startswith("SafeSignal-") and found[0]["provisioned"] is False
    assert 0 < int(found[0]["window_s"]) <= P.WINDOW_S  # type: ignore[call-overload]
    r = run_cli(guard, *provision_args(sim, "--pin", PIN, "--verify", "--broker", mosquitto.uri),
                env={"SAFESIGNAL_WIFI_PASS": pw}, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert f"Port: {name} ({found[0]['address']})" in out
    assert "PIN accepted, session encrypted (ATT MTU 247)" in out
    for line in ("→ Sending: provision_set_wifi SafeSignal-Edge ********", "✓ Provisioning complete!",
                 "Bluetooth off on the device (until a long press at power-on)"):
        assert line in out, out
    assert out.strip().splitlines()[-1].startswith("✓ Test alert received from esp32-ble-001 (seq 0) ")
    st = json.loads(run_cli(guard, "status", "--port", sim.port, "--json").stdout)
    assert (st["provisioned"], st["device_id"], st["room"], st["wifi_ssid"]) == (True, "esp32-ble-001", "room-1",
                                                                                 SSID)
    # BLE is off, and stays off across a reboot
    assert scan(guard, sim) == []
    log = boot_log(guard, sim, r"\[MQTT\] Connected to broker")
    assert "[BLE]" not in log, log  # off, and quietly so: the guide's boot log is unchanged
    assert ble_status(sim)["BLE"] == "off"
    assert scan(guard, sim) == []
    r = run_cli(guard, *provision_args(sim, "--pin", PIN), env={"SAFESIGNAL_WIFI_PASS": pw})
    assert r.returncode == 4 and "no SafeSignal button in range" in r.stderr, r.stderr


def test_wrong_pin_lockout_and_its_wait_across_a_reboot(make_sim, guard: SecretGuard) -> None:
    pw = guard.secret("ble-wifi-pass-8")
    guard.secret(PIN)
    sim: Sim = make_sim(aps=[(SSID, pw)], ble=True)
    pin_step(guard, sim)
    env = {"SAFESIGNAL_WIFI_PASS": pw}
    for n in range(1, P.FREE_ATTEMPTS + 1):
        r = run_cli(guard, *provision_args(sim, "--pin", "000000", "--offline"), env=env, timeout=90)
        assert r.returncode == 11, r.stdout + r.stderr
        assert f"wrong PIN: {P.HARD_LOCK - n} attempts left before the device locks" in r.stderr
        if n == P.FREE_ATTEMPTS:
            assert "the next attempt is taken in 30 s" in r.stderr
    # The sixth attempt, even with the right PIN, waits: the device refuses before any exchange
    r = run_cli(guard, *provision_args(sim, "--pin", PIN, "--offline"), env=env, timeout=90)
    assert r.returncode == 12, r.stdout + r.stderr
    assert re.search(r"too many wrong PINs: wait \d+ s before the next attempt \(15 attempts left\)", r.stderr)
    # A reboot does not clear it: the wait starts again at power-on
    reboot(sim)
    r = run_cli(guard, *provision_args(sim, "--pin", PIN, "--offline"), env=env, timeout=90)
    assert r.returncode == 12, r.stdout + r.stderr
    wait = int(re.search(r"wait (\d+) s", r.stderr).group(1))  # type: ignore[union-attr]
    assert 20 <= wait <= 30
    got = ble_status(sim)
    assert got["PIN failures"] == "5" and got["PIN attempts left"] == "15"


def locked_flash(tmp_path: Path, fails: int) -> Path:
    """A factory image (the line's model: an NVS image encrypted with the chip's key) holding a
    PIN verifier and ``fails`` counted wrong PINs."""
    flash = tmp_path / "line" / "flash.bin"
    flash.parent.mkdir(parents=True)
    chip = efuse.Efuse(bytes.fromhex("02aabbccdd43"), os.urandom(32))
    efuse.burn(efuse.default_path(flash), chip)
    rec = spake2p.make_record(PIN, os.urandom(spake2p.SALT_LEN), spake2p.ITER_MIN)
    entries = [NvsEntry("ble", "pin", "blob", rec), NvsEntry("ble", "fails", "i32", fails)]
    flash.write_bytes(build_partition(entries, NVS_SIZE, derive_hmac_keys(chip.hmac_key)))
    return flash


def test_hard_lock_needs_the_long_press_at_power_on(make_sim, guard: SecretGuard, tmp_path: Path) -> None:
    """After HARD_LOCK wrong PINs the window does not open at power-on; holding the button from
    power-on for HOLD_MS re-opens it, clears the count and raises no alert; the right PIN then
    provisions (the re-provisioning path after a long press)."""
    pw = guard.secret("ble-wifi-pass-9")
    guard.secret(PIN)
    sim: Sim = make_sim(aps=[(SSID, pw)], ble=True, flash=locked_flash(tmp_path, P.HARD_LOCK))
    got = ble_status(sim)
    assert (got["PIN failures"], got["PIN wait"], got["BLE"]) == ("20", "locked", "off")
    assert scan(guard, sim) == []
    # hold the button, then power-cycle: the press spans the power-up
    sim.control.press(hold_ms=P.HOLD_MS + 3000)
    log = boot_log(guard, sim, r"\[BLE\] Advertising as")
    assert "[BLE] Long press at power-on" in log, log
    assert "[ALERT]" not in log and "[BUTTON]" not in log, log
    found = scan(guard, sim)
    assert len(found) == 1 and found[0]["locked"] is False
    r = run_cli(guard, *provision_args(sim, "--pin", PIN, "--offline", "--ble-mtu", "23"),
                env={"SAFESIGNAL_WIFI_PASS": pw}, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(ATT MTU 23)" in r.stdout and "✓ Provisioning complete!" in r.stdout


def test_a_press_during_boot_is_an_alert_not_a_long_press(make_sim, guard: SecretGuard, tmp_path: Path) -> None:
    """A press held at power-on but released before HOLD_MS is a press like any other (it is
    not swallowed by the long-press check)."""
    sim: Sim = make_sim(ble=True, flash=locked_flash(tmp_path, 0))
    sim.control.press(hold_ms=1500)
    log = boot_log(guard, sim, r"\[BUTTON\] Pressed, but the device is not provisioned")
    assert "Long press" not in log


def test_several_buttons_in_range(make_sim, guard: SecretGuard) -> None:
    guard.secret(PIN)
    a: Sim = make_sim(name="a", ble=True)
    b: Sim = make_sim(name="b", ble_air=a.ble_spec, mac="02:00:00:00:0b:01")
    for s in (a, b):
        pin_step(guard, s)
    names = sorted(str(x["name"]) for x in scan(guard, a))
    assert len(names) == 2 and names[0] != names[1]
    r = run_cli(guard, *provision_args(a, "--pin", PIN, "--offline"), env={"SAFESIGNAL_WIFI_PASS": "whatever-1"})
    assert r.returncode == 2, r.stderr
    assert "several SafeSignal buttons in range" in r.stderr and all(n in r.stderr for n in names)


def test_a_session_cut_midway_leaves_nothing_staged(make_sim, guard: SecretGuard) -> None:
    """The host dies after staging the WiFi credentials: the device drops the session when the
    link goes (supervision timeout) and with it everything the session staged."""
    pw = guard.secret("ble-wifi-pass-10")
    guard.secret(PIN)
    sim: Sim = make_sim(aps=[(SSID, pw)], ble=True)
    pin_step(guard, sim)
    cmd = [sys.executable, "-m", "safesignal", *provision_args(sim, "--pin", PIN, "--offline")]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True,
                         env={**os.environ, "SAFESIGNAL_WIFI_PASS": pw},
                         preexec_fn=die_with_parent(signal.SIGKILL))
    try:
        assert p.stdout is not None
        seen = []
        for line in p.stdout:
            seen.append(line)
            if line.startswith("← WiFi credentials saved"):
                p.kill()
                break
        assert seen and seen[-1].startswith("← WiFi credentials saved"), seen
    finally:
        p.kill()
        out, err = p.communicate()
        guard.output("killed provision stdout", "".join(seen) + out)
        guard.output("killed provision stderr", err)
    wait_ble_state(sim, "advertising")
    with sim.session() as s:
        s.sync()
        st = s.status()
    assert (st["provisioned"], st["pending"]) == ("no", "none")
    # and the button takes the next installer at once
    r = run_cli(guard, *provision_args(sim, "--pin", PIN, "--offline"), env={"SAFESIGNAL_WIFI_PASS": pw},
                timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_factory_pin_step_refuses_a_provisioned_device(make_sim, guard: SecretGuard) -> None:
    """`safesignal sim --pin` is the factory step at first power-up; `safesignal pin` on a
    provisioned device refuses (its label's PIN would stop working) unless --force."""
    pw = guard.secret("ble-wifi-pass-11")
    guard.secret(PIN)
    sim: Sim = make_sim(aps=[(SSID, pw)], ble=True, pin=PIN)
    assert ble_status(sim)["BLE"] == "advertising"  # a verifier from its first power-up on
    r = run_cli(guard, *provision_args(sim, "--pin", PIN, "--offline"), env={"SAFESIGNAL_WIFI_PASS": pw},
                timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    before = ble_status(sim)["PIN verifier"]
    r = run_cli(guard, "pin", "--port", sim.port)
    assert r.returncode == 2 and "the device is provisioned" in r.stderr and "--force" in r.stderr
    assert "PIN:" not in r.stdout and ble_status(sim)["PIN verifier"] == before  # nothing changed
    new = "135790"
    guard.secret(new)
    p = subprocess.run([sys.executable, "-m", "safesignal", "pin", "--port", sim.port, "--pin", new, "--force"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert p.returncode == 0 and p.stdout.splitlines()[-1] == f"PIN: {new}", p.stderr
    guard.output("pin --force stderr", p.stderr)
    assert ble_status(sim)["PIN verifier"] not in (before, "none")


def test_the_pin_typed_at_a_terminal(make_sim, guard: SecretGuard, tmp_path: Path) -> None:
    """As an installer does it: no --pin, no WiFi password on the command line; both are asked
    for on the terminal (tmux), without echo, and neither shows on the screen."""
    from test_terminal import Tmux

    if shutil.which("tmux") is None:
        need("tmux", "apt-get install tmux")
    pw = guard.secret("typed-wifi-pass-12")
    guard.secret(PIN)
    sim: Sim = make_sim(aps=[(SSID, pw)], ble=True, pin=PIN)
    t = Tmux(tmp_path)
    try:
        args = " ".join(provision_args(sim, "--offline"))
        t.run(f"cd {REPO} && {sys.executable} -m safesignal {args}; echo provision-exit=$?")
        t.wait(lambda s: "WiFi password (not shown):" in s, "the WiFi password prompt")
        t.type(pw)
        t.keys("Enter")
        t.wait(lambda s: "Again, to confirm:" in s, "the confirmation prompt")
        t.type(pw)
        t.keys("Enter")
        t.wait(lambda s: "PIN (not shown):" in s, "the PIN prompt")
        t.type(PIN)
        t.keys("Enter")
        screen = t.wait(lambda s: re.search(r"provision-exit=\d", s) is not None, "the end of provision",
                        timeout=120)
    finally:
        t.kill()
    guard.output("tmux screen", screen)
    assert "provision-exit=0" in screen and "✓ Provisioning complete!" in screen, screen
    assert "PIN accepted, session encrypted" in screen
