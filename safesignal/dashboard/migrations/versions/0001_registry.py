"""The registry: users, API tokens, browser sessions, devices, provisioning records, alerts,
confirmations.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from safesignal.dashboard.db import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("session_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("building", sa.String(64), nullable=False),
        sa.Column("room", sa.String(64), nullable=False),
        sa.Column("chip_id", sa.String(64)),
        sa.Column("provisioned_at", UtcDateTime),
        sa.Column("online", sa.Boolean),
        sa.Column("presence_since", UtcDateTime),
        sa.Column("last_seen", UtcDateTime),
        sa.Column("firmware", sa.String(128)),
        sa.Column("boot_id", sa.String(64)),
        sa.Column("cert_sha256", sa.String(64)),
        sa.Column("cert_expires", sa.String(64)),
        sa.Column("last_epoch", sa.Integer),
        sa.Column("last_seq", sa.Integer),
        sa.Column("last_chip_id", sa.String(64)),
        sa.Column("anomalies", sa.Text, nullable=False),
        sa.UniqueConstraint("tenant", "device_id", name="uq_devices_tenant_device"),
    )
    op.create_table(
        "provisionings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("building", sa.String(64), nullable=False),
        sa.Column("room", sa.String(64), nullable=False),
        sa.Column("chip_id", sa.String(64), nullable=False),
        sa.Column("cert_sha256", sa.String(64)),
        sa.Column("cert_expires", sa.String(64)),
        sa.Column("firmware", sa.String(128)),
        sa.Column("broker", sa.String(255)),
        sa.Column("provisioned_at", UtcDateTime, nullable=False),
        sa.Column("installer", sa.String(64)),
        sa.Column("posted_by", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("received_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_provisionings_device", "provisionings", ["tenant", "device_id", "provisioned_at"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("building", sa.String(64), nullable=False),
        sa.Column("room", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("chip_id", sa.String(64)),
        sa.Column("device_ts", sa.Float),
        sa.Column("uptime_ms", sa.Integer),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("anomalies", sa.Text, nullable=False),
        sa.UniqueConstraint("tenant", "building", "room", "device_id", "epoch", "seq", name="uq_alerts_key"),
    )
    op.create_index("ix_alerts_device", "alerts", ["tenant", "device_id", "received_at"])
    op.create_index("ix_alerts_received", "alerts", ["received_at"])
    op.create_table(
        "confirmations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("provisioning_id", sa.Integer, sa.ForeignKey("provisionings.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("installer", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("confirmed_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_confirmations_provisioning_id", "confirmations", ["provisioning_id"])


def downgrade() -> None:
    for name in ("confirmations", "alerts", "provisionings", "devices", "web_sessions", "api_tokens", "users"):
        op.drop_table(name)
