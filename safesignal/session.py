"""A command session with one device over a serial link.

Robust to what a real console does: log lines interleaved with replies, CR/LF/CRLF, an echo
of our own line, a device that is still booting, and a native-USB port that disappears and
comes back while the chip resets.  Every wait has a deadline.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import serial

import ssproto

from .errors import DeviceError, DeviceTimeout, PortError, SafeSignalError
from .link import open_port, reopen

log = logging.getLogger(__name__)

BOOT_LINE = "[PROVISION] Provisioning system initialized"
MASK = "********"
KEEP_LINES = 5000  # lines remembered for audits; a long `console` run must not grow forever


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
        self.close()
        self._ser = reopen(self.url, deadline)

    def write_line(self, line: str, deadline: float | None = None) -> None:
        data = line.encode("utf-8") + b"\r\n"
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
        """Send one command; collect its info lines up to the status line."""
        line = ssproto.join_args(list(args))
        reply = Reply(command=args[0])
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        self.write_line(line, deadline)
        while True:
            got = self.read_line(deadline)
            if got is None:
                raise DeviceTimeout(f"no answer to '{args[0]}' within {timeout or self.timeout:g} s")
            if got == line or ssproto.is_log_line(got):
                continue  # our own echo, or the device's log
            st = ssproto.parse_status(got)
            if st is None:
                reply.lines.append(got)
                continue
            reply.ok, reply.code, reply.text = st
            if check and not reply.ok:
                raise DeviceError(reply.code, reply.text, args[0])
            return reply

    def sync(self, timeout: float | None = None) -> None:
        """Wait until the console answers, and drain everything older (a ping barrier)."""
        total = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + total
        nonce = secrets.token_hex(4)
        k = 0
        answered = False
        while not answered:
            if time.monotonic() >= deadline:
                raise DeviceTimeout(
                    f"device on {self.url} did not answer within {total:g} s "
                    "(is it powered, running SafeSignal firmware, at 115200 baud?)"
                )
            self.write_line(f"ping {nonce}-{k}", deadline)
            k += 1
            step = min(deadline, time.monotonic() + 0.5)
            while (got := self.read_line(step)) is not None:
                if got.startswith(f"OK pong {nonce}-"):
                    answered = True
                    break
        final = f"{nonce}-final"
        self.write_line(f"ping {final}", deadline)
        while True:
            got = self.read_line(deadline)
            if got is None:
                raise DeviceTimeout(f"device on {self.url} stopped answering")
            if got == f"OK pong {final}":
                break
        self.last_status = self.status()
        self.last_boot_id = self.last_status["boot_id"]

    def wait_for_line(self, wanted: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            got = self.read_line(deadline)
            if got is None:
                raise DeviceTimeout(f"device did not print '{wanted}' within {timeout:g} s")
            if got == wanted:
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
