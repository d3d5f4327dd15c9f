"""Receive SafeSignal alerts and device presence from an MQTT broker.

:class:`AlertReceiver` subscribes (QoS 1) to a topic filter such as
``ssproto.msg.subscription(tenant)`` and records every alert and status message it sees,
with the host time it arrived.  The network loop runs in paho-mqtt's background thread;
paho reconnects on its own after the broker goes away, and the receiver subscribes again on
every connect.  With ``persistent=True`` the session is kept by the broker
(``clean_session=False``) so QoS 1 alerts published while the receiver is disconnected are
delivered when it is back.

Used by ``safesignal verify``, ``safesignal monitor``, the tests and the benchmarks.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

import ssproto
from safesignal.errors import SafeSignalError, UsageError
from ssproto import msg

log = logging.getLogger(__name__)

KEEPALIVE = 15  # seconds
RECONNECT_MIN = 0.1  # seconds; doubles on every failed attempt...
RECONNECT_MAX = 2.0  # ...up to this


class BrokerError(SafeSignalError, ConnectionError):
    """The MQTT broker could not be reached, refused the connection or the subscription."""

    exit_code = 7


@dataclass(frozen=True)
class TlsFiles:
    """What a host client needs for an mqtts:// broker: the tenant CA certificate (verifies the
    broker, host name included) and an operator certificate with its key (our identity; the
    key file is encrypted with ``key_password``)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    key_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Alert:
    """One alert message as received (duplicates included)."""

    tenant: str
    building: str
    room: str
    device: str
    seq: int
    type: str  # "panic" or "test"
    ts: float | None  # the device's Unix time when pressed; None if its clock was not set
    uptime_ms: int | None
    received_at: float  # host time.time() on arrival
    dup: bool = False  # (device, seq) had already been received
    retained: bool = False  # delivered as a retained message (alerts should never be retained)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    epoch: int | None = None  # the device's sequence epoch (None: firmware that sends none)
    chip_id: str | None = None  # the publishing chip (machine.unique_id()); None: older firmware

    @property
    def latency(self) -> float | None:
        """Seconds between the press (device clock) and arrival (host clock), if the device knew the time."""
        return None if self.ts is None else self.received_at - self.ts


@dataclass(frozen=True)
class Status:
    """A device's latest presence message (the last will says ``online=False``)."""

    tenant: str
    building: str
    room: str
    device: str
    online: bool
    firmware: str | None
    boot_id: str | None
    received_at: float
    retained: bool  # True: the broker's stored last-known state, not a live change
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    chip_id: str | None = None  # the publishing chip (machine.unique_id()); None: older firmware


Event = Alert | Status


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _int(v: object) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return None
    return v


def _str(v: object) -> str | None:
    return v if isinstance(v, str) and v else None


def _ident(d: dict[str, Any]) -> tuple[str, str, str, str]:
    return str(d["tenant"]), str(d["building"]), str(d["room"]), str(d["device"])


def event_from_message(topic: str, payload: bytes | bytearray, *, received_at: float, retained: bool = False,
                       seen: set[tuple[str, str, str, str, int, int]] | None = None) -> Event:
    """Decode one message into an :class:`Alert` or :class:`Status`.

    ``seen`` holds the (tenant, building, room, device, epoch, seq) keys already received (a
    device id is unique only within its room's topic prefix; the epoch changes when a device's
    flash is erased and its seq starts again); an alert found in it is marked ``dup`` and new
    ones are added.  Raises ``ssproto.ProtocolError`` for anything malformed.
    """
    d: dict[str, Any] = msg.parse_message(topic, payload)
    kind = d.pop("kind")
    t, b, r, dev = _ident(d)
    if kind == msg.ALERT:
        seq: int = d["seq"]
        dup = False
        if seen is not None:
            ep = d.get("epoch")
            key = (t, b, r, dev, ep if isinstance(ep, int) else -1, seq)
            dup = key in seen
            seen.add(key)
        return Alert(t, b, r, dev, seq, str(d["type"]), _number(d.get("ts")), _int(d.get("uptime_ms")),
                     received_at, dup, retained, d, _int(d.get("epoch")), _str(d.get("chip_id")))
    return Status(t, b, r, dev, bool(d["online"]), _str(d.get("firmware")), _str(d.get("boot_id")),
                  received_at, retained, d, _str(d.get("chip_id")))


def paho_client(client_id: str, *, persistent: bool, tls: TlsFiles | None, manual_ack: bool = False,
                reconnect_max: float = RECONNECT_MAX) -> mqtt.Client:
    """An MQTT 3.1.1 paho client as the host tools use one: its routine chatter at debug level,
    reconnecting after RECONNECT_MIN..``reconnect_max`` s, with ``tls`` (mqtts://) set up.  UsageError
    if the TLS files cannot be used."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent,
                         protocol=mqtt.MQTTv311, manual_ack=manual_ack)
    # paho logs routine reconnect states as errors; keep its chatter at debug level.
    paho_log = logging.getLogger(__name__ + ".paho")
    client.on_log = lambda client, userdata, level, text: paho_log.debug("%s", text)
    # paho's annotation says int, but the delays are plain seconds (it only multiplies and sleeps).
    client.reconnect_delay_set(RECONNECT_MIN, reconnect_max)  # type: ignore[arg-type]
    if tls is not None:
        try:
            client.tls_set(ca_certs=str(tls.ca_file), certfile=str(tls.cert_file), keyfile=str(tls.key_file),
                           keyfile_password=tls.key_password, cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ssl.SSLError) as e:
            raise UsageError(f"TLS files for the broker unusable: {getattr(e, 'strerror', None) or e}") from None
    return client


class AlertReceiver:
    """Subscribe to ``topic_filter`` on the broker at ``uri`` and record alerts and presence.

    ``alerts`` lists every alert in arrival order (duplicates included, marked ``dup``);
    ``status`` maps a device id to its latest :class:`Status`; ``invalid`` counts malformed
    messages.  Read them under :meth:`wait_for` or through the helper methods when the
    receiver is running.  ``on_event`` is called from the network thread with every
    :class:`Alert` or :class:`Status`, after it is recorded.
    """

    def __init__(self, uri: str, topic_filter: str, *, client_id: str | None = None, persistent: bool = False,
                 on_event: Callable[[Event], None] | None = None, tls: TlsFiles | None = None) -> None:
        try:
            scheme, self.host, self.port = ssproto.parse_mqtt_uri(uri)
        except ssproto.ProtocolError as e:
            raise UsageError(f"MQTT URI: {e.message}") from None
        if scheme == "mqtts" and tls is None:
            raise UsageError("an mqtts:// broker needs the tenant CA and an operator certificate (--ca DIR)")
        if persistent and not client_id:
            raise UsageError("a persistent receiver needs a fixed client id")
        self.uri = uri
        self.topic_filter = topic_filter
        self.persistent = persistent
        self.on_event = on_event
        self.alerts: list[Alert] = []
        self.status: dict[str, Status] = {}
        self.invalid = 0
        self.connects = 0  # successful CONNACKs (1 + reconnections)
        self._seen: set[tuple[str, str, str, str, int, int]] = set()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._connected = False
        self._subscribed = False
        self._sub_mid: int | None = None
        self._failure: str | None = None
        self._started = False
        self._client = paho_client(client_id or "", persistent=persistent, tls=tls if scheme == "mqtts" else None)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Connect and return once the broker acknowledged the subscription.

        Raises :class:`BrokerError` if the broker cannot be reached, refuses us, or does not
        answer within ``timeout`` seconds.
        """
        if self._started:
            return
        deadline = time.monotonic() + timeout
        self._client.connect_timeout = max(timeout, 0.1)
        try:
            self._client.connect(self.host, self.port, keepalive=KEEPALIVE)
        except OSError as e:
            reason = e.strerror or str(e) or type(e).__name__
            raise BrokerError(f"cannot connect to the MQTT broker at {self.where}: {reason}") from None
        self._started = True
        self._client.loop_start()
        with self._cond:
            ok = self._cond.wait_for(lambda: self._subscribed or self._failure is not None,
                                     max(0.0, deadline - time.monotonic()))
            failure = self._failure
        if failure is not None or not ok:
            self.stop()
            if failure is None:
                failure = f"no answer within {timeout:g} s"
            raise BrokerError(f"MQTT broker at {self.where}: {failure}")
        log.info("subscribed to %s on %s", self.topic_filter, self.where)

    def stop(self) -> None:
        """Disconnect (a persistent session stays on the broker) and end the network thread."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()
        with self._cond:
            self._connected = False
            self._subscribed = False
            self._cond.notify_all()

    def __enter__(self) -> AlertReceiver:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- paho callbacks (network thread) ----------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT broker %s refused the connection: %s", self.where, reason)
            with self._cond:
                self._failure = f"connection refused: {reason}"
                self._cond.notify_all()
            return
        result, mid = client.subscribe(self.topic_filter, qos=1)
        with self._cond:
            self.connects += 1
            self._connected = True
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._sub_mid = mid
            self._cond.notify_all()
        log.info("connected to %s (session present: %s)", self.where, flags.session_present)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode,
                       properties: Any) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            self._cond.notify_all()
        if was and self._started:
            log.warning("lost the connection to the MQTT broker at %s; reconnecting", self.where)
        log.debug("disconnected from %s: %s", self.where, reason)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Any) -> None:
        with self._cond:
            if mid != self._sub_mid:
                return
            if any(r.is_failure for r in reasons):
                self._failure = f"subscription to {self.topic_filter} refused"
                log.warning("MQTT broker %s refused the subscription to %s", self.where, self.topic_filter)
            else:
                self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        try:
            with self._cond:
                try:
                    ev = event_from_message(message.topic, message.payload, received_at=now,
                                            retained=bool(message.retain), seen=self._seen)
                except (ValueError, UnicodeError) as e:  # ProtocolError is a ValueError
                    self.invalid += 1
                    self._cond.notify_all()
                    log.warning("ignored a malformed message on %r: %s", message.topic, e)
                    return
                if isinstance(ev, Alert):
                    self.alerts.append(ev)
                else:
                    self.status[ev.device] = ev
                self._cond.notify_all()
            if self.on_event is not None:
                self.on_event(ev)
        except Exception:  # never let the network thread die
            log.exception("error while handling a message on %r", message.topic)

    # --- queries --------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[AlertReceiver], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` is true (checked under the receiver's lock after every
        message and connection change); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def _find(self, device: str, type: str | None, min_seq: int | None, after: float | None) -> Alert | None:
        for a in self.alerts:
            if (a.device == device and (type is None or a.type == type)
                    and (min_seq is None or a.seq >= min_seq) and (after is None or a.received_at >= after)):
                return a
        return None

    def wait_alert(self, device: str, *, type: str | None = None, min_seq: int | None = None,
                   after: float | None = None, timeout: float) -> Alert | None:
        """The first alert (in arrival order) from ``device`` matching the filters, waiting up to
        ``timeout`` seconds for it; None if none came.  ``after`` is a host ``time.time()``."""
        found: list[Alert] = []

        def match(r: AlertReceiver) -> bool:
            a = r._find(device, type, min_seq, after)
            if a is not None:
                found.append(a)
            return a is not None

        self.wait_for(match, timeout)
        return found[0] if found else None

    def unique_alerts(self) -> list[Alert]:
        """Every alert once: the first arrival of each (tenant, building, room, device, epoch, seq)."""
        with self._lock:
            return [a for a in self.alerts if not a.dup]

    @property
    def duplicates(self) -> int:
        with self._lock:
            return sum(1 for a in self.alerts if a.dup)

    def seqs(self, device: str) -> set[int]:
        with self._lock:
            return {a.seq for a in self.alerts if a.device == device}

    def missing(self, device: str, expected: Iterable[int]) -> list[int]:
        """The sequence numbers in ``expected`` not received from ``device``, sorted."""
        got = self.seqs(device)
        return sorted(set(expected) - got)

    def snapshot(self) -> tuple[list[Alert], dict[str, Status], int]:
        """Copies of (alerts, status, invalid) taken under the lock."""
        with self._lock:
            return list(self.alerts), dict(self.status), self.invalid
