"""``safesignal ca …``: the tenant CA and the mutual-TLS broker configuration.

    safesignal ca init     --dir D --tenant T [--days N]
    safesignal ca show     --dir D [--json]
    safesignal ca sign     --dir D --csr FILE(.pem|.der) --device-id ID --out FILE [--days N]
    safesignal ca broker   --dir D --host NAME [--host NAME]… --listen ADDR [--port 8883] --out DIR
                           [--config-dir DIR] [--days N]
    safesignal ca operator --dir D --name NAME [--days N] [--broker DIR] [--own-passphrase]
    safesignal ca revoke   --dir D (--device ID | --serial HEX | --cert FILE) [--reason R] [--broker DIR]
                           [--json]
    safesignal ca crl      --dir D [--out FILE] [--renew] [--days N]

The CA passphrase comes from ``SAFESIGNAL_CA_PASS`` (empty = unset), else a prompt that does
not echo (asked twice by ``init``).  It is never printed, logged or written anywhere; neither
is any private key.  ``register(subparsers)`` adds the commands to the ``safesignal`` parser;
``python -m safesignal.cli.ca SUBCOMMAND …`` runs them on their own.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safesignal.cli.prompt import CA_PASS_ENV, OPERATOR_PASS_ENV, ca_passphrase, operator_passphrase
from safesignal.errors import UsageError

if TYPE_CHECKING:
    from safesignal.pki.ca import TenantCA

PASS_ENV = CA_PASS_ENV


def out(text: str = "") -> None:
    print(text, flush=True)


def _open(args: argparse.Namespace) -> TenantCA:
    from safesignal.pki import ca as tenant_ca

    return tenant_ca.open(args.dir)


def _unlocked(args: argparse.Namespace) -> TenantCA:
    ca = _open(args)
    return ca.unlock(ca_passphrase())


# --- commands ------------------------------------------------------------------------------
def cmd_ca_init(args: argparse.Namespace) -> int:
    from safesignal.pki import ca as tenant_ca

    tenant_ca.check_name("tenant", args.tenant)  # bad input is reported before the passphrase is asked
    d = Path(args.dir)
    if any((d / n).exists() for n in (tenant_ca.CA_KEY, tenant_ca.CA_CERT, tenant_ca.CA_JSON)):
        raise tenant_ca.CaError(f"{d} already holds a tenant CA; refusing to overwrite it")
    pw = ca_passphrase(confirm=True)
    tenant_ca.check_passphrase(pw)
    ca = tenant_ca.init(d, args.tenant, pw, days=args.days)
    ca.lock()
    out(f"✓ Tenant CA for {ca.tenant} created in {ca.dir}")
    out(f"  Certificate:  {ca.cert_path}  (give this to the broker and to devices)")
    out(f"  SHA-256:      {ca.fingerprint}")
    out(f"  Valid until:  {ca.cert.not_valid_after_utc:%Y-%m-%d}")
    out(f"  Private key:  {ca.key_path}  (encrypted with the passphrase, mode 0600)")
    out("Keep the passphrase and a backup of this directory offline: whoever has both can issue")
    out("certificates for every device of this tenant.")
    return 0


def cmd_ca_show(args: argparse.Namespace) -> int:
    ca = _open(args)
    s = ca.summary()
    if args.json:
        s["issued_certificates"] = [vars(r) for r in ca.issued()]
        s["revoked_certificates"] = [vars(r) for r in ca.revoked()]
        crl = ca.crl()
        s["crl_next_update"] = (crl.next_update_utc.isoformat() if crl is not None and crl.next_update_utc
                                else None)
        out(json.dumps(s, ensure_ascii=False))
        return 0
    out(f"Tenant:        {s['tenant']}")
    out(f"Directory:     {s['dir']}")
    out(f"Subject:       {s['subject']}")
    out(f"Created:       {s['created']}")
    out(f"Valid until:   {s['not_after']}")
    out(f"SHA-256:       {s['sha256']}")
    enc = "encrypted" if s["key_encrypted"] else "NOT ENCRYPTED"
    out(f"Private key:   {s['key_file']} ({enc}, mode {s['key_mode']})")
    out(f"Operators:     {', '.join(s['operators']) or '(none)'}")
    out(f"Issued:        {s['issued']} certificate(s)")
    revoked = {r.serial for r in ca.revoked()}
    for r in ca.issued():
        out(f"  {r.kind:8} {r.name:24} serial {r.serial[:16]}…  valid until {r.not_after}"
            + ("  REVOKED" if r.serial in revoked else ""))
    crl = ca.crl()
    out(f"CRL:           {len(revoked)} revoked; "
        + (f"{ca.crl_path}, renew before {crl.next_update_utc:%Y-%m-%d}" if crl is not None and crl.next_update_utc
           else "none signed yet (or out of date): safesignal ca crl"))
    return 0


def cmd_ca_sign(args: argparse.Namespace) -> int:
    from safesignal.pki import ca as tenant_ca

    tenant_ca.check_name("device id", args.device_id)
    try:
        csr = Path(args.csr).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the CSR {args.csr}: {e.strerror or e}") from None
    ca = _unlocked(args)
    try:
        der = ca.sign_device_csr(csr, args.device_id, days=args.days)
    finally:
        ca.lock()
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_der_x509_certificate(der)
    dest = Path(args.out)
    pem = dest.suffix.lower() == ".pem"
    data = cert.public_bytes(serialization.Encoding.PEM) if pem else der
    try:
        dest.write_bytes(data)
    except OSError as e:
        raise UsageError(f"cannot write {dest}: {e.strerror or e}") from None
    out(f"✓ Certificate for device {args.device_id} signed by the {ca.tenant} CA")
    out(f"  Serial:       {cert.serial_number:x}")
    out(f"  Valid until:  {cert.not_valid_after_utc:%Y-%m-%d}")
    out(f"  Written to:   {dest} ({'PEM' if pem else 'DER'}); recorded in {ca.issued_dir}")
    return 0


def cmd_ca_broker(args: argparse.Namespace) -> int:
    from safesignal.pki import ca as tenant_ca

    ca = _open(args)
    hosts = list(args.host)
    if not tenant_ca.server_cert_current(ca, args.out, hosts) or not ca.crl_current():
        ca.unlock(ca_passphrase())
    try:
        files = tenant_ca.write_broker_config(ca, args.out, args.listen, args.port, hosts,
                                              config_dir=args.config_dir, server_days=args.days)
    finally:
        ca.lock()
    out(f"✓ mosquitto configuration for tenant {ca.tenant} written to {files.dir}")
    out(f"  Config:       {files.config}  (listener {files.listen}:{files.port}, client certificates required)")
    out(f"  ACL:          {files.acl}  (operators: {', '.join(ca.operators()) or 'none yet'})")
    what = "new" if files.issued_server_cert else "kept"
    out(f"  Broker cert:  {files.cert} ({what}; names: {', '.join(files.host_names)})")
    out(f"  Broker key:   {files.key}  (unencrypted, mode 0600: readable only by the broker's account)")
    out(f"  CA cert:      {files.ca}")
    out(f"  CRL:          {files.crl}  ({len(ca.revoked())} revoked certificate(s))")
    config_dir = Path(args.config_dir) if args.config_dir else files.dir
    for line in start_hint(config_dir, rendered_here=not args.config_dir):
        out(line)
    out("After issuing an operator or revoking a certificate, render again and send the running broker SIGHUP "
        "(kill -HUP <pid>).")
    return 0


def cmd_ca_revoke(args: argparse.Namespace) -> int:
    from safesignal.pki import ca as tenant_ca

    ca = _open(args)
    cert = None
    if args.cert is not None:
        try:
            cert = Path(args.cert).read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read the certificate {args.cert}: {e.strerror or e}") from None
    if args.reason not in tenant_ca.REASONS:
        raise UsageError(f"--reason must be one of: {', '.join(tenant_ca.REASONS)}")
    # What to revoke is found before the passphrase is asked: a typo costs no prompt.
    records = ca.find_issued(device=args.device, serial=args.serial, cert=cert)
    ca.unlock(ca_passphrase())
    try:
        new = ca.revoke(records, args.reason)
        crl_file = tenant_ca.write_crl(ca, args.broker) if args.broker else None
    finally:
        ca.lock()
    if args.json:
        out(json.dumps({"revoked": [vars(r) for r in new], "already_revoked": len(records) - len(new),
                        "crl": str(ca.crl_path), "broker_crl": str(crl_file) if crl_file else None}))
        return 0
    for r in new:
        out(f"✓ Revoked {r.kind} {r.name} certificate, serial {r.serial} ({r.reason})")
    if len(new) < len(records):
        out(f"  {len(records) - len(new)} certificate(s) named were revoked already")
    out(f"  CRL:          {ca.crl_path} ({len(ca.revoked())} revoked in all)")
    if crl_file is not None:
        out(f"✓ Broker CRL {crl_file} updated: send the running broker SIGHUP (kill -HUP <pid>) to apply it")
    else:
        out("Then copy the CRL to the broker (safesignal ca crl --dir D --out BROKER_DIR/crl.pem, or --broker DIR) "
            "and send it SIGHUP.")
    return 0


def cmd_ca_crl(args: argparse.Namespace) -> int:
    from safesignal.pki import ca as tenant_ca

    ca = _open(args)
    if args.renew or not ca.crl_current():
        ca.unlock(ca_passphrase())
    try:
        pem = ca.issue_crl(args.days) if args.renew else ca.crl_pem()
    finally:
        ca.lock()
    if args.out is None:
        sys.stdout.write(pem.decode())
        sys.stdout.flush()
        return 0
    dest = Path(args.out)
    try:
        tenant_ca._write_replace(dest, pem, 0o644)
    except OSError as e:
        raise UsageError(f"cannot write {dest}: {e.strerror or e}") from None
    crl = ca.crl()
    assert crl is not None
    out(f"✓ CRL of the {ca.tenant} CA written to {dest}: {len(ca.revoked())} revoked certificate(s), "
        f"valid until {crl.next_update_utc:%Y-%m-%d}")
    out("A broker using it as its crlfile applies it on SIGHUP (kill -HUP <pid>).")
    return 0


def start_hint(config_dir: Path, rendered_here: bool) -> list[str]:
    """How to start mosquitto on these files, as a command that works when typed.

    Started as root, mosquitto switches to the user ``mosquitto`` before it reads the ACL,
    the key and its data directory, so that user must own them and reach the directory."""
    conf = config_dir / "mosquitto.conf"
    if not rendered_here or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return [f"Start it with: mosquitto -c {shlex.quote(str(conf))}"]
    try:
        import pwd

        pwd.getpwnam("mosquitto")
    except (ImportError, KeyError):
        return [f"Start it with: mosquitto -c {shlex.quote(str(conf))}  (as root it needs a 'user' line "
                "naming the account to run as)"]
    closed = [p for p in config_dir.resolve().parents if not os.stat(p).st_mode & 0o001]
    if closed:
        return [f"mosquitto started as root runs as the user mosquitto, which cannot enter {closed[0]}: render "
                "into a directory it can reach (e.g. --out /etc/mosquitto/safesignal), or start it as the "
                "user who owns these files"]
    d = shlex.quote(str(config_dir))
    return [f"Start it with: chown -R mosquitto: {d} && mosquitto -c {shlex.quote(str(conf))}",
            "  (started as root, mosquitto runs as the user mosquitto: it must own these files)"]


def cmd_ca_operator(args: argparse.Namespace) -> int:
    from safesignal.pki import ca as tenant_ca

    tenant_ca.check_name("operator name", args.name)
    ca = _unlocked(args)
    own = operator_passphrase(confirm=True) if args.own_passphrase else None
    try:
        op = ca.issue_operator_cert(args.name, days=args.days, key_passphrase=own)
    finally:
        ca.lock()
    out(f"✓ Operator certificate for {op.username} issued by the {ca.tenant} CA")
    out(f"  Certificate:  {op.cert}")
    out(f"  Key:          {op.key}  (encrypted with the {'operator' if own else 'CA'} passphrase, mode 0600)")
    out(f"  CA cert:      {op.ca}")
    out(f"  Valid until:  {op.not_after:%Y-%m-%d}")
    if args.broker:
        acl = tenant_ca.write_acl(ca, args.broker)
        out(f"✓ ACL {acl} updated: send the running broker SIGHUP (kill -HUP <pid>) to apply it")
    else:
        out("Then render the broker's ACL again (safesignal ca broker …, or --broker DIR) and send it SIGHUP.")
    return 0


# --- wiring --------------------------------------------------------------------------------
def _days(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number of days") from None
    if not 1 <= n <= 36500:
        raise argparse.ArgumentTypeError("must be 1-36500 days")
    return n


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a port number") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError("must be 1-65535")
    return n


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``ca`` and its subcommands to the ``safesignal`` command line."""
    from safesignal.pki.ca import CA_DAYS, DEVICE_DAYS, MTLS_PORT, OPERATOR_DAYS, SERVER_DAYS

    ca = subparsers.add_parser(
        "ca", help="the tenant certificate authority and the mutual-TLS broker configuration",
        description=f"The CA passphrase is read from {PASS_ENV}, else asked for (not shown).")
    sub = ca.add_subparsers(dest="ca_command", required=True)

    p = sub.add_parser("init", help="make a new tenant CA (refuses to overwrite one)")
    p.add_argument("--dir", required=True, help="CA directory (created mode 0700)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--days", type=_days, default=CA_DAYS, help=f"CA validity (default {CA_DAYS})")
    p.set_defaults(func=cmd_ca_init)

    p = sub.add_parser("show", help="the CA's public facts and every certificate it issued")
    p.add_argument("--dir", required=True)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_ca_show)

    p = sub.add_parser("sign", help="check a device's CSR and issue its client certificate")
    p.add_argument("--dir", required=True)
    p.add_argument("--csr", required=True, help="the device's certificate signing request (PEM or DER)")
    p.add_argument("--device-id", required=True, help="must equal the CSR's subject CN")
    p.add_argument("--out", required=True, help="certificate file: PEM if it ends in .pem, else DER")
    p.add_argument("--days", type=_days, default=DEVICE_DAYS, help=f"validity (default {DEVICE_DAYS})")
    p.set_defaults(func=cmd_ca_sign)

    p = sub.add_parser("broker", help="render the tenant's mosquitto configuration (mTLS, ACL, broker certificate)")
    p.add_argument("--dir", required=True)
    p.add_argument("--host", action="append", required=True, metavar="NAME",
                   help="a DNS name or IP address devices and tools use to reach the broker (repeatable)")
    p.add_argument("--listen", required=True, metavar="ADDR", help="address mosquitto listens on")
    p.add_argument("--port", type=_port, default=MTLS_PORT, help=f"default {MTLS_PORT}")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write the configuration")
    p.add_argument("--config-dir", metavar="DIR",
                   help="absolute directory the files will be in on the broker host (default: --out)")
    p.add_argument("--days", type=_days, default=SERVER_DAYS,
                   help=f"validity of a new broker certificate (default {SERVER_DAYS})")
    p.set_defaults(func=cmd_ca_broker)

    p = sub.add_parser("operator", help="issue a certificate for the host tools (CN op:NAME)")
    p.add_argument("--dir", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--days", type=_days, default=OPERATOR_DAYS, help=f"validity (default {OPERATOR_DAYS})")
    p.add_argument("--broker", metavar="DIR", help="also rewrite the ACL in this broker directory")
    p.add_argument("--own-passphrase", action="store_true",
                   help=f"encrypt the key with a passphrase of its own (${OPERATOR_PASS_ENV} or asked), so whoever "
                        "runs monitor/verify need not know the CA passphrase; give them ca.pem, ca.json and "
                        "operators/NAME.* without ca-key.pem")
    p.set_defaults(func=cmd_ca_operator)

    from safesignal.pki.ca import CRL_DAYS, REASONS

    p = sub.add_parser("revoke", help="revoke certificates: all of a device's, or one by serial or file")
    p.add_argument("--dir", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--device", metavar="ID", help="every certificate issued to this device id (retire it)")
    which.add_argument("--serial", metavar="HEX", help="one certificate by its serial (any kind; from `ca show`)")
    which.add_argument("--cert", metavar="FILE", help="the certificate in this file (PEM or DER)")
    p.add_argument("--reason", default="unspecified", choices=list(REASONS),
                   help="RFC 5280 reason (default unspecified)")
    p.add_argument("--broker", metavar="DIR", help="also write the new CRL into this broker directory (crl.pem)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_ca_revoke)

    p = sub.add_parser("crl", help="the CA's certificate revocation list (PEM), on stdout or in a file")
    p.add_argument("--dir", required=True)
    p.add_argument("--out", metavar="FILE", help="write it here (e.g. the broker's crl.pem) instead of stdout")
    p.add_argument("--renew", action="store_true", help="sign a new one even if the current one is valid")
    p.add_argument("--days", type=_days, default=CRL_DAYS, help=f"validity of a new CRL (default {CRL_DAYS})")
    p.set_defaults(func=cmd_ca_crl)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m safesignal.cli.ca SUBCOMMAND …``: the ``safesignal ca`` commands on their own,
    with the same error handling (``✗ Error: …`` and the exit code)."""
    from safesignal.cli.base import Parser as _Parser
    from safesignal.cli.base import run as _run

    ap = _Parser(prog="safesignal")
    ap.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    register(sub)
    return _run(ap, ["ca", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
