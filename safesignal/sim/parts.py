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

import asyncio
import functools
import inspect
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


# the bluetooth stub's ops (stubs/bluetooth.py), answered by safesignal/sim/ble.py BleRadio
BLE_OPS = ("ble_active", "ble_config", "ble_adv", "ble_register", "ble_notify", "ble_disconnect", "ble_event")


class Radio:
    """The chip's BLE radio.  A board always has one: without ``--ble`` it is on an air of its
    own that nothing else can reach (the firmware can still turn it on, advertise, register
    services); with ``--ble`` its air is served to hosts, with ``--ble-air`` it joins another's.
    The bumble model (safesignal/sim/ble.py) is loaded at the first op, or at start when the air
    is reachable, so a device that never touches Bluetooth does not pay for it."""

    def __init__(self, mac: bytes, reachable: bool, air_spec: str | None) -> None:
        self.mac = mac
        self.reachable = reachable
        self.air_spec = air_spec
        self.impl: Any = None  # safesignal.sim.ble.BleRadio once started
        self._starting: asyncio.Future[None] | None = None

    async def ensure(self) -> Any:
        if self.impl is None:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._start())
            await asyncio.shield(self._starting)
        return self.impl

    async def _start(self) -> None:
        from safesignal.sim.ble import BleRadio

        radio = BleRadio(self.mac, self.air_spec, serve=self.reachable)
        await radio.start()
        self.impl = radio

    @property
    def spec(self) -> str:
        return str(self.impl.spec) if self.impl is not None and self.reachable else ""

    async def power_off(self) -> None:
        if self.impl is not None:
            await self.impl.power_off()

    async def close(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self.impl is not None:
            await self.impl.close()
            self.impl = None

    def state(self) -> dict[str, Any]:
        if self.impl is None:
            return {"active": False, "reachable": self.reachable}
        return {"reachable": self.reachable, **self.impl.state()}

    def ops(self) -> Mapping[str, HwOp]:
        return {op: functools.partial(self._op, op) for op in BLE_OPS}

    def _op(self, op: str, req: dict[str, Any]) -> Any:
        if self.impl is not None:
            return self.impl.ops()[op](req)

        async def later() -> Any:
            impl = await self.ensure()
            result = impl.ops()[op](req)
            return await result if inspect.isawaitable(result) else result

        return later()
