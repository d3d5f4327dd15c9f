"""Issue 12: `safesignal provision … --dashboard URL --token TOKEN` posts its record, and the
installer confirms the device in the dashboard after its test alert: a virtual device (the real
firmware under MicroPython), a real mosquitto, the dashboard as a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Mosquitto, SecretGuard, Sim, free_port
from support.cli import run_cli
from support.dashboard import Dashboard, add_user

SSID = "Site-Net"
IDENT = ("btn-dash-01", "acme", "hq", "r101")


def provision_args(port: str, password: str, *extra: str) -> list[str]:
    return ["provision", "--port", port, "--wifi-ssid", SSID, "--wifi-pass", password, "--device-id", IDENT[0],
            "--tenant", IDENT[1], "--building", IDENT[2], "--room", IDENT[3], "--yes", *extra]


def test_provision_posts_the_record_and_the_installer_confirms(make_sim, guard: SecretGuard, mosquitto: Mosquitto,
                                                               tmp_path: Path) -> None:
    pw = guard.secret("dashboard-site-pass")
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    installer = add_user(guard, db, "ivan", "installer")
    viewer = add_user(guard, db, "vera", "viewer")
    sim: Sim = make_sim(aps=[(SSID, pw)], hosts=mosquitto.hosts)
    dash = Dashboard(guard, mosquitto.uri, db, tmp_path / "run")
    try:
        # a viewer's token is refused: the device is provisioned, the record is not taken (exit 10)
        r = run_cli(guard, *provision_args(sim.port, pw, "--verify", "--broker", mosquitto.uri, "--json",
                                           "--dashboard", dash.url, "--token", viewer), timeout=180)
        assert r.returncode == 10, r.stderr
        doc = json.loads(r.stdout)
        assert doc["verified"] is True and doc["dashboard"]["posted"] is False and "HTTP 403" in doc["dashboard"][
            "error"], doc
        assert viewer not in r.stdout + r.stderr
        devs = dash.wait_for("/api/devices", viewer, lambda ds: any(d["device_id"] == IDENT[0] for d in ds))
        assert [(d["device_id"], d["provisioned_at"], [a.partition(":")[0] for a in d["anomalies"]]) for d in devs] == [
            (IDENT[0], None, ["unprovisioned"])]  # its test alert came, with no record behind it
        code, body = dash.request("POST", f"/api/devices/{IDENT[1]}/{IDENT[0]}/confirm", installer,
                                  {"installer": "ivan"})
        assert code == 409 and "no provisioning record" in body["reason"], body

        r = run_cli(guard, *provision_args(sim.port, pw, "--verify", "--broker", mosquitto.uri, "--dashboard",
                                           dash.url, "--token", installer, "--installer", "Ivan Installer"),
                    timeout=180)
        assert r.returncode == 0, r.stderr
        assert "✓ Provisioning record posted to " in r.stdout and installer not in r.stdout + r.stderr
        status = json.loads(run_cli(guard, "status", "--port", sim.port, "--json").stdout)
        # the record, the test alert after it, and the device's birth message (presence is
        # written on its own thread, ingest.PresenceWriter: it may trail the alert)
        devs = dash.wait_for("/api/devices", viewer, lambda ds: any(
            d["device_id"] == IDENT[0] and d["provisioned_at"] and d["last_test_alert"] and
            d["last_test_alert"] >= d["provisioned_at"] and d["online"] for d in ds))
        d = next(d for d in devs if d["device_id"] == IDENT[0])
        # the registry knows which chip stands behind the id: the one the device reported
        assert d["chip_id"] == status["chip_id"] and d["chip_id"]
        assert (d["tenant"], d["building"], d["room"], d["confirmed"], d["anomalies"]) == (
            IDENT[1], IDENT[2], IDENT[3], False, []), d
        assert d["online"] is True and d["firmware"] == status["firmware"]
        code, body = dash.request("POST", f"/api/devices/{IDENT[1]}/{IDENT[0]}/confirm", installer,
                                  {"installer": "Ivan Installer"})
        assert code == 200 and body["confirmed_by"] == "Ivan Installer" and body["test_alert"]["type"] == "test", body
        assert body["test_alert"]["chip_id"] == status["chip_id"]
    finally:
        assert dash.stop() == 0, dash.stderr()


def test_dashboard_flags_are_checked_before_the_device_is_touched(guard: SecretGuard, tmp_path: Path) -> None:
    port = str(tmp_path / "no-such-port")
    url = f"http://127.0.0.1:{free_port()}"
    r = run_cli(guard, *provision_args(port, "whatever-pass", "--dashboard", url))
    assert r.returncode == 2 and "--dashboard needs an API token" in r.stderr, r.stderr
    r = run_cli(guard, *provision_args(port, "whatever-pass", "--token", "t"))
    assert r.returncode == 2 and "go with --dashboard" in r.stderr, r.stderr
    r = run_cli(guard, *provision_args(port, "whatever-pass", "--dashboard", "ftp://x", "--token", "t"))
    assert r.returncode == 2 and "--dashboard: the dashboard's URL" in r.stderr, r.stderr
