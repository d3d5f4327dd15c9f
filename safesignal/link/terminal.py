"""``safesignal console``: a serial terminal for a person, like ``idf.py monitor`` or miniterm.

The device does not echo what it receives (it would echo a WiFi password), so the line is
edited here: keys go into a local line shown at the bottom of the terminal, Enter sends it
(CR LF), and the device's output is shown above it as it arrives.  Editing locally is what lets
the terminal mask a secret as it is typed: the password argument of ``provision_set_wifi`` is
shown as ``********`` (its length is not shown either), and once sent it is masked in anything
the device prints.  Ctrl-] quits; Ctrl-C drops the line being typed (the firmware owns the
console: there is no REPL to interrupt); Backspace and Ctrl-U edit the line.  A port that
goes away (a native-USB chip resetting) is reopened for up to the session's timeout.

Without a keyboard (standard input not a terminal) it only shows the device's output.  The
keyboard's terminal settings are restored on every way out: Ctrl-], the end of ``--duration``,
a matched ``--until``, an error, SIGTERM.
"""

from __future__ import annotations

import codecs
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

import ssproto
from safesignal.errors import DeviceTimeout, PortError, UsageError
from safesignal.link.session import MASK, DeviceSession

QUIT_KEY = "\x1d"  # Ctrl-]
CTRL_C = "\x03"
CTRL_U = "\x15"
BACKSPACES = ("\x7f", "\x08")
SECRET_ARGS = {"provision_set_wifi": 2}  # command -> index of its secret argument
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


# --- what is shown of a typed line ------------------------------------------------------------
def token_spans(line: str) -> list[tuple[int, int]]:
    """Where the arguments of a (possibly unfinished) console line are: (start, end) per token,
    by the console grammar's rules (ssproto.split_args: spaces and tabs separate, double quotes
    group, a backslash escapes).  An unterminated quote or a trailing backslash ends the last
    token instead of being an error: the line is still being typed."""
    spans: list[tuple[int, int]] = []
    start = -1
    quoted = False
    i = 0
    n = len(line)
    while i < n:
        c = line[i]
        if start < 0 and c not in " \t":
            start = i
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "\\":
            i += 1
        elif c in " \t":
            if start >= 0:
                spans.append((start, i))
                start = -1
        i += 1
    if start >= 0:
        spans.append((start, n))
    return spans


def _secret_span(line: str) -> tuple[int, int] | None:
    spans = token_spans(line)
    if not spans:
        return None
    first = line[spans[0][0]:spans[0][1]]
    k = SECRET_ARGS.get(first)
    if k is None or len(spans) <= k:
        return None
    return spans[k]


def shown(line: str) -> str:
    """``line`` as the terminal shows it: the secret argument replaced by ********."""
    span = _secret_span(line)
    if span is None:
        return line
    return line[:span[0]] + MASK + line[span[1]:]


def secrets_of(line: str) -> list[str]:
    """The secret values a finished line carries (to be masked in the device's output)."""
    span = _secret_span(line)
    if span is None:
        return []
    found = [line[span[0]:span[1]]]  # as typed (quotes and escapes included)
    try:
        args = ssproto.split_args(line)
    except ssproto.ProtocolError:
        return found
    k = SECRET_ARGS[args[0]] if args and args[0] in SECRET_ARGS else -1
    if 0 <= k < len(args) and args[k] not in found:
        found.append(args[k])
    return [s for s in found if s]


# --- the line editor ----------------------------------------------------------------------
@dataclass
class LineEditor:
    """Keys in, actions out: ``("send", line)``, ``("interrupt", "")``, ``("quit", "")``."""

    line: str = ""
    _escape: str = field(default="", repr=False)  # an escape sequence being skipped (arrow keys…)

    def feed(self, keys: str) -> Iterator[tuple[str, str]]:
        for ch in keys:
            if self._escape:
                self._escape += ch
                # CSI/SS3 sequences end with a letter or ~; a lone ESC + one character ends there
                if len(self._escape) > 2 and (ch.isalpha() or ch == "~") or (
                        len(self._escape) == 2 and ch not in "[O"):
                    self._escape = ""
                continue
            if ch == "\x1b":
                self._escape = ch
            elif ch == QUIT_KEY:
                yield "quit", ""
                return
            elif ch in "\r\n":
                line, self.line = self.line, ""
                yield "send", line
            elif ch == CTRL_C:
                self.line = ""
                yield "interrupt", ""
            elif ch in BACKSPACES:
                self.line = self.line[:-1]
            elif ch == CTRL_U:
                self.line = ""
            elif ch == "\t":
                self.line += " "
            elif ord(ch) >= 0x20 and not 0x7F <= ord(ch) <= 0x9F:
                self.line += ch


# --- the keyboard ---------------------------------------------------------------------------
class Keyboard:
    """Keys from a terminal, without waiting and without the terminal's own echo or editing."""

    def read(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


class _PosixKeyboard(Keyboard):
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read(self) -> str:
        import select

        text = ""
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 256)
            if not data:
                break
            text += self._dec.decode(data)
        return text


class _WindowsKeyboard(Keyboard):
    def read(self) -> str:
        if sys.platform != "win32":
            return ""
        import msvcrt

        text = ""
        while msvcrt.kbhit():
            ch = msvcrt.getwch()
            if ch in ("\x00", "\xe0"):  # a function or arrow key: its second code follows
                msvcrt.getwch()
                continue
            text += ch
        return text


@contextmanager
def keyboard(stdin: TextIO) -> Iterator[Keyboard | None]:
    """The keyboard of ``stdin`` in raw mode (None if it is not a terminal); its settings are
    restored on the way out, also on an error or SIGTERM."""
    if not stdin.isatty():
        yield None
        return
    if sys.platform == "win32":
        yield _WindowsKeyboard()
        return
    import termios
    import tty

    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        tty.setraw(fd, termios.TCSANOW)  # no echo, no line editing, Ctrl-C and Ctrl-] as keys
        yield _PosixKeyboard(fd)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        for s, h in old.items():
            signal.signal(s, h)


# --- the terminal -----------------------------------------------------------------------------
@dataclass
class ConsoleOptions:
    reboot: bool = False
    until: str | None = None  # stop when a device line matches (re.search)
    duration: float = 0.0  # stop after this many seconds (0: never)


def compile_until(pattern: str | None) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern) if pattern else None
    except re.error as e:
        raise UsageError(f"--until is not a valid regular expression: {e}") from None


class _Screen:
    """Device lines scroll above the line being typed (raw mode: lines end in CR LF)."""

    def __init__(self, out: TextIO, interactive: bool) -> None:
        self.out = out
        self.interactive = interactive
        self.typed = ""  # what is shown of the line being typed

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def line(self, text: str) -> None:
        if self.interactive:
            self._write("\r\x1b[K" + text + "\r\n" + self.typed)
        else:
            self._write(text + "\n")

    def show_typed(self, typed: str) -> None:
        if typed != self.typed:
            self.typed = typed
            self._write("\r\x1b[K" + typed)

    def keep_typed(self) -> None:
        """The line was sent: it stays on screen as typed (masked), and a new one starts."""
        self._write("\r\x1b[K" + self.typed + "\r\n")
        self.typed = ""


def _printable(line: str) -> str:
    """Device text made safe for a terminal: no control characters (escape sequences)."""
    return _CONTROL.sub("?", line)


def run_console(session: DeviceSession, opts: ConsoleOptions, out: TextIO, kb: Keyboard | None) -> int:
    """Show the device's console on ``out`` and send what is typed on ``kb`` (None: watch
    only).  Returns 0 (Ctrl-], ``until`` matched, or the duration ended); raises
    :class:`~safesignal.errors.DeviceTimeout` if ``until`` did not match within the duration."""
    until = compile_until(opts.until)
    screen = _Screen(out, kb is not None)
    editor = LineEditor()
    booting = False
    if opts.reboot:
        session.sync()
        session.command(["reboot"])
        booting = True  # skip what the old boot still prints until the new one starts
    if kb is not None:
        screen.line(f"--- {session.url}: type a command, Enter sends it, Ctrl-] quits ---")
    deadline = time.monotonic() + opts.duration if opts.duration else float("inf")
    while True:
        if kb is not None:
            for action, line in editor.feed(kb.read()):
                if action == "quit":
                    screen.show_typed("")
                    return 0
                if action == "interrupt":
                    screen.show_typed("")
                elif action == "send":
                    for s in secrets_of(line):
                        session.add_secret(s)
                    screen.show_typed(shown(line))
                    screen.keep_typed()
                    session.write_line(line)
            screen.show_typed(shown(editor.line))
        try:
            got = session.read_line(min(deadline, time.monotonic() + (0.03 if kb is not None else 1.0)))
        except PortError:
            # The port went away (a native-USB chip resets): writing an empty line, which the
            # console ignores, reopens it with the session's own retries, up to its timeout.
            session.write_line("", time.monotonic() + session.timeout)
            continue
        if got is not None:
            if booting and not got.startswith("[BOOT]"):
                continue
            booting = False
            screen.line(_printable(session.mask(got)))
            if until is not None and until.search(got):
                return 0
        elif time.monotonic() >= deadline:
            if until is not None:
                raise DeviceTimeout(f"no line matched {opts.until!r} within {opts.duration:g} s")
            return 0
