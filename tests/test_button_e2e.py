"""Short presses on the virtual device, whose loop keeps the ESP32's 10 ms tick: asyncio sleeps
end on a tick (safesignal/sim/stubs/select.py), so the firmware samples the button 10-20 ms
apart, and the falling-edge interrupt reaches it through the soft-IRQ watcher
(safesignal/sim/stubs/machine.py).  PROVISIONING.md ("The button") promises that a press of
30 ms or more is counted exactly once, bounce or not.

An unprovisioned device prints one "[BUTTON] Pressed, ..." line per press it counts (ss_app
App.on_press), so no broker is needed to count presses.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from conftest import Sim

PRESSED = "[BUTTON] Pressed"
HOLDS_MS = (30, 31, 32, 33, 34, 35)
ROUNDS = 4  # each hold length this many times, with and without contact bounce
SETTLE_S = 0.25  # after a press is over: the firmware re-arms within 3 samples (<= 60 ms)


def pressed_lines(lines: Iterable[str]) -> list[str]:
    return [x for x in lines if x.startswith(PRESSED)]


def test_short_presses_each_count_once(make_sim) -> None:
    sim: Sim = make_sim()
    missed: list[tuple[int, bool]] = []
    doubled: list[tuple[int, bool]] = []
    with sim.session() as s:
        s.sync()
        for rnd in range(ROUNDS):
            for hold in HOLDS_MS:
                bounce = rnd % 2 == 1
                before = len(pressed_lines(s.received))
                at = sim.control.press(hold, bounce=bounce)
                time.sleep(max(0.0, at - time.time()) + hold / 1000 + SETTLE_S)
                s.sync()  # every line the device printed so far has been read
                got = len(pressed_lines(s.received)) - before
                if got == 0:
                    missed.append((hold, bounce))
                elif got > 1:
                    doubled.append((hold, bounce))
        presses = ROUNDS * len(HOLDS_MS)
        assert sim.control.state()["button_presses"] == presses
        assert (missed, doubled) == ([], []), \
            f"{len(missed)} of {presses} presses missed, {len(doubled)} counted twice " \
            f"(hold_ms, bounce): missed {missed}, doubled {doubled}"
        assert len(pressed_lines(s.received)) == presses
