"""The board's partition table, as the virtual device reports it through ``esp32.Partition``.

Read from the board definition's own table, firmware/boards/SAFESIGNAL_S3/partitions-safesignal.csv
(the file ESP-IDF's gen_esp32part.py turns into the partition table the board is flashed with),
so the virtual device and the board cannot drift apart.  Only the table is modelled: the
contents of the partitions other than NVS are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safesignal.sim.flash import NVS_OFFSET, NVS_SIZE
from safesignal.sim.parts import HwOp

BOARD_TABLE = Path(__file__).resolve().parents[2] / "firmware" / "boards" / "SAFESIGNAL_S3" / \
    "partitions-safesignal.csv"

# esp-idf components/esp_partition/include/esp_partition.h (esp_partition_type_t, esp_partition_subtype_t)
TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES = {
    "app": {"factory": 0x00, "test": 0x20, **{f"ota_{i}": 0x10 + i for i in range(16)}},
    "data": {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04, "efuse": 0x05,
             "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83},
}


@dataclass(frozen=True)
class Entry:
    label: str
    type: int
    subtype: int
    offset: int
    size: int
    encrypted_flag: bool

    def encrypted(self, flash_encryption: bool) -> bool:
        """esp_partition_t.encrypted as ESP-IDF sets it (components/esp_partition/partition.c,
        is_partition_encrypted): with flash encryption on, every app partition, otadata and
        nvs_keys, and whatever carries the "encrypted" flag; with it off, nothing."""
        if not flash_encryption:
            return False
        return (self.encrypted_flag or self.type == TYPES["app"]
                or (self.type, self.subtype) in ((TYPES["data"], 0x00), (TYPES["data"], 0x04)))


def _number(text: str) -> int:
    text = text.strip()
    mult = {"K": 1024, "M": 1024 * 1024}.get(text[-1:].upper(), 1)
    return int(text[:-1] if mult != 1 else text, 0) * mult


def read_table(path: Path = BOARD_TABLE) -> list[Entry]:
    """The partitions of a gen_esp32part.py CSV with explicit offsets, in table order."""
    out = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, ptype, subtype, offset, size, flags = [f.strip() for f in (line + ",,,,,").split(",")][:6]
        if not (name and ptype and subtype and offset and size):
            raise ValueError(f"{path.name}:{n}: every partition needs type, subtype, offset and size")
        out.append(Entry(name, TYPES[ptype], SUBTYPES[ptype][subtype], _number(offset), _number(size),
                         "encrypted" in flags.split(":")))
    (nvs,) = [e for e in out if e.label == "nvs"]
    if (nvs.offset, nvs.size) != (NVS_OFFSET, NVS_SIZE):
        raise ValueError(f"{path.name}: nvs at {nvs.offset:#x}+{nvs.size:#x}, the flash model has "
                         f"{NVS_OFFSET:#x}+{NVS_SIZE:#x}")
    return out


def running_app(table: list[Entry]) -> Entry:
    """The app the bootloader starts on a freshly flashed board: with otadata blank, the factory
    app if there is one, else the first OTA slot (esp-idf bootloader_utility.c,
    bootloader_utility_get_selected_boot_partition)."""
    apps = [e for e in table if e.type == TYPES["app"]]
    factory = [e for e in apps if e.subtype == 0x00]
    if factory:
        return factory[0]
    ota = sorted((e for e in apps if 0x10 <= e.subtype < 0x20), key=lambda e: e.subtype)
    if not ota:
        raise ValueError("no app partition")
    return ota[0]


def part_info(flash_encryption: bool, path: Path = BOARD_TABLE) -> dict[str, object]:
    """The reply of the hw op ``part_info`` (the esp32 stub's Partition)."""
    table = read_table(path)
    return {
        "parts": [[e.label, e.type, e.subtype, e.offset, e.size, e.encrypted(flash_encryption)] for e in table],
        "running": running_app(table).label,
    }


class PartitionTable:
    """The board's partition table as a part of the virtual board (parts.py): the esp32 stub's
    ``Partition`` asks for it with ``part_info``.  The table file is read at each ask.  Flash
    encryption is on on a hardened board (NVS encrypted with an eFuse HMAC key)."""

    def __init__(self, flash_encryption: bool, path: Path = BOARD_TABLE) -> None:
        self.flash_encryption = flash_encryption
        self.path = path

    def ops(self) -> Mapping[str, HwOp]:
        return {"part_info": self._part_info}

    def _part_info(self, req: dict[str, Any]) -> Any:
        return part_info(flash_encryption=self.flash_encryption, path=self.path)
