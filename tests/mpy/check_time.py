# ss_time: SNTP packets (RFC 4330), epoch handling, setting the RTC.
# Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython and under CPython.
import struct

from mpyunit import eq, raises, run, test

import ss_time

T = 1795849550  # 2026-11-28


def answer(unix, frac=0, mode=4, li=0, stratum=2):
    b = bytearray(48)
    b[0] = (li << 6) | (4 << 3) | mode
    b[1] = stratum
    b[40:48] = struct.pack("!II", unix + ss_time.NTP_DELTA, frac)
    return bytes(b)


class FakeTime:
    def __init__(self, now, epoch_year):
        self.now = now
        self.epoch_year = epoch_year

    def time(self):
        return self.now

    def gmtime(self, t=None):
        if t == 0:
            return (self.epoch_year, 1, 1, 0, 0, 0, 5, 1)
        import time

        assert self.epoch_year == 1970, "only the 1970 epoch converts through the host's gmtime"
        return tuple(time.gmtime(t))[:8]


class FakeRTC:
    # As ports/esp32/machine_rtc.c machine_rtc_datetime_helper: exactly 8 items, each through
    # mp_obj_get_int, which refuses a float ("can't convert float to int").
    set_to = None

    def datetime(self, dt):
        if len(dt) != 8:
            raise ValueError("requested length 8 but object has length %d" % len(dt))
        for x in dt:
            if not isinstance(x, int) or isinstance(x, bool):
                raise TypeError("can't convert %s to int" % type(x).__name__)
        FakeRTC.set_to = tuple(dt)


class FakeMachine:
    RTC = FakeRTC


@test
def test_request():
    r = ss_time.request()
    eq(len(r), 48)
    eq(r[0], 0x23, "LI 0, version 4, mode 3 (client)")
    eq(bytes(r[1:]), bytes(47))


def f32(x):
    """x rounded to single precision, as every float is on the ESP32 port (MICROPY_FLOAT_IMPL_FLOAT)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


@test
def test_parse_answers():
    eq(ss_time.parse(answer(T)), (T, 0))
    eq(ss_time.parse(answer(T, frac=0x80000000)), (T, 500000))
    eq(ss_time.parse(answer(T, frac=0xFFFFFFFF)), (T, 999999), "never rounds up into the next second")
    eq(ss_time.parse(answer(T, mode=5)), (T, 0), "broadcast mode is usable")
    eq(ss_time.parse(answer(T, stratum=0)), None, "kiss-o'-death")
    eq(ss_time.parse(answer(T, li=3)), None, "server clock not synchronised")
    eq(ss_time.parse(answer(T, mode=3)), None, "a client request is no answer")
    eq(ss_time.parse(answer(T)[:47]), None, "short")
    eq(ss_time.parse(answer(1000000)), None, "before 2025: not a plausible time")


@test
def test_unix_time_both_epochs():
    eq(ss_time.unix_time(FakeTime(T, 1970)), T)
    eq(ss_time.unix_time(FakeTime(T - ss_time.EPOCH_2000, 2000)), T)
    eq(ss_time.unix_time(FakeTime(5, 2000)), None, "an ESP32 clock right after boot is not set")


@test
def test_parse_is_integers_only():
    # Every odd second of a day and every fraction: a float anywhere would round somewhere.
    for k in range(0, 86400, 997):
        secs, us = ss_time.parse(answer(T + k, frac=k * 49711))
        eq((secs, us), (T + k, (k * 49711 * 1000000) >> 32))
        assert isinstance(secs, int) and isinstance(us, int), (secs, us)


@test
def test_float_clock_would_be_off_on_the_chip():
    # Why parse() is integers only: the old float formula, evaluated in the ESP32 port's single
    # precision, lands on a multiple of 128 s at today's times: up to 64 s off.
    worst = 0
    for k in range(0, 128, 3):
        t = T + k
        old = f32((t + ss_time.NTP_DELTA) - ss_time.NTP_DELTA + 0x40000000 / 4294967296)  # the old parse()
        worst = max(worst, abs(old - (t + 0.25)))
        eq(ss_time.parse(answer(t, frac=0x40000000)), (t, 250000), "integers are exact")
    assert 60 <= worst <= 64.25, worst


@test
def test_set_rtc_1970_epoch():
    ss_time.set_rtc(FakeMachine, FakeTime(0, 1970), (T, 250000))
    # 2026-11-28 07:05:50 UTC is a Saturday (weekday 5, Monday = 0)
    eq(FakeRTC.set_to, (2026, 11, 28, 5, 7, 5, 50, 250000))


@test
def test_no_float_reaches_the_rtc():
    # The whole path from a server's answer to the RTC: the strict RTC raises on any float.
    FakeRTC.set_to = None
    ss_time.set_rtc(FakeMachine, FakeTime(0, 1970), ss_time.parse(answer(T + 1, frac=0x12345678)))
    eq(FakeRTC.set_to, (2026, 11, 28, 5, 7, 5, 51, (0x12345678 * 1000000) >> 32))
    raises(TypeError, FakeRTC().datetime, (2026, 11, 28, 5, 7, 5, 51, 0.5))  # the fake does refuse floats


@test
def test_unix_time_is_an_int():
    eq(ss_time.unix_time(FakeTime(T + 0.75, 1970)), T)
    assert isinstance(ss_time.unix_time(FakeTime(T + 0.75, 1970)), int)


class WrappingTicks:
    """time.ticks_ms/ticks_diff as on the ESP32 port: a 30-bit count from boot
    (extmod/modtime.c with MICROPY_PY_TIME_TICKS_PERIOD = 2**30)."""
    PERIOD = 1 << 30

    def __init__(self, now):
        self.now = now  # ms since boot

    def ticks_ms(self):
        return self.now % self.PERIOD

    def ticks_diff(self, end, start):
        half = self.PERIOD // 2
        return ((end - start + half) % self.PERIOD) - half


@test
def test_uptime_starts_at_the_boot_count():
    t = WrappingTicks(850)
    up = ss_time.Uptime(t.ticks_ms, t.ticks_diff)
    eq(up.ms(), 850)
    t.now += 5000
    eq(up.ms(), 5850)


@test
def test_uptime_counts_on_across_the_ticks_wrap():
    day = 86400000
    t = WrappingTicks(1000)
    up = ss_time.Uptime(t.ticks_ms, t.ticks_diff)
    for _ in range(40):  # 40 days, read hourly as the app does
        for _ in range(24):
            t.now += 3600000
            up.ms()
    eq(up.ms(), 1000 + 40 * day)
    eq(t.ticks_ms(), (1000 + 40 * day) % (1 << 30), "ticks_ms alone (the old uptime) wrapped three times")


run()
