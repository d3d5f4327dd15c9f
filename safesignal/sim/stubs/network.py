# Virtual-device stub of MicroPython's network module: network.WLAN in station mode, answered
# by the supervisor's WiFi "air" model.  Status codes as on the ESP32 port.

import binascii
import socket

import _hw

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_CONNECT_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204


class WLAN:
    def __init__(self, interface_id=STA_IF):
        if interface_id != STA_IF:
            raise ValueError("the virtual device models the station interface only")

    def active(self, is_active=None):
        return _hw.call("wlan_active", value=is_active)

    def connect(self, ssid=None, key=None, bssid=None):
        _hw.call("wlan_connect", ssid=ssid, key=key if key is not None else "")

    def disconnect(self):
        _hw.call("wlan_disconnect")
        socket.link(False)

    def status(self, param=None):
        if param is not None:
            return _hw.call("wlan_status_param", param=param)
        st = _hw.call("wlan_status")
        socket.link(st == STAT_GOT_IP)
        return st

    def isconnected(self):
        return self.status() == STAT_GOT_IP

    def ifconfig(self, config=None):
        return tuple(_hw.call("wlan_ifconfig"))

    def config(self, *args, **kwargs):
        # As ports/esp32/network_wlan.c: either one query or keyword settings; an unknown
        # parameter is ValueError("unknown config param"); "mac" is 6 bytes.
        if args and kwargs:
            raise TypeError("either pos or kw args are allowed")
        if kwargs:
            for name in kwargs:
                v = kwargs[name]
                if isinstance(v, (bytes, bytearray)):
                    v = {"hex": binascii.hexlify(bytes(v)).decode()}
                if not _hw.call("wlan_config_set", name=name, value=v):
                    raise ValueError("unknown config param")
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        found, value = _hw.call("wlan_config_get", name=args[0])
        if not found:
            raise ValueError("unknown config param")
        if isinstance(value, dict):
            return binascii.unhexlify(value["hex"])
        return value
