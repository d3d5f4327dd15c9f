"""Provisioning over a device session: stage, commit, wait for the reboot, read back, compare."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ssproto
from safesignal.errors import DeviceError, DeviceTimeout, MismatchError, SafeSignalError, UsageError
from safesignal.link.session import BOOT_LINE, DeviceSession, Reply

if TYPE_CHECKING:
    from safesignal.alerts.receiver import AlertReceiver, TlsFiles
    from safesignal.provisioning.verify import AlertMissing, Verified

log = logging.getLogger(__name__)

MASK = "********"

# What a re-provisioning shows it replaces (and, for the identity, asks about on a terminal).
SCOPE_FIELDS = ("device_id", "tenant", "building", "room")
SHOWN_FIELDS = ("wifi_ssid",) + SCOPE_FIELDS + ("mqtt_uri",)


class Cancelled(SafeSignalError):
    """The person at the terminal said no; nothing was sent that changes the device."""

    exit_code = 1


class Interrupted(SafeSignalError):
    """Ctrl-C.  The message says what the device may hold now and how to check it."""

    exit_code = 130


class CommitLost(DeviceTimeout):
    """The device restarted during provision_complete, before it saved: it kept what it had.

    Exit 4 like a timeout (the device never answered; nothing changed; run it again), but said
    within seconds of the restart and with what the device now holds."""


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
            ("wifi_pass", "wifi_ssid"),
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

    def current(self, status: dict[str, str], changes: list[Change]) -> None:
        """A provisioned device's configuration before anything is changed, and what the
        request changes in it (``changes`` may be empty)."""

    def confirm_replace(self, status: dict[str, str], changes: list[Change]) -> bool:
        """The device's identity (device id, tenant, building or room) would change: go on?
        Asked before anything is staged; False cancels (Cancelled)."""
        return True

    def device_log(self, line: str) -> None:
        """A log line the device printed while it tests and saves (provision_complete): what it
        is doing (joining WiFi, DHCP, the broker).  Secrets already masked."""

    def restarted(self, saved: bool) -> None:
        """The device restarted during provision_complete before it answered; ``saved``: it
        holds the new settings (read back and verified)."""


@dataclass(frozen=True)
class Change:
    field: str  # a provision_status field name (SHOWN_FIELDS)
    old: str
    new: str


def changes_for(status: dict[str, str], req: ProvisionRequest) -> list[Change]:
    """What ``req`` changes in a provisioned device's configuration (the password is never shown)."""
    if status.get("provisioned") != "yes":
        return []
    new = {"wifi_ssid": req.wifi_ssid, "device_id": req.device_id, "tenant": req.tenant,
           "building": req.building, "room": req.room}
    if req.mqtt_uri is not None:
        new["mqtt_uri"] = req.mqtt_uri
    return [Change(f, status.get(f, ""), new[f]) for f in SHOWN_FIELDS if f in new and status.get(f, "") != new[f]]


def _is_boot_line(line: str) -> bool:
    return line.startswith("[BOOT] ") or line == BOOT_LINE


class _Restarted(Exception):
    """Raised from the log hook when the device's boot log appears mid-command."""


def provision(session: DeviceSession, req: ProvisionRequest, events: ProvisionEvents | None = None,
              *, boot_timeout: float = 30.0,
              before_commit: Callable[[dict[str, str]], None] | None = None) -> dict[str, str]:
    """Provision the device and return its status as read back after the reboot.

    Raises DeviceError if the device refuses a step (nothing is committed then: values are
    held in the device's RAM until provision_complete), MismatchError if what it reports after
    the reboot differs from what was sent, ConnectTestError if its connect test failed,
    CommitLost if it restarted during provision_complete before saving, Cancelled if
    ``events.confirm_replace`` said no, Interrupted on Ctrl-C (saying what the device may hold).
    ``before_commit`` is called with the device's status once it is known, before anything
    is staged (``--verify`` subscribes there).
    """
    ev = events or ProvisionEvents()
    req.validate()
    session.add_secret(req.wifi_pass)
    session.sync()
    before = session.last_status if session.last_status is not None else session.status()
    if before["provisioned"] == "yes":
        changes = changes_for(before, req)
        ev.current(before, changes)
        if any(c.field in SCOPE_FIELDS for c in changes) and not ev.confirm_replace(before, changes):
            raise Cancelled("nothing was changed: the device keeps its identity")
    if before_commit is not None:
        before_commit(before)
    if before["pending"] != "none":
        session.command(["provision_discard"])  # forget anything staged by an earlier, aborted run
    staged: set[str] = set()
    complete_sent = committed = False
    cert_sha256 = None
    try:
        for step in steps_for(req):
            if not step.stages:  # provision_complete: only if exactly our values are staged
                _check_staged(session, before["boot_id"], staged)
            ev.sending(step.display)
            if step.args[0] == "provision_identity_csr":
                cert_sha256 = _identity(session, req, ev)  # reports its own replies
            elif step.stages:
                ev.replied(session.mask(session.command(step.args).first))
            else:
                complete_sent = True
                try:
                    reply = _complete(session, step.args, ev)
                except DeviceError:
                    # It answered ERR (a failed connect test, say): nothing was saved.  Do not leave
                    # the password staged in the device's RAM.
                    _discard_quietly(session)
                    raise
                if reply is None:  # restarted before it answered: what does it hold now?
                    return _after_restart(session, req, ev, before, boot_timeout, cert_sha256)
                committed = True
                ev.committed()
                ev.replied(session.mask(reply.first))
            staged.update(step.stages)
    except KeyboardInterrupt:
        if committed:
            raise Interrupted("interrupted while the device reboots: it has saved the new settings (it answered "
                              "provision_complete); check them with `safesignal status`") from None
        if complete_sent:
            raise Interrupted("interrupted after provision_complete was sent: the device may still be testing the "
                              "new settings, or have saved them and rebooted, or have kept its old ones. Check with "
                              "`safesignal status` in a minute: it shows the device id and WiFi SSID it holds "
                              "(`pending` other than none: still staged, nothing saved yet)") from None
        _discard_quietly(session)  # do not leave the password staged in the device's RAM
        raise Interrupted("interrupted before provision_complete: nothing was saved, the device keeps "
                          "what it had") from None
    finally:
        if not complete_sent:
            _discard_quietly(session)
    try:
        ev.phase("waiting for the device to reboot")
        session.wait_reboot(before["boot_id"], boot_timeout)
        ev.phase("reading the configuration back")
        status = _read_back(session, req, before, cert_sha256)
    except KeyboardInterrupt:
        raise Interrupted("interrupted while the device reboots: it has saved the new settings (it answered "
                          "provision_complete); check them with `safesignal status`") from None
    return status


def _read_back(session: DeviceSession, req: ProvisionRequest, before: dict[str, str],
               cert_sha256: str | None) -> dict[str, str]:
    """The status wait_reboot's barrier read, checked against what was sent."""
    status = session.last_status if session.last_status is not None else session.status()
    if status["chip_id"] != before["chip_id"]:
        raise MismatchError(f"a different device answered after the reboot (chip {status['chip_id']}, "
                          f"expected {before['chip_id']}): were ports swapped?")
    check_read_back(session, req, status)
    if cert_sha256 is not None and status.get("certificate_sha256") != cert_sha256:
        raise MismatchError("the device does not report the certificate that was installed")
    return status


def _after_restart(session: DeviceSession, req: ProvisionRequest, ev: ProvisionEvents, before: dict[str, str],
                   boot_timeout: float, cert_sha256: str | None) -> dict[str, str]:
    """The device rebooted during provision_complete before it answered (a power cut, a
    brownout, a watchdog).  Its store is atomic, so it holds either its old settings or the new
    ones: find out which, at once, instead of waiting for an answer that never comes."""
    ev.phase("the device restarted before it answered provision_complete; reading back what it holds")
    session.wait_reboot(before["boot_id"], boot_timeout)
    status = session.last_status if session.last_status is not None else session.status()
    try:
        status = _read_back(session, req, before, cert_sha256)
    except MismatchError:
        if status["chip_id"] != before["chip_id"]:
            raise
        same = ("provisioned",) + SHOWN_FIELDS
        if all(status.get(f) == before.get(f) for f in same):
            was = ("its previous settings (device " + before["device_id"] + ")" if before["provisioned"] == "yes"
                   else "no settings: it is still blank, in provisioning mode")
            raise CommitLost(f"the device restarted during provision_complete (power loss or reset) before it "
                             f"saved: it holds {was}. Nothing was changed; run the command again") from None
        raise MismatchError("the device restarted during provision_complete and now holds neither its previous "
                          "settings nor the new ones: check it with `safesignal status` and provision it again"
                          ) from None
    ev.restarted(saved=True)
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


def _complete(session: DeviceSession, args: list[str], ev: ProvisionEvents) -> Reply | None:
    """Send provision_complete; its answer, or None if the device restarted before answering.

    Meanwhile the device's log lines (its connect test) go to ``ev.device_log``.  Its boot log
    in place of an answer means it restarted: saying so takes a second, not COMPLETE_TIMEOUT."""
    sink = session.on_log

    def watch(line: str) -> None:
        if sink is not None:
            sink(line)
        if _is_boot_line(line):
            raise _Restarted
        ev.device_log(line)

    session.on_log = watch
    try:
        return session.command(args, timeout=max(COMPLETE_TIMEOUT, session.timeout))
    except _Restarted:
        return None
    except DeviceError as e:
        if e.code in ssproto.CONNECT_TEST_CODES:
            raise ConnectTestError(e.code, e.message, _CONNECT_TEST_HINTS[e.code]) from None
        raise
    finally:
        session.on_log = sink


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


def check_read_back(session: DeviceSession, req: ProvisionRequest, status: dict[str, str]) -> None:
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
        raise MismatchError(f"device reports different values after reboot for: {', '.join(wrong)}")
    if not session.secret_matches(req.wifi_ssid, req.wifi_pass):
        raise MismatchError("device's stored WiFi password does not match what was sent")


def factory_reset(session: DeviceSession, events: ProvisionEvents | None = None,
                  *, boot_timeout: float = 30.0,
                  confirm: Callable[[dict[str, str]], bool] | None = None) -> dict[str, str]:
    """Erase the device's configuration (and its undelivered alerts), wait for the reboot, check
    it is blank.  With undelivered alerts in its flash, ``confirm(status)`` is asked first;
    False cancels (Cancelled) before anything is sent."""
    ev = events or ProvisionEvents()
    session.sync()
    before = session.last_status if session.last_status is not None else session.status()
    if undelivered(before) and confirm is not None and not confirm(before):
        raise Cancelled(f"nothing was erased: the device keeps its settings and its {undelivered(before)} "
                        "undelivered alert(s)")
    ev.sending("provision_reset --confirm")
    reply = session.command(["provision_reset", "--confirm"])
    ev.replied(reply.first)
    ev.phase("waiting for the device to reboot")
    session.wait_reboot(before["boot_id"], boot_timeout)
    status = session.last_status if session.last_status is not None else session.status()
    if status["chip_id"] != before["chip_id"]:
        raise MismatchError(f"a different device answered after the reboot (chip {status['chip_id']}): ports swapped?")
    if status.get("provisioned") != "no" or status.get("wifi_ssid"):
        raise MismatchError("device still reports a configuration after the factory reset")
    return status


def undelivered(status: dict[str, str]) -> int:
    """How many alerts wait in the device's flash outbox (provision_status ``alerts_pending``)."""
    try:
        return int(status.get("alerts_pending") or 0)
    except ValueError:
        return 0


# --- provisioning with the installation check ----------------------------------------------
@dataclass
class VerifyPlan:
    """``--verify``: subscribe before the commit, then wait for the device's test alert."""

    broker: str | None  # as this computer reaches it; None: the request's, else the device's stored one
    timeout: float
    tls_for: Callable[[str], TlsFiles | None] = field(repr=False, default=lambda uri: None)


@dataclass
class ProvisionResult:
    status: dict[str, str]  # read back after the reboot, verified
    before: dict[str, str]  # what the device reported before anything was sent
    restarted: bool = False  # it restarted during provision_complete, then was found holding the new settings
    broker: str | None = None  # where --verify subscribed
    verified: Verified | None = None
    verify_error: AlertMissing | None = None  # provisioned fine, but the test alert was not confirmed
    changes: list[Change] = field(default_factory=list)  # what it replaced (a provisioned device)


def run_provision(session: DeviceSession, req: ProvisionRequest, events: ProvisionEvents | None = None, *,
                  boot_timeout: float = 30.0, verify_plan: VerifyPlan | None = None) -> ProvisionResult:
    """``safesignal provision``: provision, and with ``verify_plan`` confirm the test alert at
    the broker (subscribed before the commit, so it cannot slip past).  A test alert that does
    not come is reported in the result (``verify_error``), not raised: the device is provisioned."""
    import time

    ev = events or ProvisionEvents()
    if verify_plan is not None and req.offline:
        raise UsageError("--verify needs the device on its network: it cannot be combined with --offline")
    seen: dict[str, dict[str, str]] = {}
    rx: AlertReceiver | None = None
    ident = None
    broker: str | None = None
    committed_at = [0.0]
    restarted = [False]

    class _Tap(ProvisionEvents):  # forwards everything, notes the commit and the restart
        def sending(self, display: str) -> None:
            ev.sending(display)

        def replied(self, line: str) -> None:
            ev.replied(line)

        def phase(self, text: str) -> None:
            ev.phase(text)

        def committed(self) -> None:
            committed_at[0] = time.time()
            ev.committed()

        def current(self, status: dict[str, str], changes: list[Change]) -> None:
            ev.current(status, changes)

        def confirm_replace(self, status: dict[str, str], changes: list[Change]) -> bool:
            return ev.confirm_replace(status, changes)

        def device_log(self, line: str) -> None:
            ev.device_log(line)

        def restarted(self, saved: bool) -> None:
            restarted[0] = True
            ev.restarted(saved)

    def subscribe(before: dict[str, str]) -> None:
        nonlocal rx, ident, broker
        seen["before"] = before
        if verify_plan is None:
            return
        from safesignal.provisioning.verify import TopicScope, receiver_for

        ident = TopicScope(req.device_id, req.tenant, req.building, req.room)
        uri = verify_plan.broker or req.mqtt_uri
        if uri is None:  # the device keeps its stored broker (or gets the default)
            uri = before["mqtt_uri"] if before["provisioned"] == "yes" else ssproto.DEFAULT_MQTT_URI
        broker = check_broker_uri("--broker", uri)
        rx = receiver_for(broker, ident, verify_plan.tls_for(broker))
        rx.start()
        ev.phase(f"subscribed at {broker} for the test alert")

    try:
        started = time.time()
        status = provision(session, req, _Tap(), boot_timeout=boot_timeout, before_commit=subscribe)
        result = ProvisionResult(status, seen["before"], restarted[0], broker,
                                 changes=changes_for(seen["before"], req))
        if rx is not None and ident is not None and verify_plan is not None:
            from safesignal.provisioning.verify import AlertMissing, wait_test_alert

            # After a restart mid-commit there was no answer to time: count from the start.
            since = committed_at[0] or started
            try:
                result.verified = wait_test_alert(rx, ident, since, verify_plan.timeout)
            except AlertMissing as e:
                result.verify_error = e
        return result
    finally:
        if rx is not None:
            rx.stop()


def check_broker_uri(flag: str, uri: str) -> str:  # (also verify.check_uri)
    try:
        return str(ssproto.check_mqtt_uri(uri))
    except ssproto.ProtocolError as e:
        raise UsageError(f"{flag}: {e.message}") from None
