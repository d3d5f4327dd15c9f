# Virtual-device stub over MicroPython's time module, answering as the ESP32 port does where the
# unix port differs:
# - ticks_ms/ticks_us count from the device's boot (ports/esp32/mphalport.c mp_hal_ticks_ms:
#   esp_timer_get_time(), which starts at 0 at boot); the unix port's count from the host's
#   boot (CLOCK_MONOTONIC, ports/unix/unix_mphal.c), so an "uptime" read from them was the
#   host's.  They wrap as on the chip: MICROPY_PY_TIME_TICKS_PERIOD is 2**30 there (30-bit small
#   ints, py/mpconfig.h), 2**62 on a 64-bit unix build; ticks_diff/ticks_add use that period
#   (extmod/modtime.c time_ticks_diff, time_ticks_add).
# - time() is an int (ports/esp32/modtime.c mp_time_time_get: tv_sec); the unix port's is a float.
# asyncio keeps the built-in clock: see stubs/select.py.  ticks_cpu stays the built-in's.

import sys

from micropython import const

_path = sys.path[:]
_me = sys.modules.pop("time", None)
sys.path.clear()
try:
    import time as _real  # with an empty path only the built-in module can answer
finally:
    sys.path.extend(_path)
    if _me is not None:
        sys.modules["time"] = _me
del _path, _me

TICKS_PERIOD = const(1 << 30)  # ESP32 port: MP_SMALL_INT_POSITIVE_MASK + 1
_MASK = const((1 << 30) - 1)
_HALF = const(1 << 29)
TICK_MS = const(10)  # FreeRTOS tick: CONFIG_FREERTOS_HZ=100 (ESP-IDF components/freertos/Kconfig default)

# Every function here is heap the firmware does not have on the chip (there the module is C in
# flash), so the stub is kept small: what it does not change comes from the built-in module
# through __getattr__ (gmtime, sleep*, ...).
_boot_us = _real.ticks_us()  # the first import of time is the device's first moment


def __getattr__(name):
    return getattr(_real, name)


def ticks_us():
    return _real.ticks_diff(_real.ticks_us(), _boot_us) & _MASK


def ticks_ms():
    return (_real.ticks_diff(_real.ticks_us(), _boot_us) // 1000) & _MASK


def ticks_diff(end, start):
    return ((end - start + _HALF) & _MASK) - _HALF


def ticks_add(ticks, delta):
    if not -_HALF < delta < _HALF:
        raise OverflowError("ticks interval overflow")
    return (ticks + delta) & _MASK


def time():
    return int(_real.time())


def tick_wait_ms(timeout_ms, now_ms=None):
    """How long a poll with this timeout really waits on the chip: it returns at the first
    FreeRTOS tick at or after its deadline (extmod/modselect.c poll_set_poll_until_ready_or_timeout
    waits with MICROPY_EVENT_POLL_HOOK, ports/esp32/mpconfigport.h: ulTaskNotifyTake(pdFALSE, 1)).
    Ticks fall every TICK_MS from boot; ``now_ms`` (ms since boot) is for tests."""
    if timeout_ms <= 0:
        return timeout_ms
    if now_ms is None:
        now_ms = _real.ticks_diff(_real.ticks_us(), _boot_us) // 1000
    return -(-(now_ms + timeout_ms) // TICK_MS) * TICK_MS - now_ms
