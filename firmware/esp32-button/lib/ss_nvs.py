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


def erase(nvs, key):
    """Erase the key; a missing key is fine."""
    try:
        nvs.erase_key(key)
    except OSError as e:
        if errno(e) != ESP_ERR_NVS_NOT_FOUND:
            raise


# --- the raw partition --------------------------------------------------------------------
# Page layout (esp-idf components/nvs_flash/src/nvs_page.hpp): 4096-byte pages, a 32-byte
# header whose first word is the page state, then a 32-byte bitmap with 2 bits per entry
# (11 empty, 10 written, 00 erased) for 126 entries.  Headers and bitmaps are never encrypted.
_PAGE = const(4096)
_ENTRIES = const(126)
_PAGE_UNINIT = b"\xff\xff\xff\xff"


def scan_partition(esp32_mod, label="nvs"):
    """Entry states of the raw NVS partition: {"written": n, "erased": n, "pages": n used}.

    Read through esp32.Partition, below NVS: with NVS encryption it sees what the flash holds
    whether or not this chip can decrypt it.  None if the partition cannot be read."""
    try:
        parts = esp32_mod.Partition.find(esp32_mod.Partition.TYPE_DATA, label=label)
        if not parts:
            return None
        part = parts[0]
        pages = part.info()[3] // _PAGE
        head = bytearray(64)
        counts = {"written": 0, "erased": 0, "pages": 0}
        for p in range(pages):
            part.readblocks(p, head)
            if head[:4] == _PAGE_UNINIT:
                continue
            counts["pages"] += 1
            for n in range(_ENTRIES):
                st = (head[32 + n // 4] >> ((n % 4) * 2)) & 3
                if st == 2:
                    counts["written"] += 1
                elif st == 0:
                    counts["erased"] += 1
        return counts
    except (AttributeError, OSError, ValueError, IndexError):
        return None
