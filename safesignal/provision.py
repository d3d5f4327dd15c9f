"""Provisioning over a device session: stage, commit, wait for the reboot, read back, compare."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import ssproto

from .errors import DeviceError, SafeSignalError, UsageError, VerifyError
from .session import DeviceSession, Reply

log = logging.getLogger(__name__)

MASK = "********"


class ConnectTestError(DeviceError):
    """The device could not use the new settings; it saved nothing and stays as it was."""

    exit_code = 9

    def __init__(self, code: str, message: str, hint: str) -> None:
        super().__init__(code, message, "provision_complete")
        self.hint = hint
        self.args = (f"connect test failed ({code}): {message}. {hint[0].upper()}{hint[1:]}. "
                     "Nothing was saved: the device keeps what it had (a blank device stays in "
                     "provisioning mode).",)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ProvisionRequest:
    wifi_ssid: str
    wifi_pass: str
    device_id: str
    tenant: str
    building: str
    room: str
    mqtt_uri: str | None = None
    offline: bool = False  # commit without the device's connect test (prepared away from the site)
    # Device identity for mqtts://: called with the CSR (DER) the device made, returns the
    # certificate the tenant CA issued for it and the CA certificate (both DER).
    signer: Callable[[bytes, str], tuple[bytes, bytes]] | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:  # never show the password, even in a traceback
        return (
            f"ProvisionRequest(wifi_ssid={self.wifi_ssid!r}, wifi_pass='{MASK}', device_id={self.device_id!r}, "
            f"tenant={self.tenant!r}, building={self.building!r}, room={self.room!r}, mqtt_uri={self.mqtt_uri!r}, "
            f"offline={self.offline!r})"
        )

    def validate(self) -> None:
        """Check every value before anything is sent: bad input never reaches the device."""
        checks: list[tuple[str, Callable[[], object]]] = [
            ("--wifi-ssid", lambda: ssproto.check_ssid(self.wifi_ssid)),
            ("--wifi-pass", lambda: ssproto.check_passphrase(self.wifi_pass)),
            ("--device-id", lambda: ssproto.check_ident("device id", self.device_id)),
            ("--tenant", lambda: ssproto.check_ident("tenant", self.tenant)),
            ("--building", lambda: ssproto.check_ident("building", self.building)),
            ("--room", lambda: ssproto.check_ident("room", self.room)),
        ]
        if self.mqtt_uri is not None:
            checks.append(("--mqtt-uri", lambda: ssproto.check_mqtt_uri(self.mqtt_uri)))
        for flag, check in checks:
            try:
                check()
            except ssproto.ProtocolError as e:
                raise UsageError(f"{flag}: {e.message}") from None
        if self.mqtt_uri is not None and self.mqtt_uri.startswith("mqtts://") and self.signer is None:
            raise UsageError("--mqtt-uri mqtts://… needs the tenant CA (--ca DIR) to issue the device certificate")


@dataclass(frozen=True)
class Step:
    args: list[str] = field(repr=False)  # may hold the password
    display: str = ""  # what may be shown: the password masked
    stages: tuple[str, ...] = ()  # the fields this step stages on the device


def steps_for(req: ProvisionRequest) -> list[Step]:
    device = ["provision_set_device", req.device_id, req.tenant, req.building, req.room]
    steps = [
        Step(
            ["provision_set_wifi", req.wifi_ssid, req.wifi_pass],
            f"provision_set_wifi {ssproto.quote(req.wifi_ssid)} {MASK}",
            ("wifi_ssid",),
        ),
        Step(device, ssproto.join_args(device), ("building", "device_id", "room", "tenant")),
    ]
    if req.mqtt_uri is not None:
        args = ["provision_set_mqtt", req.mqtt_uri]
        steps.append(Step(args, ssproto.join_args(args), ("mqtt_uri",)))
    if req.signer is not None:
        steps.append(Step(["provision_identity_csr"], "provision_identity_csr", ("identity",)))
    complete = ["provision_complete", "--offline"] if req.offline else ["provision_complete"]
    steps.append(Step(complete, ssproto.join_args(complete)))
    return steps


# The device's connect test: WiFi join (up to 20 s, ss_wifi.CONNECT_TIMEOUT_MS), a name lookup
# (blocking, up to about 5 s for mDNS), the TCP connection and the CONNACK (up to 10 s each,
# ss_mqtt.CONNECT_TIMEOUT_MS): 45 s at worst; the rest is margin.  Waiting less could report a
# timeout for a device that then passes, saves and reboots.
COMPLETE_TIMEOUT = 75.0

_CONNECT_TEST_HINTS = {
    ssproto.E_WIFI_AUTH: "the access point rejected the WiFi password: check it (and the SSID) and run again",
    ssproto.E_WIFI_NO_AP: "no access point with that SSID answers here: check the spelling, the 2.4 GHz band "
                          "and the signal at the mounting point",
    ssproto.E_WIFI_TIMEOUT: "the WiFi accepted the device but gave it no IP address in time (DHCP server, "
                            "MAC filter or captive portal?)",
    ssproto.E_WIFI_FAILED: "the WiFi connection failed",
    ssproto.E_BROKER_UNREACHABLE: "WiFi works, but the broker cannot be reached: check --mqtt-uri, the name "
                                  "service and firewalls",
    ssproto.E_BROKER_REFUSED: "WiFi works and the broker answered, but it refused the device",
    ssproto.E_BROKER_TLS: "the broker was reached but TLS failed: its certificate must come from the tenant CA and "
                          "name the host in --mqtt-uri, and it must trust the tenant CA (safesignal ca broker)",
}

# Key generation and signing in pure Python on the device: about 1 s on an ESP32-S3 (bench/ec.py).
CSR_TIMEOUT = 30.0


class ProvisionEvents:
    """Callbacks for a front end; the library itself never prints."""

    def sending(self, display: str) -> None:
        pass

    def replied(self, line: str) -> None:
        pass

    def phase(self, text: str) -> None:
        pass

    def committed(self) -> None:
        """provision_complete was answered OK: the device saved and is rebooting."""


def provision(session: DeviceSession, req: ProvisionRequest, events: ProvisionEvents | None = None,
              *, boot_timeout: float = 30.0) -> dict[str, str]:
    """Provision the device and return its status as read back after the reboot.

    Raises DeviceError if the device refuses a step (nothing is committed then: values are
    held in the device's RAM until provision_complete), VerifyError if what it reports after
    the reboot differs from what was sent.
    """
    ev = events or ProvisionEvents()
    req.validate()
    session.add_secret(req.wifi_pass)
    session.sync()
    session.command(["provision_discard"])  # forget anything staged by an earlier, aborted run
    before = session.status()  # boot id and chip id, to recognise the reboot and the chip
    staged: set[str] = set()
    committed = False
    cert_sha256 = None
    try:
        for step in steps_for(req):
            if not step.stages:  # provision_complete: only if exactly our values are staged
                _check_staged(session, before["boot_id"], staged)
            ev.sending(step.display)
            if step.args[0] == "provision_identity_csr":
                cert_sha256 = _identity(session, req, ev)  # reports its own replies
            else:
                reply = session.command(step.args) if step.stages else _complete(session, step.args)
                committed = not step.stages
                if committed:
                    ev.committed()
                ev.replied(session.mask(reply.first))
            staged.update(step.stages)
    finally:
        if not committed:
            _discard_quietly(session)  # do not leave the password staged in the device's RAM
    ev.phase("waiting for the device to reboot")
    session.wait_reboot(before["boot_id"], boot_timeout)
    ev.phase("reading the configuration back")
    status = session.status()
    if status["chip_id"] != before["chip_id"]:
        raise VerifyError(f"a different device answered after the reboot (chip {status['chip_id']}, "
                          f"expected {before['chip_id']}): were ports swapped?")
    verify(session, req, status)
    if cert_sha256 is not None and status.get("certificate_sha256") != cert_sha256:
        raise VerifyError("the device does not report the certificate that was installed")
    return status


def _identity(session: DeviceSession, req: ProvisionRequest, ev: ProvisionEvents) -> str:
    """CSR from the device, certificate from the CA, both certificates to the device.  Returns
    the installed certificate's SHA-256 (hex)."""
    assert req.signer is not None
    reply = session.command(["provision_identity_csr"], timeout=max(CSR_TIMEOUT, session.timeout))
    kind, _, b64 = reply.text.partition(" ")
    try:
        if kind != "csr":
            raise ValueError
        csr = base64.b64decode(b64, validate=True)
    except ValueError:
        raise DeviceError(ssproto.E_INVALID, "the device did not answer with a CSR", "provision_identity_csr") from None
    ev.replied(f"OK csr ({len(csr)} bytes)")
    cert, ca = req.signer(csr, req.device_id)
    for what, der in (("provision_set_cert", cert), ("provision_set_ca", ca)):
        args = [what, base64.b64encode(der).decode()]
        if len(ssproto.join_args(args)) > ssproto.MAX_LINE:
            raise UsageError(f"{what}: the certificate ({len(der)} bytes) is too long for the console line")
        ev.sending(f"{what} <{len(der)} bytes DER, SHA-256 {hashlib.sha256(der).hexdigest()[:16]}…>")
        r = session.command(args)
        ev.replied(r.first or "OK")
    return hashlib.sha256(cert).hexdigest()


def _complete(session: DeviceSession, args: list[str]) -> Reply:
    try:
        return session.command(args, timeout=max(COMPLETE_TIMEOUT, session.timeout))
    except DeviceError as e:
        if e.code in ssproto.CONNECT_TEST_CODES:
            raise ConnectTestError(e.code, e.message, _CONNECT_TEST_HINTS[e.code]) from None
        raise


def _check_staged(session: DeviceSession, boot_id: str, staged: set[str]) -> None:
    """Refuse to commit unless the device still holds exactly what we staged this session.

    A reset between two steps (brownout, watchdog, another program on the port) loses the
    staged values; committing then would merge the rest with the old configuration.
    """
    st = session.status()
    pending = {p for p in st["pending"].split(",") if p and p != "none"}
    if st["boot_id"] != boot_id or pending != staged:
        raise SafeSignalError(
            "the device restarted or lost staged values during provisioning; nothing was committed, run it again"
        )


def _discard_quietly(session: DeviceSession) -> None:
    try:
        session.command(["provision_discard"], timeout=3)
    except (SafeSignalError, OSError):
        log.debug("could not discard staged values", exc_info=True)


def verify(session: DeviceSession, req: ProvisionRequest, status: dict[str, str]) -> None:
    want = {
        "provisioned": "yes",
        "wifi_ssid": req.wifi_ssid,
        "device_id": req.device_id,
        "tenant": req.tenant,
        "building": req.building,
        "room": req.room,
    }
    if req.mqtt_uri is not None:
        want["mqtt_uri"] = req.mqtt_uri
    wrong = [k for k, v in want.items() if status.get(k) != v]
    if wrong:
        raise VerifyError(f"device reports different values after reboot for: {', '.join(wrong)}")
    if not session.secret_matches(req.wifi_ssid, req.wifi_pass):
        raise VerifyError("device's stored WiFi password does not match what was sent")


def factory_reset(session: DeviceSession, events: ProvisionEvents | None = None,
                  *, boot_timeout: float = 30.0) -> dict[str, str]:
    ev = events or ProvisionEvents()
    session.sync()
    before = session.status()
    pending = before.get("alerts_pending", "0")
    if pending not in ("", "0"):
        log.warning("the device has %s undelivered alert(s) in flash; the factory reset drops them", pending)
    ev.sending("provision_reset --confirm")
    reply = session.command(["provision_reset", "--confirm"])
    ev.replied(reply.first)
    ev.phase("waiting for the device to reboot")
    session.wait_reboot(before["boot_id"], boot_timeout)
    status = session.status()
    if status["chip_id"] != before["chip_id"]:
        raise VerifyError(f"a different device answered after the reboot (chip {status['chip_id']}): ports swapped?")
    if status.get("provisioned") != "no" or status.get("wifi_ssid"):
        raise VerifyError("device still reports a configuration after the factory reset")
    return status
