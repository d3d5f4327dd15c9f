"""The BLE commands: `safesignal ble scan`, `safesignal pin` (the factory step), and what
`provision --ble` adds to `provision` (its flags and its session)."""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
from typing import Any, cast

import ssproto
import ssproto.ble as P
from safesignal.cli.base import out
from safesignal.errors import MismatchError, UsageError
from safesignal.link.session import DeviceSession


def add_ble_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ble-transport", metavar="SPEC",
                   help="use bumble on this HCI transport (a USB dongle usb:0, an HCI socket hci-socket:0, or a "
                        "virtual device's ble=SPEC); default: the system's Bluetooth (bleak)")
    p.add_argument("--btsnoop", metavar="FILE", help="write an HCI log (btsnoop, opens in Wireshark); with "
                   "--ble-transport")
    p.add_argument("--ble-mtu", type=int, default=247, help="the ATT MTU to ask for (default 247; 23 asks for none)")


def add_provision_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ble", nargs="?", const="", metavar="NAME_OR_ADDRESS",
                   help="provision over Bluetooth LE instead of --port: the button's name or address (default: "
                        "the one SafeSignal button in range)")
    p.add_argument("--pin", help="with --ble: the 6-digit PIN on the button's label (default: asked without echo)")
    add_ble_flags(p)


def ble_pin(args: argparse.Namespace) -> str:
    from safesignal.cli.prompt import secret
    from safesignal.link.ble import check_pin

    pin = args.pin if args.pin is not None else secret(
        "SAFESIGNAL_BLE_PIN", "PIN", confirm=False, differ="", empty_hint="",
        missing="no PIN: pass --pin, set SAFESIGNAL_BLE_PIN, or run in a terminal to be asked")
    return check_pin(pin)


def open_ble(args: argparse.Namespace, say: Any) -> DeviceSession:
    """The provisioning session over BLE (PIN checked before the radio is touched)."""
    from safesignal.link.ble import BlePort

    pin = ble_pin(args)
    say("Connecting over Bluetooth LE...")
    port = BlePort(args.ble_transport, args.ble or None, pin, btsnoop=args.btsnoop, mtu=args.ble_mtu)
    say(f"Connected to {port.url}: PIN accepted, session encrypted (ATT MTU {port.mtu})")
    return DeviceSession(port.url, timeout=args.timeout, ser=cast(Any, port))


# --- ble scan -------------------------------------------------------------------------------------
def cmd_ble_scan(args: argparse.Namespace) -> int:
    from safesignal.link.ble import scan

    if not 0 < args.duration <= 120:
        raise UsageError("--duration must be 0-120 seconds")
    found = scan(args.ble_transport, args.duration, args.btsnoop)
    if args.json:
        out(json.dumps([a.as_json() for a in found]))
        return 0
    if not found:
        out("No SafeSignal buttons in range (a button advertises for "
            f"{P.WINDOW_S // 60} min after power-on, or after a {P.HOLD_MS // 1000} s press at power-on)")
        return 0
    out(f"{'NAME':16} {'ADDRESS':18} {'RSSI':>5}  {'PROVISIONED':11}  WINDOW")
    for a in found:
        rssi = "" if a.rssi is None else str(a.rssi)
        state = "locked" if a.locked else f"{a.window_s} s left"
        out(f"{a.name:16} {a.address:18} {rssi:>5}  {'yes' if a.provisioned else 'no':11}  {state}")
    return 0


# --- pin (the factory step) ---------------------------------------------------------------------
# PBKDF2 iterations for new PINs: ssproto.spake2p.ITERATIONS, which documents the choice.
def cmd_pin(args: argparse.Namespace) -> int:
    from ssproto import spake2p

    if args.pin is not None:
        from safesignal.link.ble import check_pin

        pin = check_pin(args.pin)
    else:
        pin = f"{secrets.randbelow(1000000):06d}"
    record = spake2p.make_record(pin, secrets.token_bytes(spake2p.SALT_LEN))
    want = P.fingerprint(hashlib.sha256, record)
    out(f"Opening serial port {args.port}...")
    with DeviceSession(args.port, timeout=args.timeout) as session:
        session.sync()
        st = session.last_status or session.status()
        if st["provisioned"] == "yes" and not args.force:
            raise UsageError("the device is provisioned: a new PIN replaces the one on its label; pass --force to "
                             "write it anyway (nothing was changed)")
        session.command(["ble_set_pin", record.hex()] + (["--force"] if args.force else []),
                        timeout=max(args.timeout, 15.0))
        got = _ble_status(session).get("pin_verifier")
        if got != want:
            raise MismatchError("the device does not report the PIN verifier that was written")
    out(f"✓ PIN verifier written to chip {st['chip_id']} and read back ({want})")
    out(f"PIN: {pin}")
    return 0


def _ble_status(session: DeviceSession) -> dict[str, str]:
    reply = session.command(["ble_status"])
    got: dict[str, str] = {}
    for line in reply.lines:
        label, sep, value = line.partition(": ")
        if sep:
            args = ssproto.split_args(value)
            got[label.lower().replace(" ", "_")] = args[0] if len(args) == 1 else value
    return got


def register(sub: Any) -> None:
    ble = sub.add_parser("ble", help="Bluetooth LE: find SafeSignal buttons in range")
    ble_sub = ble.add_subparsers(dest="action", required=True, metavar="{scan}")
    p = ble_sub.add_parser("scan", help="list the SafeSignal buttons in range")
    p.add_argument("--duration", type=float, default=3.0, help="seconds to listen (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON list")
    add_ble_flags(p)
    p.set_defaults(func=cmd_ble_scan)

    p = sub.add_parser("pin", help="factory step: write a new BLE PIN verifier over the serial console; prints the PIN "
                       "for the label")
    p.add_argument("--port", required=True, help="serial port: /dev/ttyUSB0, COM3, socket://host:port, rfc2217://…")
    p.add_argument("--pin", help="the PIN, 6 digits (default: a random one)")
    p.add_argument("--force", action="store_true", help="write a new PIN on a provisioned device too")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")
    p.set_defaults(func=cmd_pin)
