"""A command session with one device over a serial link.

Robust to what a real console does: log lines interleaved with replies, CR/LF/CRLF, an echo
of our own line, a device that is still booting, and a native-USB port that disappears and
comes back while the chip resets.  Every wait has a deadline.

A board's console receive buffer is small (ESP32: 259 bytes) and over a UART it drops what does
not fit while the firmware is busy (a name lookup, a TLS handshake).  So every command goes out
as a checked line (ssproto.checked_lines): in pieces of at most ssproto.PIECE bytes, each
acknowledged before the next is sent, so no more than one piece is ever unacknowledged, with a
length and CRC-32 the device checks before it runs the line.  A damaged line is run by nothing
and sent again.
"""

from __future__ import annotations

import binascii
import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import serial

import ssproto
from safesignal.errors import DeviceError, DeviceTimeout, PortError, SafeSignalError
from safesignal.link.serial import open_port, reopen

log = logging.getLogger(__name__)

BOOT_LINE = "[PROVISION] Provisioning system initialized"
MASK = "********"
KEEP_LINES = 5000  # lines remembered for audits; a long `console` run must not grow forever
SEND_TRIES = 3  # a command whose line arrives damaged is sent again, at most this often in all
PING_WAIT_MAX = 2.0  # seconds between unanswered pings, at most: a busy device's buffer must not fill
ABANDON = b"\x03\r\n"  # Ctrl-C discards a partial line; the empty line ends a checked one quietly


@dataclass
class Reply:
    command: str
    lines: list[str] = field(default_factory=list)  # info lines, in order (log lines excluded)
    ok: bool = False
    code: str = ""
    text: str = ""

    @property
    def first(self) -> str:
        return self.lines[0] if self.lines else ""


class DeviceSession:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        on_log: Callable[[str], None] | None = None,
        ser: serial.SerialBase | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.on_log = on_log
        self.log_lines: deque[str] = deque(maxlen=KEEP_LINES)
        self.received: deque[str] = deque(maxlen=KEEP_LINES)  # what the device sent, as sent (for audits)
        self.last_boot_id: str | None = None  # the device's Boot ID at the last sync
        self.last_status: dict[str, str] | None = None  # provision_status as read by the last sync
        self._secrets: list[str] = []
        self._ser = ser if ser is not None else open_port(url)
        self._buf = b""
        self._pending: list[str] = []

    def add_secret(self, value: str) -> None:
        """Mask ``value`` in what this session hands out for display (``on_log``, ``mask``).

        Parsing always sees the device's lines as sent: a password that happens to equal an
        SSID or a room name must not garble the read-back.
        """
        if value and value not in self._secrets:
            self._secrets.append(value)

    def mask(self, line: str) -> str:
        """``line`` with every registered secret replaced by ********, for display."""
        for sec in self._secrets:
            line = line.replace(sec, MASK)
        return line

    def close(self) -> None:
        try:
            self._ser.close()
        except (OSError, serial.SerialException):
            pass

    def __enter__(self) -> DeviceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- raw line I/O ------------------------------------------------------------------
    def _recover(self, deadline: float) -> None:
        log.debug("port %s failed; reopening", self.url)
        again = getattr(self._ser, "reopen", None)
        if again is not None:  # a link that reconnects itself (BLE: link/ble.BlePort)
            self._ser = again(deadline)
            return
        self.close()
        self._ser = reopen(self.url, deadline)

    def write_line(self, line: str, deadline: float | None = None) -> None:
        self._write(line.encode("utf-8") + b"\r\n", deadline)

    def _write(self, data: bytes, deadline: float | None = None) -> None:
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        while True:
            try:
                self._ser.write(data)  # bounded by the port's write_timeout; no tcdrain (it can hang)
                return
            except (serial.SerialException, OSError) as e:
                if time.monotonic() >= deadline:
                    raise PortError(f"Could not write to serial port {self.url}", reason=str(e)) from None
                self._recover(deadline)

    def read_line(self, deadline: float) -> str | None:
        """Next non-empty line, or None at the deadline.  Log lines are returned too."""
        while not self._pending:
            for sep in (b"\r\n", b"\r", b"\n"):
                self._buf = self._buf.replace(sep, b"\n")
            if b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                text = raw.decode("utf-8", errors="replace").strip("\x00")
                if text.strip():
                    self._pending.append(text)
                continue
            if time.monotonic() >= deadline:
                return None
            try:
                if not getattr(self._ser, "is_open", True):  # left closed by a reopen that ran out of time
                    raise serial.SerialException("port closed")
                n = getattr(self._ser, "in_waiting", 0)
                chunk = self._ser.read(n if n > 0 else 1)
            except (serial.SerialException, OSError):
                self._recover(deadline)
                continue
            if chunk:
                self._buf += chunk
        line = self._pending.pop(0)
        self.received.append(line)
        if ssproto.is_log_line(line):
            self.log_lines.append(line)
            if self.on_log is not None:
                self.on_log(self.mask(line))
        return line

    # --- protocol ------------------------------------------------------------------------
    def command(self, args: Sequence[str], *, timeout: float | None = None, check: bool = True) -> Reply:
        """Send one command (checked: see the module's doc); collect its info lines up to the
        status line.  A line the device received damaged is sent again (SEND_TRIES in all)."""
        line = ssproto.join_args(list(args))
        total = timeout if timeout is not None else self.timeout
        unknown = 0
        for attempt in range(SEND_TRIES):
            deadline = time.monotonic() + total
            reply = self._send_checked(line, args[0], deadline, total)
            if reply is not None and reply.code == ssproto.E_UNKNOWN:
                # ERR UNKNOWN for a checked line: a damaged mark, or firmware without checked lines
                unknown += 1
                reply = None
            if reply is not None:
                if check and not reply.ok:
                    raise DeviceError(reply.code, reply.text, args[0])
                return reply
            log.info("'%s' reached the device damaged (attempt %d of %d); sending it again",
                     args[0], attempt + 1, SEND_TRIES)
            self._write(ABANDON, deadline)
            self._barrier(max(1.0, min(self.timeout, 5.0)))
        if unknown == SEND_TRIES:
            raise SafeSignalError(f"the device does not understand checked lines ('{args[0]}' answered ERR UNKNOWN): "
                                  "is its firmware older than this tool?")
        raise PortError(f"the serial link to {self.url} damaged '{args[0]}' {SEND_TRIES} times; nothing was run",
                        reason="bytes lost on the way to the device")

    def _send_checked(self, line: str, name: str, deadline: float, total: float) -> Reply | None:
        """One attempt: the pieces, each acknowledged, then the reply.  None if the device
        says the line arrived damaged (or acknowledges the wrong byte count)."""
        pieces = ssproto.checked_lines(line, binascii.crc32)
        echoes = {p.decode("utf-8", errors="replace") for p in pieces} | {line}
        sent = len(pieces[0]) - pieces[0].index(b" ") - 1
        for i, piece in enumerate(pieces):
            if i > 0:
                sent += len(piece) - 1
            self._write(piece + b"\r\n", deadline)
            if i == len(pieces) - 1:
                break
            # Wait for this piece's acknowledgement before the next: never more than one piece
            # in the device's receive buffer.
            while True:
                got = self.read_line(deadline)
                if got is None:
                    return None  # no acknowledgement (a lost line ending?): start again
                if got in echoes or ssproto.is_log_line(got):
                    continue
                st = ssproto.parse_status(got)
                if st is None:
                    continue  # stale output from before this command
                if st[0] and st[2] == f"+{sent}":
                    break
                return None
        reply = Reply(command=name)
        while True:
            got = self.read_line(deadline)
            if got is None:
                raise DeviceTimeout(f"no answer to '{name}' within {total:g} s")
            if got in echoes or ssproto.is_log_line(got):
                continue  # our own echo, or the device's log
            st = ssproto.parse_status(got)
            if st is None:
                reply.lines.append(got)
                continue
            reply.ok, reply.code, reply.text = st
            if (reply.ok and reply.text.startswith("+")) or reply.code == ssproto.E_CHECKSUM:
                return None  # bytes lost: the device is still waiting for some, or the CRC failed
            return reply

    def sync(self, timeout: float | None = None) -> None:
        """Wait until the console answers, and drain everything older (a ping barrier)."""
        self._barrier(timeout if timeout is not None else self.timeout)
        self.last_status = self.status()
        self.last_boot_id = self.last_status["boot_id"]

    def _barrier(self, total: float) -> None:
        """Ping until a ping is answered, then once more ("final"): every line before that
        answer is stale.  Pings go out further and further apart (at most PING_WAIT_MAX): a
        device blocked for seconds must not find its receive buffer filled with them.  The
        final stage ends only at the answer to its latest ping: the device answers in order, so
        no answer to an earlier ping can still be on its way (it would pass for the reply to the
        next command)."""
        deadline = time.monotonic() + total
        nonce = secrets.token_hex(4)
        for stage in ("", "f"):
            k = 0
            wait = 0.5
            while True:
                if time.monotonic() >= deadline:
                    if stage:
                        raise DeviceTimeout(f"device on {self.url} stopped answering")
                    raise DeviceTimeout(
                        f"device on {self.url} did not answer within {total:g} s "
                        "(is it powered, running SafeSignal firmware, at 115200 baud?)"
                    )
                self.write_line(f"ping {nonce}-{stage}{k}", deadline)
                k += 1
                step = min(deadline, time.monotonic() + wait)
                wait = min(wait * 2, PING_WAIT_MAX)
                answered = False
                while (got := self.read_line(step)) is not None:
                    if stage:
                        answered = got == f"OK pong {nonce}-{stage}{k - 1}"
                    else:
                        answered = got.startswith(f"OK pong {nonce}-") and "-f" not in got
                    if answered:
                        break
                if answered:
                    break

    def wait_for_line(self, wanted: str, timeout: float, *, prefix: bool = False) -> None:
        """Read until the line ``wanted`` (or, with ``prefix``, a line starting with it)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.read_line(deadline)
            if got is None:
                raise DeviceTimeout(f"device did not print '{wanted}' within {timeout:g} s")
            if got == wanted or (prefix and got.startswith(wanted)):
                return

    def boot_id(self) -> str:
        return self.status()["boot_id"]

    def wait_reboot(self, old_boot_id: str | None = None, timeout: float = 30.0) -> None:
        """After a command that reboots the device: wait until it answers with a new boot id.

        The boot line is the fast path; if it was lost (a native-USB port re-enumerating, a
        flushed buffer), polling ``provision_status`` for a changed ``Boot ID`` still tells a
        finished reboot from a reply of the old firmware.
        """
        old = old_boot_id if old_boot_id is not None else self.last_boot_id
        if old is None:
            raise SafeSignalError("wait_reboot needs the boot id from before the reboot (sync first)")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceTimeout(f"device did not come back from its reboot within {timeout:g} s")
            try:
                self.wait_for_line(BOOT_LINE, min(remaining, 1.0))
            except (DeviceTimeout, PortError):
                pass  # no boot line (lost, or the port is still away): ask the device instead
            try:
                self.sync(max(0.5, min(deadline - time.monotonic(), 3.0)))
                if self.last_boot_id != old:
                    return
            except (DeviceTimeout, PortError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def status(self) -> dict[str, str]:
        reply = self.command(["provision_status"])
        out: dict[str, str] = {}
        for line in reply.lines:
            f = ssproto.parse_status_field(line)
            if f is not None:
                out[f[0]] = f[1]
        missing = [name for _, name in ssproto.STATUS_FIELDS if name not in out]
        if missing:
            raise SafeSignalError(
                f"the device's provision_status lacks {', '.join(missing)}: is its firmware older than this tool?"
            )
        return out

    def secret_matches(self, ssid: str, password: str) -> bool:
        """True if the device's stored WiFi password equals ``password`` (it is not sent)."""
        nonce = secrets.token_hex(16)
        reply = self.command(["provision_verify", nonce], timeout=max(self.timeout, 15.0))  # ~1 s PBKDF2 on a chip
        prefix = ssproto.CHECK_LABEL + ": "
        got = next((x[len(prefix):] for x in reply.lines if x.startswith(prefix)), None)
        psk = ssproto.wpa_psk(hashlib.sha1, password, ssid)  # the device's own code (tested against hashlib)
        want = ssproto.secret_check(hashlib.sha256, nonce, ssid, psk)
        return got is not None and secrets.compare_digest(got, want)
