"""Device identity end to end: a virtual device makes its own P-256 key, the tenant CA signs its
CSR, and it talks mutual TLS to the shipped mosquitto configuration.

Real parts throughout: the firmware under MicroPython (its own EC code, MicroPython's mbedTLS),
the `safesignal` CLI over a pty, the tenant CA (`safesignal.pki.ca`), mosquitto with
`require_certificate` and the per-device ACL.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from conftest import SecretGuard, Sim
from support.cli import run_cli
from test_e2e_serial import SSID
from tlsutil import MtlsSite, running_site

URI = "mqtts://safesignal-edge.local:8883"
DEVICE = ["--device-id", "btn-1", "--tenant", "acme", "--building", "main", "--room", "r101"]


def provision_args(sim: Sim, site: MtlsSite, pw: str, *extra: str, uri: str = URI) -> list[str]:
    return ["provision", "--port", sim.port, "--wifi-ssid", SSID, "--wifi-pass", pw, *DEVICE,
            "--mqtt-uri", uri, "--ca", str(site.ca.dir), *extra]


def device_key(sim: Sim) -> bytes:
    """The device's private scalar, read from its flash with its own chip keys (test only)."""
    keys = [e.value for e in sim.partition().entries if e.namespace == "provision" and e.key.startswith("key")]
    assert len(keys) == 1 and isinstance(keys[0], bytes)
    return keys[0][4:36]


def key_forms(d: bytes) -> list[str]:
    """The private key in every encoding a leak would likely take: hex, and base64 (also as
    the body of a PEM file) of the raw scalar and of its SEC1 and PKCS#8 DER."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
    forms = [d.hex(), d.hex().upper()]
    nothing = serialization.NoEncryption()
    for blob in (d, key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                      nothing),
                 key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, nothing)):
        # The base64 characters that encode bytes of d only, whatever the alignment.
        off = blob.index(d)
        start, end = (off + 2) // 3, (off + len(d)) // 3
        forms.append(base64.b64encode(blob)[start * 4:end * 4].decode())
    return forms


@pytest.mark.parametrize("heap", [None, "192k"], ids=["source-256k", "mpy-192k"])
def test_device_key_certificate_and_mutual_tls(make_sim, guard: SecretGuard, tmp_path: Path, heap: str | None) -> None:
    """From source in the default heap, and compiled by mpy-cross (as deployed) in 192 kB: the
    smallest heap documented for mqtts:// (PROVISIONING.md)."""
    pw = guard.secret("mtls-wifi-pass")
    with running_site(tmp_path / "site", guard) as site:
        sim = make_sim(aps=[(SSID, pw)], hosts=site.hosts, heap=heap, mpy=heap is not None)
        env = {"SAFESIGNAL_CA_PASS": site.passphrase}
        p = run_cli(guard, *provision_args(sim, site, pw, "--verify", "--broker", site.uri, "--operator", "monitor",
                                           "--show-log"),
                    env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "→ Sending: provision_identity_csr" in p.stdout
        assert "← OK csr (" in p.stdout
        assert "✓ Provisioning complete!" in p.stdout
        assert "✓ Test alert received from btn-1 (seq 0)" in p.stdout
        # The broker took the device's identity from its certificate (CN = device id).
        site.broker.wait_log("u'btn-1'")
        st = json.loads(run_cli(guard, "status", "--port", sim.port, "--json").stdout)
        assert st["mqtt_uri"] == URI and st["mqtt_state"] == "connected"
        assert st["certificate"] == "CN=btn-1 issued by SafeSignal acme CA"
        assert st["certificate_expires"].endswith("Z")
        # The certificate on the device is the one the CA recorded as issued for it.
        cert = x509.load_pem_x509_certificate((site.ca.dir / "issued" / "btn-1.pem").read_bytes())
        assert cert.fingerprint(hashes.SHA256()).hex() == st["certificate_sha256"]
        if heap is None:
            check_operator_without_ca_passphrase(guard, site, sim, tmp_path)
        # The key never left the device: not in any output, host file or log, nor raw in its flash.
        d = device_key(sim)
        for form in key_forms(d):
            guard.secret(form)
        sim.stop()
        assert d not in sim.flash.read_bytes()
        for f in tmp_path.rglob("*"):
            if f.is_file() and f != sim.flash:
                data = f.read_bytes()
                assert d not in data, f
                flat = data.replace(b"\n", b"").replace(b"\r", b"")  # PEM lines
                for form in key_forms(d):
                    assert form.encode() not in flat, f


def check_operator_without_ca_passphrase(guard: SecretGuard, site: MtlsSite, sim: Sim, tmp_path: Path) -> None:
    """A front desk gets an operator key with its own passphrase and a copy of the CA directory
    without the CA key: `safesignal verify` works with that alone."""
    op_pass = guard.secret("front-desk-passphrase-1")
    env = {"SAFESIGNAL_CA_PASS": site.passphrase, "SAFESIGNAL_OPERATOR_PASS": op_pass}
    p = run_cli(guard, "ca", "operator", "--dir", str(site.ca.dir), "--name", "desk", "--own-passphrase",
                "--broker", str(site.files.dir), env=env)
    assert p.returncode == 0 and "encrypted with the operator passphrase" in p.stdout, p.stdout + p.stderr
    site.broker.reload()
    desk = tmp_path / "desk-ca"
    (desk / "operators").mkdir(parents=True)
    for name in ("ca.pem", "ca.json", "operators/desk.pem", "operators/desk.key"):
        shutil.copy2(site.ca.dir / name, desk / name)
    p = run_cli(guard, "verify", "--port", sim.port, "--broker", site.uri, "--ca", str(desk), "--operator", "desk",
                env={"SAFESIGNAL_CA_PASS": "", "SAFESIGNAL_OPERATOR_PASS": op_pass})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "✓ Test alert received from btn-1" in p.stdout


def test_device_refuses_a_broker_whose_certificate_does_not_match(make_sim, guard: SecretGuard,
                                                                   tmp_path: Path) -> None:
    pw = guard.secret("mtls-wifi-pass-2")
    with running_site(tmp_path / "site", guard) as site, running_site(tmp_path / "other", guard) as other:
        # (1) a name the broker's certificate does not carry; (2) a broker of another CA.
        hosts = {**site.hosts, "wrong-name.local": site.host, "other-broker.local": other.host}
        sim = make_sim(aps=[(SSID, pw)], hosts=hosts)
        blank = sim.booted_flash()
        env = {"SAFESIGNAL_CA_PASS": site.passphrase}
        for uri in ("mqtts://wrong-name.local:8883", "mqtts://other-broker.local:8883"):
            p = run_cli(guard, *provision_args(sim, site, pw, uri=uri), env=env)
            assert p.returncode == 9, p.stdout + p.stderr
            assert "connect test failed (BROKER_TLS)" in p.stderr, p.stderr
            assert sim.flash.read_bytes() == blank, "nothing may be saved"
        # The broker of another CA never saw a device session (it refused nothing: the device hung up).
        assert "u'btn-1'" not in other.broker.log_path.read_text()
        # The right broker works with the same device, without a factory reset.
        p = run_cli(guard, *provision_args(sim, site, pw), env=env)
        assert p.returncode == 0, p.stdout + p.stderr


def test_mqtts_without_ca_is_refused_before_anything_is_sent(make_sim, guard: SecretGuard, tmp_path: Path) -> None:
    sim = make_sim()
    p = run_cli(guard, "provision", "--port", sim.port, "--wifi-ssid", SSID, "--wifi-pass", "whatever-pw",
                *DEVICE, "--mqtt-uri", URI)
    assert p.returncode == 2 and "--ca" in p.stderr
    assert not sim.flash.exists() or sim.partition().entries == []
