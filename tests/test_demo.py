"""README command 1 keeps working: the demo provisions a blank virtual device end to end,
with the embedded (amqtt) broker, and never shows the WiFi password."""

from __future__ import annotations

import subprocess
import sys

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
    assert "mutual-TLS part was skipped" in closing
    assert "re-provisioned for mutual TLS" not in closing and "unreadable" not in closing
