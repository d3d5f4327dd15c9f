"""safesignal.pki.ca (the tenant CA) and safesignal.cli.ca (``safesignal ca …``), without a broker.

The broker side (the rendered configuration in a running mosquitto) is tests/test_mtls_broker.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import REPO, SecretGuard
from safesignal.cli import ca as ca_cli
from safesignal.pki import ca as tenant_ca
from safesignal.pki.ca import CaError
from tlsutil import make_csr

PASS = "a long CA passphrase 7f3q"
PLAINTEXT_KEY_HEADERS = (b"BEGIN EC PRIVATE KEY", b"BEGIN PRIVATE KEY", b"BEGIN RSA PRIVATE KEY")


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "tenant-ca"


@pytest.fixture
def ca(ca_dir: Path) -> Iterator[tenant_ca.TenantCA]:
    c = tenant_ca.init(ca_dir, "acme", PASS)
    yield c
    c.lock()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ext(cert: x509.Certificate | x509.CertificateSigningRequest, cls: type) -> x509.Extension:  # type: ignore[type-arg]
    return cert.extensions.get_extension_for_class(cls)


# --- making, opening, unlocking ---------------------------------------------------------------
def test_init_makes_a_p256_ca_certificate(ca: tenant_ca.TenantCA, ca_dir: Path) -> None:
    cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "SafeSignal acme CA"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "acme"
    cert.verify_directly_issued_by(cert)  # self-signed
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is True and bc.value.path_length == 0
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert cert.not_valid_before_utc <= now() < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now() > dt.timedelta(days=tenant_ca.CA_DAYS - 1)
    info = json.loads((ca_dir / "ca.json").read_text())
    assert info["tenant"] == "acme"
    assert info["fingerprints"]["cert_sha256"] == tenant_ca.fingerprint(cert)
    assert dt.datetime.fromisoformat(info["created"]) <= now()
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert (ca_dir / "issued").is_dir() and (ca_dir / "operators").is_dir()


def test_ca_key_is_encrypted_on_disk_and_private(ca: tenant_ca.TenantCA, ca_dir: Path) -> None:
    key_file = ca_dir / "ca-key.pem"
    data = key_file.read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with pytest.raises(TypeError):  # "Password was not given but private key is encrypted"
        serialization.load_pem_private_key(data, password=None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(data, password=b"not the passphrase")
    key = serialization.load_pem_private_key(data, password=PASS.encode())
    assert key.public_key() == ca.cert.public_key()
    # Nothing in the CA directory holds a plaintext key, or the passphrase.
    for f in ca_dir.rglob("*"):
        if f.is_file():
            content = f.read_bytes()
            assert not any(h in content for h in PLAINTEXT_KEY_HEADERS), f
            assert PASS.encode() not in content, f


def test_init_writes_the_key_only_encrypted(tmp_path: Path) -> None:
    """Every file init opens for writing, and what is written: no temporary file, no plaintext key."""
    written: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if active[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)):
                written.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)
    try:
        tenant_ca.init(tmp_path / "ca", "acme", PASS).lock()
    finally:
        active[0] = False
    assert sorted(Path(p).name for p in written) == ["ca-key.pem", "ca.json", "ca.pem"]
    key = (tmp_path / "ca" / "ca-key.pem").read_bytes()
    assert not any(h in key for h in PLAINTEXT_KEY_HEADERS)


def test_init_refuses_to_overwrite_and_bad_input(ca: tenant_ca.TenantCA, ca_dir: Path, tmp_path: Path) -> None:
    before = {p.name: p.read_bytes() for p in ca_dir.iterdir() if p.is_file()}
    with pytest.raises(CaError, match="already holds a tenant CA"):
        tenant_ca.init(ca_dir, "acme", PASS)
    assert {p.name: p.read_bytes() for p in ca_dir.iterdir() if p.is_file()} == before
    with pytest.raises(CaError, match="empty"):
        tenant_ca.init(tmp_path / "b", "acme", "")
    with pytest.raises(CaError, match="too short"):
        tenant_ca.init(tmp_path / "b", "acme", "short")
    with pytest.raises(CaError, match="tenant"):
        tenant_ca.init(tmp_path / "b", "acme/evil", PASS)
    with pytest.raises(CaError, match="tenant"):
        tenant_ca.init(tmp_path / "b", "acme\nuser op:x", PASS)
    assert not (tmp_path / "b").exists()


def test_open_loads_public_parts_and_unlock_checks_the_passphrase(ca: tenant_ca.TenantCA, ca_dir: Path) -> None:
    opened = tenant_ca.open(ca_dir)
    assert opened.tenant == "acme" and not opened.unlocked
    assert opened.fingerprint == ca.fingerprint
    _, csr = make_csr("button-1")
    with pytest.raises(CaError, match="locked"):
        opened.sign_device_csr(csr, "button-1")
    for wrong in ("not the passphrase", PASS + " ", PASS.upper()):
        with pytest.raises(CaError, match="wrong passphrase") as e:
            opened.unlock(wrong)
        assert wrong not in str(e.value)
    with pytest.raises(CaError, match="no CA passphrase"):
        opened.unlock("")
    assert not opened.unlocked
    assert opened.unlock(PASS).unlocked
    opened.sign_device_csr(csr, "button-1")
    opened.lock()
    assert not opened.unlocked


def test_open_rejects_a_missing_or_inconsistent_ca(tmp_path: Path, ca: tenant_ca.TenantCA, ca_dir: Path) -> None:
    with pytest.raises(CaError, match="no tenant CA"):
        tenant_ca.open(tmp_path / "nowhere")
    other = tenant_ca.init(tmp_path / "other", "acme", PASS)
    (ca_dir / "ca.pem").write_bytes(other.cert_pem())
    with pytest.raises(CaError, match="not the certificate"):
        tenant_ca.open(ca_dir)


# --- device certificates ------------------------------------------------------------------------
def test_signed_device_certificate(ca: tenant_ca.TenantCA, ca_dir: Path) -> None:
    key, csr = make_csr("button-1", extra_subject=[
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evil-tenant"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admins"),
    ])
    der = ca.sign_device_csr(csr, "button-1", days=30)
    cert = x509.load_der_x509_certificate(der)
    cert.verify_directly_issued_by(ca.cert)
    assert cert.issuer == ca.cert.subject
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "button-1"),
                                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme")])
    assert cert.public_key() == key.public_key()
    assert ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(ca.cert, x509.SubjectKeyIdentifier).value.digest
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.SubjectAlternativeName)
    t = now()
    assert t - dt.timedelta(minutes=6) < cert.not_valid_before_utc <= t - dt.timedelta(minutes=4)
    assert abs(cert.not_valid_after_utc - (t + dt.timedelta(days=30))) < dt.timedelta(minutes=1)
    assert cert.serial_number > 0
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
    # The public record: latest cert per device, every cert by serial, and an index.
    assert x509.load_pem_x509_certificate((ca_dir / "issued" / "button-1.pem").read_bytes()) == cert
    again = x509.load_der_x509_certificate(ca.sign_device_csr(csr, "button-1", days=30))
    assert again.serial_number != cert.serial_number
    recs = ca.issued()
    assert [(r.kind, r.name) for r in recs] == [("device", "button-1")] * 2
    assert recs[0].serial == f"{cert.serial_number:x}"
    assert recs[0].not_after == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert recs[0].sha256 == tenant_ca.fingerprint(cert)
    assert x509.load_pem_x509_certificate((ca_dir / "issued" / recs[0].file).read_bytes()) == cert
    assert x509.load_pem_x509_certificate((ca_dir / "issued" / "button-1.pem").read_bytes()) == again
    assert ca.summary()["devices"] == ["button-1"]


def test_csr_requests_are_ignored(ca: tenant_ca.TenantCA) -> None:
    """A CSR asking for a CA certificate or server use still gets a plain client certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "button-1")]))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("broker.example")]), critical=False)
           .sign(key, hashes.SHA256()))
    cert = x509.load_der_x509_certificate(ca.sign_device_csr(csr.public_bytes(serialization.Encoding.PEM),
                                                             "button-1"))
    assert ext(cert, x509.BasicConstraints).value.ca is False
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.SubjectAlternativeName)


def _csr_with(key: object, cn: list[str]) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, c) for c in cn])
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, algo)  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.DER)


def test_bad_csrs_are_refused(ca: tenant_ca.TenantCA, ca_dir: Path) -> None:
    _, good = make_csr("button-1")
    tampered = bytearray(good)
    tampered[-1] ^= 0x01  # the last byte of the ECDSA signature
    cert_pem = ca.cert_pem()
    cases: list[tuple[bytes, str, str]] = [
        (bytes(tampered), "button-1", "signature is not valid"),
        (good, "button-2", "CN is 'button-1', not the device id 'button-2'"),
        (_csr_with(ec.generate_private_key(ec.SECP384R1()), ["button-1"]), "button-1", "secp384r1.*P-256"),
        (_csr_with(rsa.generate_private_key(65537, 2048), ["button-1"]), "button-1", "RSA.*P-256"),
        (_csr_with(ed25519.Ed25519PrivateKey.generate(), ["button-1"]), "button-1", "P-256"),
        (_csr_with(ec.generate_private_key(ec.SECP256R1()), []), "button-1", "exactly one CN"),
        (_csr_with(ec.generate_private_key(ec.SECP256R1()), ["button-1", "button-2"]), "button-1", "exactly one CN"),
        (b"", "button-1", "not a certificate signing request"),
        (b"\x30\x82garbage" * 10, "button-1", "not a certificate signing request"),
        (b"-----BEGIN CERTIFICATE REQUEST-----\nnonsense\n-----END CERTIFICATE REQUEST-----\n", "button-1",
         "not a certificate signing request"),
        (cert_pem, "button-1", "not a certificate signing request"),
        (good, "op:button-1", "device id"),
        (good, "", "device id"),
    ]
    for csr, device_id, why in cases:
        with pytest.raises(CaError, match=why):
            ca.sign_device_csr(csr, device_id)
    assert ca.issued() == []
    assert not list((ca_dir / "issued").glob("*.pem"))


def test_validity_overrides_and_limits(ca_dir: Path, tmp_path: Path) -> None:
    short = tenant_ca.init(tmp_path / "short-ca", "acme", PASS, days=10)
    _, csr = make_csr("button-1")
    cert = x509.load_der_x509_certificate(short.sign_device_csr(csr, "button-1", days=3650))
    assert cert.not_valid_after_utc == short.cert.not_valid_after_utc  # never outlives its CA
    t = now().replace(microsecond=0)
    expired = x509.load_der_x509_certificate(short.sign_device_csr(
        csr, "button-1", not_before=t - dt.timedelta(days=10), not_after=t - dt.timedelta(days=1)))
    assert expired.not_valid_after_utc == t - dt.timedelta(days=1)
    for bad in (0, -1, 36501):
        with pytest.raises(CaError, match="days"):
            short.sign_device_csr(csr, "button-1", days=bad)


# --- broker and operator certificates -------------------------------------------------------------
def test_server_certificate(ca: tenant_ca.TenantCA, tmp_path: Path) -> None:
    out = tmp_path / "broker"
    cert_path, key_path = ca.issue_server_cert(["safesignal-edge.local", "10.0.0.5", "::1"], out)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    cert.verify_directly_issued_by(ca.cert)
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["safesignal-edge.local"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5", "::1"]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)  # mosquitto reads it unattended
    assert key.public_key() == cert.public_key()
    assert ca.issued()[-1].kind == "server"
    for bad in ([], ["bad name!"], ["a\nb"], ["-x.example"]):
        with pytest.raises(CaError):
            ca.issue_server_cert(bad, out)


def test_operator_certificate_loads_in_python_ssl_with_the_passphrase(ca: tenant_ca.TenantCA) -> None:
    op = ca.issue_operator_cert("monitor")
    cert = x509.load_pem_x509_certificate(op.cert.read_bytes())
    cert.verify_directly_issued_by(ca.cert)
    assert op.username == "op:monitor"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "op:monitor"
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    data = op.key.read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(op.key.stat().st_mode) == 0o600
    # What paho's tls_set(certfile, keyfile, keyfile_password) does:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(str(op.cert), str(op.key), password=PASS)
    with pytest.raises(ssl.SSLError):
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(str(op.cert), str(op.key), password="wrong")
    assert ca.operators() == ["monitor"]
    assert ca.operator("monitor").cert == op.cert
    for bad in ("op:monitor", "", "a b", "x/y", "-lead"):
        with pytest.raises(CaError):
            ca.issue_operator_cert(bad)


# --- broker configuration -----------------------------------------------------------------------
def conf_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def test_broker_config_rendered_from_the_shipped_templates(ca: tenant_ca.TenantCA, tmp_path: Path) -> None:
    templates = REPO / "broker" / "mosquitto"
    for name in ("mosquitto-mtls.conf.in", "acl.in", "acl-operator.in"):
        assert (templates / name).is_file()
    ca.issue_operator_cert("monitor")
    out = tmp_path / "broker"
    files = tenant_ca.write_broker_config(ca, out, "192.0.2.10", 8883, ["safesignal-edge.local", "192.0.2.10"])
    conf = files.config.read_text()
    lines = conf_lines(conf)
    for want in ("listener 8883 192.0.2.10", f"cafile {out}/ca.pem", f"certfile {out}/server.pem",
                 f"keyfile {out}/server.key", "require_certificate true", "use_identity_as_username true",
                 "allow_anonymous false", f"acl_file {out}/acl", "tls_version tlsv1.2", "persistence true",
                 f"persistence_location {out}/data/", "per_listener_settings false"):
        assert want in lines, want
    assert sum(ln.startswith("listener ") for ln in lines) == 1
    assert not any(ln.startswith(("password_file", "psk_file", "allow_anonymous true")) for ln in lines)
    # The comments a site admin reads come from the template.
    assert "Rendered by `safesignal ca broker`" in conf
    template_comments = [ln for ln in (templates / "mosquitto-mtls.conf.in").read_text().splitlines()
                         if ln.startswith("#") and "$" not in ln]
    assert all(c in conf.splitlines() for c in template_comments)
    acl = conf_lines(files.acl.read_text())
    assert acl == [
        "pattern write safesignal/acme/+/+/%u/alert",
        "pattern write safesignal/acme/+/+/%u/status",
        "pattern read safesignal/acme/+/+/%u/cmd",
        "user op:monitor",
        "topic read safesignal/acme/#",
        "topic write safesignal/acme/+/+/+/cmd",
    ]
    assert (out / "ca.pem").read_bytes() == ca.cert_pem()
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert (out / "data").is_dir()
    assert files.issued_server_cert and set(files.host_names) == {"safesignal-edge.local", "192.0.2.10"}
    for f in out.iterdir():  # the CA key stays in the CA directory
        if f.is_file():
            assert b"ENCRYPTED PRIVATE KEY" not in f.read_bytes()

    # Rendering again after a new operator: same broker certificate, the CA may stay locked.
    serial = x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number
    ca.issue_operator_cert("night-desk")
    ca.lock()
    again = tenant_ca.write_broker_config(ca, out, "192.0.2.10", 8883, ["192.0.2.10", "safesignal-edge.local"])
    assert not again.issued_server_cert
    assert x509.load_pem_x509_certificate(again.cert.read_bytes()).serial_number == serial
    assert conf_lines(again.acl.read_text())[3:] == [
        "user op:monitor", "topic read safesignal/acme/#", "topic write safesignal/acme/+/+/+/cmd",
        "user op:night-desk", "topic read safesignal/acme/#", "topic write safesignal/acme/+/+/+/cmd",
    ]
    # Other host names need a new certificate, which needs the key.
    with pytest.raises(CaError, match="unlock"):
        tenant_ca.write_broker_config(ca, out, "192.0.2.10", 8883, ["broker.example"])


def test_broker_config_rejects_unsafe_values(ca: tenant_ca.TenantCA, tmp_path: Path) -> None:
    out = tmp_path / "broker"
    for listen in ("192.0.2.10\nallow_anonymous true", "a b", "", "bad_host!"):
        with pytest.raises(CaError):
            tenant_ca.write_broker_config(ca, out, listen, 8883, ["x.example"])
    with pytest.raises(CaError):
        tenant_ca.write_broker_config(ca, out, "192.0.2.10", 0, ["x.example"])
    with pytest.raises(CaError):
        tenant_ca.write_broker_config(ca, out, "192.0.2.10", 8883, ["x.example"], extra=["a\nallow_anonymous true"])
    with pytest.raises(CaError, match="host names"):
        tenant_ca.write_broker_config(ca, out, "192.0.2.10", 8883, None)
    assert not (out / "mosquitto.conf").exists()


# --- the command line --------------------------------------------------------------------------
class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], guard: SecretGuard, ca_dir: Path) -> None:
        self.capsys, self.guard, self.dir = capsys, guard, str(ca_dir)

    def __call__(self, *args: str) -> tuple[int, str, str]:
        rc = ca_cli.main(list(args))
        o, e = self.capsys.readouterr()
        self.guard.output(f"ca {args[0]} stdout", o)
        self.guard.output(f"ca {args[0]} stderr", e)
        for text in (o, e):
            assert "PRIVATE KEY" not in text
            assert "Traceback" not in text
        return rc, o, e


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], guard: SecretGuard, ca_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv(ca_cli.PASS_ENV, guard.secret(PASS))
    return Cli(capsys, guard, ca_dir)


def test_cli_round_trip(cli: Cli, ca_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = str(ca_dir)
    rc, o, _ = cli("init", "--dir", d, "--tenant", "acme")
    assert rc == 0 and o.startswith("✓ Tenant CA for acme created in")
    assert "encrypted with the passphrase, mode 0600" in o

    rc, _, e = cli("init", "--dir", d, "--tenant", "acme")
    assert rc == 2 and e.startswith("✗ Error:") and "refusing to overwrite" in e

    rc, o, _ = cli("show", "--dir", d, "--json")
    s = json.loads(o)
    assert rc == 0 and s["tenant"] == "acme" and s["key_encrypted"] is True and s["key_mode"] == "0600"

    key, csr_der = make_csr("button-1")
    csr_pem = x509.load_der_x509_csr(csr_der).public_bytes(serialization.Encoding.PEM)
    (tmp_path / "b1.der").write_bytes(csr_der)
    (tmp_path / "b1.pem").write_bytes(csr_pem)
    rc, o, _ = cli("sign", "--dir", d, "--csr", str(tmp_path / "b1.pem"), "--device-id", "button-1",
                   "--out", str(tmp_path / "b1.crt.der"), "--days", "30")
    assert rc == 0 and "✓ Certificate for device button-1 signed" in o
    cert = x509.load_der_x509_certificate((tmp_path / "b1.crt.der").read_bytes())
    assert cert.public_key() == key.public_key()
    rc, o, _ = cli("sign", "--dir", d, "--csr", str(tmp_path / "b1.der"), "--device-id", "button-1",
                   "--out", str(tmp_path / "b1.crt.pem"))
    assert rc == 0
    assert x509.load_pem_x509_certificate((tmp_path / "b1.crt.pem").read_bytes()).public_key() == key.public_key()

    rc, _, e = cli("sign", "--dir", d, "--csr", str(tmp_path / "b1.der"), "--device-id", "button-2",
                   "--out", str(tmp_path / "x.der"))
    assert rc == 2 and "✗ Error: the CSR's subject CN is 'button-1', not the device id 'button-2'" in e
    assert not (tmp_path / "x.der").exists()

    rc, o, _ = cli("operator", "--dir", d, "--name", "monitor")
    assert rc == 0 and "✓ Operator certificate for op:monitor issued" in o
    broker = tmp_path / "broker"
    rc, o, _ = cli("broker", "--dir", d, "--host", "safesignal-edge.local", "--host", "10.0.0.5",
                   "--listen", "10.0.0.5", "--out", str(broker))
    assert rc == 0 and "✓ mosquitto configuration for tenant acme" in o
    # how to start it: as printed for this user (root: see test_broker_start_hint_works_as_printed)
    assert f"mosquitto -c {broker}/mosquitto.conf" in o or (os.geteuid() == 0 and "cannot enter" in o)
    assert "user op:monitor" in (broker / "acl").read_text()

    # Without a passphrase: re-rendering needs none (the broker certificate is kept) ...
    monkeypatch.delenv(ca_cli.PASS_ENV)
    rc, o, _ = cli("broker", "--dir", d, "--host", "10.0.0.5", "--host", "safesignal-edge.local",
                   "--listen", "10.0.0.5", "--out", str(broker))
    assert rc == 0 and "(kept;" in o
    # ... signing does, and is refused when there is no terminal to ask in.
    rc, _, e = cli("sign", "--dir", d, "--csr", str(tmp_path / "b1.der"), "--device-id", "button-1",
                   "--out", str(tmp_path / "y.der"))
    assert rc == 2 and f"no CA passphrase: set {ca_cli.PASS_ENV}" in e

    monkeypatch.setenv(ca_cli.PASS_ENV, PASS)
    rc, o, _ = cli("operator", "--dir", d, "--name", "night-desk", "--broker", str(broker))
    assert rc == 0 and "ACL" in o and "user op:night-desk" in (broker / "acl").read_text()

    rc, o, _ = cli("show", "--dir", d)
    assert rc == 0 and "Operators:     monitor, night-desk" in o and "(encrypted, mode 0600)" in o
    assert "device   button-1" in o


def test_cli_errors(cli: Cli, ca_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    guard: SecretGuard) -> None:
    d = str(ca_dir)
    monkeypatch.setenv(ca_cli.PASS_ENV, "short")
    rc, _, e = cli("init", "--dir", d, "--tenant", "acme")
    assert rc == 2 and "too short" in e and not ca_dir.exists()
    monkeypatch.setenv(ca_cli.PASS_ENV, "")  # empty counts as unset; no terminal to ask in
    rc, _, e = cli("init", "--dir", d, "--tenant", "acme")
    assert rc == 2 and "no CA passphrase" in e and not ca_dir.exists()
    monkeypatch.setenv(ca_cli.PASS_ENV, PASS)
    rc, _, e = cli("init", "--dir", d, "--tenant", "bad tenant")
    assert rc == 2 and "tenant" in e
    assert cli("init", "--dir", d, "--tenant", "acme")[0] == 0

    wrong = guard.secret("wrong passphrase 12345")
    monkeypatch.setenv(ca_cli.PASS_ENV, wrong)
    _, csr = make_csr("button-1")
    (tmp_path / "c.der").write_bytes(csr)
    rc, _, e = cli("sign", "--dir", d, "--csr", str(tmp_path / "c.der"), "--device-id", "button-1",
                   "--out", str(tmp_path / "c.crt"))
    assert rc == 2 and e.strip().startswith("✗ Error: wrong passphrase for the CA key")
    rc, _, e = cli("operator", "--dir", d, "--name", "monitor")
    assert rc == 2 and "wrong passphrase" in e
    monkeypatch.setenv(ca_cli.PASS_ENV, PASS)
    (tmp_path / "junk").write_bytes(b"hello")
    rc, _, e = cli("sign", "--dir", d, "--csr", str(tmp_path / "junk"), "--device-id", "button-1",
                   "--out", str(tmp_path / "c.crt"))
    assert rc == 2 and "not a certificate signing request" in e
    rc, _, e = cli("sign", "--dir", d, "--csr", str(tmp_path / "missing"), "--device-id", "button-1",
                   "--out", str(tmp_path / "c.crt"))
    assert rc == 2 and "cannot read the CSR" in e
    rc, _, e = cli("show", "--dir", str(tmp_path / "nowhere"))
    assert rc == 2 and "no tenant CA" in e
    with pytest.raises(SystemExit) as ex:  # argparse: a bad number is not echoed
        ca_cli.main(["sign", "--dir", d, "--csr", "c", "--device-id", "b", "--out", "o", "--days", "lots"])
    assert ex.value.code == 2
    assert "lots" not in cli.capsys.readouterr().err


def test_module_entry_point(ca: tenant_ca.TenantCA, ca_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != ca_cli.PASS_ENV}
    p = subprocess.run([sys.executable, "-m", "safesignal.cli.ca", "show", "--dir", str(ca_dir), "--json"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=30)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["sha256"] == ca.fingerprint


def test_cli_prompts_twice_at_init(cli: Cli, ca_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ca_cli.PASS_ENV)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    answers = iter([PASS, PASS + "x"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("safesignal.cli.prompt.getpass.getpass", fake_getpass)
    rc, _, e = cli("init", "--dir", str(ca_dir), "--tenant", "acme")
    assert rc == 2 and "the two passphrases differ" in e and not ca_dir.exists()
    assert prompts == ["CA passphrase (not shown): ", "Again, to confirm: "]
    answers = iter([PASS, PASS, PASS])
    assert cli("init", "--dir", str(ca_dir), "--tenant", "acme")[0] == 0
    assert tenant_ca.open(ca_dir).unlock(PASS).unlocked
    _, csr = make_csr("button-1")
    (ca_dir.parent / "c.der").write_bytes(csr)
    prompts.clear()
    rc, _, _ = cli("sign", "--dir", str(ca_dir), "--csr", str(ca_dir.parent / "c.der"), "--device-id", "button-1",
                   "--out", str(ca_dir.parent / "c.crt"))
    assert rc == 0 and prompts == ["CA passphrase (not shown): "]  # asked once to use the CA


def test_a_broker_key_that_does_not_match_its_certificate_is_issued_again(tmp_path: Path) -> None:
    """A crash between writing server.key and server.pem leaves a mismatched pair: it must not
    count as current (write_broker_config then issues a new pair)."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec as ec_

    c = tenant_ca.init(tmp_path / "ca", "acme", "passphrase-123456")
    c.issue_server_cert(["a.local"], tmp_path / "b")
    assert tenant_ca.server_cert_current(c, tmp_path / "b", ["a.local"])
    other = ec_.generate_private_key(ec_.SECP256R1())
    (tmp_path / "b" / "server.key").write_bytes(other.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                                                    ser.NoEncryption()))
    assert not tenant_ca.server_cert_current(c, tmp_path / "b", ["a.local"])


def test_broker_start_hint_works_as_printed(ca: tenant_ca.TenantCA, ca_dir: Path, tmp_path: Path) -> None:
    """`ca broker`'s "Start it with:" line, run as printed (as root, as CI runs): mosquitto starts
    on the rendered configuration.  Rendered where the mosquitto user cannot enter (a 0700
    directory), the tool says so instead of printing a command that fails."""
    import shlex
    import shutil
    import signal
    import socket
    import tempfile
    import time

    from conftest import IN_CI, free_port, need
    from safesignal.alerts.mosquitto import find_mosquitto

    if find_mosquitto() is None:
        need("mosquitto", "apt-get install mosquitto")
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root: this test checks the hint root gets")
        pytest.skip("checks the start command printed for root (CI runs as root)")
    env = {**os.environ, "SAFESIGNAL_CA_PASS": PASS, "PATH": os.environ.get("PATH", "") + ":/usr/sbin"}

    def render(out: Path, port: int) -> list[str]:
        p = subprocess.run([sys.executable, "-m", "safesignal", "ca", "broker", "--dir", str(ca_dir), "--host",
                            "localhost", "--listen", "127.0.0.1", "--port", str(port), "--out", str(out)],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout.splitlines()

    lines = render(tmp_path / "closed" / "broker", free_port())  # pytest's tmp root is 0700
    assert not any(ln.startswith("Start it with:") for ln in lines)
    assert any("cannot enter" in ln for ln in lines)

    base = Path(tempfile.mkdtemp(prefix="safesignal-broker-"))
    try:
        os.chmod(base, 0o755)  # a directory the mosquitto user can enter, like /etc/mosquitto
        port = free_port()
        lines = render(base / "broker", port)
        hint = next(ln for ln in lines if ln.startswith("Start it with: "))
        command = hint[len("Start it with: "):]
        assert "mosquitto -c " + shlex.quote(str(base / "broker" / "mosquitto.conf")) in command
        proc = subprocess.Popen(["sh", "-c", command], env=env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 20
            listening = False
            while not listening and proc.poll() is None and time.monotonic() < deadline:
                with socket.socket() as s:
                    listening = s.connect_ex(("127.0.0.1", port)) == 0
                time.sleep(0.1)
            log = (base / "broker" / "mosquitto.log")
            assert listening, f"exit {proc.poll()}: {log.read_text() if log.exists() else ''}"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)
