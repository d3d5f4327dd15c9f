"""README command 1 keeps working: the demo provisions a blank virtual device end to end,
with the embedded (amqtt) broker, and never shows the WiFi password; where mosquitto is
installed it ends in the dashboard, with the device confirmed by the installer."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import SEED_BOOT_LOG, SecretGuard


def test_demo_runs_end_to_end(guard: SecretGuard) -> None:
    guard.secret("your-wifi-password")
    p = subprocess.run([sys.executable, "-m", "safesignal.demo"], capture_output=True, text=True, timeout=180,
                       stdin=subprocess.DEVNULL)
    guard.output("demo stdout", p.stdout)
    guard.output("demo stderr", p.stderr)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "✓ Provisioning complete!" in out
    assert "✓ Test alert received from esp32-prod-001 (seq 0) " in out
    log = out[out.index("[BOOT]"):].splitlines()
    assert log[1:9] == SEED_BOOT_LOG
    assert "PANIC" in out[out.index("== The panic button"):]
    assert "esp32-prod-001" in out[out.index("== The panic button"):]
    # The production part (CI has mosquitto): mutual TLS with a device-made key, flash unreadable.
    prod = out[out.index("== Production"):]
    assert "→ Sending: provision_identity_csr" in prod
    assert "✓ Test alert received from esp32-prod-001" in prod
    assert "(exit 6: nothing readable)" in prod
    # The dashboard (the demo extra brings it): the provisioning posted its record, the installer
    # confirmed after the test alert, and the device's row says so.
    m = re.search(r"✓ Dashboard on (http://127\.0\.0\.1:\d+) ", prod)
    assert m is not None, prod
    url = m.group(1)
    assert f"✓ Provisioning record posted to {url} (chip " in prod and "installer Demo Installer)" in prod
    confirm = prod[prod.index("== The installer confirms in the dashboard"):]
    assert "✓ Confirmed by Demo Installer (test alert seq " in confirm
    assert f"Dashboard: {url} " in confirm
    rows = confirm.splitlines()
    start = rows.index("   GET /api/devices, esp32-prod-001:") + 1
    end = rows.index("     }", start) + 1
    row = json.loads("\n".join(rows[start:end]))
    assert (row["tenant"], row["building"], row["room"], row["device_id"]) == (
        "tenant-a", "building-a", "room-1", "esp32-prod-001")
    assert (row["confirmed"], row["confirmed_by"], row["online"], row["anomalies"]) == (
        True, "Demo Installer", True, []), row
    assert row["chip_id"] and row["last_test_alert"] >= row["provisioned_at"]
    assert "esp32-prod-001: online: true, confirmed: true (by Demo Installer)" in confirm
    assert "The dashboard registered it and shows it confirmed by the installer." in out[out.index("== Done"):]
    assert "ssd_" not in out + p.stderr  # the installer's API token is never shown
    with pytest.raises(urllib.error.URLError):  # the dashboard ended with the demo
        urllib.request.urlopen(url + "/api/me", timeout=10)


def test_demo_without_mosquitto_says_the_tls_part_was_skipped(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Where mosquitto is missing the demo skips mutual TLS, and its closing lines say so."""
    from safesignal import demo
    from safesignal.alerts import mosquitto

    monkeypatch.setattr(mosquitto, "find_mosquitto", lambda: None)
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "== Skipping the production part" in out
    closing = out[out.index("== Done"):]
    assert "mutual-TLS part was skipped" in closing and "the dashboard" in closing
    assert "== The dashboard" not in out and "Dashboard on" not in out
    assert "re-provisioned for mutual TLS" not in closing and "unreadable" not in closing
