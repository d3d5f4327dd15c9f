"""The dashboard: the device registry, the installer's confirmation and the live fleet view.

``db`` (SQLAlchemy models, engines, Alembic migrations shipped in ``migrations/``), ``auth``
(accounts with Argon2 password hashes, API tokens and browser sessions stored hashed),
``registry`` (what the dashboard knows and decides: ingest, provisioning records,
confirmation), ``ingest`` (the MQTT subscriber: a shared subscription for alerts, presence from
the retained status messages), ``app`` (the Starlette web app and JSON API), ``server``
(``safesignal dashboard``: migrate, ingest, serve with uvicorn) and ``client`` (what
``safesignal provision --dashboard`` posts; standard library only).

Everything but ``client`` needs the ``dashboard`` extra (safesignal/extras.py).
"""
