# Virtual-device stub over MicroPython's select module: poll waits end on the ESP32's 10 ms
# FreeRTOS tick.  On the chip a poll that times out returns at the first tick at or after its
# deadline (see time.tick_wait_ms), and asyncio sleeps are such polls (asyncio/core.py
# IOQueue.wait_io_event -> poll.ipoll(dt)), so asyncio.sleep_ms(10) takes 10-20 ms there, not 10.
# time.sleep_ms is not a poll and stays exact, as on the chip (mp_hal_delay_ms busy-waits the
# last tick).  Not modelled: on the chip a socket becoming ready is noticed at the next tick
# too (only interrupts, e.g. UART input, wake the task at once); here it wakes the poll at once.
#
# select.select is the built-in's (nothing here uses it).
#
# asyncio's scheduler keeps the built-in clock: its C half (_asyncio.TaskQueue, extmod/
# modasyncio.c) stamps tasks with mp_hal_ticks_ms itself, so asyncio/core.py's ticks must be the
# same clock.  poll() is what core calls when it builds its event loop (IOQueue), after binding
# its names, so that is where they are pointed back at the built-in ones.  The firmware's own
# time.ticks_ms (boot-relative, stubs/time.py) differs from them by a constant, which no code
# can observe: it only ever takes differences of its own readings.

import sys
import time as _time  # the stub

_path = sys.path[:]
_me = sys.modules.pop("select", None)
sys.path.clear()
try:
    import select as _real  # with an empty path only the built-in module can answer
finally:
    sys.path.extend(_path)
    if _me is not None:
        sys.modules["select"] = _me
del _path, _me

def __getattr__(name):
    return getattr(_real, name)  # select.select, POLLIN, ...: the built-in's


class _Poll:
    def __init__(self):
        self._p = _real.poll()

    def __getattr__(self, name):
        return getattr(self._p, name)  # register, modify, unregister

    def poll(self, timeout=-1):
        return self._p.poll(_time.tick_wait_ms(timeout))

    def ipoll(self, timeout=-1, flags=0):
        return self._p.ipoll(_time.tick_wait_ms(timeout), flags)


def poll():
    core = sys.modules.get("asyncio.core")
    if core is not None and getattr(core, "ticks", None) is _time.ticks_ms:
        core.ticks = _time._real.ticks_ms
        core.ticks_diff = _time._real.ticks_diff
        core.ticks_add = _time._real.ticks_add
    return _Poll()
