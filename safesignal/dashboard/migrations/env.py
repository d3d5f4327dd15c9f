"""Alembic's environment for the registry: always online, on the connection that
safesignal.dashboard.db.migrate hands over (there is no alembic.ini)."""

from __future__ import annotations

from alembic import context

from safesignal.dashboard.db import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the registry's migrations through safesignal.dashboard.db.migrate")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
