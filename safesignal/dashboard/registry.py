"""What the registry knows and decides: alerts and presence as they arrive, provisioning
records, the installer's confirmation, and the views the API and pages show.

Every function takes a SQLAlchemy session and commits its own work.  Alerts are written with
insert-or-ignore on the de-duplication key (db.AlertRow's unique constraint), so several
ingest instances on one database write each alert once, whoever gets it first.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

import ssproto
from safesignal.alerts import anomaly
from safesignal.alerts.receiver import Alert, Status
from safesignal.dashboard.db import NO_EPOCH, AlertRow, Confirmation, Device, Provisioning, utcnow
from safesignal.errors import SafeSignalError, UsageError

log = logging.getLogger(__name__)

MAX_ALERTS = 10000  # one GET /api/alerts answers at most this many (oldest first); ask again with a later since


class NotFound(SafeSignalError):
    """No such device in the registry."""


class Conflict(SafeSignalError):
    """The request is well formed but the registry's state does not allow it (409, with a reason)."""


def iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


def parse_time(text: str, what: str) -> dt.datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    text = re.sub(r" (\d\d:?\d\d)$", r"+\1", text.strip())  # a "+" that came unencoded in a query string
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{what}: not an ISO 8601 time") from None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _at(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _insert_ignore(db: Session, model: type[Any], values: dict[str, Any], keys: Sequence[str],
                   returning: Any = None) -> Any:
    """INSERT … ON CONFLICT (keys) DO NOTHING; the ``returning`` column of the new row, or None
    when the row was there already."""
    ins: Any
    if db.get_bind().dialect.name == "postgresql":
        ins = postgresql.insert(model)
    else:
        ins = sqlite.insert(model)
    stmt = ins.values(**values).on_conflict_do_nothing(index_elements=list(keys))
    if returning is not None:
        return db.execute(stmt.returning(returning)).scalar_one_or_none()
    db.execute(stmt)
    return None


def _merge(old: str, new: Sequence[str]) -> str:
    have: list[str] = json.loads(old or "[]")
    for a in new:
        if a not in have:
            have.append(a)
    return json.dumps(have)


# --- anomalies ---------------------------------------------------------------------------------
def _known(device: Device | None) -> anomaly.Known | None:
    """What the registry knows of a device, as safesignal.alerts.anomaly reads it: the place and
    chip of its latest provisioning record, and its last alert since that record."""
    if device is None:
        return None
    provisioned = device.provisioned_at is not None
    return anomaly.Known(
        chip_id=device.chip_id if provisioned else None,
        building=device.building if provisioned else None,
        room=device.room if provisioned else None,
        provisioned_at=device.provisioned_at.timestamp() if device.provisioned_at is not None else None,
        last_epoch=None if device.last_epoch in (None, NO_EPOCH) else device.last_epoch,
        last_seq=device.last_seq, last_chip_id=device.last_chip_id)


def _seen(ev: Alert, chip_id: str | None, epoch: int) -> anomaly.Seen:
    return anomaly.Seen(tenant=ev.tenant, building=ev.building, room=ev.room, device_id=ev.device, chip_id=chip_id,
                        epoch=None if epoch == NO_EPOCH else epoch, seq=ev.seq, at=ev.received_at)


# --- ingest -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredAlert:
    """An alert as the registry stored it (the API's and the live stream's alert object)."""

    id: int
    tenant: str
    building: str
    room: str
    device_id: str
    epoch: int | None
    seq: int
    type: str
    chip_id: str | None
    device_ts: float | None
    uptime_ms: int | None
    received_at: dt.datetime
    anomalies: list[str]

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "building": self.building, "room": self.room,
                "device_id": self.device_id, "epoch": self.epoch, "seq": self.seq, "type": self.type,
                "chip_id": self.chip_id, "device_ts": self.device_ts, "uptime_ms": self.uptime_ms,
                "received_at": iso(self.received_at), "anomalies": list(self.anomalies)}

    @classmethod
    def of(cls, r: AlertRow) -> StoredAlert:
        return cls(r.id, r.tenant, r.building, r.room, r.device_id, None if r.epoch == NO_EPOCH else r.epoch, r.seq,
                   r.type, r.chip_id, r.device_ts, r.uptime_ms, r.received_at, json.loads(r.anomalies or "[]"))


def _device(db: Session, tenant: str, device_id: str, *, lock: bool = False) -> Device | None:
    q = select(Device).where(Device.tenant == tenant, Device.device_id == device_id)
    if lock:
        q = q.with_for_update()
    return db.scalar(q)


def _ensure_device(db: Session, tenant: str, device_id: str, building: str, room: str) -> Device:
    """The device's row, made (building and room where it was first seen) if there was none."""
    _insert_ignore(db, Device, {"tenant": tenant, "device_id": device_id, "building": building, "room": room,
                                "anomalies": "[]"}, ("tenant", "device_id"))
    dev = _device(db, tenant, device_id, lock=True)
    assert dev is not None
    return dev


def ingest_alert(db: Session, ev: Alert) -> StoredAlert | None:
    """Store one alert; None if it was stored before (a duplicate, here or by another instance)."""
    chip = ev.raw.get("chip_id")
    chip_id = chip if isinstance(chip, str) and chip else None
    epoch = ev.raw.get("epoch")
    epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else NO_EPOCH
    before = _device(db, ev.tenant, ev.device)
    seen = _seen(ev, chip_id, epoch)
    anomalies = anomaly.anomalies(_known(before), seen)  # flagged, never dropped
    at = _at(ev.received_at)
    values = {"tenant": ev.tenant, "building": ev.building, "room": ev.room, "device_id": ev.device,
              "epoch": epoch, "seq": ev.seq, "type": ev.type, "chip_id": chip_id, "device_ts": ev.ts,
              "uptime_ms": ev.uptime_ms, "received_at": at, "anomalies": json.dumps(anomalies)}
    new_id = _insert_ignore(db, AlertRow, values,
                            ("tenant", "building", "room", "device_id", "epoch", "seq"), AlertRow.id)
    if new_id is None:
        db.commit()
        return None
    dev = _ensure_device(db, ev.tenant, ev.device, ev.building, ev.room)
    dev.last_seen = max(dev.last_seen, at) if dev.last_seen is not None else at
    now = anomaly.remember(_known(dev), seen)  # the device's row as it is now (another instance may have moved it)
    dev.last_epoch = NO_EPOCH if now.last_epoch is None else now.last_epoch
    dev.last_seq, dev.last_chip_id = now.last_seq, now.last_chip_id
    if anomalies:
        dev.anomalies = _merge(dev.anomalies, anomalies)
    db.commit()
    return StoredAlert(new_id, ev.tenant, ev.building, ev.room, ev.device, None if epoch == NO_EPOCH else epoch,
                       ev.seq, ev.type, chip_id, ev.ts, ev.uptime_ms, at, anomalies)


def ingest_status(db: Session, st: Status) -> None:
    """Presence: a status (birth) message or the last will.  A retained one is the broker's
    last-known state, stored when it is news to the registry."""
    apply_status(db, st)
    db.commit()


def ingest_statuses(db: Session, statuses: Collection[Status]) -> None:
    """Several devices' presence in one transaction, their rows locked in key order (two
    instances writing the same presence then never wait for each other in a cycle)."""
    for st in sorted(statuses, key=lambda st: (st.tenant, st.device)):
        apply_status(db, st)
    db.commit()


def apply_status(db: Session, st: Status) -> None:
    """ingest_status without the commit."""
    at = _at(st.received_at)
    dev = _ensure_device(db, st.tenant, st.device, st.building, st.room)
    changed = dev.online is None or dev.online != st.online
    if changed:
        dev.online = st.online
        # a retained message we had never seen: the state is known, since when is not
        dev.presence_since = None if (st.retained and dev.presence_since is None and dev.last_seen is None) else at
    if not st.retained or changed:
        dev.last_seen = max(dev.last_seen, at) if dev.last_seen is not None else at
    if st.firmware:
        dev.firmware = st.firmware[:128]
    if st.boot_id:
        dev.boot_id = st.boot_id[:64]
    chip = st.raw.get("chip_id")
    if isinstance(chip, str) and chip:
        dev.last_chip_id = chip[:64]


# --- provisioning records --------------------------------------------------------------------------
def _text(body: dict[str, Any], key: str, *, required: bool = False, limit: int = 64) -> str | None:
    v = body.get(key)
    if v is None or v == "":
        if required:
            raise UsageError(f"{key}: missing")
        return None
    if not isinstance(v, str) or len(v) > limit or any(ord(c) < 0x20 for c in v):
        raise UsageError(f"{key}: a string of at most {limit} printable characters")
    return v


def record_provisioning(db: Session, body: dict[str, Any], posted_by: int | None, default_installer: str
                        ) -> Provisioning:
    """POST /api/provisionings: validate, store, and make the record the device's registration."""
    fields = {}
    for key in ("tenant", "building", "room", "device_id"):
        value = _text(body, key, required=True)
        assert value is not None
        try:
            ssproto.check_ident(key.replace("_", " "), value)
        except ssproto.ProtocolError as e:
            raise UsageError(f"{key}: {e.message}") from None
        fields[key] = value
    chip_id = _text(body, "chip_id", required=True)
    assert chip_id is not None
    cert = _text(body, "cert_sha256")
    if cert is not None:
        cert = cert.lower()
        if len(cert) != 64 or any(c not in "0123456789abcdef" for c in cert):
            raise UsageError("cert_sha256: 64 hex digits")
    when = _text(body, "time")
    provisioned_at = parse_time(when, "time") if when else utcnow()
    rec = Provisioning(**fields, chip_id=chip_id, cert_sha256=cert, cert_expires=_text(body, "cert_expires"),
                       firmware=_text(body, "firmware", limit=128), broker=_text(body, "broker", limit=255),
                       provisioned_at=provisioned_at, installer=_text(body, "installer") or default_installer,
                       posted_by=posted_by, received_at=utcnow())
    db.add(rec)
    dev = _ensure_device(db, fields["tenant"], fields["device_id"], fields["building"], fields["room"])
    latest = db.scalar(select(func.max(Provisioning.provisioned_at))
                       .where(Provisioning.tenant == rec.tenant, Provisioning.device_id == rec.device_id,
                              Provisioning.id != rec.id))
    if latest is None or provisioned_at >= latest:  # a late post of an older record changes nothing
        dev.building, dev.room, dev.chip_id = rec.building, rec.room, chip_id
        dev.provisioned_at = provisioned_at
        dev.cert_sha256, dev.cert_expires = cert, rec.cert_expires
        if rec.firmware:
            dev.firmware = rec.firmware
        dev.anomalies = "[]"
        dev.last_epoch = dev.last_seq = dev.last_chip_id = None  # a new baseline (anomaly.provisioned)
    db.commit()
    return rec


def provisioning_json(p: Provisioning) -> dict[str, Any]:
    return {"id": p.id, "tenant": p.tenant, "device_id": p.device_id, "building": p.building, "room": p.room,
            "chip_id": p.chip_id, "cert_sha256": p.cert_sha256, "cert_expires": p.cert_expires,
            "firmware": p.firmware, "broker": p.broker, "time": iso(p.provisioned_at), "installer": p.installer,
            "received_at": iso(p.received_at)}


# --- the installer's confirmation ------------------------------------------------------------------
def _latest_provisioning(db: Session, tenant: str, device_id: str) -> Provisioning | None:
    return db.scalar(select(Provisioning).where(Provisioning.tenant == tenant, Provisioning.device_id == device_id)
                     .order_by(Provisioning.provisioned_at.desc(), Provisioning.id.desc()).limit(1))


def confirm(db: Session, tenant: str, device_id: str, installer: str, user_id: int | None) -> dict[str, Any]:
    """The installer confirms the device: allowed only after a test alert that arrived after its
    latest provisioning.  Confirming again is harmless (the first confirmation stands)."""
    if _device(db, tenant, device_id) is None:
        raise NotFound(f"no device {device_id} in tenant {tenant}")
    prov = _latest_provisioning(db, tenant, device_id)
    if prov is None:
        raise Conflict(f"{device_id} has no provisioning record: provision it with --dashboard first")
    done = db.scalar(select(Confirmation).where(Confirmation.provisioning_id == prov.id)
                     .order_by(Confirmation.id).limit(1))
    if done is None:
        test = db.scalar(select(AlertRow).where(
            AlertRow.tenant == tenant, AlertRow.device_id == device_id, AlertRow.type == "test",
            AlertRow.received_at >= prov.provisioned_at).order_by(AlertRow.received_at.desc()).limit(1))
        if test is None:
            raise Conflict(f"no test alert from {device_id} has arrived since its latest provisioning "
                           f"({iso(prov.provisioned_at)}): press the button's test (or `safesignal verify --port`) "
                           "and try again")
        done = Confirmation(tenant=tenant, device_id=device_id, provisioning_id=prov.id, alert_id=test.id,
                            installer=installer, user_id=user_id, confirmed_at=utcnow())
        db.add(done)
        db.commit()
    alert = db.get(AlertRow, done.alert_id)
    return {"tenant": tenant, "device_id": device_id, "confirmed": True, "confirmed_by": done.installer,
            "confirmed_at": iso(done.confirmed_at), "provisioned_at": iso(prov.provisioned_at),
            "test_alert": StoredAlert.of(alert).json() if alert is not None else None}


# --- views -------------------------------------------------------------------------------------------
def list_devices(db: Session, tenant: str | None = None) -> list[dict[str, Any]]:
    """GET /api/devices: every device, tenant → building → room → device id (one snapshot of
    the database: the devices and their alerts as of one moment)."""
    if db.get_bind().dialect.name == "postgresql":  # SQLite: a transaction is one snapshot already
        db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    q = select(Device).order_by(Device.tenant, Device.building, Device.room, Device.device_id)
    if tenant is not None:
        q = q.where(Device.tenant == tenant)
    devices = list(db.scalars(q))
    latest_prov: dict[tuple[str, str], Provisioning] = {}
    for p in db.scalars(select(Provisioning).order_by(Provisioning.provisioned_at, Provisioning.id)):
        latest_prov[(p.tenant, p.device_id)] = p  # the last one wins
    confirmed: dict[int, Confirmation] = {}
    for c in db.scalars(select(Confirmation).order_by(Confirmation.id.desc())):
        confirmed[c.provisioning_id] = c  # the first one wins
    last_test = {(t, d): at for t, d, at in db.execute(
        select(AlertRow.tenant, AlertRow.device_id, func.max(AlertRow.received_at))
        .where(AlertRow.type == "test").group_by(AlertRow.tenant, AlertRow.device_id))}
    last_alert = {(t, d): at for t, d, at in db.execute(
        select(AlertRow.tenant, AlertRow.device_id, func.max(AlertRow.received_at))
        .group_by(AlertRow.tenant, AlertRow.device_id))}
    out = []
    for d in devices:
        key = (d.tenant, d.device_id)
        prov = latest_prov.get(key)
        conf = confirmed.get(prov.id) if prov is not None else None
        out.append({
            "tenant": d.tenant, "building": d.building, "room": d.room, "device_id": d.device_id,
            "chip_id": d.chip_id if d.chip_id is not None else d.last_chip_id,
            "online": bool(d.online), "presence_since": iso(d.presence_since), "last_seen": iso(d.last_seen),
            "last_alert": iso(_utc(last_alert.get(key))), "last_test_alert": iso(_utc(last_test.get(key))),
            "confirmed": conf is not None, "confirmed_by": conf.installer if conf is not None else None,
            "confirmed_at": iso(conf.confirmed_at) if conf is not None else None,
            "provisioned_at": iso(d.provisioned_at), "firmware": d.firmware, "cert_expires": d.cert_expires,
            "anomalies": json.loads(d.anomalies or "[]"),
        })
    return out


def _utc(t: dt.datetime | None) -> dt.datetime | None:
    """An aggregate as UTC (naive values are UTC)."""
    if t is None:
        return None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


def alerts_since(db: Session, since: dt.datetime | None, limit: int = MAX_ALERTS) -> list[StoredAlert]:
    q = select(AlertRow).order_by(AlertRow.received_at, AlertRow.id).limit(limit)
    if since is not None:
        q = q.where(AlertRow.received_at >= since)
    return [StoredAlert.of(r) for r in db.scalars(q)]


def alerts_after(db: Session, after_id: int, limit: int = 500, *, skip: Collection[int] = ()) -> list[StoredAlert]:
    """Alerts with an id above ``after_id`` (the live stream's cursor), in id order, leaving out
    the ids in ``skip`` (those the stream sent already).  It reads the ids first and loads only
    the rows not skipped: the stream looks again below its cursor on every wake-up, and loading
    every row there again made its cost grow with the square of the alert rate (bench/README.md,
    fleet.py)."""
    ids = [i for i in db.scalars(select(AlertRow.id).where(AlertRow.id > after_id).order_by(AlertRow.id).limit(limit))
           if i not in skip]
    if not ids:
        return []
    return [StoredAlert.of(r) for r in db.scalars(select(AlertRow).where(AlertRow.id.in_(ids)).order_by(AlertRow.id))]


def max_alert_id(db: Session) -> int:
    return int(db.scalar(select(func.max(AlertRow.id))) or 0)
