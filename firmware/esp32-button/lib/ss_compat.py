# The one compat block for firmware code that also runs on CPython (its unit tests).
# On MicroPython every name here is the built-in one.

import asyncio
import os

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    sleep_ms = asyncio.sleep_ms
    wait_for_ms = asyncio.wait_for_ms
except AttributeError:  # CPython

    async def sleep_ms(ms):
        await asyncio.sleep(ms / 1000)

    async def wait_for_ms(aw, ms):
        return await asyncio.wait_for(aw, ms / 1000)


def rand16():
    b = os.urandom(2)
    return b[0] << 8 | b[1]


def backoff_ms(attempt, rnd, lo=1000, hi=60000):
    """Delay before retry number ``attempt`` (0-based): exponential from ``lo`` capped at
    ``hi``, then jitter: a uniform pick in [50%, 100%] of it (``rnd`` is a random int)."""
    base = lo
    for _ in range(attempt):
        if base >= hi:
            break
        base <<= 1
    if base > hi:
        base = hi
    return base // 2 + (rnd % (base // 2 + 1))


try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython
    import time as _time

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b
