"""Revocation (issue 12): the tenant CA keeps a CRL (`safesignal ca revoke`, `ca crl`), the
rendered mosquitto configuration uses it (crlfile), re-keying a device revokes its old
certificate, and a real mosquitto refuses the old certificate after a SIGHUP while it accepts
the new one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import SecretGuard, Sim
from safesignal.pki import ca as tenant_ca
from support.cli import run_cli
from tlsutil import MtlsSite, TlsFiles, _write_identity, make_csr, running_site

WAIT = 5.0


def _ca(tmp_path: Path, guard: SecretGuard) -> tuple[tenant_ca.TenantCA, str]:
    pw = guard.secret("ca-" + secrets.token_urlsafe(18))
    return tenant_ca.init(tmp_path / "ca", "acme", pw), pw


def _sign(ca: tenant_ca.TenantCA, device_id: str) -> bytes:
    _, csr = make_csr(device_id)
    return ca.sign_device_csr(csr, device_id, 30)


def _serial(der: bytes) -> str:
    return f"{x509.load_der_x509_certificate(der).serial_number:x}"


def _crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


def test_revoke_by_device_serial_and_file_and_the_crl(tmp_path: Path, guard: SecretGuard) -> None:
    ca, _ = _ca(tmp_path, guard)
    a1, a2, b = _sign(ca, "btn-a"), _sign(ca, "btn-a"), _sign(ca, "btn-b")
    op = ca.issue_operator_cert("desk")
    first = ca.issue_crl()  # the empty CRL a broker starts with
    c0 = x509.load_pem_x509_crl(first)
    assert list(c0) == [] and c0.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    # By device: every certificate issued to it.
    assert {r.serial for r in ca.find_issued(device="btn-a")} == {_serial(a1), _serial(a2)}
    new = ca.revoke(ca.find_issued(device="btn-a"), "cessationOfOperation")
    assert {r.serial for r in new} == {_serial(a1), _serial(a2)}
    c1 = _crl(ca.crl_path)
    assert {f"{r.serial_number:x}" for r in c1} == {_serial(a1), _serial(a2)}
    assert c1.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert c1.last_update_utc > c0.last_update_utc  # a broker holding both uses the newer
    assert c1.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    entry = c1.get_revoked_certificate_by_serial_number(int(_serial(a1), 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.cessation_of_operation
    # Again: nothing new, no new CRL.
    assert ca.revoke(ca.find_issued(device="btn-a")) == []
    assert _crl(ca.crl_path).last_update_utc == c1.last_update_utc
    # By serial (with colons and upper case, as `openssl x509 -serial` prints it) and by file.
    op_serial = f"{x509.load_pem_x509_certificate(op.cert.read_bytes()).serial_number:X}"
    assert [r.kind for r in ca.revoke(ca.find_issued(serial=op_serial))] == ["operator"]
    b_pem = x509.load_der_x509_certificate(b).public_bytes(serialization.Encoding.PEM)
    assert [r.name for r in ca.revoke(ca.find_issued(cert=b_pem), "keyCompromise")] == ["btn-b"]
    assert len(list(_crl(ca.crl_path))) == 4 and len(ca.revoked()) == 4
    # What is not this CA's is refused.
    other = tenant_ca.init(tmp_path / "other", "acme", "another-passphrase-1")
    with pytest.raises(tenant_ca.CaError, match="did not issue"):
        ca.find_issued(cert=_sign(other, "btn-a"))
    with pytest.raises(tenant_ca.CaError, match="no certificate to device"):
        ca.find_issued(device="btn-zz")
    with pytest.raises(tenant_ca.CaError, match="no certificate with serial"):
        ca.find_issued(serial="abc123")
    with pytest.raises(tenant_ca.CaError, match="exactly one"):
        ca.find_issued(device="btn-a", serial="1")
    ca.lock()
    with pytest.raises(tenant_ca.CaError, match="locked"):
        ca.revoke(ca.find_issued(serial=_serial(b)))


def test_rekeying_revokes_only_the_superseded_certificates(tmp_path: Path, guard: SecretGuard) -> None:
    ca, pw = _ca(tmp_path, guard)
    old, other, new = _sign(ca, "btn-a"), _sign(ca, "btn-b"), _sign(ca, "btn-a")
    ca.lock()
    access = tenant_ca.CaAccess(ca.dir, lambda: pw)
    # The device reports its certificate's SHA-256 as plain hex (provision_status).
    gone = access.revoke_superseded("btn-a", hashlib.sha256(new).hexdigest())
    assert [r.serial for r in gone] == [_serial(old)] and gone[0].reason == "superseded"
    listed = {f"{r.serial_number:x}" for r in _crl(ca.crl_path)}
    assert listed == {_serial(old)} and _serial(other) not in listed and _serial(new) not in listed
    assert access.revoke_superseded("btn-a", hashlib.sha256(new).hexdigest()) == []
    assert access.revoke_superseded("btn-a", None) == []


def test_rendered_broker_config_uses_the_crl(tmp_path: Path, guard: SecretGuard) -> None:
    ca, _ = _ca(tmp_path, guard)
    files = tenant_ca.write_broker_config(ca, tmp_path / "broker", "127.0.0.1", 8883, ["localhost"])
    conf = files.config.read_text()
    assert f"crlfile {files.dir}/crl.pem" in conf.splitlines()
    assert files.crl == files.dir / "crl.pem" and list(_crl(files.crl)) == []
    # A locked CA re-renders without its key while the CRL is current...
    ca.lock()
    tenant_ca.write_broker_config(ca, tmp_path / "broker", "127.0.0.1", 8883, ["localhost"])
    # ...but not once revoked.jsonl lists more than the CRL does (it must be signed again).
    (ca.dir / tenant_ca.REVOKED).write_text(json.dumps(
        {"serial": "abc", "kind": "device", "name": "x", "reason": "unspecified",
         "revoked_at": "2025-01-01T00:00:00Z", "sha256": "00"}) + "\n")
    with pytest.raises(tenant_ca.CaError, match="unlock"):
        tenant_ca.write_broker_config(ca, tmp_path / "broker", "127.0.0.1", 8883, ["localhost"])


def _identity(site: MtlsSite, device_id: str, name: str) -> TlsFiles:
    """A device identity in files of its own name (site.device() reuses one path per device id)."""
    key, csr = make_csr(device_id)
    der = site.ca.sign_device_csr(csr, device_id, 30)
    return _write_identity(site.dir / "ids", name, key, der, site.ca_file, device_id)


def test_old_certificate_refused_by_mosquitto_after_sighup(tmp_path: Path, guard: SecretGuard) -> None:
    with running_site(tmp_path / "site", guard) as site:
        old = _identity(site, "button-1", "old")
        connected = site.client(old, "button-1")
        assert connected.try_connect(WAIT) is None
        new = _identity(site, "button-1", "new")  # re-keyed
        access = tenant_ca.CaAccess(site.ca.dir, lambda: site.passphrase)
        gone = access.revoke_superseded("button-1", hashlib.sha256(new.cert_der).hexdigest())
        assert [r.serial for r in gone] == [_serial(old.cert_der)]
        tenant_ca.write_crl(access.ca, site.files.dir)
        # mosquitto read its crlfile at start: until it is told, the old certificate still works.
        probe = site.client(old, "probe-before")
        assert probe.try_connect(WAIT) is None
        probe.close()
        assert connected.lost.wait(WAIT)  # same CN, so the probe took over its session: start again
        connected = site.client(old, "button-1")
        assert connected.try_connect(WAIT) is None
        log_before = len(site.broker.log())
        site.broker.reload()  # SIGHUP
        time.sleep(0.5)
        # A session opened before the SIGHUP is not closed by it; it is refused at its next connect.
        assert not connected.lost.is_set()
        why = site.client(old, "button-1").try_connect(WAIT)
        assert why is not None, "the revoked certificate was let in after SIGHUP"
        deadline = time.monotonic() + WAIT  # mosquitto logs the refusal after it closes the socket
        while "certificate verify failed" not in site.broker.log()[log_before:]:
            assert time.monotonic() < deadline, site.broker.log()[log_before:]
            time.sleep(0.05)
        # The new certificate and the operator are accepted.
        assert site.client(new, "button-1").try_connect(WAIT) is None
        assert site.client(site.operator("monitor"), "op").try_connect(WAIT) is None


def test_ca_revoke_and_crl_commands(tmp_path: Path, guard: SecretGuard) -> None:
    ca, pw = _ca(tmp_path, guard)
    a1, a2 = _sign(ca, "btn-a"), _sign(ca, "btn-a")
    ca.lock()
    env = {"SAFESIGNAL_CA_PASS": pw}
    broker = tmp_path / "broker"
    # Nothing to revoke: refused before the passphrase is needed.
    p = run_cli(guard, "ca", "revoke", "--dir", str(ca.dir), "--device", "btn-zz")
    assert p.returncode == 2 and "no certificate to device" in p.stderr, p.stderr
    cert_file = tmp_path / "a1.der"
    cert_file.write_bytes(a1)
    p = run_cli(guard, "ca", "revoke", "--dir", str(ca.dir), "--cert", str(cert_file), "--reason", "keyCompromise",
                "--broker", str(broker), env=env)
    assert p.returncode == 0, p.stderr
    assert f"Revoked device btn-a certificate, serial {_serial(a1)} (keyCompromise)" in p.stdout
    assert "SIGHUP" in p.stdout and (broker / "crl.pem").exists()
    p = run_cli(guard, "ca", "revoke", "--dir", str(ca.dir), "--device", "btn-a", "--json", env=env)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [r["serial"] for r in doc["revoked"]] == [_serial(a2)] and doc["already_revoked"] == 1
    # `ca crl`: PEM on stdout (no passphrase needed while the CRL is current), or into a file.
    p = run_cli(guard, "ca", "crl", "--dir", str(ca.dir))
    assert p.returncode == 0, p.stderr
    crl = x509.load_pem_x509_crl(p.stdout.encode())
    assert {f"{r.serial_number:x}" for r in crl} == {_serial(a1), _serial(a2)}
    p = run_cli(guard, "ca", "crl", "--dir", str(ca.dir), "--out", str(broker / "crl.pem"), "--renew", env=env)
    assert p.returncode == 0 and "2 revoked certificate(s)" in p.stdout, p.stderr
    assert _crl(broker / "crl.pem").last_update_utc > crl.last_update_utc
    show = json.loads(run_cli(guard, "ca", "show", "--dir", str(ca.dir), "--json").stdout)
    assert {r["serial"] for r in show["revoked_certificates"]} == {_serial(a1), _serial(a2)}
    assert show["crl_next_update"] is not None
    assert "REVOKED" in run_cli(guard, "ca", "show", "--dir", str(ca.dir)).stdout


def test_provision_rekey_revokes_the_old_certificate(make_sim: Callable[..., Sim], guard: SecretGuard,
                                                    tmp_path: Path) -> None:
    """`provision --ca` on a device that already has a certificate from this CA: after the new
    one is installed and read back, the old one is revoked; with the CRL and a restart of the
    broker (which reads the crlfile afresh) the device still gets in with its new certificate."""
    pw = guard.secret("rekey-wifi-pass")
    ssid = "Rekey-Net"
    with running_site(tmp_path / "site", guard) as site:
        sim: Sim = make_sim(aps=[(ssid, pw)], hosts=site.hosts)
        env = {"SAFESIGNAL_CA_PASS": site.passphrase}
        args = ["provision", "--port", sim.port, "--wifi-ssid", ssid, "--wifi-pass", pw, "--device-id", "btn-1",
                "--tenant", "acme", "--building", "main", "--room", "r101", "--mqtt-uri",
                "mqtts://safesignal-edge.local:8883", "--ca", str(site.ca.dir), "--yes"]
        p = run_cli(guard, *args, env=env, timeout=180)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "Revoked" not in p.stdout
        first = tenant_ca.open(site.ca.dir).find_issued(device="btn-1")
        p = run_cli(guard, *args, env=env, timeout=180)
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"Revoked the device's previous certificate (serial {first[0].serial})" in p.stdout
        ca = tenant_ca.open(site.ca.dir)
        assert [r.serial for r in ca.revoked()] == [first[0].serial]
        st = json.loads(run_cli(guard, "status", "--port", sim.port, "--json").stdout)
        current = [r for r in ca.issued() if r.name == "btn-1" and r.serial not in {first[0].serial}]
        assert [r.sha256.replace(":", "").lower() for r in current] == [st["certificate_sha256"]]
        tenant_ca.write_crl(ca, site.files.dir)
        before = site.broker.log().count("as btn-1")
        site.broker.restart()
        deadline = time.monotonic() + 60
        while site.broker.log().count("as btn-1") <= before:  # the log starts afresh only if rotated
            assert time.monotonic() < deadline, site.broker.log()[-2000:]
            time.sleep(0.2)
