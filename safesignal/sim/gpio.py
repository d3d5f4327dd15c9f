"""The virtual board's panic button: a push button from a GPIO to GND.

With the input's pull-up on, the pin reads 1 while released and 0 while pressed; with no
pull configured it floats, which this model reads as 0 (a firmware that forgets the pull-up
sees a button held down forever).  Presses are scheduled as time intervals, so the device
process sees them at its own sampling rate, as a real pin would be sampled.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from safesignal.sim.parts import HwOp

BUTTON_GPIO = 4  # firmware/esp32-button/lib/ss_button.py BUTTON_GPIO
PULL_UP = 2  # safesignal/sim/stubs/machine.py Pin.PULL_UP
RELEASE_GAP_S = 0.08  # minimum released time between two scheduled presses
# Contact bounce of a cheap push button: a few short closures in the first milliseconds.
_BOUNCE = ((0.0, 0.0015), (0.003, 0.0045), (0.006, 0.0075))


@dataclass
class Button:
    gpio: int = BUTTON_GPIO
    pull: int = -1
    presses: int = 0
    samples: int = 0  # pin.value() reads of the button's GPIO (state: button_samples)
    _low: list[tuple[float, float]] = field(default_factory=list)  # monotonic (start, end)

    def press(self, hold_ms: int = 120, bounce: bool = False) -> float:
        """Schedule one press; returns its start as Unix time (for latency measurements)."""
        if not 0 < hold_ms <= 60000:
            raise ValueError("hold_ms must be 1..60000")
        now = time.monotonic()
        start = now
        if self._low:
            start = max(start, self._low[-1][1] + RELEASE_GAP_S)
        hold = hold_ms / 1000
        if bounce:
            for a, b in _BOUNCE:
                self._low.append((start + a, start + b))
            start += _BOUNCE[-1][1] + 0.0015
            self._low.append((start, start + hold))
            end = start + hold
            self._low.append((end + 0.002, end + 0.0035))  # release bounce
        else:
            self._low.append((start, start + hold))
        self.presses += 1
        return time.time() + (start - now)

    def busy_until(self) -> float:
        """Seconds from now until every scheduled press is over."""
        return max(0.0, self._low[-1][1] - time.monotonic()) if self._low else 0.0

    def level(self, gpio: int) -> int:
        if gpio != self.gpio:
            return 0  # nothing else is wired on the virtual board
        if self.pull != PULL_UP:
            return 0
        now = time.monotonic()
        while self._low and self._low[0][1] < now - 60.0:
            self._low.pop(0)
        return 0 if any(a <= now < b for a, b in self._low) else 1

    _last_read: float = 0.0

    def read(self, gpio: int) -> tuple[int, int]:
        """(level, falling edges since the previous read): what a pin with a falling-edge
        interrupt latches between two looks of the firmware."""
        now = time.monotonic()
        since, self._last_read = self._last_read, now
        edges = 0
        if gpio == self.gpio and self.pull == PULL_UP:
            edges = sum(1 for a, _ in self._low if since < a <= now)
        return self.level(gpio), edges

    def power_on(self) -> None:
        """A reset: the pin is an input without pull until the firmware configures it."""
        self.pull = -1

    # --- the hardware channel (parts.py): the machine stub's Pin --------------------------
    def ops(self) -> Mapping[str, HwOp]:
        return {"pin_init": self._hw_pin_init, "pin_value": self._hw_pin_value, "pin_read": self._hw_pin_read}

    def _hw_pin_init(self, req: dict[str, Any]) -> Any:
        if int(req["pin"]) == self.gpio:
            self.pull = int(req["pull"])
        return None

    def _hw_pin_value(self, req: dict[str, Any]) -> Any:
        if int(req["pin"]) == self.gpio:
            self.samples += 1  # the firmware's own look at the pin (its button task), for test pacing
        return self.level(int(req["pin"]))

    def _hw_pin_read(self, req: dict[str, Any]) -> Any:
        return list(self.read(int(req["pin"])))  # level, and falling edges since the last read (Pin.irq)
