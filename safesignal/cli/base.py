"""What every ``safesignal`` command line shares: the argument parser, the error handling
around a command, and the process entry point.

Kept free of the commands so that ``cli`` and ``ca_cli`` both build on it (no import cycle),
and cheap to import: the entry point imports the commands inside its Ctrl-C handling, so an
interrupt while the tool is still starting up ends as cleanly as one later.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from safesignal.errors import SafeSignalError

EXIT_INTERRUPTED = 130
EXIT_PIPE = 141  # 128 + SIGPIPE: what a tool killed by a closed pipe reports
_FLAG = re.compile(r"(--[a-z][a-z0-9]*(?:-[a-z0-9]+)*|-[A-Za-z])(=.*)?", re.S)


def out(text: str = "") -> None:
    print(text, flush=True)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Reported(Exception):
    """An error already shown to the user; carries the exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse that never repeats a value it could not parse (it may be a mistyped password),
    names unknown flags, and shows the usage of the (sub)command that was typed.

    ``default_command="run"``: a parser with subcommands takes that one when none is given
    (``safesignal sim --port-link …`` is ``safesignal sim run --port-link …``)."""

    def __init__(self, *args: Any, default_command: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # "--wifi=secret" must not be matched, nor echoed
        super().__init__(*args, **kwargs)
        self.default_command = default_command
        self.json_errors = False  # --json was given: a usage error is JSON on stdout too

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        if self.default_command is not None and self._subparsers is not None:
            names = self._subcommand_names()
            if not argv or (argv[0] not in names and argv[0] not in ("-h", "--help")):
                argv.insert(0, self.default_command)
        if "--json" in argv:
            self.json_errors = True
        ns, extras = super().parse_known_args(argv, namespace)
        if extras and self._subparsers is None:
            self.error(unrecognized(extras, self._option_names()))  # here, with this command's usage
        return ns, extras

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(unrecognized(extras, self._option_names()))
        return ns

    def _subcommand_names(self) -> set[str]:
        return {n for a in self._actions if isinstance(a, argparse._SubParsersAction) for n in a.choices}

    def _option_names(self) -> list[str]:
        return [s for a in self._actions for s in a.option_strings]

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"(invalid \w+ value): .*", r"\1 (value not shown)", message)
        message = re.sub(r"invalid choice: '[^']*'", "invalid choice", message)
        message = re.sub(r"ambiguous option: \S+", "ambiguous option", message)
        self.print_usage(sys.stderr)
        if self.json_errors:
            # One JSON object on stdout as for any other failure of a --json command, so a
            # script that reads stdout sees why (the text goes to stderr as ever).
            print(json.dumps({"error": f"usage: {message}", "exit_code": 2}), flush=True)
        self.exit(2, f"{self.prog}: error: {message}\n")


def unrecognized(extras: Sequence[str], known: Sequence[str]) -> str:
    """``unrecognized arguments: --wifi-pas (did you mean --wifi-pass?)``: flags by name,
    anything else only counted (a stray word may be a value, a value may be a secret)."""
    flags: list[str] = []
    others = 0
    for a in extras:
        m = _FLAG.fullmatch(a)
        if m is None:
            others += 1
            continue
        flag = m.group(1)
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
        flags.append(f"{flag} (did you mean {close[0]}?)" if close else flag)
    parts = []
    if flags:
        parts.append(", ".join(flags))
    if others:
        parts.append(f"{others} other argument{'s' if others != 1 else ''} (values not shown; quote values "
                     "that contain spaces)")
    return f"unrecognized arguments: {'; '.join(parts)}"


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, run the chosen command (``args.func``), map errors to exit codes."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        rc: int = args.func(args)
        return rc
    except Reported as e:
        return e.code
    except SafeSignalError as e:
        if args.verbose:
            logging.exception("failed")
        err(f"✗ Error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        err("✗ Interrupted")
        return EXIT_INTERRUPTED


def guarded(main: Callable[[], int]) -> int:
    """Run ``main`` as a process's whole life: Ctrl-C at any point (imports included) is one
    line and exit 130; a reader that went away (``… | head``) ends the output quietly."""
    try:
        return main()
    except KeyboardInterrupt:
        try:
            err("✗ Interrupted")
        except OSError:
            pass
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        # Nothing more can be shown; keep the interpreter's exit flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE


def _stdout_gone() -> bool:
    """True if our standard output is a pipe whose reader has gone (not some other pipe, such
    as a socket:// port, that broke)."""
    try:
        import select

        p = select.poll()
        p.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in p.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or no real stdout
        return True
