"""Installation check: the device's test alert reaches the broker, and the device is online.

``provision --verify`` subscribes before it commits, so the test alert the device sends after
its provisioning reboot is seen; ``safesignal verify`` asks a running device for a fresh test
alert (``alert_test`` on its console) or, without a port, waits for the next one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import ssproto.msg as msg

from .alerts import Alert, AlertReceiver, Status, TlsIdentity
from .errors import SafeSignalError


class AlertMissing(SafeSignalError):
    """The test alert did not arrive; the message says what was and was not seen."""

    exit_code = 8


@dataclass(frozen=True)
class Identity:
    device_id: str
    tenant: str
    building: str
    room: str


@dataclass
class Verified:
    alert: Alert
    latency_s: float  # from the trigger (commit or alert_test) to the alert at the subscriber
    online: Status | None  # the device's presence as the broker holds it


def receiver_for(broker_uri: str, ident: Identity, tls: TlsIdentity | None = None) -> AlertReceiver:
    return AlertReceiver(broker_uri, msg.subscription(ident.tenant, ident.building, ident.room, ident.device_id),
                         tls=tls)


def wait_test_alert(rx: AlertReceiver, ident: Identity, since: float, timeout: float,
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


def _what_was_seen(rx: AlertReceiver, ident: Identity, status: Status | None, timeout: float) -> str:
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
