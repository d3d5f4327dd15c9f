"""The device's side of a checked line (ssproto: `@<len>:<crc32>` and `+` pieces), for the test
fakes that answer like ss_console."""

from __future__ import annotations

import binascii
from collections.abc import Callable

import ssproto


def take_piece(checked: ssproto.Checked, raw: bytes, send: Callable[[str], None]) -> bytes | None:
    """Feed one checked piece; answers it as the firmware does (acknowledge, or ERR for a damaged
    line).  Returns the whole line once it is complete and intact, else None."""
    try:
        whole = checked.feed(raw, binascii.crc32)
    except ssproto.ProtocolError as e:
        send(ssproto.err_line(e.code, e.message))
        return None
    if whole is None:
        send(ssproto.ok_line(f"+{checked.got()}"))
    return whole
