"""The dashboard's MQTT ingest: alerts through a durable subscription (one instance) or a shared
one (instances that split the load), presence from the status topics.

Alerts, one instance (the default): ``safesignal/<tenant>/+/+/+/alert`` as an ordinary
subscription of a persistent session.  The broker keeps that subscription across its own
restart and queues the alerts that arrive before the dashboard is back, so a broker restart
loses none.

Alerts, several instances (``--group G``): ``$share/G/safesignal/<tenant>/+/+/+/alert``.  The
broker hands each alert to one member of the group, so N dashboard instances on one database
split the load.  The price on mosquitto 2.0: its persistence does not save shared
subscriptions (mosquitto 2.0.x src/persist_write.c, persist__subs_save walks only a topic's
ordinary subscribers; the development branch saves them since its commit 1914b3ee), so after
a broker restart an alert that a device publishes before an instance has subscribed again goes
to nobody.  Scale out on a broker that keeps shared subscriptions across a restart.

Either way each alert is written with insert-or-ignore on its de-duplication key
(registry.ingest_alert), so a redelivery (QoS 1 after a reconnect) or the same alert through
another instance is stored once.  A message is acknowledged only after it is in the database:
while the database is unreachable the ingest retries and stops taking alerts, so the broker
keeps them.

Presence: ``safesignal/<tenant>/+/+/+/status`` as an ordinary subscription, because a broker
sends no retained messages to a shared subscription (MQTT 5.0, 4.8.2) and the retained status
is each device's last-known presence.  Every instance writes the same presence; the write is
idempotent.

The session is persistent (fixed client id, ``clean_session=False``): alerts that arrive while
an instance restarts wait for it at the broker.  When the broker answers a reconnect with the
session present and this process has subscribed before, an instance without a group does not
subscribe again: the session holds both subscriptions, and subscribing again would make the
broker send every retained status once more (MQTT 3.1.1, 3.8.4), thousands of messages ahead of
the alerts after a broker restart.  A group instance always subscribes again, because its
shared subscription may be gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

import ssproto
from safesignal.alerts.receiver import (
    KEEPALIVE,
    Alert,
    BrokerError,
    Status,
    TlsFiles,
    event_from_message,
    paho_client,
)
from safesignal.dashboard import registry
from safesignal.errors import UsageError
from ssproto import msg

log = logging.getLogger(__name__)

DB_RETRY_MAX = 5.0  # seconds between attempts to write while the database fails
# Seconds between attempts to reconnect while the broker is down (from 0.1 s, doubling): alerts
# queued for the ingest's session wait at most this long after the broker is back.
RECONNECT_MAX = 0.5


def topic_filters(group: str | None, tenant: str = "+") -> tuple[str, str]:
    """(the alert filter, the status filter) for ``tenant`` ("+": every tenant); the alert
    filter is shared in ``group``, or ordinary when ``group`` is None."""
    alert = f"{msg.ROOT}/{tenant}/+/+/+/{msg.ALERT}"
    status = f"{msg.ROOT}/{tenant}/+/+/+/{msg.STATUS}"
    return (alert if group is None else f"$share/{group}/{alert}"), status


class Ingest:
    """Subscribe at ``uri`` and write alerts and presence through ``db`` (a session factory).
    ``on_alert`` is called from the network thread with each newly stored alert."""

    def __init__(self, uri: str, db: sessionmaker[Session], *, client_id: str, group: str | None = None,
                 tenant: str = "+", tls: TlsFiles | None = None,
                 on_alert: Callable[[registry.StoredAlert], None] | None = None) -> None:
        try:
            scheme, self.host, self.port = ssproto.parse_mqtt_uri(uri)
        except ssproto.ProtocolError as e:
            raise UsageError(f"--broker: {e.message}") from None
        if scheme == "mqtts" and tls is None:
            raise UsageError("an mqtts:// broker needs the tenant CA and an operator certificate (--ca DIR)")
        if group is not None and (not group or any(c in group for c in "/+#")):
            raise UsageError("--group: a name without '/', '+' or '#'")
        self.group = group
        self.db = db
        self.on_alert = on_alert
        self.filters = topic_filters(group, tenant)
        self.stored = 0  # alerts this instance wrote
        self.duplicates = 0  # alerts it received that were in the database already
        self.invalid = 0
        self._stopping = threading.Event()
        self._lock = threading.Condition()
        self._subscribed = False
        self._failure: str | None = None
        self._sub_mid: int | None = None
        self._client = paho_client(client_id, persistent=True, tls=tls if scheme == "mqtts" else None, manual_ack=True,
                                   reconnect_max=RECONNECT_MAX)
        self._presence = PresenceWriter(db)  # its thread starts once nothing above can fail
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Connect; return once the broker acknowledged both subscriptions."""
        self._client.connect_timeout = max(timeout, 0.1)
        try:
            self._client.connect(self.host, self.port, keepalive=KEEPALIVE)
        except OSError as e:
            raise BrokerError(f"cannot connect to the MQTT broker at {self.where}: "
                              f"{e.strerror or e or type(e).__name__}") from None
        self._client.loop_start()
        with self._lock:
            ok = self._lock.wait_for(lambda: self._subscribed or self._failure is not None, timeout)
            failure = self._failure
        if failure is not None or not ok:
            self.stop()
            raise BrokerError(f"MQTT broker at {self.where}: {failure or f'no answer within {timeout:g} s'}")
        log.info("ingesting %s and %s from %s", *self.filters, self.where)

    def stop(self) -> None:
        self._stopping.set()
        self._client.disconnect()
        self._client.loop_stop()
        self._presence.close()

    # --- paho callbacks (network thread) --------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            with self._lock:
                self._failure = f"connection refused: {reason}"
                self._lock.notify_all()
            return
        log.info("connected to %s (session present: %s)", self.where, flags.session_present)
        with self._lock:
            kept = self.group is None and flags.session_present and self._subscribed
        if kept:
            return  # the broker kept the session and its subscriptions (see the module's notes)
        _, mid = client.subscribe([(self.filters[0], 1), (self.filters[1], 1)])
        with self._lock:
            self._sub_mid = mid

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Any) -> None:
        with self._lock:
            if mid != self._sub_mid:
                return
            if any(r.is_failure for r in reasons):
                self._failure = f"subscription to {' and '.join(self.filters)} refused"
            else:
                self._subscribed = True
            self._lock.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._handle(client, message)
        except Exception:  # never let the network thread die; unacknowledged, it comes again
            log.exception("error while handling a message on %r", message.topic)

    def _handle(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        try:
            ev = event_from_message(message.topic, message.payload, received_at=time.time(),
                                    retained=bool(message.retain))
        except (ValueError, UnicodeError) as e:  # ProtocolError is a ValueError
            self.invalid += 1
            log.warning("ignored a malformed message on %r: %s", message.topic, e)
            client.ack(message.mid, message.qos)
            return
        if isinstance(ev, Alert) and ev.retained:
            log.warning("ignored a retained alert on %r (alerts are never retained)", message.topic)
            client.ack(message.mid, message.qos)
            return
        if not isinstance(ev, Alert):
            self._presence.put(ev)  # written by the presence thread (see PresenceWriter)
            client.ack(message.mid, message.qos)
            return
        delay = 0.1
        while not self._stopping.is_set():
            try:
                with self.db() as s:
                    stored = registry.ingest_alert(s, ev)
                break
            except SQLAlchemyError as e:
                # Keep the message unacknowledged and try again: the broker holds it (and, with
                # this thread busy, the rest) until the database takes it.
                log.error("cannot write to the database (%s); retrying in %.1f s", type(e).__name__, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, DB_RETRY_MAX)
        else:
            return  # stopping: not acknowledged, the broker delivers it again
        client.ack(message.mid, message.qos)
        if stored is None:
            self.duplicates += 1
        else:
            self.stored += 1
            if self.on_alert is not None:
                try:
                    self.on_alert(stored)
                except Exception:  # the live view must never stop the ingest
                    log.exception("live-stream notification failed")


class PresenceWriter:
    """Writes presence on a thread of its own, so that alerts never wait behind it.

    After a broker restart every device sends its birth message at once: thousands of status
    messages on the ingest's one connection, ahead of the alerts that follow them.  Written one
    transaction each, they held the alerts behind them for seconds (bench/README.md, fleet.py).
    Here a status is only noted (the latest per device) and acknowledged; this thread writes
    what is noted in one transaction at a time.  A status acknowledged but not yet written when
    the process dies is not lost for good: presence is retained at the broker, and the next
    process subscribes and receives every device's latest status again."""

    def __init__(self, db: sessionmaker[Session]) -> None:
        self.db = db
        self.written = 0  # statuses written (the latest of each device at the time)
        self._pending: dict[tuple[str, str], Status] = {}
        self._cv = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)
        self._thread.start()

    def put(self, st: Status) -> None:
        with self._cv:
            self._pending[(st.tenant, st.device)] = st
            self._cv.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending (one attempt while the database fails), then end the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout)

    def _take(self, older: dict[tuple[str, str], Status] | None = None) -> dict[tuple[str, str], Status] | None:
        with self._cv:
            if older is None:
                self._cv.wait_for(lambda: bool(self._pending) or self._closing)
            batch = {**(older or {}), **self._pending}  # a newer status of a device replaces the older
            self._pending = {}
            return batch if batch else None

    def _run(self) -> None:
        delay = 0.1
        batch = self._take()
        while batch is not None:
            current = batch
            try:
                with self.db() as s:
                    registry.ingest_statuses(s, current.values())
                self.written += len(current)
                delay = 0.1
                batch = self._take()
            except SQLAlchemyError as e:
                with self._cv:
                    closing = self._closing
                if closing:
                    log.error("presence of %d device(s) not written (%s): it comes again from the broker's "
                              "retained status at the next start", len(current), type(e).__name__)
                    return
                log.error("cannot write presence to the database (%s); retrying in %.1f s", type(e).__name__, delay)
                with self._cv:
                    self._cv.wait_for(lambda: self._closing, delay)
                delay = min(delay * 2, DB_RETRY_MAX)
                batch = self._take(current)
            except Exception:  # never let the presence thread die
                log.exception("error while writing presence")
                batch = self._take()
