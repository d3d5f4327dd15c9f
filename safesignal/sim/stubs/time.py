# Virtual-device stub over MicroPython's time module, answering as the ESP32 port does where the
# unix port differs:
# - ticks_ms/ticks_us count from the device's boot (ports/esp32/mphalport.c mp_hal_ticks_ms:
#   esp_timer_get_time(), which starts at 0 at boot); the unix port's count from the host's
#   boot (CLOCK_MONOTONIC, ports/unix/unix_mphal.c), so an "uptime" read from them was the
#   host's.  They wrap as on the chip: MICROPY_PY_TIME_TICKS_PERIOD is 2**30 there (30-bit small
#   ints, py/mpconfig.h), 2**62 on a 64-bit unix build; ticks_diff/ticks_add use that period
#   (extmod/modtime.c time_ticks_diff, time_ticks_add).
# - time() is an int (ports/esp32/modtime.c mp_time_time_get: tv_sec); the unix port's is a float.
# Everything else is the built-in module's (gmtime, sleep*, ...).  asyncio keeps the built-in
# clock: see stubs/select.py.

import sys

_path = sys.path[:]
_me = sys.modules.pop("time", None)
sys.path.clear()
try:
    import time as _real  # with an empty path only the built-in module can answer
finally:
    sys.path.extend(_path)
    if _me is not None:
        sys.modules["time"] = _me

for _name in dir(_real):
    if not _name.startswith("__"):
        globals()[_name] = getattr(_real, _name)

TICKS_PERIOD = 1 << 30  # ESP32 port: MP_SMALL_INT_POSITIVE_MASK + 1
_MASK = TICKS_PERIOD - 1
_HALF = TICKS_PERIOD >> 1
TICK_MS = 10  # FreeRTOS tick: CONFIG_FREERTOS_HZ=100 (ESP-IDF components/freertos/Kconfig default)
CPU_MHZ = 160  # stock ESP32_GENERIC_S3: CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ (esp_system Kconfig.cpu)

_boot_us = _real.ticks_us()  # the first import of time is the device's first moment


def _since_boot_us():
    return _real.ticks_diff(_real.ticks_us(), _boot_us)


def ticks_us():
    return _since_boot_us() & _MASK


def ticks_ms():
    return (_since_boot_us() // 1000) & _MASK


def ticks_cpu():
    return (_since_boot_us() * CPU_MHZ) & _MASK  # CCOUNT at the stock clock


def ticks_diff(end, start):
    return ((end - start + _HALF) & _MASK) - _HALF


def ticks_add(ticks, delta):
    if not -_HALF < delta < _HALF:
        raise OverflowError("ticks interval overflow")
    return (ticks + delta) & _MASK


def time():
    return int(_real.time())


def tick_wait_ms(timeout_ms):
    """How long a poll with this timeout really waits on the chip: it returns at the first
    FreeRTOS tick at or after its deadline (extmod/modselect.c poll_set_poll_until_ready_or_timeout
    waits with MICROPY_EVENT_POLL_HOOK, ports/esp32/mpconfigport.h: ulTaskNotifyTake(pdFALSE, 1)).
    Ticks fall every TICK_MS from boot."""
    if timeout_ms <= 0:
        return timeout_ms
    now = _since_boot_us() // 1000
    deadline = now + timeout_ms
    return -(-deadline // TICK_MS) * TICK_MS - now
