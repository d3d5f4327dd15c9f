# WiFi station: connect with exponential backoff and jitter, reconnect on loss.
# Log lines are the seed guide's ("[WIFI] Connecting to '...'..." and so on).

import asyncio

from ss_compat import backoff_ms, const, rand16, sleep_ms

# network.WLAN status codes (MicroPython ports/esp32/network_wlan.c / docs "network.WLAN")
STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_NO_AP_FOUND = const(201)
STAT_WRONG_PASSWORD = const(202)
STAT_CONNECT_FAIL = const(203)
STAT_HANDSHAKE_TIMEOUT = const(204)
_STAT_4WAY_HANDSHAKE_TIMEOUT = const(15)  # ESP-IDF WIFI_REASON_4WAY_HANDSHAKE_TIMEOUT
# ESP-IDF >= 5.x esp_wifi_types.h: WIFI_REASON_NO_AP_FOUND_W_COMPATIBLE_SECURITY (210) and
# WIFI_REASON_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD (211): an AP with that SSID, wrong security.
NO_AP = (STAT_NO_AP_FOUND, 210, 211)
AUTH_FAIL = (STAT_WRONG_PASSWORD, STAT_HANDSHAKE_TIMEOUT, _STAT_4WAY_HANDSHAKE_TIMEOUT)

CONNECT_TIMEOUT_MS = const(20000)
_POLL_MS = const(100)
_PROGRESS_MS = const(5000)  # a log line while a connection attempt waits: tools show it live

def reason(status):
    """(state, human reason) for a failed connection's final WLAN status."""
    if status in AUTH_FAIL:
        state = "auth_failed"
    elif status in NO_AP:
        state = "no_ap"
    elif status == STAT_CONNECTING or status == STAT_IDLE:
        state = "timeout"
    else:
        state = "failed"
    return state, reason_text(state)


_PROBE_CODES = {"auth_failed": "WIFI_AUTH", "no_ap": "WIFI_NO_AP", "timeout": "WIFI_TIMEOUT"}


def reason_text(state):
    return {
        "auth_failed": "authentication failed (wrong password?)",
        "no_ap": "access point not found",
        "timeout": "no IP address in time (DHCP?)",
    }.get(state, "connection failed")


class Wifi:
    def __init__(self, wlan):
        self._wlan = wlan  # network.WLAN(network.STA_IF), made by the composition root
        self.state = "idle"
        self.ip = ""
        self.attempts = 0
        self.connected = asyncio.Event()
        self._ssid = None
        self._password = None
        self._active = False

    def configure(self, ssid, password):
        self._ssid = ssid
        self._password = password

    async def _connect_once(self):
        w = self._wlan
        print("[WIFI] Connecting to '%s'..." % self._ssid)
        self.state = "connecting"
        # The port keeps the last disconnect reason and answers it from status() after a new
        # connect() until the next WiFi event (ports/esp32/network_wlan.c: wifi_sta_disconn_reason
        # changes only in the event handlers), so a failure code seen now may be the last
        # attempt's: only a different code, or an IP address, is news before the timeout.
        try:
            stale = w.status()
        except OSError:
            stale = STAT_IDLE
        try:
            w.connect(self._ssid, self._password)
        except OSError as e:  # e.g. "Wifi Internal Error": retry like any other failure
            self.state = "failed"
            print("[WIFI] Connection failed: %s" % e)
            try:
                w.disconnect()  # often the driver is still busy with the last attempt
            except OSError:
                pass
            return False
        waited = 0
        status = STAT_CONNECTING
        while waited < CONNECT_TIMEOUT_MS:
            await sleep_ms(_POLL_MS)
            waited += _POLL_MS
            status = w.status()
            if status == STAT_GOT_IP:
                self.ip = w.ifconfig()[0]
                self.state = "connected"
                print("[WIFI] Connected to AP")
                print("[WIFI] Got IP address: %s" % self.ip)
                return True
            if status != STAT_CONNECTING and status != STAT_IDLE and status != stale:
                break
            if waited % _PROGRESS_MS == 0:  # MicroPython reports joining and DHCP alike as CONNECTING
                print("[WIFI] No IP address yet after %d s (joining the access point, then DHCP)..."
                      % (waited // 1000))
        if status == stale and status != STAT_CONNECTING and status != STAT_IDLE:
            # No news in the whole attempt: the code is the previous attempt's
            self.state = "timeout"
            print("[WIFI] Connection failed: %s (status %d is from the previous attempt)"
                  % (reason_text("timeout"), status))
        else:
            self.state, why = reason(status)
            print("[WIFI] Connection failed: %s (status %d)" % (why, status))
        try:
            w.disconnect()
        except OSError:
            pass
        return False

    async def probe(self, ssid, password):
        """Connect test: join once with these credentials.  Returns (None, "") when an IP
        address came, else (console status code, reason).  Leaves the link up on success."""
        self.configure(ssid, password)
        try:
            self._activate()
            ok = await self._connect_once()
        except OSError as e:
            self.state = "failed"
            return "WIFI_FAILED", "radio error: %s" % e
        if ok:
            return None, ""
        code = _PROBE_CODES.get(self.state, "WIFI_FAILED")
        return code, "%s on '%s'" % (reason_text(self.state), ssid)

    def down(self):
        """Leave the network (services stopped, or a connect test is over)."""
        self.connected.clear()
        self.ip = ""
        self.state = "idle"
        if self._active:
            try:
                self._wlan.disconnect()
            except OSError:
                pass

    def radio_on(self):
        """The radio on, not connecting (true randomness for key generation)."""
        self._activate()

    def _activate(self):
        if self._active:
            return
        w = self._wlan
        w.active(True)
        self._active = True
        try:
            w.config(reconnects=0)  # we reconnect ourselves, with backoff
        except (OSError, ValueError, TypeError) as e:
            print("[WIFI] Cannot turn off automatic reconnects: %s" % e)

    async def run(self):
        w = self._wlan
        while True:
            try:
                self._activate()
                ok = await self._connect_once()
            except OSError as e:
                print("[WIFI] Radio error: %s" % e)
                self.state = "failed"
                ok = False
            if not ok:
                delay = backoff_ms(self.attempts, rand16())
                self.attempts += 1
                print("[WIFI] Retrying in %d ms" % delay)
                await sleep_ms(delay)
                continue
            self.attempts = 0
            self.connected.set()
            while True:
                try:
                    if not w.isconnected():
                        break
                except OSError:
                    break
                await sleep_ms(500)
            self.connected.clear()
            self.state = "connecting"
            self.ip = ""
            print("[WIFI] Disconnected from AP")
