"""Installation check: the device's test alert reaches the broker, and the device is online.

``provision --verify`` subscribes before it commits, so the test alert the device sends after
its provisioning reboot is seen; ``safesignal verify`` asks a running device for a fresh test
alert (``alert_test`` on its console) or, without a port, waits for the next one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ssproto
import ssproto.msg as msg
from safesignal.alerts.receiver import Alert, AlertReceiver, Status, TlsFiles
from safesignal.errors import SafeSignalError, UsageError

if TYPE_CHECKING:
    from safesignal.link.session import DeviceSession


class AlertMissing(SafeSignalError):
    """The test alert did not arrive; the message says what was and was not seen."""

    exit_code = 8


@dataclass(frozen=True)
class TopicScope:
    device_id: str
    tenant: str
    building: str
    room: str


@dataclass
class Verified:
    alert: Alert
    latency_s: float  # from the trigger (commit or alert_test) to the alert at the subscriber
    online: Status | None  # the device's presence as the broker holds it


def receiver_for(broker_uri: str, ident: TopicScope, tls: TlsFiles | None = None) -> AlertReceiver:
    return AlertReceiver(broker_uri, msg.subscription(ident.tenant, ident.building, ident.room, ident.device_id),
                         tls=tls)


def wait_test_alert(rx: AlertReceiver, ident: TopicScope, since: float, timeout: float,
                    min_seq: int | None = None) -> Verified:
    """Wait for a test alert from ``ident`` received after ``since`` (Unix time)."""
    alert = rx.wait_alert(ident.device_id, type="test", min_seq=min_seq, after=since, timeout=timeout)
    status = rx.status.get(ident.device_id)
    if alert is None:
        raise AlertMissing(_what_was_seen(rx, ident, status, timeout))
    # The retained "online" status is published before any alert on the same connection.
    rx.wait_for(lambda r: _online(r.status.get(ident.device_id)), 2.0)
    return Verified(alert, alert.received_at - since, rx.status.get(ident.device_id))


def _online(st: Status | None) -> bool:
    return st is not None and st.online


def _what_was_seen(rx: AlertReceiver, ident: TopicScope, status: Status | None, timeout: float) -> str:
    seen = [a for a in rx.alerts if a.device == ident.device_id]
    parts = [f"no test alert from {ident.device_id} within {timeout:g} s on {rx.uri}"]
    if status is None:
        parts.append("the broker holds no status for it: the device has never connected to this broker "
                     "(check the broker address, WiFi, and `safesignal status`)")
    elif status.online:
        parts.append("the device is online (its status says so), but the alert did not arrive")
    else:
        ago = time.time() - status.received_at
        parts.append(f"the device is offline (its last will was published; seen {ago:.0f} s ago)")
    if seen:
        parts.append(f"other alerts seen from it: seq {', '.join(str(a.seq) for a in seen[-5:])}")
    return "; ".join(parts)


class NotConnected(AlertMissing):
    """The device has no broker session: a test alert would only wait in its outbox."""


# How long ``verify --port`` waits for a device that is still (re)connecting to its broker.
CONNECT_WAIT = 15.0


def parse_seq(text: str) -> int | None:
    """The sequence number in ``alert_test``'s answer (``OK seq N``), None if it has none."""
    m = re.fullmatch(r"seq (\d+)", text)
    return int(m.group(1)) if m else None


def scope_of(status: dict[str, str], given: TopicScope | None = None, port: str = "") -> TopicScope:
    """The identity a provisioned device reports; UsageError if it differs from ``given``
    (fields left empty in ``given`` are not compared)."""
    if status.get("provisioned") != "yes":
        raise UsageError("the device is not provisioned: provision it first")
    ident = TopicScope(status["device_id"], status["tenant"], status["building"], status["room"])
    if given is not None:
        flags = ("--device-id", "--tenant", "--building", "--room")
        mine = (given.device_id, given.tenant, given.building, given.room)
        dev = (ident.device_id, ident.tenant, ident.building, ident.room)
        mismatch = [f for f, m, d in zip(flags, mine, dev, strict=True) if m and m != d]
        if mismatch:
            raise UsageError(f"the device on {port or 'the port'} has a different {', '.join(mismatch)}")
    return ident


def wait_connected(session: DeviceSession, status: dict[str, str], timeout: float) -> dict[str, str]:
    """Wait until the device reports an MQTT session (a device that just rebooted is still
    connecting).  NotConnected if it has none after ``timeout``: asking it for a test alert
    then would only pile one more alert into its outbox."""
    deadline = time.monotonic() + timeout
    while status.get("mqtt_state") != "connected":
        if time.monotonic() >= deadline:
            raise NotConnected(
                f"the device is not connected to its broker {status.get('mqtt_uri', '')} "
                f"(WiFi {status.get('wifi_state')}, MQTT {status.get('mqtt_state')}; "
                f"{status.get('alerts_pending', '?')} alert(s) waiting in its flash): "
                "no test alert was requested, it could not be delivered. Check the WiFi and the broker "
                "(`safesignal status`), then run verify again")
        time.sleep(0.5)
        status = session.status()
    return status


def request_test_alert(session: DeviceSession) -> int | None:
    """Ask the device for a test alert (``alert_test``); its sequence number."""
    return parse_seq(session.command(["alert_test"]).text)


@dataclass
class DeviceCheck:
    ident: TopicScope
    broker: str
    seq: int | None  # of the test alert the device stored
    verified: Verified


def verify_device(session: DeviceSession, *, broker: str | None, given: TopicScope | None, wait: float,
                  tls_for: Callable[[str], TlsFiles | None],
                  requested: Callable[[int | None], None] | None = None,
                  connect_wait: float = CONNECT_WAIT) -> DeviceCheck:
    """``safesignal verify --port``: read the device's identity and broker, make sure it is
    connected, subscribe, ask it for a test alert, wait for exactly that alert."""
    session.sync()
    st = session.last_status if session.last_status is not None else session.status()
    ident = scope_of(st, given, session.url)
    uri = check_uri("--broker", broker or st["mqtt_uri"])
    wait_connected(session, st, min(connect_wait, wait))
    with receiver_for(uri, ident, tls_for(uri)) as rx:
        since = time.time()
        seq = request_test_alert(session)
        if requested is not None:
            requested(seq)
        v = wait_test_alert(rx, ident, since, wait, seq)  # this alert, not an older one still on its way
    return DeviceCheck(ident, uri, seq, v)


def check_uri(flag: str, uri: str) -> str:
    try:
        return str(ssproto.check_mqtt_uri(uri))
    except ssproto.ProtocolError as e:
        raise UsageError(f"{flag}: {e.message}") from None
