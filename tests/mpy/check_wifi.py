# ss_wifi against a WLAN that answers as the ESP32 port's does: status() keeps the last
# disconnect reason after a new connect() until the attempt's own event (ports/esp32/
# network_wlan.c).  Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython and
# under CPython.
import asyncio

from mpyunit import eq, run, test

import ss_wifi

GOT_IP = 1010
CONNECTING = 1001
IDLE = 1000


class PortWlan:
    """The port's status rules, with the attempt's outcome after ``after`` polls."""

    def __init__(self, reason=0):
        self.reason = reason  # wifi_sta_disconn_reason, left by an earlier attempt
        self.connected = False
        self.outcome = None
        self.after = 0
        self.polls = 0
        self.connects = 0

    def plan(self, outcome, after):
        self.outcome = outcome  # GOT_IP, a reason code, or None (no event: DHCP never answers)
        self.after = after

    def active(self, on=None):
        return True

    def config(self, **kw):
        pass

    def connect(self, ssid, key):
        self.connects += 1
        self.polls = 0  # connect() leaves the reason alone

    def disconnect(self):
        pass

    def status(self):
        self.polls += 1
        if self.outcome is not None and self.polls > self.after:
            if self.outcome == GOT_IP:
                self.connected = True
                self.reason = 0
            else:
                self.reason = self.outcome
        if self.connected:
            return GOT_IP
        return self.reason if self.reason else CONNECTING

    def isconnected(self):
        return self.connected

    def ifconfig(self):
        return ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1")


async def _no_wait(ms):
    await asyncio.sleep(0)


ss_wifi.sleep_ms = _no_wait  # the polls, without their 100 ms each
LOG = []
ss_wifi.print = lambda *a: LOG.append(a[0] if a else "")
POLL_MS = 100  # ss_wifi._POLL_MS (a const: not visible as an attribute under MicroPython)


def attempt(w):
    wifi = ss_wifi.Wifi(w)
    wifi.configure("Net", "pw")
    ok = asyncio.run(wifi.probe("Net", "pw"))
    return ok, wifi.state


@test
def test_success_after_an_auth_failure_is_not_taken_for_a_new_failure():
    w = PortWlan(reason=202)  # the previous attempt's wrong password
    w.plan(GOT_IP, 10)  # this one joins after 1 s
    eq(attempt(w), ((None, ""), "connected"))


@test
def test_a_different_failure_is_news_at_once():
    w = PortWlan(reason=202)
    w.plan(201, 3)
    ok, state = attempt(w)
    eq(state, "no_ap")
    eq(ok[0], "WIFI_NO_AP")
    assert w.polls <= 5, w.polls


@test
def test_the_same_failure_again_is_no_news_until_the_timeout():
    w = PortWlan(reason=202)
    w.plan(202, 3)  # indistinguishable from the stale code: the device cannot know more
    ok, state = attempt(w)
    eq((ok[0], state), ("WIFI_TIMEOUT", "timeout"))
    eq(w.polls, ss_wifi.CONNECT_TIMEOUT_MS // POLL_MS)
    eq(LOG[-1], "[WIFI] Connection failed: no IP address in time (DHCP?) (status 202 is from the previous attempt)")


@test
def test_no_event_after_a_link_loss_is_a_timeout():
    w = PortWlan(reason=200)  # beacon timeout: the AP went away while connected
    w.plan(None, 0)  # back on the air, associates, DHCP never answers
    ok, state = attempt(w)
    eq((ok[0], state), ("WIFI_TIMEOUT", "timeout"))
    eq(LOG[-1], "[WIFI] Connection failed: no IP address in time (DHCP?) (status 200 is from the previous attempt)")


@test
def test_first_attempt_after_boot_fails_at_once():
    w = PortWlan(reason=0)
    w.plan(202, 3)
    ok, state = attempt(w)
    eq((ok[0], state), ("WIFI_AUTH", "auth_failed"))
    assert w.polls <= 5, w.polls


run()
