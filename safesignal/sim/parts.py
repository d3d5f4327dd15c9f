"""The virtual board's parts, as the hardware channel sees them.

Each simulated part (the flash, the partition table, the WiFi station, the button, the chip
itself) answers its own hardware-channel operations: it has an ``ops()`` method mapping each op
name the stubs send to a handler that takes the request (the JSON object the stub sent) and
returns the reply's ``result``.  The supervisor lists its parts once and builds one dispatch
table from them (:func:`dispatch_table`); an op claimed by two parts is an error at
construction.  A handler reports failures the way the supervisor turns into the stub's
``OSError``: ``flash.NvsOpError`` (the ESP-IDF error code), ``KeyError``/``ValueError``/
``TypeError`` (EINVAL), ``flash.PowerCut`` (the power went), :class:`NoReply` (no answer: the
device is being reset).

Adding a part (a BLE radio, say) is one new module with a class that has ``ops()``, and one
line in ``Supervisor.__init__`` where the parts are listed.  tests/test_hw_parts.py checks that
every op the stubs send has exactly one owner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

HwOp = Callable[[dict[str, Any]], Any]


class HwPart(Protocol):
    def ops(self) -> Mapping[str, HwOp]:
        """Op name -> handler, for every hardware-channel op this part answers."""
        ...


class NoReply(Exception):  # noqa: N818 - an outcome, not an error
    """The op gets no answer: the stub waits to be killed (a chip in reset)."""


def dispatch_table(parts: Iterable[HwPart]) -> dict[str, HwOp]:
    """One table from all parts' ops; ValueError if two parts claim the same op."""
    table: dict[str, HwOp] = {}
    owner: dict[str, HwPart] = {}
    for part in parts:
        for op, handler in part.ops().items():
            if op in table:
                raise ValueError(f"hw op {op!r} is claimed by both {type(owner[op]).__name__} "
                                 f"and {type(part).__name__}")
            table[op] = handler
            owner[op] = part
    return table


class Chip:
    """What belongs to the SoC rather than to a peripheral: its factory MAC (``machine.unique_id``,
    the eFuse base MAC), the RTC the firmware sets, and reset (``machine.reset``)."""

    def __init__(self, mac: bytes, reset: Callable[[], None]) -> None:
        self.mac = mac
        self.rtc_set: list[int] | None = None  # the last datetime the firmware gave machine.RTC
        self._reset = reset

    def ops(self) -> Mapping[str, HwOp]:
        return {"unique_id": self._unique_id, "rtc_set": self._rtc_set, "reset": self._do_reset}

    def _unique_id(self, req: dict[str, Any]) -> Any:
        return self.mac.hex()

    def _rtc_set(self, req: dict[str, Any]) -> Any:
        self.rtc_set = [int(x) for x in req["datetime"]]
        return None

    def _do_reset(self, req: dict[str, Any]) -> Any:
        self._reset()
        raise NoReply  # the stub waits to be killed, like a chip in reset
