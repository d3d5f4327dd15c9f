"""``safesignal dashboard [serve] --broker URI …`` and ``safesignal dashboard user add NAME``, and
the ``--dashboard URL --token TOKEN [--installer NAME]`` part of ``safesignal provision``.

``register(subparsers)`` adds the command; the work is :mod:`safesignal.dashboard`'s (the
``dashboard`` extra, checked before anything is imported from it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from typing import TYPE_CHECKING, Any

from safesignal import extras
from safesignal.cli.base import Parser, err, out
from safesignal.cli.prompt import ca_passphrase, operator_passphrase, secret
from safesignal.errors import UsageError

if TYPE_CHECKING:
    from safesignal.provisioning.flow import ProvisionResult

USER_PASS_ENV = "SAFESIGNAL_USER_PASS"
# What `safesignal dashboard` imports (module names), all from the 'dashboard' extra.
_MODULES = ("starlette", "uvicorn", "jinja2", "python_multipart", "sqlalchemy", "alembic", "argon2")


def _need_extra(db_url: str) -> None:
    for name in _MODULES:
        extras.module(name, "dashboard")
    if db_url.startswith("postgres"):
        extras.module("psycopg", "dashboard")


def register(subparsers: Any) -> None:
    d = subparsers.add_parser(
        "dashboard", help="the device registry and web dashboard (installer confirmation, live alerts)",
        description="serve (the default): the web app and JSON API, fed from the broker; user add: create an "
                    "account. Needs the 'dashboard' extra (pip install 'safesignal[dashboard]').",
        default_command="serve")
    sub = d.add_subparsers(dest="dashboard_action", required=True, metavar="{serve,user}", parser_class=Parser)
    s = sub.add_parser("serve", help="serve the dashboard (the default)")
    s.add_argument("--broker", required=True, help="mqtt://host[:port] or mqtts://host[:port] (needs --ca)")
    _add_db(s)
    s.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="default 127.0.0.1:8080")
    s.add_argument("--ca", metavar="DIR", help="for an mqtts:// broker: the tenant CA directory (its CA certificate "
                   "and operator certificates; key passphrase from $SAFESIGNAL_CA_PASS or asked); the dashboard "
                   "then reads that tenant only")
    s.add_argument("--operator", metavar="NAME", help="operator certificate to use (default: the only one issued)")
    s.add_argument("--group", metavar="G",
                   help="for several instances: take alerts through the shared subscription $share/G/…, so the "
                        "instances in group G split them (on mosquitto 2.0 a broker restart forgets a shared "
                        "subscription: alerts published before the instances subscribe again are lost). Without "
                        "it (one instance) alerts come through a durable subscription that survives a restart")
    s.add_argument("--instance", default="", help="this instance's name in its MQTT client id, unique per "
                   "instance (default: host name and port)")
    s.set_defaults(func=cmd_dashboard_serve)

    u = sub.add_parser("user", help="manage accounts")
    usub = u.add_subparsers(dest="user_action", required=True, metavar="{add}", parser_class=Parser)
    a = usub.add_parser("add", help="create an account; prints its API token last (token: TOKEN)",
                        description=f"The password is asked twice on a terminal; without one it comes from "
                                    f"${USER_PASS_ENV}. It is stored as an Argon2id hash.")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=("admin", "installer", "viewer"))
    _add_db(a)
    a.set_defaults(func=cmd_dashboard_user_add)


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default="sqlite:///safesignal.db", metavar="URL",
                   help="sqlite:///FILE or postgresql://user@host/db (default: safesignal.db in this directory)")


def cmd_dashboard_user_add(args: argparse.Namespace) -> int:
    _need_extra(args.db)
    from safesignal.dashboard import auth
    from safesignal.dashboard.server import add_user, shown_url

    auth.check_name(args.name)
    password = secret(USER_PASS_ENV, "password", confirm=True, prompt=f"Password for {args.name}",
                      differ="no account was made",
                      missing=f"no password: run in a terminal to be asked, or set {USER_PASS_ENV}")
    token = add_user(args.db, args.name, args.role, password)
    out(f"✓ User {args.name} ({args.role}) added to {shown_url(args.db)}")
    out(f"token: {token}")
    return 0


def cmd_dashboard_serve(args: argparse.Namespace) -> int:
    _need_extra(args.db)
    from safesignal.alerts.receiver import TlsFiles
    from safesignal.dashboard.server import ServeOptions, parse_listen, serve, shown_url
    from safesignal.provisioning.flow import check_broker_uri

    broker = check_broker_uri("--broker", args.broker)
    parse_listen(args.listen)
    tls = None
    tenant = "+"
    if broker.startswith("mqtts://") or args.ca:
        if not args.ca:
            raise UsageError("an mqtts:// broker needs the tenant CA directory (--ca DIR) for its operator certificate")
        from safesignal.pki.ca import CaAccess

        access = CaAccess(args.ca, ca_passphrase, operator_passphrase)
        op = access.operator_tls_files(args.operator)
        tls = TlsFiles(op.ca, op.cert, op.key, op.key_password)
        tenant = access.ca.tenant
    opts = ServeOptions(broker=broker, db_url=args.db, listen=args.listen, group=args.group, instance=args.instance,
                        tenant=tenant, tls=tls)

    def ready(url: str) -> None:
        out(f"✓ Dashboard on {url} (database {shown_url(args.db)}, broker {broker}); Ctrl-C stops it")

    stored, duplicates = serve(opts, ready)
    err(f"Dashboard stopped: this instance stored {stored} alert(s) ({duplicates} duplicate(s) were stored already)")
    return 0


# --- provision --dashboard ---------------------------------------------------------------------
def add_provision_args(p: argparse.ArgumentParser) -> None:
    from safesignal.dashboard.client import TOKEN_ENV

    p.add_argument("--dashboard", metavar="URL", help="after a verified provisioning, post its record (device id, chip "
                   "id, certificate SHA-256, broker, time, installer) to this dashboard")
    p.add_argument("--token", help=f"with --dashboard: an installer's or admin's API token (default: ${TOKEN_ENV})")
    p.add_argument("--installer", metavar="NAME", help="with --dashboard: who installed it (default: the token's user)")


def dashboard_token(args: argparse.Namespace) -> str | None:
    """Checked before anything is sent to the device: --dashboard needs a token."""
    from safesignal.dashboard.client import TOKEN_ENV, check_url

    if not args.dashboard:
        if args.token or args.installer:
            raise UsageError("--token and --installer go with --dashboard URL")
        return None
    check_url(args.dashboard)
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise UsageError(f"--dashboard needs an API token: --token TOKEN or ${TOKEN_ENV}")
    return str(token)


def post_record(args: argparse.Namespace, token: str, result: ProvisionResult, committed_at: float,
                doc: dict[str, object], rc: int) -> int:
    """Post the record of a provisioning that was read back and verified (the device's own
    report of its chip id and certificate); the command's exit code after it.  The device is
    provisioned whatever the dashboard says: a failure is exit 10 (unless the test alert already
    failed), with ``dashboard`` in the JSON document."""
    from safesignal.dashboard.client import DashboardError
    from safesignal.dashboard.client import post_provisioning as post

    status = result.status
    record: dict[str, Any] = {
        "tenant": status.get("tenant"), "building": status.get("building"), "room": status.get("room"),
        "device_id": status.get("device_id"), "chip_id": status.get("chip_id"),
        "cert_sha256": status.get("certificate_sha256") or None,
        "cert_expires": status.get("certificate_expires") or None,
        "firmware": status.get("firmware") or None,
        "broker": status.get("mqtt_uri") or result.broker or None,
        "time": dt.datetime.fromtimestamp(committed_at, dt.UTC).isoformat(),
    }
    if args.installer:
        record["installer"] = args.installer
    say = err if args.json else out
    try:
        answer = post(args.dashboard, token, record)
    except DashboardError as e:
        doc["dashboard"] = {"posted": False, "error": str(e)}
        err(f"✗ Error: {e}. The device is provisioned, but the installer cannot confirm it in the dashboard "
            "until a record arrives: provision it again with --dashboard")
        return rc or e.exit_code
    doc["dashboard"] = {"posted": True, "id": answer.get("id"), "installer": answer.get("installer")}
    say(f"✓ Provisioning record posted to {args.dashboard} (chip {record['chip_id']}, installer "
        f"{answer.get('installer')})")
    return rc
