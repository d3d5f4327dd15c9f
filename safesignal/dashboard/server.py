"""``safesignal dashboard``: migrate the database, start the MQTT ingest, serve the app."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn
from sqlalchemy.engine import make_url

from safesignal.alerts.receiver import TlsFiles
from safesignal.dashboard import auth, db
from safesignal.dashboard.app import Notifier, create_app
from safesignal.dashboard.ingest import Ingest
from safesignal.errors import SafeSignalError, UsageError

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8080"
GRACE = 2  # seconds open connections (live streams) get at shutdown


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise UsageError("--listen: HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def shown_url(url: str) -> str:
    """The database URL without its password, for messages."""
    return make_url(db.normalize_url(url)).render_as_string(hide_password=True)


@dataclass
class ServeOptions:
    broker: str
    db_url: str = db.DEFAULT_DB
    listen: str = DEFAULT_LISTEN
    group: str | None = None  # None: a durable ordinary subscription; a name: $share/<name>/…
    instance: str = ""  # the MQTT client id's suffix; default: host name and port
    tenant: str = "+"
    tls: TlsFiles | None = None


def add_user(db_url: str, name: str, role: str, password: str) -> str:
    """``safesignal dashboard user add``: the new account's API token."""
    engine = db.make_engine(db_url)
    try:
        db.migrate(engine)
        with db.sessions(engine, write=True)() as s:
            return auth.add_user(s, name, role, password)
    finally:
        engine.dispose()


def serve(opts: ServeOptions, ready: Callable[[str], None]) -> tuple[int, int]:
    """Run until SIGINT or SIGTERM.  ``ready`` gets the app's URL once it accepts connections.
    Returns (alerts this instance stored, alerts it received that were stored already)."""
    host, port = parse_listen(opts.listen)
    engine = db.make_engine(opts.db_url)
    try:
        db.migrate(engine)
    except Exception as e:
        engine.dispose()
        raise SafeSignalError(f"database {shown_url(opts.db_url)}: {type(e).__name__}: {e}") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        engine.dispose()
        raise UsageError(f"--listen {opts.listen}: {e.strerror or e}") from None
    sock.listen(128)
    sessions = db.sessions(engine)
    writes = db.sessions(engine, write=True)
    notifier = Notifier()
    instance = opts.instance or f"{socket.gethostname()}-{port}"
    ingest = Ingest(opts.broker, writes, client_id=f"ssdash-{instance}"[:128], group=opts.group,
                    tenant=opts.tenant, tls=opts.tls, on_alert=notifier.wake)
    server: uvicorn.Server | None = None

    def stopping() -> bool:
        return server is not None and server.should_exit

    app = create_app(sessions, writes=writes, notifier=notifier, stopping=stopping)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=GRACE)
    server = uvicorn.Server(config)
    try:
        ingest.start()
        shown_host = f"[{host}]" if family == socket.AF_INET6 else host
        ready(f"http://{shown_host}:{port}")
        # uvicorn turns SIGTERM and SIGINT into a graceful shutdown, then raises the signal again
        # once done: with these handlers in place by then, a service manager's SIGTERM and a
        # person's Ctrl-C (which the ready line offers) are a clean exit (0), not a kill or
        # "Interrupted".
        on_main = threading.current_thread() is threading.main_thread()
        stops = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, lambda sig, frame: None) for sig in stops} if on_main else {}
        try:
            server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        ingest.stop()
        sock.close()
        engine.dispose()
    return ingest.stored, ingest.duplicates
