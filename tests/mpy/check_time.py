# ss_time: SNTP packets (RFC 4330), epoch handling, setting the RTC.
# Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython and under CPython.
import struct

from mpyunit import eq, run, test

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
    set_to = None

    def datetime(self, dt):
        FakeRTC.set_to = dt


class FakeMachine:
    RTC = FakeRTC


@test
def test_request():
    r = ss_time.request()
    eq(len(r), 48)
    eq(r[0], 0x23, "LI 0, version 4, mode 3 (client)")
    eq(bytes(r[1:]), bytes(47))


@test
def test_parse_answers():
    eq(ss_time.parse(answer(T)), T)
    eq(ss_time.parse(answer(T, frac=0x80000000)), T + 0.5)
    eq(ss_time.parse(answer(T, mode=5)), T, "broadcast mode is usable")
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
def test_set_rtc_1970_epoch():
    ss_time.set_rtc(FakeMachine, FakeTime(0, 1970), T + 0.25)
    # 2026-11-28 07:05:50 UTC is a Saturday (weekday 5, Monday = 0)
    eq(FakeRTC.set_to, (2026, 11, 28, 5, 7, 5, 50, 250000))


run()
