"""The tenant certificate authority and the mutual-TLS broker configuration.

One CA per tenant, kept in a directory (mode 0700) on the site administrator's machine::

    ca-key.pem        the CA's P-256 private key, PKCS#8 PEM encrypted with the CA passphrase
                      (mode 0600; it is never written anywhere unencrypted, not even briefly)
    ca.pem            the self-signed CA certificate (what the broker and devices trust)
    ca.json           tenant, creation time, fingerprints
    issued/           public record of every certificate issued, for a security reviewer:
      index.jsonl       one JSON line per certificate: kind, name, subject, serial, validity, sha256
      <device-id>.pem   the latest certificate of each device
      all/<serial>.pem  every certificate ever issued (devices, operators, broker)
    operators/        operator certificates for the host tools, CN "op:<name>":
      <name>.pem, <name>.key (the key encrypted with the CA passphrase, mode 0600)
    revoked.jsonl     one JSON line per revoked certificate: serial, kind, name, reason, time
    crl.pem           the current certificate revocation list (CRL) signed by the CA, listing
                      every revoked certificate; the broker's copy is its ``crlfile``

Devices make their own key and send a certificate signing request (CSR); the CA checks it
and issues a client certificate whose Common Name is the device id.  The broker
(mosquitto, ``use_identity_as_username``) takes that CN as the MQTT username and its ACL
lets each device write only its own alert/status topics and read only its own cmd topic.
Operator CNs start with ``op:``; a colon cannot appear in a device id, so an operator and a
device can never have the same identity.

The broker's configuration is rendered from the templates shipped in ``broker/mosquitto/``
(:func:`write_broker_config`, :func:`write_acl`, :func:`write_crl`).

Revocation: :meth:`TenantCA.revoke` adds certificates to ``revoked.jsonl`` and signs a new CRL;
re-keying a device revokes the certificates it had before (:meth:`CaAccess.revoke_superseded`,
called once the new certificate is installed and read back).  mosquitto checks client
certificates against its ``crlfile`` and reads that file again on SIGHUP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import ssproto
from safesignal.errors import SafeSignalError

CA_KEY = "ca-key.pem"
CA_CERT = "ca.pem"
CA_JSON = "ca.json"
ISSUED = "issued"
ISSUED_ALL = "all"
INDEX = "index.jsonl"
REVOKED = "revoked.jsonl"
CRL = "crl.pem"
OPERATORS = "operators"

CA_DAYS = 7300  # 20 years: the CA outlives every device certificate it signs
DEVICE_DAYS = 3650  # devices stay on the wall for years and have no renewal path yet
OPERATOR_DAYS = 365
SERVER_DAYS = 825
# A CRL's nextUpdate: once it has passed, mosquitto (OpenSSL: X509_V_ERR_CRL_HAS_EXPIRED) refuses
# every client, so the broker's copy must be renewed before then (`safesignal ca crl`, or
# `ca broker`, which renews it within RENEW_BEFORE of that date).
CRL_DAYS = 365
# RFC 5280 5.3.1 reason codes a revocation may give (CLI names).
REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
}
MIN_PASSPHRASE = 12
BACKDATE = dt.timedelta(minutes=5)  # notBefore = now - 5 min: tolerate clocks a little behind
RENEW_BEFORE = dt.timedelta(days=30)  # write_broker_config re-issues a broker cert this close to expiry
OPERATOR_PREFIX = "op:"
MTLS_PORT = 8883

# The shipped templates (this checkout's broker/mosquitto/).
TEMPLATES = Path(__file__).resolve().parents[2] / "broker" / "mosquitto"
CONF_TEMPLATE = "mosquitto-mtls.conf.in"
ACL_TEMPLATE = "acl.in"
ACL_OPERATOR_TEMPLATE = "acl-operator.in"


class CaError(SafeSignalError, ValueError):
    """Bad input for the CA (wrong passphrase, a CSR we will not sign, no CA in the directory…)."""

    exit_code = 2


@dataclass(frozen=True)
class IssuedRecord:
    """One line of ``issued/index.jsonl``."""

    kind: str  # "device", "operator" or "server"
    name: str  # device id, operator name, or the broker's first host name
    subject: str
    serial: str  # hex
    not_before: str  # ISO 8601, UTC
    not_after: str
    sha256: str
    issued_at: str
    file: str  # the certificate's copy under issued/all/


@dataclass(frozen=True)
class RevokedRecord:
    """One line of ``revoked.jsonl``."""

    serial: str  # hex, as in IssuedRecord
    kind: str
    name: str
    reason: str  # a key of REASONS
    revoked_at: str  # ISO 8601, UTC
    sha256: str


@dataclass(frozen=True)
class OperatorCert:
    """An operator's credentials for paho's ``tls_set(ca_certs=ca, certfile=cert, keyfile=key,
    keyfile_password=<CA passphrase>)``."""

    name: str
    username: str  # "op:<name>", the certificate CN and the broker username
    cert: Path
    key: Path  # PKCS#8 PEM, encrypted
    ca: Path
    not_after: dt.datetime


@dataclass(frozen=True)
class BrokerFiles:
    """What :func:`write_broker_config` wrote (all in ``dir``)."""

    dir: Path
    config: Path
    acl: Path
    ca: Path
    cert: Path
    key: Path
    crl: Path
    log: Path
    data: Path
    listen: str
    port: int
    host_names: tuple[str, ...]
    issued_server_cert: bool


# --- small helpers --------------------------------------------------------------------------
def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, as ``AB:CD:…`` (what ``openssl x509 -fingerprint -sha256`` shows)."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _hex(fp: str) -> str:
    """A SHA-256 fingerprint as plain lower-case hex (index.jsonl writes "AB:CD:…", devices "abcd…")."""
    return fp.replace(":", "").lower()


def check_name(what: str, value: str) -> str:
    if not isinstance(value, str):
        raise CaError(f"{what} must be text")
    try:
        ssproto.check_ident(what, value)
    except ssproto.ProtocolError as e:
        raise CaError(e.message) from None
    return value


def check_passphrase(passphrase: str) -> None:
    if not isinstance(passphrase, str) or not passphrase:
        raise CaError("the CA passphrase is empty")
    if len(passphrase) < MIN_PASSPHRASE:
        raise CaError(f"the CA passphrase is too short: use at least {MIN_PASSPHRASE} characters")


def _check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1 or days > 36500:
        raise CaError("the validity must be a whole number of days, 1-36500")
    return days


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (O_EXCL: never replaces an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, mode)  # the umask may have taken bits away; never adds any beyond ``mode``
        f.write(data)
        f.flush()
        os.fsync(fd)


def _write_replace(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` atomically: a temporary file created with ``mode``, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    _write_new(tmp, data, mode)
    os.replace(tmp, path)


def _mkdir(path: Path, mode: int = 0o700) -> None:
    if not path.is_dir():
        path.mkdir(parents=True, mode=mode)
        os.chmod(path, mode)


def _parse_csr(data: bytes) -> x509.CertificateSigningRequest:
    if not isinstance(data, (bytes, bytearray)):
        raise CaError("the CSR must be bytes (PEM or DER)")
    data = bytes(data)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CaError("not a certificate signing request (expected a PKCS#10 CSR, PEM or DER)") from None


def _is_p256(key: object) -> bool:
    return isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) and isinstance(
        key.curve, ec.SECP256R1)


def _check_host_name(name: str) -> x509.GeneralName:
    """A SAN entry: an IPv4/IPv6 address or a DNS name (letters, digits, '-', dots)."""
    if not isinstance(name, str) or not name:
        raise CaError("a broker host name is empty")
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    labels = name.split(".")
    ok = len(name) <= 253 and all(
        0 < len(lb) <= 63 and lb[0] != "-" and lb[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c == "-") for c in lb)
        for lb in labels
    )
    if not ok:
        raise CaError(f"not a host name or IP address: {name[:80]!r}")
    return x509.DNSName(name.lower())


def _san_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names: set[str] = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    return names


def _normalise_hosts(host_names: Sequence[str]) -> list[x509.GeneralName]:
    if isinstance(host_names, str) or not host_names:
        raise CaError("the broker needs at least one host name or IP address (what devices connect to)")
    out: list[x509.GeneralName] = []
    for h in host_names:
        g = _check_host_name(h)
        if g not in out:
            out.append(g)
    return out


def _general_name_str(g: x509.GeneralName) -> str:
    return str(g.value)


def _config_value(what: str, value: str) -> str:
    """A value placed on a line of the mosquitto configuration: nothing that could end the line
    or be read as a second token."""
    if not value or any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in value):
        raise CaError(f"{what} must not be empty or contain spaces or control characters: {value[:80]!r}")
    return value


# --- the CA ---------------------------------------------------------------------------------
class TenantCA:
    """A tenant CA directory.  :func:`open` loads the public parts only; :meth:`unlock` loads
    the private key (decrypted in memory, never on disk) so the CA can issue certificates."""

    def __init__(self, directory: Path, cert: x509.Certificate, info: dict[str, Any]) -> None:
        self.dir = directory
        self.cert = cert
        self.info = info
        self.tenant: str = info["tenant"]
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._passphrase: bytes | None = None

    # --- paths and public facts -------------------------------------------------------------
    @property
    def key_path(self) -> Path:
        return self.dir / CA_KEY

    @property
    def cert_path(self) -> Path:
        return self.dir / CA_CERT

    @property
    def issued_dir(self) -> Path:
        return self.dir / ISSUED

    @property
    def operators_dir(self) -> Path:
        return self.dir / OPERATORS

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    @property
    def unlocked(self) -> bool:
        return self._key is not None

    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def summary(self) -> dict[str, Any]:
        """What ``safesignal ca show`` prints: public facts only."""
        key_head = b""
        mode = None
        try:
            with self.key_path.open("rb") as f:
                key_head = f.read(64)
            mode = self.key_path.stat().st_mode & 0o777
        except OSError:
            pass
        issued = self.issued()
        return {
            "tenant": self.tenant,
            "dir": str(self.dir),
            "created": self.info.get("created"),
            "subject": self.cert.subject.rfc4514_string(),
            "not_before": _iso(self.cert.not_valid_before_utc),
            "not_after": _iso(self.cert.not_valid_after_utc),
            "sha256": self.fingerprint,
            "key_file": str(self.key_path),
            "key_encrypted": key_head.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"),
            "key_mode": None if mode is None else f"{mode:04o}",
            "issued": len(issued),
            "devices": sorted({r.name for r in issued if r.kind == "device"}),
            "operators": self.operators(),
        }

    def issued(self) -> list[IssuedRecord]:
        """Every certificate this CA issued, in order (from ``issued/index.jsonl``)."""
        try:
            lines = (self.issued_dir / INDEX).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            if line.strip():
                out.append(IssuedRecord(**json.loads(line)))
        return out

    def revoked(self) -> list[RevokedRecord]:
        """Every certificate this CA revoked, in order (from ``revoked.jsonl``)."""
        try:
            lines = (self.dir / REVOKED).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [RevokedRecord(**json.loads(line)) for line in lines if line.strip()]

    @property
    def crl_path(self) -> Path:
        return self.dir / CRL

    def crl(self) -> x509.CertificateRevocationList | None:
        """The CA's current CRL (``crl.pem``) if it is signed by this CA and lists exactly the
        revoked certificates; None otherwise (missing, damaged, stale)."""
        try:
            crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        except (OSError, ValueError):
            return None
        if not crl.is_signature_valid(self.cert.public_key()):  # type: ignore[arg-type]
            return None
        if {r.serial_number for r in crl} != {int(r.serial, 16) for r in self.revoked()}:
            return None
        return crl

    def crl_current(self) -> bool:
        """Whether ``crl.pem`` is valid (above) and more than 30 days from its nextUpdate."""
        crl = self.crl()
        nu = crl.next_update_utc if crl is not None else None
        return nu is not None and nu - _now() > RENEW_BEFORE

    def issue_crl(self, days: int = CRL_DAYS) -> bytes:
        """Sign a new CRL listing every revoked certificate, write it to ``crl.pem``; returns it
        (PEM).  Its lastUpdate is later than the previous CRL's, so a broker that holds both picks
        the new one; its CRL number counts up."""
        key = self._need_key()
        _check_days(days)
        old = self.crl()
        if old is None:
            try:
                old = x509.load_pem_x509_crl(self.crl_path.read_bytes())
            except (OSError, ValueError):
                old = None
        now = _now()
        number = 1
        if old is not None:
            # A broker adds each CRL it reads on SIGHUP to its store and OpenSSL uses, of two
            # from one issuer, the one with the later lastUpdate (and only one not dated in the
            # future): so wait for the next whole second rather than date this one ahead.
            while now <= old.last_update_utc:
                time.sleep(0.05)
                now = _now()
            try:
                number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
            except x509.ExtensionNotFound:
                pass
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now)
            .next_update(min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        )
        for r in self.revoked():
            entry = (x509.RevokedCertificateBuilder().serial_number(int(r.serial, 16))
                     .revocation_date(dt.datetime.fromisoformat(r.revoked_at)))
            if r.reason != "unspecified":  # RFC 5280 5.3.1: omit the extension rather than say unspecified
                entry = entry.add_extension(x509.CRLReason(REASONS[r.reason]), critical=False)
            b = b.add_revoked_certificate(entry.build())
        pem = b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        _write_replace(self.crl_path, pem, 0o644)
        return pem

    def crl_pem(self) -> bytes:
        """The current CRL (PEM), signing a new one first when ``crl.pem`` is missing, stale or
        within 30 days of its nextUpdate (the CA must then be unlocked)."""
        if not self.crl_current():
            if not self.unlocked:
                raise CaError("the CRL must be signed again: unlock the CA first")
            return self.issue_crl()
        return self.crl_path.read_bytes()

    def find_issued(self, *, device: str | None = None, serial: str | None = None,
                    cert: bytes | None = None) -> list[IssuedRecord]:
        """The issued certificates named by a device id (all of that device's), a serial (hex,
        any certificate kind) or a certificate (PEM or DER, which this CA must have issued)."""
        if sum(x is not None for x in (device, serial, cert)) != 1:
            raise CaError("name exactly one of: a device id, a serial, a certificate file")
        issued = self.issued()
        if device is not None:
            check_name("device id", device)
            found = [r for r in issued if r.kind == "device" and r.name == device]
            if not found:
                raise CaError(f"this CA issued no certificate to device {device!r}")
            return found
        if serial is not None:
            s = serial.lower().removeprefix("0x").replace(":", "")
            try:
                want = int(s, 16)
            except ValueError:
                raise CaError(f"{serial[:80]!r} is not a certificate serial (hex)") from None
            found = [r for r in issued if int(r.serial, 16) == want]
            if not found:
                raise CaError(f"this CA issued no certificate with serial {want:x}")
            return found
        assert cert is not None
        try:
            c = x509.load_pem_x509_certificate(cert) if b"-----BEGIN" in cert else x509.load_der_x509_certificate(cert)
        except ValueError:
            raise CaError("the file is not a certificate (PEM or DER)") from None
        found = [r for r in issued if r.sha256 == fingerprint(c)]
        if not found:
            raise CaError(f"this CA did not issue that certificate (serial {c.serial_number:x})")
        return found

    def revoke(self, records: Sequence[IssuedRecord], reason: str = "unspecified") -> list[RevokedRecord]:
        """Revoke these issued certificates (those not yet revoked) and sign a new CRL.  Returns
        the newly revoked ones (empty if all were revoked already: no new CRL then)."""
        if reason not in REASONS:
            raise CaError(f"unknown revocation reason {reason!r} (one of: {', '.join(REASONS)})")
        self._need_key()
        done = {int(r.serial, 16) for r in self.revoked()}
        new: list[RevokedRecord] = []
        for r in records:
            if int(r.serial, 16) in done:
                continue
            done.add(int(r.serial, 16))
            new.append(RevokedRecord(serial=r.serial, kind=r.kind, name=r.name, reason=reason,
                                     revoked_at=_iso(_now()), sha256=r.sha256))
        if not new and self.crl() is not None:
            return []
        if new:
            fd = os.open(self.dir / REVOKED, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, "".join(json.dumps(asdict(x), sort_keys=True) + "\n" for x in new).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        self.issue_crl()
        return new

    def operators(self) -> list[str]:
        """Names of the operators with a certificate on file (``operators/<name>.pem``)."""
        if not self.operators_dir.is_dir():
            return []
        return sorted(p.stem for p in self.operators_dir.glob("*.pem"))

    def operator(self, name: str) -> OperatorCert:
        """The files of an operator issued earlier."""
        check_name("operator name", name)
        cert_path = self.operators_dir / f"{name}.pem"
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except FileNotFoundError:
            raise CaError(f"no operator {name!r} in {self.dir} (issue one with `safesignal ca operator`)") from None
        return OperatorCert(name, OPERATOR_PREFIX + name, cert_path, self.operators_dir / f"{name}.key",
                            self.cert_path, cert.not_valid_after_utc)

    # --- the private key ----------------------------------------------------------------------
    def unlock(self, passphrase: str) -> TenantCA:
        """Decrypt the CA key into memory.  A wrong passphrase raises :class:`CaError`."""
        if not isinstance(passphrase, str) or not passphrase:
            raise CaError("no CA passphrase given")
        try:
            data = self.key_path.read_bytes()
        except FileNotFoundError:
            raise CaError(f"the CA key {self.key_path} is missing") from None
        pw = passphrase.encode("utf-8")
        try:
            key = serialization.load_pem_private_key(data, password=pw)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise CaError(f"wrong passphrase for the CA key in {self.dir} (or the key file is damaged)") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != self.cert.public_key():
            raise CaError(f"{self.key_path} is not the key of {self.cert_path}")
        self._key = key
        self._passphrase = pw
        return self

    def lock(self) -> None:
        """Forget the decrypted key and the passphrase."""
        self._key = None
        self._passphrase = None

    def _need_key(self) -> ec.EllipticCurvePrivateKey:
        if self._key is None:
            raise CaError("the CA is locked: unlock it with its passphrase first")
        return self._key

    # --- issuing ----------------------------------------------------------------------------
    def _validity(self, days: int, not_before: dt.datetime | None,
                  not_after: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
        _check_days(days)
        now = _now()
        nb = not_before if not_before is not None else now - BACKDATE
        na = not_after if not_after is not None else now + dt.timedelta(days=days)
        if not_after is None:
            na = min(na, self.cert.not_valid_after_utc)  # never outlive the CA
        if nb.tzinfo is None or na.tzinfo is None:
            raise CaError("not_before/not_after must be timezone-aware")
        if na <= nb:
            raise CaError("the certificate would expire before it starts")
        return nb, na

    def _issue(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, eku: x509.ObjectIdentifier,
               nb: dt.datetime, na: dt.datetime, san: list[x509.GeneralName] | None = None) -> x509.Certificate:
        key = self._need_key()
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(nb)
            .not_valid_after(na)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        )
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(key, hashes.SHA256())

    def _record(self, kind: str, name: str, cert: x509.Certificate) -> IssuedRecord:
        """Keep a public copy of ``cert`` under issued/all/ and add it to the index."""
        all_dir = self.issued_dir / ISSUED_ALL
        _mkdir(all_dir, 0o755)
        serial = f"{cert.serial_number:x}"
        rel = f"{ISSUED_ALL}/{serial}.pem"
        _write_new(self.issued_dir / rel, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        rec = IssuedRecord(
            kind=kind, name=name, subject=cert.subject.rfc4514_string(), serial=serial,
            not_before=_iso(cert.not_valid_before_utc), not_after=_iso(cert.not_valid_after_utc),
            sha256=fingerprint(cert), issued_at=_iso(_now()), file=rel,
        )
        fd = os.open(self.issued_dir / INDEX, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (json.dumps(asdict(rec), sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return rec

    def _name(self, cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.tenant)])

    def sign_device_csr(self, csr: bytes, device_id: str, days: int = DEVICE_DAYS, *,
                        not_before: dt.datetime | None = None, not_after: dt.datetime | None = None) -> bytes:
        """Check a device's CSR (PEM or DER) and issue its client certificate; returns it as DER.

        The CSR must be validly self-signed, carry a P-256 key and have exactly one subject CN,
        equal to ``device_id``.  Everything else in it (other subject attributes, requested
        extensions) is ignored: the certificate says CN=<device id>, O=<tenant>, clientAuth
        only.  ``not_before``/``not_after`` override the validity (tests: an expired cert).
        """
        self._need_key()
        check_name("device id", device_id)
        req = _parse_csr(csr)
        try:
            valid = req.is_signature_valid
            public_key = req.public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise CaError("the CSR uses a key or signature algorithm this CA does not accept (use EC P-256)") from None
        if not valid:
            raise CaError("the CSR's signature is not valid: it was damaged, or not signed by the key it contains")
        if not _is_p256(public_key):
            raise CaError(f"the CSR's key is {_describe_key(public_key)}; devices must use an EC P-256 key")
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        cns = req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(cns) != 1:
            raise CaError(f"the CSR's subject must have exactly one CN (the device id); it has {len(cns)}")
        cn = cns[0].value
        if cn != device_id:
            shown = cn[:80] if isinstance(cn, str) else repr(cn)[:80]
            raise CaError(f"the CSR's subject CN is {shown!r}, not the device id {device_id!r}")
        nb, na = self._validity(days, not_before, not_after)
        cert = self._issue(self._name(device_id), public_key, ExtendedKeyUsageOID.CLIENT_AUTH, nb, na)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        self._record("device", device_id, cert)
        _write_replace(self.issued_dir / f"{device_id}.pem", pem, 0o644)
        return cert.public_bytes(serialization.Encoding.DER)

    def issue_server_cert(self, host_names: Sequence[str], out_dir: Path, days: int = SERVER_DAYS) -> tuple[Path, Path]:
        """A TLS server certificate for the broker, valid for ``host_names`` (DNS names and/or IP
        addresses: every name devices and host tools connect to), written to
        ``out_dir/server.pem`` with its new key in ``out_dir/server.key`` (mode 0600,
        unencrypted: mosquitto must read it unattended; it is the broker host's own secret)."""
        self._need_key()
        san = _normalise_hosts(host_names)
        nb, na = self._validity(days, None, None)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._issue(self._name(_general_name_str(san[0])), key.public_key(), ExtendedKeyUsageOID.SERVER_AUTH,
                           nb, na, san)
        out = Path(out_dir)
        _mkdir(out)
        key_path, cert_path = out / "server.key", out / "server.pem"
        _write_replace(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()), 0o600)
        _write_replace(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        self._record("server", _general_name_str(san[0]), cert)
        return cert_path, key_path

    def issue_operator_cert(self, name: str, days: int = OPERATOR_DAYS, *,
                            key_passphrase: str | None = None) -> OperatorCert:
        """A client certificate for the host tools (monitor, verify, provision --verify), CN
        ``op:<name>``, with a new key stored in ``operators/<name>.key`` encrypted with
        ``key_passphrase`` (default: the CA passphrase).  Issuing again replaces the files
        (the old certificate stays valid until it expires)."""
        self._need_key()
        check_name("operator name", name)
        if key_passphrase is not None:
            check_passphrase(key_passphrase)
            pw = key_passphrase.encode("utf-8")
        else:
            assert self._passphrase is not None
            pw = self._passphrase
        nb, na = self._validity(days, None, None)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._issue(self._name(OPERATOR_PREFIX + name), key.public_key(), ExtendedKeyUsageOID.CLIENT_AUTH,
                           nb, na)
        _mkdir(self.operators_dir)
        key_path, cert_path = self.operators_dir / f"{name}.key", self.operators_dir / f"{name}.pem"
        _write_replace(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.BestAvailableEncryption(pw)), 0o600)
        _write_replace(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        self._record("operator", name, cert)
        return OperatorCert(name, OPERATOR_PREFIX + name, cert_path, key_path, self.cert_path, na)


def _describe_key(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    size = getattr(key, "key_size", None)
    kind = type(key).__name__.replace("PublicKey", "").lstrip("_") or "unknown"
    return f"{kind} {size}-bit" if size else kind


# --- making and opening a CA -------------------------------------------------------------------
def init(directory: str | os.PathLike[str], tenant: str, passphrase: str, days: int = CA_DAYS) -> TenantCA:
    """Make a new tenant CA in ``directory`` (created mode 0700 if missing).  Refuses to touch a
    directory that already holds a CA.  Returns it unlocked."""
    check_name("tenant", tenant)
    check_passphrase(passphrase)
    _check_days(days)
    d = Path(directory)
    if any((d / n).exists() for n in (CA_KEY, CA_CERT, CA_JSON)):
        raise CaError(f"{d} already holds a tenant CA; refusing to overwrite it")
    _mkdir(d)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"SafeSignal {tenant} CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, tenant)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(passphrase.encode("utf-8")))
    _write_new(d / CA_KEY, encrypted, 0o600)  # O_EXCL: a concurrent init cannot overwrite it either
    _write_new(d / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _mkdir(d / ISSUED, 0o755)
    _mkdir(d / ISSUED / ISSUED_ALL, 0o755)
    _mkdir(d / OPERATORS)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = {
        "format": 1,
        "tenant": tenant,
        "created": _iso(now),
        "subject": name.rfc4514_string(),
        "not_after": _iso(cert.not_valid_after_utc),
        "fingerprints": {
            "cert_sha256": fingerprint(cert),
            "public_key_sha256": hashlib.sha256(spki).hexdigest(),
        },
    }
    _write_new(d / CA_JSON, (json.dumps(info, indent=2) + "\n").encode(), 0o644)
    ca = TenantCA(d, cert, info)
    ca._key = key
    ca._passphrase = passphrase.encode("utf-8")
    return ca


def open(directory: str | os.PathLike[str]) -> TenantCA:  # shadows the builtin here on purpose: ca.open(dir)
    """Load a tenant CA's public parts (certificate, ca.json); the key stays encrypted on disk."""
    d = Path(directory)
    try:
        info = json.loads((d / CA_JSON).read_text(encoding="utf-8"))
        cert = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
    except FileNotFoundError:
        raise CaError(f"no tenant CA in {d} (make one with `safesignal ca init`)") from None
    except (OSError, ValueError) as e:
        raise CaError(f"the tenant CA in {d} is unreadable: {e}") from None
    if not isinstance(info, dict) or not isinstance(info.get("tenant"), str):
        raise CaError(f"{d / CA_JSON} is not a SafeSignal CA description")
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if not orgs or orgs[0].value != info["tenant"]:
        raise CaError(f"{d / CA_JSON} and {d / CA_CERT} name different tenants")
    if info.get("fingerprints", {}).get("cert_sha256") != fingerprint(cert):
        raise CaError(f"{d / CA_CERT} is not the certificate {d / CA_JSON} describes")
    return TenantCA(d, cert, info)


# --- the broker configuration ----------------------------------------------------------------
def _template(templates: Path | None, name: str) -> string.Template:
    path = (templates or TEMPLATES) / name
    try:
        return string.Template(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaError(f"broker template {path} is missing (it ships in this repository's broker/mosquitto/)") from None


def _render(templates: Path | None, template: str, **fields: str) -> str:
    try:
        return _template(templates, template).substitute(fields)
    except (KeyError, ValueError) as e:
        raise CaError(f"broker template {template}: unknown or malformed field {e}") from None


def render_acl(ca: TenantCA, templates: Path | None = None) -> str:
    """The ACL text for ``ca``'s tenant and its operators (see broker/mosquitto/acl.in)."""
    blocks = [_render(templates, ACL_OPERATOR_TEMPLATE, tenant=ca.tenant, name=check_name("operator name", n))
              for n in ca.operators()]
    ops = "\n".join(b.rstrip("\n") + "\n" for b in blocks) if blocks else "# (no operators issued yet)\n"
    return _render(templates, ACL_TEMPLATE, tenant=check_name("tenant", ca.tenant), operators=ops.rstrip("\n"))


def write_crl(ca: TenantCA, out_dir: str | os.PathLike[str]) -> Path:
    """(Re)write ``out_dir/crl.pem`` (the broker's ``crlfile``) atomically from the CA's current
    CRL (:meth:`TenantCA.crl_pem`); ``kill -HUP`` makes a running mosquitto use it."""
    out = Path(out_dir)
    _mkdir(out)
    path = out / CRL
    _write_replace(path, ca.crl_pem(), 0o644)
    return path


def write_acl(ca: TenantCA, out_dir: str | os.PathLike[str], templates: Path | None = None) -> Path:
    """(Re)write ``out_dir/acl`` atomically; ``kill -HUP`` makes a running mosquitto use it."""
    out = Path(out_dir)
    _mkdir(out)
    path = out / "acl"
    _write_replace(path, render_acl(ca, templates).encode(), 0o644)
    return path


def server_cert_current(ca: TenantCA, out_dir: str | os.PathLike[str], host_names: Sequence[str] | None) -> bool:
    """Whether ``out_dir`` already has a broker certificate from ``ca`` with exactly these host
    names (any names if None), its key, and more than 30 days to go."""
    out = Path(out_dir)
    try:
        cert = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    except (OSError, ValueError):
        return False
    try:
        # The pair must match: a crash between writing the key and the certificate leaves a
        # new key next to the old certificate, which must be issued again, not kept.
        key = serialization.load_pem_private_key((out / "server.key").read_bytes(), None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    if key.public_key() != cert.public_key():
        return False
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    if host_names is None:
        return True
    want = {_general_name_str(g) for g in _normalise_hosts(host_names)}
    return _san_names(cert) == want


def write_broker_config(ca: TenantCA, out_dir: str | os.PathLike[str], listen_host: str, port: int = MTLS_PORT,
                        host_names: Sequence[str] | None = None, *, config_dir: str | os.PathLike[str] | None = None,
                        log_file: str | os.PathLike[str] | None = None, autosave_interval: int = 60,
                        extra: Sequence[str] = (), server_days: int = SERVER_DAYS,
                        templates: Path | None = None) -> BrokerFiles:
    """Render the tenant's mosquitto configuration into ``out_dir`` from the shipped templates:
    ``mosquitto.conf``, ``acl``, a copy of ``ca.pem``, ``server.pem`` + ``server.key`` and the
    persistence directory ``data/``.

    The broker certificate is issued (the CA must be unlocked) when ``out_dir`` has none from
    this CA, when ``host_names`` differ from its names, or when it expires within 30 days;
    otherwise it is kept, so re-rendering after issuing an operator needs no new certificate.
    ``config_dir`` is where the files will be when mosquitto runs (default ``out_dir``): the
    paths in mosquitto.conf point there.  ``extra`` lines are appended to mosquitto.conf.
    """
    out = Path(out_dir).resolve()
    _config_value("the listen address", listen_host)
    try:
        ipaddress.ip_address(listen_host)
    except ValueError:
        _check_host_name(listen_host)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise CaError("the broker port must be 1-65535")
    if isinstance(autosave_interval, bool) or not isinstance(autosave_interval, int) or autosave_interval < 0:
        raise CaError("autosave_interval must be a whole number of seconds >= 0")
    for line in extra:
        if "\n" in line or "\r" in line:
            raise CaError("an extra configuration line contains a line break")
    cfg_dir = Path(config_dir) if config_dir is not None else out
    log = Path(log_file) if log_file is not None else cfg_dir / "mosquitto.log"
    _config_value("the configuration directory", str(cfg_dir))
    _config_value("the log file", str(log))
    if not cfg_dir.is_absolute() or not log.is_absolute():
        raise CaError("the configuration directory and the log file must be absolute paths")
    # Render everything before writing anything: a template error leaves out_dir as it was.
    conf_text = _render(templates, CONF_TEMPLATE, tenant=ca.tenant, config_dir=str(cfg_dir), listen=listen_host,
                        port=str(port), log_file=str(log), autosave_interval=str(autosave_interval),
                        extra="\n".join(extra))
    acl_text = render_acl(ca, templates)
    if not ca.crl_current() and not ca.unlocked:
        raise CaError("the CRL must be signed (again): unlock the CA first")
    issued = False
    if not server_cert_current(ca, out, host_names):
        if host_names is None:
            raise CaError(f"{out} has no current broker certificate from this CA: give the broker's host names")
        if not ca.unlocked:
            raise CaError("a new broker certificate must be issued: unlock the CA first")
        ca.issue_server_cert(host_names, out, server_days)
        issued = True
    _mkdir(out)
    _mkdir(out / "data")
    _write_replace(out / "ca.pem", ca.cert_pem(), 0o644)
    _write_replace(out / "acl", acl_text.encode(), 0o644)
    write_crl(ca, out)
    _write_replace(out / "mosquitto.conf", conf_text.encode(), 0o644)
    cert = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    names = tuple(sorted(_san_names(cert)))
    return BrokerFiles(dir=out, config=out / "mosquitto.conf", acl=out / "acl", ca=out / "ca.pem",
                       cert=out / "server.pem", key=out / "server.key", crl=out / CRL, log=log, data=out / "data",
                       listen=listen_host, port=port, host_names=names, issued_server_cert=issued)


@dataclass(frozen=True)
class OperatorTlsFiles:
    """An operator's TLS files and the passphrase that opens its key (checked)."""

    ca: Path
    cert: Path
    key: Path
    key_password: str = field(repr=False)


class CaAccess:
    """A tenant CA as one command run uses it: the passphrase is asked for at most once (by
    ``ask_passphrase``) and kept only in memory.

    ``operator_passphrase`` gives an operator key's own passphrase, or None when the key uses
    the CA's."""

    def __init__(self, directory: str | os.PathLike[str], ask_passphrase: Callable[[], str],
                 operator_passphrase: Callable[[], str | None] = lambda: None) -> None:
        self.ca = open(directory)
        self._ask = ask_passphrase
        self._ask_operator = operator_passphrase
        self._passphrase: str | None = None

    def passphrase(self) -> str:
        if self._passphrase is None:
            self._passphrase = self._ask()
        return self._passphrase

    def unlock(self) -> TenantCA:
        return self.ca.unlock(self.passphrase())

    def revoke_superseded(self, device_id: str, current_sha256: str | None) -> list[RevokedRecord]:
        """Re-keying: revoke every certificate this CA issued to ``device_id`` except the one
        the device now holds (SHA-256 ``current_sha256``, read back after the reboot), reason
        superseded.  Call it only once the new certificate is installed: a provisioning that
        fails keeps the device's old certificate working.  Returns what was revoked."""
        if current_sha256 is None:
            return []
        keep = _hex(current_sha256)
        old = [r for r in self.ca.issued() if r.kind == "device" and r.name == device_id and _hex(r.sha256) != keep]
        revoked = {r.serial for r in self.ca.revoked()}
        if not [r for r in old if r.serial not in revoked]:
            return []
        if not self.ca.unlocked:
            self.unlock()
        return self.ca.revoke(old, "superseded")

    def signer(self) -> Callable[[bytes, str], tuple[bytes, bytes]]:
        """Signs device CSRs with the CA, which the caller has unlocked (before anything was sent)."""

        def sign(csr: bytes, device_id: str) -> tuple[bytes, bytes]:
            return self.ca.sign_device_csr(csr, device_id), self.ca.cert_der()

        return sign

    def operator_tls_files(self, name: str | None) -> OperatorTlsFiles:
        """The operator certificate ``name`` (default: the only one issued) with the passphrase
        that opens its key.  A passphrase that does not open it raises :class:`CaError` here,
        not as an OpenSSL error at the first TLS connection."""
        if name is None:
            names = self.ca.operators()
            if len(names) != 1:
                raise CaError("an mqtts:// broker needs an operator certificate: pass --operator NAME "
                              f"(issued: {', '.join(names) or 'none; make one with safesignal ca operator'})")
            name = names[0]
        op = self.ca.operator(name)
        own = self._ask_operator()
        password = own or self.passphrase()
        try:
            serialization.load_pem_private_key(op.key.read_bytes(), password=password.encode("utf-8"))
        except FileNotFoundError:
            raise CaError(f"the key of operator {name}, {op.key}, is missing") from None
        except (ValueError, TypeError, UnsupportedAlgorithm):
            which = "its own passphrase ($SAFESIGNAL_OPERATOR_PASS)" if own else "the CA passphrase"
            raise CaError(f"wrong passphrase for the key of operator {name} ({op.key}): tried {which} "
                          "(or the key file is damaged)") from None
        return OperatorTlsFiles(op.ca, op.cert, op.key, password)
