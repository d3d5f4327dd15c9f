# Why a device that boots blank may not really be blank: a look at the raw NVS partition.
# Loaded only on a device that is not provisioned (ss_app).

import ss_nvs
from ss_compat import const

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


def explain_unreadable(esp32, outbox_nvs):
    # With NVS encryption, entries written under another chip's key (a flash image copied from
    # another device) fail their CRC after decryption and ESP-IDF's nvs_flash_init marks them
    # erased.  A device that stored anything itself can still read its outbox counter; if it
    # cannot, yet the partition holds erased entries, they were not written by this chip.
    counts = scan_partition(esp32)
    if not counts or not counts["erased"] or ss_nvs.get_i32(outbox_nvs, "next") is not None:
        return
    print("[NVS] The flash holds %d entries this chip cannot decrypt: they were written by another chip "
          "(a copied flash image) or under another key" % counts["erased"])
    print("[NVS] Credentials are bound to the chip that stored them; this device needs provisioning")
