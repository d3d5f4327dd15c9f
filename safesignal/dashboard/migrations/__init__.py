"""Alembic migrations of the registry (run by safesignal.dashboard.db.migrate)."""
