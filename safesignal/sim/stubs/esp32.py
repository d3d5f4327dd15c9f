# Virtual-device stub of MicroPython's esp32 module: only esp32.NVS, forwarded to the
# supervisor, which keeps the flash image in ESP-IDF's NVS format.

import binascii

import _hw


class NVS:
    def __init__(self, namespace):
        self._ns = namespace
        _hw.call("nvs_open", ns=namespace)

    def set_i32(self, key, value):
        _hw.call("nvs_set", ns=self._ns, key=key, type="i32", value=value)

    def get_i32(self, key):
        return _hw.call("nvs_get", ns=self._ns, key=key, type="i32")

    def set_blob(self, key, value):
        v = binascii.hexlify(bytes(value)).decode()
        _hw.call("nvs_set", ns=self._ns, key=key, type="blob", value=v)

    def get_blob(self, key, buffer):
        v = binascii.unhexlify(_hw.call("nvs_get", ns=self._ns, key=key, type="blob", size=len(buffer)))
        buffer[: len(v)] = v
        return len(v)

    def erase_key(self, key):
        _hw.call("nvs_erase", ns=self._ns, key=key)

    def commit(self):
        _hw.call("nvs_commit", ns=self._ns)
