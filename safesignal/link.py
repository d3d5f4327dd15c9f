"""Serial links: open a port by URL without pulsing the ESP32 into its ROM bootloader."""

from __future__ import annotations

import logging
import os
import time

import serial

from .errors import PortError

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
    """
    try:
        ser = serial.serial_for_url(url, do_not_open=True, baudrate=baudrate, timeout=0.05, write_timeout=5)
        if os.name == "nt" and _third_party_driver(url):
            # Windows sets both lines with the port's DCB at open, without the sequential
            # glitch; mpremote clears them there for USB-UART bridges, whose drivers otherwise
            # pulse RTS on close and reset the chip.  Do the same.
            ser.dtr = False
            ser.rts = False
        ser.open()
    except (serial.SerialException, OSError, ValueError) as e:
        raise PortError(f"Could not open serial port {url}", reason=_reason(e)) from None
    log.debug("opened %s", url)
    return ser


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
