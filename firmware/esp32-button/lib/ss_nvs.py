# esp32.NVS helpers shared by the stores in NVS (ss_store, ss_outbox): "missing" is None, not
# an exception.  MicroPython raises OSError(-code) with ESP-IDF's codes
# (esp-idf components/nvs_flash/include/nvs.h, ESP_ERR_NVS_BASE 0x1100).

from ss_compat import const

ESP_ERR_NVS_NOT_FOUND = const(-0x1102)
ESP_ERR_NVS_NOT_ENOUGH_SPACE = const(-0x1105)
ESP_ERR_NVS_INVALID_LENGTH = const(-0x110C)


def errno(e):
    return e.args[0] if e.args else 0


def get_i32(nvs, key):
    """The value, or None if the key is missing."""
    try:
        return nvs.get_i32(key)
    except OSError as e:
        if errno(e) == ESP_ERR_NVS_NOT_FOUND:
            return None
        raise


def get_blob(nvs, key, size):
    """The value (at most ``size`` bytes, else OSError INVALID_LENGTH), or None if missing."""
    buf = bytearray(size)
    try:
        n = nvs.get_blob(key, buf)
    except OSError as e:
        if errno(e) == ESP_ERR_NVS_NOT_FOUND:
            return None
        raise
    return bytes(buf[:n])


def get_blob_into(nvs, key, buf):
    """Read the value into ``buf`` (no allocation); its length, or None if missing."""
    try:
        return nvs.get_blob(key, buf)
    except OSError as e:
        if errno(e) == ESP_ERR_NVS_NOT_FOUND:
            return None
        raise


def erase(nvs, key):
    """Erase the key; a missing key is fine."""
    try:
        nvs.erase_key(key)
    except OSError as e:
        if errno(e) != ESP_ERR_NVS_NOT_FOUND:
            raise
