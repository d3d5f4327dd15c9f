"""Serial links: open a port by URL without pulsing the ESP32 into its ROM bootloader."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from typing import IO

import serial

from safesignal.errors import PortError

log = logging.getLogger(__name__)

BAUDRATE = 115200


def open_port(url: str, *, baudrate: int = BAUDRATE) -> serial.SerialBase:
    """Open ``url`` (a device path, ``socket://host:port``, ``rfc2217://…``, ``loop://``).

    DTR and RTS stay as the operating system raises them on open: both asserted.  On ESP32
    boards they drive EN and GPIO0 through the two-transistor auto-reset circuit, which pulls
    EN low only while RTS is asserted and DTR is not, and GPIO0 low only while DTR is asserted
    and RTS is not (esptool's reset sequences rely on exactly this).  Both asserted is neutral,
    so the chip keeps running.  Lowering them one after the other, as setting ``dtr=False``
    then ``rts=False`` would, passes through RTS-only and resets the chip.  Native USB
    (USB-CDC/Serial-JTAG) consoles also treat an asserted DTR as "a terminal is connected";
    with DTR low, MicroPython's TinyUSB console may drop output.  mpremote opens ports the
    same way on POSIX; on Windows it clears both for non-Microsoft drivers, and so do we.

    One tool per port: a device path is opened exclusively (pyserial's ``exclusive``: flock
    on POSIX; Windows opens COM ports exclusively anyway); a URL (``socket://``, ``rfc2217://``)
    has no lock of its own, so a lock file per URL keeps tools on this machine apart (tools on
    other machines are not seen).  A port in use is a PortError "port busy: …" naming the
    process that holds it, where Linux tells (/proc/locks).
    """
    local = "://" not in url
    lock = None if local else _lock_url(url)
    try:
        ser = serial.serial_for_url(url, do_not_open=True, baudrate=baudrate, timeout=0.05, write_timeout=5,
                                    exclusive=True if local and os.name != "nt" else None)
        if os.name == "nt" and _third_party_driver(url):
            # Windows sets both lines with the port's DCB at open, without the sequential
            # glitch; mpremote clears them there for USB-UART bridges, whose drivers otherwise
            # pulse RTS on close and reset the chip.  Do the same.
            ser.dtr = False
            ser.rts = False
        ser.open()
    except (serial.SerialException, OSError, ValueError) as e:
        if lock is not None:
            lock.close()
        if local and "exclusively lock" in str(e):
            raise PortError(f"port busy: {url} is open in {_holder(url) or 'another program'}") from None
        raise PortError(f"Could not open serial port {url}", reason=_reason(e)) from None
    if lock is not None:
        _keep_lock(ser, lock)
    log.debug("opened %s", url)
    return ser


def _lock_url(url: str) -> IO[bytes]:
    """An exclusive lock for a URL port, held while the returned file is open."""
    import fcntl

    name = "safesignal-port-" + hashlib.sha256(url.encode()).hexdigest()[:16] + ".lock"
    path = os.path.join(tempfile.gettempdir(), name)
    f = open(path, "a+b")  # noqa: SIM115 - kept open for as long as the port is
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise PortError(f"port busy: {url} is open in {_pid_name(_flock_holder(path)) or 'another program'}") from None
    return f


def _keep_lock(ser: serial.SerialBase, lock: IO[bytes]) -> None:
    close = ser.close

    def close_and_unlock() -> None:
        try:
            close()
        finally:
            lock.close()

    ser.close = close_and_unlock  # type: ignore[method-assign]


def _flock_holder(path: str) -> int | None:
    """The pid holding a flock on ``path`` (Linux /proc/locks), if it can be told."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12345 00:19:5 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == want and parts[4].isdigit():
            return int(parts[4])
    return None


def _pid_name(pid: int | None) -> str | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return f"process {pid}"
    shown: list[str] = []
    for a in argv[:4]:  # the program, never its options: a value could be a password
        if a.startswith("-") and a != "-m":
            break
        shown.append(os.path.basename(a))
    return f"process {pid} ({' '.join(shown)})" if shown else f"process {pid}"


def _holder(device: str) -> str | None:
    try:
        return _pid_name(_flock_holder(os.path.realpath(device)))
    except OSError:
        return None


def _third_party_driver(port: str) -> bool:
    from serial.tools import list_ports

    for p in list_ports.comports():
        if p.device == port:
            return p.manufacturer != "Microsoft"
    return False


def reopen(url: str, deadline: float, *, baudrate: int = BAUDRATE) -> serial.SerialBase:
    """Open ``url``, retrying until ``deadline`` (a native USB port vanishes while the chip resets)."""
    while True:
        try:
            return open_port(url, baudrate=baudrate)
        except PortError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _reason(e: BaseException) -> str:
    s = str(e) or e.__class__.__name__
    return s
