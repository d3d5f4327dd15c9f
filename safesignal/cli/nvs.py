"""``safesignal nvs dump IMAGE [--key F | --hmac-key F | --efuse F] [--partition L] [--json] [--show-secrets]``.

``register(subparsers)`` adds the command to the ``safesignal`` parser; :func:`main` runs it on its
own.  The work is :mod:`safesignal.nvs.dump`'s; this module parses and prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safesignal.errors import SafeSignalError
from safesignal.nvs.dump import build_report, load_keys, read_file, render_json, render_text


def register(subparsers: Any) -> None:
    """Add ``nvs dump`` to a ``safesignal`` argparse subparsers object."""
    p = subparsers.add_parser(
        "nvs",
        help="inspect ESP-IDF NVS partition images",
        description="inspect ESP-IDF NVS partition images (plain or encrypted)",
    )
    sub = p.add_subparsers(dest="nvs_command", required=True)
    d = sub.add_parser(
        "dump",
        help="show an NVS partition image's pages and entries, and check its integrity",
        description="Show an NVS partition image (or the NVS partition of a whole-flash dump): pages, "
        "namespaces, entries, integrity.  Secrets are masked unless --show-secrets.  Exit codes: "
        "0 intact, 6 integrity problems or unreadable entries, 2 unusable input.",
    )
    d.add_argument("image", help="NVS partition image, or a whole-flash dump with a partition table")
    keys = d.add_mutually_exclusive_group()
    keys.add_argument("--key", metavar="FILE", help="nvs_keys partition file (as nvs_partition_gen.py writes it)")
    keys.add_argument("--hmac-key", metavar="FILE", help="the eFuse HMAC key (32 bytes raw, or 64 hex digits)")
    keys.add_argument("--efuse", metavar="FILE", help="a virtual chip's eFuse file (JSON)")
    d.add_argument("--partition", metavar="LABEL", default="nvs", help="partition label in a flash dump (default nvs)")
    d.add_argument("--json", action="store_true", help="one JSON document")
    d.add_argument("--show-secrets", action="store_true", help="show passwords and keys instead of ********")
    d.set_defaults(func=cmd_nvs_dump)


def cmd_nvs_dump(args: argparse.Namespace) -> int:
    path = Path(args.image)
    data = read_file(path, "image")
    loaded = load_keys(
        Path(args.key) if args.key else None,
        Path(args.hmac_key) if args.hmac_key else None,
        Path(args.efuse) if args.efuse else None,
    )
    keys, key_source = loaded if loaded else (None, None)
    report = build_report(
        data, keys=keys, key_source=key_source, label=args.partition, show_secrets=args.show_secrets, file=str(path)
    )
    print(render_json(report) if args.json else render_text(report), flush=True)
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """``safesignal nvs ...`` on its own (tests; the CLI calls :func:`register`)."""
    parser = argparse.ArgumentParser(prog="safesignal")
    parser.add_argument("-v", "--verbose", action="store_true")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except SafeSignalError as e:
        print(f"✗ Error: {e}", file=sys.stderr, flush=True)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
