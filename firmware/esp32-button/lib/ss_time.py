# Wall-clock time for alert timestamps: an SNTP client (RFC 4330) over a non-blocking UDP
# socket, so the console and the button keep running while it waits for the answer.
#
# The ESP32 starts counting from 2000-01-01 at every boot; until SNTP has set the RTC, alerts
# carry "ts": null (and always their uptime).  The virtual device's clock is the host's and is
# already set, so there the sync is skipped.

import struct

from ss_compat import backoff_ms, const, rand16, sleep_ms

NTP_HOST = "pool.ntp.org"
NTP_PORT = const(123)
NTP_DELTA = 2208988800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01
EPOCH_2000 = 946684800  # seconds from 1970-01-01 to 2000-01-01
VALID_AFTER = 1735689600  # 2025-01-01: a clock before this is not set
_TIMEOUT_MS = const(3000)
_POLL_MS = const(50)


class Uptime:
    """Milliseconds since boot.  time.ticks_ms counts from boot on the ESP32 (esp_timer) but
    wraps every 2**30 ms (12.4 days: ticks are 30-bit small ints there); this keeps counting past
    the wrap, provided ms() runs at least once every 2**29 ms (6.2 days, the reach of
    ticks_diff): the app calls it hourly (ss_app.App.keep_uptime)."""

    def __init__(self, ticks_ms, ticks_diff):
        self._ticks = ticks_ms
        self._diff = ticks_diff
        self._last = ticks_ms()
        self._ms = self._last  # ticks start at 0 at boot: the first reading is the uptime

    def ms(self):
        now = self._ticks()
        self._ms += self._diff(now, self._last)
        self._last = now
        return self._ms


def request():
    """A 48-byte SNTP client request: LI 0, version 4, mode 3 (client)."""
    b = bytearray(48)
    b[0] = 0x23
    return b


def parse(resp):
    """Unix time as integers (seconds, microseconds) from a server's answer, or None if it is
    not a usable answer.  Integers only: the ESP32 port's floats are single precision, which at
    today's Unix times (~1.8e9 s) are 128 s apart, so a float clock would be off by up to 64 s."""
    if len(resp) < 48:
        return None
    mode = resp[0] & 7
    li = resp[0] >> 6
    if mode not in (4, 5) or li == 3 or resp[1] == 0:  # server/broadcast; not unsynchronised, no kiss-o'-death
        return None
    secs, frac = struct.unpack("!II", resp[40:48])  # transmit timestamp
    if secs == 0:
        return None
    t = secs - NTP_DELTA
    if t < VALID_AFTER:
        return None
    return t, (frac * 1000000) >> 32  # 32-bit binary fraction of a second -> microseconds


def unix_time(time):
    """Unix time in whole seconds (an int), or None while the clock is not set (ports/esp32
    counts from 2000, the unix port from 1970)."""
    t = int(time.time())  # an int on the ESP32 port already
    if time.gmtime(0)[0] == 2000:
        t += EPOCH_2000
    return t if t >= VALID_AFTER else None


async def query(host, port=NTP_PORT, timeout_ms=_TIMEOUT_MS):
    """Ask one SNTP server; returns Unix time as (seconds, microseconds) or None.  The name lookup blocks (as every
    getaddrinfo on MicroPython); the wait for the answer does not."""
    import socket

    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        s.sendto(request(), addr)
        waited = 0
        while waited < timeout_ms:
            try:
                data = s.recv(64)
            except OSError:  # EAGAIN: nothing yet
                data = None
            if data:
                return parse(data)
            await sleep_ms(_POLL_MS)
            waited += _POLL_MS
        return None
    finally:
        s.close()


def set_rtc(machine, time, t):
    """Set the chip's RTC to Unix time t = (seconds, microseconds), integers."""
    secs, us = t
    off = EPOCH_2000 if time.gmtime(0)[0] == 2000 else 0
    tm = time.gmtime(secs - off)
    # RTC.datetime takes (year, month, day, weekday, hours, minutes, seconds, microseconds), all
    # ints (ports/esp32/machine_rtc.c machine_rtc_datetime_helper: mp_obj_get_int refuses a float)
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], us))


async def keep_synced(wifi, machine, time, host=NTP_HOST):
    """Once the WiFi is up, set the clock if it is not set; retry with backoff until it is."""
    attempts = 0
    while unix_time(time) is None:
        await wifi.connected.wait()
        try:
            t = await query(host)
        except OSError as e:
            print("[TIME] SNTP query to %s failed: %s" % (host, e))
            t = None
        if t is not None:
            set_rtc(machine, time, t)
            print("[TIME] Clock set by SNTP (%s)" % host)
            return
        attempts += 1
        # at least 30 s apart: each try starts with a blocking name lookup (see ss_mqtt)
        await sleep_ms(backoff_ms(attempts, rand16(), 30000, 600000))
