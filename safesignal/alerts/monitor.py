"""``safesignal monitor``: show live alerts and device presence from the broker.

Table mode is for a person at a terminal: a header, one aligned line per event, and a
summary per device on exit.  JSON mode is for scripts: exactly one JSON object per line per
event (``"event": "alert"`` or ``"event": "status"``), flushed, nothing else.

The formatting functions are pure so they can be tested without a broker.

Anomalies (``safesignal.alerts.anomaly``): every alert is checked against what this monitor has
seen of its (tenant, device id) since it started, and shown with its flags (a table line's
detail, ``"anomalies"`` in JSON); nothing is dropped.  The monitor has no registry, so it flags
only what the wire shows: ``chip-mismatch`` (the id sent from another chip than its last alert),
``chip-missing`` (no chip id after alerts that had one), ``location-mismatch`` (another
building or room than where the monitor first saw the id: its first alert or live status,
not a retained one, which may be stale), ``epoch-change`` and ``seq-jump``.  It cannot tell
``unprovisioned`` (it knows no provisioning records, so that flag is never shown) and cannot
tell a legitimate re-provisioning (a new board, a move to another room) during its run from an
impostor: both are flagged.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

import ssproto
from safesignal.alerts import anomaly
from safesignal.alerts.receiver import Alert, AlertReceiver, Event, Status, TlsFiles
from safesignal.errors import UsageError
from ssproto import msg

# Column widths of the table; longer values push the rest of the line right.
_W_TIME = 12
_W_DEVICE = 16
_W_WHERE = 30
_W_EVENT = 7
_W_SEQ = 6
_MAX_TEXT = 64


def _clean(s: str, limit: int = _MAX_TEXT) -> str:
    """Free text from the wire made safe for a terminal: no control characters (escape
    sequences), bounded length."""
    out = "".join("?" if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c for c in s)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _clock(t: float) -> str:
    lt = time.localtime(t)
    return time.strftime("%H:%M:%S", lt) + f".{int((t % 1) * 1000):03d}"


def _duration(ms: int) -> str:
    s = ms // 1000
    if s < 60:
        return f"{ms / 1000:.1f}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def _row(time_: str, device: str, where: str, event: str, seq: str, detail: str) -> str:
    line = (f"{time_:<{_W_TIME}}  {device:<{_W_DEVICE}}  {where:<{_W_WHERE}}  {event:<{_W_EVENT}}  "
            f"{seq:>{_W_SEQ}}  {detail}")
    return line.rstrip()


def format_header() -> str:
    return _row("TIME", "DEVICE", "TENANT/BUILDING/ROOM", "EVENT", "SEQ", "DETAIL")


def format_event(ev: Event, duplicate: bool | None = None, anomalies: list[str] | None = None) -> str:
    """One table line for an alert or status.  ``duplicate`` defaults to the alert's own ``dup``;
    ``anomalies`` (flags of :mod:`safesignal.alerts.anomaly`) end the line, each after ``!!``."""
    where = f"{ev.tenant}/{ev.building}/{ev.room}"
    detail: list[str] = []
    if isinstance(ev, Alert):
        event = ev.type.upper()
        seq = str(ev.seq)
        if ev.latency is not None:
            detail.append(f"delay {ev.latency:.3f}s")
        else:
            detail.append("device clock not set")
        if ev.uptime_ms is not None:
            detail.append(f"uptime {_duration(ev.uptime_ms)}")
        if ev.dup if duplicate is None else duplicate:
            detail.append("(duplicate)")
        if ev.retained:
            detail.append("(retained)")
    else:
        event = "online" if ev.online else "offline"
        seq = ""
        if ev.firmware:
            detail.append(f"firmware {_clean(ev.firmware)}")
        if ev.boot_id:
            detail.append(f"boot {_clean(ev.boot_id)}")
        if ev.chip_id:
            detail.append(f"chip {_clean(ev.chip_id)}")
        if ev.retained:
            detail.append("(last known)")
    for flag in anomalies or []:
        detail.append("!! " + _clean(flag, 2 * _MAX_TEXT))
    return _row(_clock(ev.received_at), ev.device, where, event, seq, "  ".join(detail))


def json_event(ev: Event, duplicate: bool | None = None, anomalies: list[str] | None = None) -> str:
    """One JSON line (no newline) for an alert or status: our fields first, then the payload's.
    ``anomalies`` (a list, empty when nothing is wrong) is added to an alert when given."""
    d: dict[str, Any]
    if isinstance(ev, Alert):
        d = {"event": "alert", "received_at": ev.received_at,
             "duplicate": ev.dup if duplicate is None else duplicate}
        if ev.retained:
            d["retained"] = True
        if anomalies is not None:
            d["anomalies"] = list(anomalies)
    else:
        d = {"event": "status", "received_at": ev.received_at, "retained": ev.retained}
    for k, v in ev.raw.items():
        if k not in d and k != "kind":
            d[k] = v
    return json.dumps(d, separators=(", ", ": "))


def summary_lines(alerts: Iterable[Alert], status: dict[str, Status], invalid: int = 0,
                  flagged: dict[str, dict[str, int]] | None = None) -> list[str]:
    """One line per device seen (presence, alerts, last seq, and the anomaly kinds flagged with
    how many alerts each: ``flagged`` maps a device id to {kind: count}), plus a count of
    malformed messages."""
    counts: dict[str, int] = {}
    dups: dict[str, int] = {}
    last: dict[str, int] = {}
    where: dict[str, str] = {}
    for a in alerts:
        where.setdefault(a.device, f"{a.tenant}/{a.building}/{a.room}")
        if a.dup:
            dups[a.device] = dups.get(a.device, 0) + 1
        else:
            counts[a.device] = counts.get(a.device, 0) + 1
        last[a.device] = max(last.get(a.device, a.seq), a.seq)
    for dev, s in status.items():
        where[dev] = f"{s.tenant}/{s.building}/{s.room}"
    lines: list[str] = []
    if not where:
        lines.append("summary: no devices seen")
    else:
        lines.append(f"summary: {len(where)} device{'s' if len(where) != 1 else ''}")
    for dev in sorted(where):
        st = status.get(dev)
        presence = "unknown" if st is None else ("online" if st.online else "offline")
        n = counts.get(dev, 0)
        text = f"{n} alert{'s' if n != 1 else ''}"
        if dups.get(dev):
            text += f" (+{dups[dev]} duplicate{'s' if dups[dev] != 1 else ''})"
        seq = f"last seq {last[dev]}" if dev in last else "last seq -"
        flags = (flagged or {}).get(dev)
        if flags:
            seq += "; flagged: " + ", ".join(f"{k} ×{n}" for k, n in sorted(flags.items()))
        lines.append(f"  {dev:<{_W_DEVICE}}  {where[dev]:<{_W_WHERE}}  {presence:<7}  {text}, {seq}")
    if invalid:
        lines.append(f"  {invalid} malformed message{'s' if invalid != 1 else ''} ignored")
    return lines


class AnomalyWatch:
    """What the monitor knows of each (tenant, device id), built from what it has seen (it has
    no registry: no provisioning records), and the anomalies of each alert against it."""

    def __init__(self) -> None:
        self.known: dict[tuple[str, str], anomaly.Known] = {}
        self.flagged: dict[str, dict[str, int]] = {}  # device id -> {kind: alerts flagged}

    def check(self, ev: Event) -> list[str] | None:
        """The flags of an alert (None for a status, which only places a device seen first live)."""
        key = (ev.tenant, ev.device)
        k = self.known.get(key)
        if k is None and not ev.retained:  # where it is first seen live is where it is expected
            k = anomaly.Known(None, ev.building, ev.room, None, None, None, None)
            self.known[key] = k
        if not isinstance(ev, Alert):
            return None
        seen = anomaly.Seen(ev.tenant, ev.building, ev.room, ev.device, ev.chip_id, ev.epoch, ev.seq,
                            ev.received_at)
        flags = [f for f in anomaly.anomalies(k, seen) if anomaly.kind(f) != anomaly.UNPROVISIONED]
        self.known[key] = anomaly.remember(k, seen)
        counts = self.flagged.setdefault(ev.device, {}) if flags else {}
        for f in flags:
            counts[anomaly.kind(f)] = counts.get(anomaly.kind(f), 0) + 1
        return flags


def _check_scope(name: str, value: str) -> None:
    if value == "+":
        return
    try:
        ssproto.check_ident(name, value)
    except ssproto.ProtocolError as e:
        raise UsageError(f"--{name}: {e.message}") from None


def run_monitor(uri: str, *, tenant: str, building: str = "+", room: str = "+", json_lines: bool, out: TextIO,
                duration: float | None = None, stop_event: threading.Event | None = None,
                tls: TlsFiles | None = None) -> int:
    """Show alerts and presence for ``tenant`` (optionally one building / room; ``"+"`` = all)
    until ``duration`` seconds have passed, ``stop_event`` is set or Ctrl-C.  Returns 0.

    Raises :class:`~safesignal.alerts.receiver.BrokerError` if the broker cannot be reached and
    :class:`~safesignal.errors.UsageError` for a malformed scope or URI.
    """
    for name, value in (("tenant", tenant), ("building", building), ("room", room)):
        _check_scope(name, value)
    events: queue.Queue[Event] = queue.Queue()
    rx = AlertReceiver(uri, msg.subscription(tenant, building, room), on_event=events.put, tls=tls)
    rx.start()

    def emit(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    watch = AnomalyWatch()

    def show(ev: Event) -> None:
        dup = ev.dup if isinstance(ev, Alert) else None
        flags = watch.check(ev)
        emit(json_event(ev, dup, flags) if json_lines else format_event(ev, dup, flags))

    if not json_lines:
        emit(format_header())
    deadline = None if duration is None else time.monotonic() + duration
    connected = True
    try:
        try:
            while stop_event is None or not stop_event.is_set():
                wait = 0.1
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        break
                try:
                    show(events.get(timeout=wait))
                except queue.Empty:
                    pass
                if not json_lines and rx.connected != connected:
                    connected = not connected
                    emit(f"-- {'reconnected to' if connected else 'lost'} the broker at {rx.where}"
                         + ("" if connected else "; reconnecting"))
        except KeyboardInterrupt:
            pass
    finally:
        rx.stop()
    while True:
        try:
            show(events.get_nowait())
        except queue.Empty:
            break
    if not json_lines:
        alerts, status, invalid = rx.snapshot()
        for line in summary_lines(alerts, status, invalid, watch.flagged):
            emit(line)
    return 0
