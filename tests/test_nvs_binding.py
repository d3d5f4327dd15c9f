"""Credentials are bound to the chip: NVS encrypted with keys from the chip's eFuse HMAC key.

A provisioned device's flash image copied onto another virtual chip gives that chip nothing:
it boots into provisioning mode and says why.  The raw image holds no secret; decrypted with
the first chip's keys it holds them all (so the encryption, not an empty flash, is what the
copy runs into).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import SecretGuard, flash_partition
from safesignal.nvs.format import derive_hmac_keys, parse_partition
from safesignal.sim import efuse
from support.cli import run_cli
from test_e2e_serial import IDENT, SSID, boot_log, seed_args

PROVISIONING_MODE = "[PROVISION] Provisioning mode: waiting for commands on the console (type help)"


def test_copied_flash_gives_another_chip_nothing(make_sim, guard: SecretGuard, tmp_path: Path) -> None:
    pw = guard.secret("bound-to-chip-a")
    a = make_sim(name="a", aps=[(SSID, pw)])
    assert run_cli(guard, "provision", *seed_args(a.port, pw)).returncode == 0
    a.stop()

    raw = a.flash.read_bytes()
    # No secret in the raw dump (the guard checks every sim's flash too) ...
    assert pw.encode() not in raw and SSID.encode() not in raw
    # ... but chip A's keys read the configuration back: the data is there, encrypted.
    part = flash_partition(a.flash, strict=True)
    records = [e.value for e in part.entries if e.namespace == "provision" and e.key.startswith("cfg")]
    assert records and any(isinstance(v, bytes) and pw.encode() in v for v in records)
    # Without the key nothing is readable.
    assert not parse_partition(raw).entries
    # `safesignal nvs dump` with the chip's eFuse file: intact, decoded, the password masked (the
    # guard fails the test if it appears in the output); without a key: exit 6, nothing readable.
    p = run_cli(guard, "nvs", "dump", str(a.flash), "--efuse", str(efuse.default_path(a.flash)), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    dump = json.loads(p.stdout)
    assert "********" in p.stdout and IDENT[0] in p.stdout and dump["integrity"]
    p = run_cli(guard, "nvs", "dump", str(a.flash))
    assert p.returncode == 6 and IDENT[0] not in p.stdout

    # Chip B: its own eFuses, chip A's flash.
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    shutil.copyfile(a.flash, b_dir / "flash.bin")
    b = make_sim(name="b", aps=[(SSID, pw)], flash=b_dir / "flash.bin")
    fuse_a, fuse_b = efuse.load(efuse.default_path(a.flash)), efuse.load(efuse.default_path(b.flash))
    assert fuse_a.hmac_key != fuse_b.hmac_key and fuse_a.mac != fuse_b.mac
    assert b.control.state()["nvs_unreadable_at_power_up"] > 0
    log = boot_log(b, guard, PROVISIONING_MODE)
    assert any(x.startswith("[NVS] The flash holds ") and "cannot decrypt" in x and "another chip" in x
               for x in log), log
    assert "[NVS] Credentials are bound to the chip that stored them; this device needs provisioning" in log
    assert "[WIFI] Device not provisioned! Cannot connect to WiFi." in log
    st = json.loads(run_cli(guard, "status", "--port", b.port, "--json").stdout)
    assert st["provisioned"] is False and st["wifi_ssid"] == "" and st["device_id"] == ""
    assert st["next_alert_seq"] == 0  # not even chip A's alert counter came across
    # Chip B can be provisioned as a new device; chip A's entries are gone from its flash.
    assert run_cli(guard, "provision", *seed_args(b.port, pw)).returncode == 0
    b.stop()
    keys_a = derive_hmac_keys(fuse_a.hmac_key)
    assert not parse_partition(b.flash.read_bytes(), keys=keys_a).entries

    # Chip A with its own flash still is what it was: the binding, not damage, stopped chip B.
    a2 = make_sim(name="a2", aps=[(SSID, pw)], flash=a.flash)
    st = json.loads(run_cli(guard, "status", "--port", a2.port, "--json").stdout)
    assert st["provisioned"] is True and st["device_id"] == IDENT[0]


def test_blank_chip_says_nothing_about_other_chips(make_sim, guard: SecretGuard) -> None:
    sim = make_sim()
    log = boot_log(sim, guard, PROVISIONING_MODE)
    assert not [x for x in log if x.startswith("[NVS]")]
    assert sim.control.state()["nvs_encrypted"] is True


def test_efuse_file_is_the_chip(make_sim, guard: SecretGuard, tmp_path: Path) -> None:
    sim = make_sim(mac="02:11:22:33:44:55")
    fuse_path = efuse.default_path(sim.flash)
    assert oct(fuse_path.stat().st_mode & 0o777) == "0o600"
    fuse = efuse.load(fuse_path)
    assert fuse.mac == bytes.fromhex("021122334455") and len(fuse.hmac_key) == 32
    assert "mac=02:11:22:33:44:55" in sim.ready_line
    sim.stop()
    # A chip keeps its MAC: asking for another one is refused, not silently applied.
    p = run_cli(guard, "sim", "--port-link", str(tmp_path / "x"), "--flash", str(sim.flash),
                "--mac", "02:00:00:00:00:09")
    assert p.returncode == 2 and "eFuses" in p.stderr
