"""Helpers for tests against the tenant's mutual-TLS broker (reusable by device end-to-end tests).

:class:`MtlsSite` makes a tenant CA (``safesignal.pki.ca``), renders the shipped mosquitto
configuration (broker/mosquitto/) into its own directory, starts mosquitto on a loopback
address of its own (127.x.y.z) at port 8883, and hands out credentials:

    site = MtlsSite(tmp_path / "site")            # CA + broker, started
    op = site.operator("monitor")                 # paho-ready files for CN "op:monitor"
    dev = site.device("button-1")                 # key + cert from a CSR, as a device gets them
    with site.client(dev) as c:                   # a paho client over mTLS
        c.connect()
        c.publish(site.topic("button-1", "alert"), b"...")
    site.stop()

or the ``mtls_site`` fixture (function scope; the CA passphrase is registered with ``guard``).
For a virtual device: ``site.ca_der`` (trust anchor), ``dev.cert_der``/``dev.key_der`` (DER,
what MicroPython's ``tls`` wants), ``site.hosts`` for ``safesignal sim --host``.
"""

from __future__ import annotations

import datetime as dt
import queue
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from safesignal.alerts.mosquitto import MTLS_PORT, Mosquitto, find_mosquitto
from safesignal.pki import ca as tenant_ca

if TYPE_CHECKING:  # conftest may import this module (for the fixture): no import of it at load time
    from conftest import SecretGuard

TENANT = "acme"
BUILDING = "main"
ROOM = "room-1"


@dataclass(frozen=True)
class TlsFiles:
    """The files a TLS client presents: ``tls_set(ca_certs=ca, certfile=cert, keyfile=key,
    keyfile_password=key_password)``.  ``cert``/``key`` None: no client certificate."""

    username: str
    ca: Path
    cert: Path | None = None
    key: Path | None = None
    key_password: str | None = None
    cert_der: bytes = b""
    key_der: bytes = b""  # PKCS#8 DER (unencrypted; test devices only)


def make_csr(device_id: str, key: ec.EllipticCurvePrivateKey | None = None, *,
             extra_subject: list[x509.NameAttribute[str]] | None = None) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A P-256 key and a DER CSR with subject CN=device_id, as a device makes them."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id), *(extra_subject or [])])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.DER)


def _write_identity(directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert_der: bytes,
                    ca: Path, username: str) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    cert = x509.load_der_x509_certificate(cert_der)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return TlsFiles(username, ca, cert_path, key_path, None, cert_der, key_der)


class MtlsSite:
    """A tenant CA and an mTLS mosquitto rendered from the shipped templates (started unless
    ``start=False``).  ``operators`` are issued before the broker starts."""

    def __init__(self, directory: Path, tenant: str = TENANT, *, operators: tuple[str, ...] = ("monitor",),
                 host: str | None = None, port: int = MTLS_PORT, passphrase: str | None = None,
                 start: bool = True) -> None:
        if find_mosquitto() is None:
            from conftest import need

            need("mosquitto", "apt-get install mosquitto")
        self.dir = directory
        self.tenant = tenant
        self.passphrase = passphrase or "ca-" + secrets.token_urlsafe(18)
        self.ca = tenant_ca.init(directory / "ca", tenant, self.passphrase)
        for name in operators:
            self.ca.issue_operator_cert(name)
        self.broker = Mosquitto.mtls(directory / "broker", self.ca, host, port)
        assert self.broker.files is not None
        self.files: tenant_ca.BrokerFiles = self.broker.files
        self.host = self.broker.host
        self.port = self.broker.port
        self.uri = self.broker.uri  # mqtts://127.x.y.z:8883
        self.hosts = self.broker.hosts  # {"safesignal-edge.local": "127.x.y.z"}
        self.ca_file = self.files.ca
        self.ca_der = self.ca.cert_der()
        self._clients: list[TlsClient] = []
        if start:
            self.broker.start()

    # --- credentials ----------------------------------------------------------------------
    def operator(self, name: str = "monitor", *, reload: bool = True) -> TlsFiles:
        """An operator's files; a new operator is issued, the ACL rendered again and (if the
        broker runs and ``reload``) mosquitto sent SIGHUP."""
        if name not in self.ca.operators():
            self.ca.issue_operator_cert(name)
            tenant_ca.write_acl(self.ca, self.files.dir)
            if reload and self.broker.proc is not None:
                self.broker.reload()
        op = self.ca.operator(name)
        return TlsFiles(op.username, op.ca, op.cert, op.key, self.passphrase,
                           x509.load_pem_x509_certificate(op.cert.read_bytes()).public_bytes(
                               serialization.Encoding.DER))

    def device(self, device_id: str, *, days: int = 30, not_before: dt.datetime | None = None,
               not_after: dt.datetime | None = None) -> TlsFiles:
        """A device key made here, its CSR signed by the tenant CA (as provisioning does)."""
        key, csr = make_csr(device_id)
        cert_der = self.ca.sign_device_csr(csr, device_id, days, not_before=not_before, not_after=not_after)
        return _write_identity(self.dir / "devices", device_id, key, cert_der, self.ca_file, device_id)

    def expired_device(self, device_id: str) -> TlsFiles:
        now = dt.datetime.now(dt.UTC)
        return self.device(device_id, not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1))

    def foreign_device(self, device_id: str) -> TlsFiles:
        """A certificate with the right CN from ANOTHER CA (same tenant name)."""
        other = tenant_ca.init(self.dir / f"other-ca-{secrets.token_hex(4)}", self.tenant, self.passphrase)
        key, csr = make_csr(device_id)
        cert_der = other.sign_device_csr(csr, device_id, 30)
        return _write_identity(self.dir / "foreign", device_id, key, cert_der, self.ca_file, device_id)

    def anonymous(self) -> TlsFiles:
        """Trusts the broker but presents no certificate."""
        return TlsFiles("", self.ca_file)

    # --- topics and clients ----------------------------------------------------------------
    def topic(self, device: str, kind: str, building: str = BUILDING, room: str = ROOM) -> str:
        return f"safesignal/{self.tenant}/{building}/{room}/{device}/{kind}"

    def client(self, ident: TlsFiles, client_id: str = "", **kw: Any) -> TlsClient:
        c = TlsClient(self.host, self.port, ident, client_id, **kw)
        self._clients.append(c)
        return c

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        self.broker.stop()
        self.ca.lock()

    def __enter__(self) -> MtlsSite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TlsClient:
    """A paho client (MQTT 3.1.1, background network thread) over TLS with ``ident``'s files;
    received messages queue up in order."""

    def __init__(self, host: str, port: int, ident: TlsFiles, client_id: str = "", *,
                 username: str | None = None) -> None:
        self.host, self.port, self.ident = host, port, ident
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.c.tls_set(ca_certs=str(ident.ca), certfile=str(ident.cert) if ident.cert else None,
                       keyfile=str(ident.key) if ident.key else None, keyfile_password=ident.key_password,
                       cert_reqs=ssl.CERT_REQUIRED)
        if username is not None:
            self.c.username_pw_set(username, "ignored")
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connack: ReasonCode | None = None
        self.lost = threading.Event()  # the connection closed (or was never accepted)
        self._cond = threading.Condition()
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._started = False
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = self._on_subscribe

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        with self._cond:
            self.connack = reason
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        with self._cond:
            self.lost.set()
            self._cond.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      props: Any) -> None:
        with self._cond:
            self._subacks[mid] = list(reasons)
            self._cond.notify_all()

    def try_connect(self, timeout: float = 5.0) -> str | None:
        """None once the broker accepted us (CONNACK 0; the network thread then runs);
        otherwise what went wrong: the TLS handshake failed, the connection was closed, a
        refusing CONNACK, or no answer.  One attempt: paho does not retry on its own here."""
        try:
            self.c.connect(self.host, self.port, keepalive=30)
        except (ssl.SSLError, OSError) as e:  # TLS 1.2, or the alert arrived during the handshake
            self.lost.set()
            return f"connect raised {type(e).__name__}: {e}"
        deadline = time.monotonic() + timeout
        rc = mqtt.MQTT_ERR_SUCCESS
        while time.monotonic() < deadline and self.connack is None and not self.lost.is_set():
            rc = self.c.loop(0.05)  # TLS 1.3: a refused client certificate shows up here as a closed socket
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self.lost.set()
        if self.connack is not None and not self.connack.is_failure and not self.lost.is_set():
            self._started = True
            self.c.loop_start()
            return None
        if self.connack is not None and self.connack.is_failure:
            return f"CONNACK refused: {self.connack}"
        if self.lost.is_set():
            return f"the broker closed the connection ({mqtt.error_string(rc)})"
        return f"no CONNACK within {timeout:g} s"

    def connect(self, timeout: float = 5.0) -> TlsClient:
        why = self.try_connect(timeout)
        assert why is None, f"{self.ident.username or 'anonymous'} could not connect: {why}"
        return self

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0) -> list[ReasonCode]:
        """Subscribe and return the SUBACK's reason codes (granted QoS, or 0x80 refused)."""
        result, mid = self.c.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None, f"subscribe failed locally: {result}"
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._subacks, timeout), f"no SUBACK for {topic}"
            return self._subacks.pop(mid)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 5.0) -> None:
        """Publish and wait for the PUBACK (which mosquitto sends for denied messages too)."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"no PUBACK for {topic}"

    def expect(self, timeout: float = 5.0) -> mqtt.MQTTMessage | None:
        """The next received message, or None if none came within ``timeout``."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def received(self) -> list[tuple[str, bytes]]:
        """Everything received so far and not yet taken, as (topic, payload)."""
        out: list[tuple[str, bytes]] = []
        while True:
            try:
                m = self.messages.get_nowait()
            except queue.Empty:
                return out
            out.append((m.topic, bytes(m.payload)))

    def close(self) -> None:
        if self._started:
            self._started = False
            self.c.disconnect()
            self.c.loop_stop()

    def __enter__(self) -> TlsClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def plain_mqtt_connect(host: str, port: int, timeout: float = 3.0) -> bytes:
    """Open plain TCP (no TLS) to ``host:port``, send an MQTT 3.1.1 CONNECT and return what
    came back before the connection closed (b"" when the broker said nothing)."""
    client_id = b"plain"
    var = b"\x00\x04MQTT\x04\x02\x00\x1e"
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = var + payload
    packet = bytes([0x10, len(body)]) + body
    got = b""
    with socket.create_connection((host, port), timeout) as s:
        s.sendall(packet)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            got += chunk
    return got


@contextmanager
def running_site(directory: Path, guard: SecretGuard | None = None, **kw: Any) -> Iterator[MtlsSite]:
    """A started :class:`MtlsSite`, stopped at the end; with ``guard``, the CA passphrase is a
    secret that must not appear in any output and the broker log is searched for it."""
    site = MtlsSite(directory, **kw)
    try:
        if guard is not None:
            guard.secret(site.passphrase)
            guard.files.append(site.broker.log_path)
        yield site
    finally:
        site.stop()


@pytest.fixture
def mtls_site(tmp_path: Path, guard: SecretGuard) -> Iterator[MtlsSite]:
    """A started :class:`MtlsSite` (tenant "acme", operator "monitor") in ``tmp_path/site``.
    Make it available to every test with ``from tlsutil import mtls_site  # noqa: F401`` in
    conftest.py (tlsutil does not import conftest at load time), or wrap :func:`running_site`
    in a fixture of your own."""
    with running_site(tmp_path / "site", guard) as site:
        yield site
