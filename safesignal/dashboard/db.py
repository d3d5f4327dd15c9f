"""The registry's database: SQLAlchemy 2 models, engines for SQLite and PostgreSQL, and the
Alembic migrations (shipped in ``safesignal/dashboard/migrations``, run at every start).

Times are stored as UTC (``UtcDateTime``: aware datetimes in, aware UTC datetimes out, on
SQLite as on PostgreSQL).  An alert is stored once per (tenant, building, room, device, epoch,
seq): the receiver's de-duplication key (safesignal/alerts/receiver.py), with epoch -1 for an
alert that names none.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from safesignal.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_DB = "sqlite:///safesignal.db"  # in the current directory
MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x55AFE516  # pg_advisory_xact_lock key while migrating
NO_EPOCH = -1  # an alert without an epoch (firmware before epochs): the receiver's key uses -1 too

ROLES = ("admin", "installer", "viewer")
CONFIRMING_ROLES = ("admin", "installer")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the registry stores aware UTC times only")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))  # Argon2id, PHC string
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)  # the token itself is never stored
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class WebSession(Base):
    """A signed-in browser: the cookie's SHA-256 and the session's CSRF token."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    session_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class Device(Base):
    """One device id of a tenant.  ``building``/``room``/``chip_id`` are the registered ones
    (from its latest provisioning record; for a device never provisioned, where it was first
    seen); ``last_*`` are what its latest alert or status said."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("tenant", "device_id", name="uq_devices_tenant_device"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    building: Mapped[str] = mapped_column(String(64))
    room: Mapped[str] = mapped_column(String(64))
    chip_id: Mapped[str | None] = mapped_column(String(64))
    provisioned_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    online: Mapped[bool | None] = mapped_column(Boolean)  # None: no status message seen yet
    presence_since: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_seen: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    firmware: Mapped[str | None] = mapped_column(String(128))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    cert_sha256: Mapped[str | None] = mapped_column(String(64))
    cert_expires: Mapped[str | None] = mapped_column(String(64))  # as the device reports it
    last_epoch: Mapped[int | None] = mapped_column(Integer)
    last_seq: Mapped[int | None] = mapped_column(Integer)
    last_chip_id: Mapped[str | None] = mapped_column(String(64))
    anomalies: Mapped[str] = mapped_column(Text, default="[]")  # JSON list, since the latest provisioning


class Provisioning(Base):
    """What ``safesignal provision --dashboard`` posted after a verified provisioning."""

    __tablename__ = "provisionings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    building: Mapped[str] = mapped_column(String(64))
    room: Mapped[str] = mapped_column(String(64))
    chip_id: Mapped[str] = mapped_column(String(64))
    cert_sha256: Mapped[str | None] = mapped_column(String(64))
    cert_expires: Mapped[str | None] = mapped_column(String(64))
    firmware: Mapped[str | None] = mapped_column(String(128))
    broker: Mapped[str | None] = mapped_column(String(255))
    provisioned_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)  # the installer's commit time
    installer: Mapped[str | None] = mapped_column(String(64))
    posted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_provisionings_device", "tenant", "device_id", "provisioned_at"),)


class AlertRow(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("tenant", "building", "room", "device_id", "epoch", "seq", name="uq_alerts_key"),
        Index("ix_alerts_device", "tenant", "device_id", "received_at"),
        Index("ix_alerts_received", "received_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    building: Mapped[str] = mapped_column(String(64))
    room: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(16))  # panic | test
    chip_id: Mapped[str | None] = mapped_column(String(64))
    device_ts: Mapped[float | None] = mapped_column(Float)  # the device's clock at the press
    uptime_ms: Mapped[int | None] = mapped_column(Integer)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    anomalies: Mapped[str] = mapped_column(Text, default="[]")  # JSON list, flagged on arrival


class Confirmation(Base):
    __tablename__ = "confirmations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    provisioning_id: Mapped[int] = mapped_column(ForeignKey("provisionings.id", ondelete="CASCADE"), index=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    installer: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    confirmed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


# --- engines -------------------------------------------------------------------------------------
def normalize_url(url: str) -> str:
    """``--db``: sqlite:///FILE, or postgresql://… (driven by psycopg 3)."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise UsageError("--db: not a database URL (sqlite:///FILE or postgresql://user@host/db)") from None
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+psycopg")
    elif u.drivername != "sqlite":
        raise UsageError(f"--db: unsupported database {u.drivername!r} (sqlite or postgresql)")
    return u.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_setup(dbapi_conn: Any, record: Any) -> None:
            # pysqlite opens a transaction only before a write, so the SELECTs of one session would
            # each see a different moment; SQLAlchemy's BEGIN (below) makes a session one snapshot.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the ingest's writes
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITER) else "BEGIN")
    return engine


_WRITER = "safesignal_writer"


def sessions(engine: Engine, *, write: bool = False) -> sessionmaker[Any]:
    """Sessions on ``engine``.  ``write``: for transactions that write.  On SQLite they begin
    IMMEDIATE, taking the write lock first (waiting up to busy_timeout for it).  A deferred
    transaction that reads and then writes fails at once with "database is locked" when another
    connection committed in between (SQLite's WAL: a read snapshot cannot be upgraded), and
    with the ingest writing several times a second that happened to every other writer: to
    alerts behind a presence batch (bench/fleet.py found it), a login, a confirmation.  Reading
    sessions stay deferred, so that readers never wait for a writer.  PostgreSQL: no difference."""
    return sessionmaker(engine.execution_options(**{_WRITER: True}) if write else engine, expire_on_commit=False)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (Alembic, programmatically: no alembic.ini)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Several dashboards may start at once on one database: one migrates, the others
            # wait here (the lock ends with the transaction) and then find the schema current.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def head_revision() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()
