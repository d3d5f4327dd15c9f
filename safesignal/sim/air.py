"""The virtual WiFi "air": which access points exist and how they behave.

An air file is JSON::

    {"access_points": [
        {"ssid": "SafeSignal-Edge", "passphrase": "…", "ip": "192.168.1.50",
         "fail": null, "wrong_password_status": 202, "connect_ms": 300}
    ],
     "hosts": {"safesignal-edge.local": "127.0.0.1"}}

``hosts`` is the site's name service (DNS/mDNS) as the device sees it: a name not listed
does not resolve (the firmware gets OSError(-202), as lwIP's EAI_FAIL on the ESP32).  Any
address in 127.0.0.0/8 reaches this machine, so a broker listening on, say, 127.31.7.9:1883
can stand in for the site's edge broker at its real port.

``fail`` may be ``"dhcp_timeout"`` (associates, never gets an address) or ``"down"`` (not
on the air).  ``wrong_password_status`` is what a wrong passphrase reports: 202
(STAT_WRONG_PASSWORD), 204 (STAT_HANDSHAKE_TIMEOUT) or 15, as real boards do.  The file is
read again at every connection attempt, so a test can change the air while a device runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safesignal.errors import UsageError
from safesignal.sim.parts import HwOp

# network.WLAN status codes, MicroPython ports/esp32/network_wlan.c
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_HANDSHAKE_TIMEOUT = 204
# ESP-IDF wifi_err_reason_t (esp_wifi_types.h), as network_wlan.c's status() treats them
WIFI_REASON_ASSOC_LEAVE = 8
WIFI_REASON_BEACON_TIMEOUT = 200
WIFI_REASON_CONNECTION_FAIL = 205
WIFI_REASON_NO_AP_FOUND_W_COMPATIBLE_SECURITY = 210
WIFI_REASON_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD = 211
WIFI_REASON_NO_AP_FOUND_IN_RSSI_THRESHOLD = 212

# network.WLAN(STA_IF).config(name=value) parameters (ports/esp32/network_wlan.c) the virtual
# station accepts and records; "reconnects" is -1 (retry forever) until the firmware sets it.
WLAN_CONFIG_SETTABLE = {
    "reconnects": "int",
    "dhcp_hostname": "str",
    "hostname": "str",
    "txpower": "number",
    "pm": "int",
    "ps_mode": "int",
    "protocol": "int",
    "channel": "int",
    "mac": "mac",
}
WLAN_CONFIG_DEFAULTS: dict[str, Any] = {"reconnects": -1}


@dataclass
class AccessPoint:
    ssid: str
    passphrase: str
    ip: str = "192.168.1.50"
    gateway: str = "192.168.1.1"
    fail: str | None = None
    wrong_password_status: int = STAT_WRONG_PASSWORD
    connect_ms: int = 300

    def accepts(self, key: str) -> bool:
        if self.passphrase == "":
            return key == ""
        if key == self.passphrase:
            return True
        if len(key) == 64:
            # A 64-hex-digit key is the PSK itself: PBKDF2-HMAC-SHA1(passphrase, ssid, 4096, 32)
            # (IEEE 802.11i-2004, H.4).
            psk = hashlib.pbkdf2_hmac("sha1", self.passphrase.encode(), self.ssid.encode(), 4096, 32)
            return key.lower() == psk.hex()
        return False


def _ap_from_json(d: Any) -> AccessPoint:
    if not isinstance(d, dict) or not isinstance(d.get("ssid"), str):
        raise UsageError("air file: every access point needs an \"ssid\" string")
    fail = d.get("fail")
    if fail not in (None, "dhcp_timeout", "down"):
        raise UsageError("air file: \"fail\" must be null, \"dhcp_timeout\" or \"down\"")
    return AccessPoint(
        ssid=d["ssid"],
        passphrase=str(d.get("passphrase", "")),
        ip=str(d.get("ip", "192.168.1.50")),
        gateway=str(d.get("gateway", "192.168.1.1")),
        fail=fail,
        wrong_password_status=int(d.get("wrong_password_status", STAT_WRONG_PASSWORD)),
        connect_ms=int(d.get("connect_ms", 300)),
    )


class Air:
    def __init__(self, path: Path | None = None, extra: list[AccessPoint] | None = None,
                 hosts: dict[str, str] | None = None) -> None:
        self.path = path
        self.extra = list(extra or [])
        self.extra_hosts = dict(hosts or {})
        self.access_points()  # fail early on a bad file
        self.hosts()

    def _data(self) -> dict[str, Any]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UsageError(f"air file {self.path}: {e}") from None
        return data if isinstance(data, dict) else {}

    def hosts(self) -> dict[str, str]:
        """Name -> IPv4 address, from the air file (read again each time) and --host."""
        found = self._data().get("hosts", {})
        if not isinstance(found, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
            raise UsageError("air file: \"hosts\" must map names to address strings")
        out = {k.lower(): v for k, v in found.items()}
        out.update({k.lower(): v for k, v in self.extra_hosts.items()})
        return out

    def resolve(self, name: str) -> str | None:
        return self.hosts().get(name.lower().rstrip("."))

    def access_points(self) -> list[AccessPoint]:
        aps = [_ap_from_json(d) for d in self._data().get("access_points", [])]
        return aps + self.extra


class Station:
    """The device's station interface as the air sees it (one per device).

    ``status()`` follows ports/esp32/network_wlan.c: the driver's events set two variables,
    ``wifi_sta_connected`` (GOT_IP sets it, a disconnect clears it) and
    ``wifi_sta_disconn_reason`` (a disconnect event stores its reason, GOT_IP clears it to 0),
    and network_wlan_status() derives the answer from them.  ``connect()`` changes neither, so
    after a failed attempt a new one answers the old reason until its own event comes.
    Events here: an attempt's outcome after its delay (a reason code, or GOT_IP), a beacon
    timeout (reason 200) when a connected AP leaves the air or changes its passphrase, and
    ASSOC_LEAVE (8, status IDLE) when ``disconnect()`` ends a connection or an attempt (a
    station that is neither gets no event, and keeps its reason).  After a disconnect event the
    driver retries by itself while ``reconnects`` allows (network_wlan_wifi_event_handler).
    """

    def __init__(self, air: Air, mac: bytes | None = None) -> None:
        self.air = air
        self.mac = mac  # the chip's factory MAC: WLAN.config("mac") until the firmware sets one
        self.active = False
        self._ssid: str | None = None
        self._key = ""
        self.config: dict[str, Any] = dict(WLAN_CONFIG_DEFAULTS)
        self._power_on_state()

    def _power_on_state(self) -> None:
        self._connected: AccessPoint | None = None  # wifi_sta_connected (and to which AP)
        self.reason = 0  # wifi_sta_disconn_reason
        self._requested = False  # wifi_sta_connect_requested
        self._retries = 0  # wifi_sta_reconnects
        self._attempt: tuple[float, int, AccessPoint | None, int] | None = None  # start, outcome, ap, after ms

    @property
    def ssid(self) -> str | None:
        """The SSID of the current connection attempt or connection."""
        return self._ssid

    def power_on(self) -> None:
        """A (re)boot: the radio is off, not associated, configuration back to defaults."""
        self._ssid = None
        self.active = False
        self.config = dict(WLAN_CONFIG_DEFAULTS)
        self._power_on_state()

    def set_config(self, name: str, value: Any) -> bool:
        """``WLAN.config(name=value)``; False for a parameter the station interface lacks."""
        if name not in WLAN_CONFIG_SETTABLE:
            return False
        kind = WLAN_CONFIG_SETTABLE[name]
        if kind == "mac":
            if not (isinstance(value, dict) and isinstance(value.get("hex"), str) and len(value["hex"]) == 12):
                raise ValueError("invalid buffer length")
            value = value["hex"]
        elif kind == "str":
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str")
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number")
        self.config["hostname" if name == "dhcp_hostname" else name] = value
        return True

    def _conf_reconnects(self) -> int:
        # network_wlan.c: config(reconnects=n) stores n + 1, and -1 (forever) as 0
        n = int(self.config.get("reconnects", -1))
        return 0 if n == -1 else n + 1

    def _start_attempt(self, at: float) -> None:
        ap = next((a for a in self.air.access_points() if a.ssid == self._ssid and a.fail != "down"), None)
        if ap is None:
            self._attempt = (at, STAT_NO_AP_FOUND, None, 1500)
        elif (ap.passphrase == "") != (self._key == ""):
            # auth mode mismatch: ESP-IDF's scan threshold filters the AP out
            self._attempt = (at, STAT_NO_AP_FOUND, None, 1500)
        elif not ap.accepts(self._key):
            self._attempt = (at, ap.wrong_password_status, None, ap.connect_ms)
        elif ap.fail == "dhcp_timeout":
            self._attempt = (at, STAT_CONNECTING, ap, 0)  # associates; no event ever comes
        else:
            self._attempt = (at, STAT_GOT_IP, ap, ap.connect_ms)

    def _disconnected(self, reason: int, at: float) -> None:
        """A WIFI_EVENT_STA_DISCONNECTED with this reason; the driver may retry at once."""
        self.reason = reason
        self._connected = None
        self._attempt = None
        if self._requested:
            conf = self._conf_reconnects()
            if conf:
                self._retries += 1
                if self._retries >= conf:
                    return
            self._start_attempt(at)

    def connect(self, ssid: str, key: str) -> None:
        self.active = True
        self._ssid = ssid
        self._key = key
        self._retries = 0
        self._requested = True
        self._connected = None
        self._start_attempt(time.monotonic())  # reason untouched: the last one stays visible

    def disconnect(self) -> None:
        self._requested = False
        if self._connected is not None or self._attempt is not None:
            self._disconnected(WIFI_REASON_ASSOC_LEAVE, time.monotonic())
        self._ssid = None

    def _advance(self) -> None:
        """Deliver the events that are due by now."""
        now = time.monotonic()
        for _ in range(1000):  # bounded: each loop delivers one event in the past
            if self._attempt is not None:
                start, outcome, ap, after_ms = self._attempt
                at = start + after_ms / 1000
                if outcome == STAT_CONNECTING or at > now:
                    return
                if outcome == STAT_GOT_IP:
                    self._attempt = None
                    self._connected = ap
                    self.reason = 0
                    return
                self._disconnected(outcome, at)
                continue
            ap = self._connected
            if ap is not None:
                # Still on the air with the same passphrase?  Otherwise the link drops.
                cur = next((a for a in self.air.access_points() if a.ssid == ap.ssid), None)
                if cur is None or cur.fail == "down" or not cur.accepts(self._key):
                    self._disconnected(WIFI_REASON_BEACON_TIMEOUT, now)
                    continue
            return

    def status(self) -> int:
        self._advance()
        if self._connected is not None:
            return STAT_GOT_IP
        r = self.reason
        if r in (STAT_NO_AP_FOUND, WIFI_REASON_NO_AP_FOUND_IN_RSSI_THRESHOLD,
                 WIFI_REASON_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD, WIFI_REASON_NO_AP_FOUND_W_COMPATIBLE_SECURITY):
            return r
        if r in (STAT_WRONG_PASSWORD, WIFI_REASON_CONNECTION_FAIL):
            return STAT_WRONG_PASSWORD
        if r == WIFI_REASON_ASSOC_LEAVE:
            return STAT_IDLE
        conf = self._conf_reconnects()
        if self._requested and (conf == 0 or self._retries < conf):
            return STAT_CONNECTING
        return STAT_IDLE if r == 0 else r

    def ifconfig(self) -> list[str]:
        self._advance()
        ap = self._connected
        if ap is not None:
            return [ap.ip, "255.255.255.0", ap.gateway, ap.gateway]
        return ["0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0"]

    # --- the hardware channel (parts.py): the network stub's WLAN, the socket stub's link ----
    # The supervisor keeps dns_lookup's timing (--dns-delay blocks the interpreter, and console
    # input during a lookup is counted there); this answers it.
    def ops(self) -> Mapping[str, HwOp]:
        return {
            "wlan_active": self._hw_active,
            "wlan_connect": self._hw_connect,
            "wlan_disconnect": self._hw_disconnect,
            "wlan_status": self._hw_status,
            "wlan_status_param": self._hw_status_param,
            "wlan_ifconfig": self._hw_ifconfig,
            "wlan_config_set": self._hw_config_set,
            "wlan_config_get": self._hw_config_get,
            "net_up": self._hw_net_up,
            "dns_lookup": self._hw_dns_lookup,
        }

    def _hw_active(self, req: dict[str, Any]) -> Any:
        if req.get("value") is not None:
            self.active = bool(req["value"])
        return self.active

    def _hw_connect(self, req: dict[str, Any]) -> Any:
        self.connect(str(req["ssid"]), str(req["key"]))
        return None

    def _hw_disconnect(self, req: dict[str, Any]) -> Any:
        self.disconnect()
        return None

    def _hw_status(self, req: dict[str, Any]) -> Any:
        return self.status()

    def _hw_status_param(self, req: dict[str, Any]) -> Any:
        # WLAN.status("rssi") and the like are not modelled: the stub's OSError(EINVAL).
        raise ValueError(f"wlan.status({req.get('param')!r}) is not modelled")

    def _hw_ifconfig(self, req: dict[str, Any]) -> Any:
        self.status()
        return self.ifconfig()

    def _hw_config_set(self, req: dict[str, Any]) -> Any:
        return self.set_config(str(req["name"]), req.get("value"))

    def _hw_config_get(self, req: dict[str, Any]) -> Any:
        name = str(req["name"])
        if name == "mac":
            if "mac" in self.config:
                return [True, {"hex": self.config["mac"]}]
            if self.mac is None:
                raise ValueError("this station was made without the chip's MAC")
            return [True, {"hex": self.mac.hex()}]
        if name in ("ssid", "essid"):
            return [True, self.ssid or ""]
        if name == "dhcp_hostname":
            name = "hostname"
        if name in self.config or name in WLAN_CONFIG_SETTABLE:
            return [True, self.config.get(name)]
        return [False, None]

    def _hw_net_up(self, req: dict[str, Any]) -> Any:
        return self.status() == STAT_GOT_IP

    def _hw_dns_lookup(self, req: dict[str, Any]) -> Any:
        return self.air.resolve(str(req["host"])) if self.status() == STAT_GOT_IP else None
