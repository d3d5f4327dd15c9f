"""Every command with --json, as a script runs it (a subprocess, stdin not a terminal): stdout
is exactly one JSON document (monitor: one per line), on success and on failure; everything
meant for people goes to stderr."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import Mosquitto, SecretGuard
from support.cli import run_cli as cli

SSID = "SafeSignal-Edge"
IDENT = ["json-dev-1", "tenant-j", "building-j", "room-j"]


def one_doc(p: subprocess.CompletedProcess[str]) -> Any:
    """stdout must be one JSON document and nothing else (json.loads refuses trailing text)."""
    return json.loads(p.stdout)


def prov_args(port: str, *extra: str) -> list[str]:
    return ["provision", "--port", port, "--wifi-ssid", SSID, "--device-id", IDENT[0], "--tenant", IDENT[1],
            "--building", IDENT[2], "--room", IDENT[3], *extra]


def test_provision_status_verify_json(make_sim, guard: SecretGuard, mosquitto: Mosquitto) -> None:
    pw = guard.secret("json-wifi-password")
    env = {"SAFESIGNAL_WIFI_PASS": pw}
    sim = make_sim(aps=[(SSID, pw)], hosts=mosquitto.hosts)
    # failure before the device: not provisioned, verify --port
    p = cli(guard, "verify", "--port", sim.port, "--json")
    doc = one_doc(p)
    assert p.returncode == 2 and doc["verified"] is False and "not provisioned" in doc["error"]
    # failure: the connect test (a wrong password)
    p = cli(guard, *prov_args(sim.port, "--json"), env={"SAFESIGNAL_WIFI_PASS": "not-the-password"})
    doc = one_doc(p)
    assert p.returncode == 9 and doc["exit_code"] == 9 and doc["provisioned"] is False and "WIFI_AUTH" in doc["error"]
    assert "Sending" in p.stderr
    # success with --verify: ONE document, the status and the test alert's fields together
    p = cli(guard, *prov_args(sim.port, "--json", "--verify", "--broker", mosquitto.uri), env=env)
    assert p.returncode == 0, p.stderr
    doc = one_doc(p)
    assert (doc["provisioned"], doc["device_id"], doc["verified"], doc["seq"], doc["online"]) == (
        True, IDENT[0], True, 0, True)
    assert isinstance(doc["latency_s"], float) and isinstance(doc["next_alert_seq"], int)
    assert "✓ Test alert received" in p.stderr and "✓ Provisioning complete!" in p.stderr
    # status: numbers are numbers
    p = cli(guard, "status", "--port", sim.port, "--json")
    doc = one_doc(p)
    assert p.returncode == 0 and doc["provisioned"] is True
    for name in ("alerts_pending", "next_alert_seq", "free_heap"):
        assert isinstance(doc[name], int), (name, doc[name])
    # verify --port: one document; the request line on stderr
    p = cli(guard, "verify", "--port", sim.port, "--broker", mosquitto.uri, "--json")
    assert p.returncode == 0, p.stderr
    doc = one_doc(p)
    assert (doc["verified"], doc["seq"], doc["online"], doc["device_id"]) == (True, 1, True, IDENT[0])
    assert "Test alert requested (seq 1)" in p.stderr
    # verify --port with a mismatching identity: usage error, still one document
    p = cli(guard, "verify", "--port", sim.port, "--device-id", "someone-else", "--json")
    doc = one_doc(p)
    assert p.returncode == 2 and "--device-id" in doc["error"]


def test_status_json_failure(guard: SecretGuard, tmp_path: Path) -> None:
    p = cli(guard, "status", "--port", str(tmp_path / "no-such-port"), "--json")
    doc = one_doc(p)
    assert p.returncode == 3 and doc["exit_code"] == 3 and "Could not open serial port" in doc["error"]


def test_verify_without_port_json(guard: SecretGuard, mosquitto: Mosquitto) -> None:
    base = ["verify", "--broker", mosquitto.uri, "--device-id", "ghost", "--tenant", "t", "--building", "b",
            "--room", "r", "--wait", "1", "--json"]
    p = cli(guard, *base)
    doc = one_doc(p)
    assert p.returncode == 8 and doc["verified"] is False and "no test alert from ghost" in doc["error"]
    p = cli(guard, "verify", "--broker", "mqtt://127.0.0.1:1", *base[3:])
    doc = one_doc(p)
    assert p.returncode == 7 and doc["verified"] is False and doc["error"]


def test_monitor_json_lines(guard: SecretGuard, mosquitto: Mosquitto, make_sim) -> None:
    pw = guard.secret("monitor-json-pass")
    sim = make_sim(aps=[(SSID, pw)], hosts=mosquitto.hosts)
    assert cli(guard, *prov_args(sim.port), env={"SAFESIGNAL_WIFI_PASS": pw}).returncode == 0
    p = cli(guard, "monitor", "--broker", mosquitto.uri, "--tenant", IDENT[1], "--json", "--duration", "3")
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]  # every line one document
    assert events and all(isinstance(e, dict) for e in events)
    p = cli(guard, "monitor", "--broker", "mqtt://127.0.0.1:1", "--tenant", "t", "--json", "--duration", "2")
    assert p.returncode != 0
    for line in p.stdout.splitlines():
        json.loads(line)


def test_sim_press_and_state_json(make_sim, guard: SecretGuard, tmp_path: Path) -> None:
    sim = make_sim()
    p = cli(guard, "sim", "state", "--control", str(sim.control_path))
    assert p.returncode == 0 and isinstance(one_doc(p)["boots"], int)
    p = cli(guard, "sim", "press", "--control", str(sim.control_path), "--count", "2")
    assert p.returncode == 0
    assert [set(json.loads(x)) >= {"pressed_at"} for x in p.stdout.splitlines()] == [True, True]
    p = cli(guard, "sim", "state", "--control", str(tmp_path / "nothing.ctl"))
    assert p.returncode != 0 and p.stdout == "", p.stdout  # no document claims success
    assert "✗" in p.stderr


def test_ca_show_json(guard: SecretGuard, tmp_path: Path) -> None:
    env = {"SAFESIGNAL_CA_PASS": guard.secret("json-ca-passphrase")}
    d = str(tmp_path / "ca")
    assert cli(guard, "ca", "init", "--dir", d, "--tenant", "tenant-j", env=env).returncode == 0
    p = cli(guard, "ca", "show", "--dir", d, "--json")
    assert p.returncode == 0 and one_doc(p)["tenant"] == "tenant-j"
    p = cli(guard, "ca", "show", "--dir", str(tmp_path / "none"), "--json")
    assert p.returncode != 0 and "✗" in p.stderr
    if p.stdout:
        assert "error" in one_doc(p)


@pytest.mark.parametrize("good", [True, False], ids=["image", "not-an-image"])
def test_nvs_dump_json(make_sim, guard: SecretGuard, tmp_path: Path, good: bool) -> None:
    from safesignal.sim import efuse

    sim = make_sim()
    with sim.session() as s:
        s.sync()
    if good:
        p = cli(guard, "nvs", "dump", str(sim.flash), "--efuse", str(efuse.default_path(sim.flash)), "--json")
        assert p.returncode == 0, p.stderr
        assert isinstance(one_doc(p), dict)
    else:
        bad = tmp_path / "bad.bin"
        bad.write_bytes(b"\x00" * 100)
        p = cli(guard, "nvs", "dump", str(bad), "--json")
        assert p.returncode != 0 and "✗" in p.stderr
        if p.stdout:
            assert "error" in one_doc(p)
