"""The ESP partition table of a whole-flash dump, and the NVS partition in it.

Format of esp-idf ``components/partition_table/gen_esp32part.py``: 32-byte entries ``<2sBBLL16sL``
starting with the bytes AA 50, at 0x8000 by default, then optionally an MD5 entry (EB EB, 14 x FF,
the MD5 of the entries before it), then 0xFF.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from safesignal.errors import UsageError
from safesignal.nvs.format import PAGE_SIZE

PARTITION_TABLE_OFFSET = 0x8000  # Kconfig PARTITION_TABLE_OFFSET default
_PT_MAX_LENGTH = 0xC00  # MAX_PARTITION_LENGTH
_PT_ENTRY = struct.Struct("<2sBBLL16sL")  # PartitionDefinition.STRUCT_FORMAT
_PT_MAGIC = b"\xaa\x50"  # PartitionDefinition.MAGIC_BYTES
_PT_MD5_MAGIC = b"\xeb\xeb"  # MD5_PARTITION_BEGIN[:2]; then 14 x 0xFF and the MD5 of the entries before
_PT_DATA = 0x01  # DATA_TYPE
_PT_SUBTYPE_NVS = 0x02  # SUBTYPES[DATA_TYPE]['nvs']
_PT_SUBTYPE_NVS_KEYS = 0x04  # SUBTYPES[DATA_TYPE]['nvs_keys']
_PT_FLAG_ENCRYPTED = 0x01  # PartitionDefinition.FLAGS['encrypted'] = bit 0


@dataclass(frozen=True)
class FlashPartition:
    """One row of an ESP partition table."""

    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & _PT_FLAG_ENCRYPTED)

    @property
    def is_nvs(self) -> bool:
        return (self.type, self.subtype) == (_PT_DATA, _PT_SUBTYPE_NVS)

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "type": self.type,
            "subtype": self.subtype,
            "offset": self.offset,
            "size": self.size,
            "encrypted_flag": self.encrypted,
        }


@dataclass(frozen=True)
class PartitionTable:
    offset: int
    partitions: list[FlashPartition]
    md5: str  # "ok", "bad" or "absent"


def read_partition_table(data: bytes, offset: int) -> PartitionTable | None:
    """The partition table at ``offset`` of a flash dump, or None if there is none."""
    if data[offset : offset + 2] != _PT_MAGIC:
        return None
    partitions: list[FlashPartition] = []
    md5 = hashlib.md5(usedforsecurity=False)
    md5_state = "absent"
    end = min(offset + _PT_MAX_LENGTH, len(data))
    for pos in range(offset, end - _PT_ENTRY.size + 1, _PT_ENTRY.size):
        raw = data[pos : pos + _PT_ENTRY.size]
        if raw == b"\xff" * _PT_ENTRY.size:
            break  # end marker
        if raw[:2] == _PT_MD5_MAGIC:
            md5_state = "ok" if raw[16:] == md5.digest() else "bad"
            continue
        magic, ptype, subtype, poff, psize, name, flags = _PT_ENTRY.unpack(raw)
        if magic != _PT_MAGIC:
            md5_state = "bad"  # damaged table: keep what was read
            break
        md5.update(raw)
        label = name.split(b"\x00", 1)[0].decode("utf-8", "replace")
        partitions.append(FlashPartition(label, ptype, subtype, poff, psize, flags))
    return PartitionTable(offset, partitions, md5_state)


def find_partition_table(data: bytes) -> PartitionTable | None:
    """The partition table of a flash dump: at 0x8000, else at the first 4 KiB boundary holding one.

    An NVS page never starts with AA 50 (its first word is a page state), so an NVS image alone is
    not taken for a flash dump; away from 0x8000 a table must also have a valid MD5 entry or an NVS
    partition inside the file, so that a damaged NVS page is not taken for one either.
    """
    offsets = [PARTITION_TABLE_OFFSET] + [o for o in range(0, len(data), PAGE_SIZE) if o != PARTITION_TABLE_OFFSET]
    for offset in offsets:
        table = read_partition_table(data, offset)
        if table is None or not table.partitions:
            continue
        if offset == PARTITION_TABLE_OFFSET or table.md5 == "ok" or any(
            p.is_nvs and p.offset + p.size <= len(data) for p in table.partitions
        ):
            return table
    return None


def locate(data: bytes, label: str) -> tuple[bytes, dict[str, Any]]:
    """The NVS partition in ``data`` (a partition image or a whole-flash dump) and where it was.

    Raises :class:`UsageError` when the dump has a partition table but no usable partition ``label``.
    """
    table = find_partition_table(data)
    if table is None:
        return data, {"partition": None, "partition_table": None}
    source: dict[str, Any] = {
        "partition_table": {
            "offset": table.offset,
            "md5": table.md5,
            "partitions": [p.as_json() for p in table.partitions],
        }
    }
    matches = [p for p in table.partitions if p.label == label]
    if not matches:
        nvs = [p.label for p in table.partitions if p.is_nvs]
        hint = f"; NVS partitions: {', '.join(map(repr, nvs))}" if nvs else "; it has no NVS partition"
        raise UsageError(f"the flash dump's partition table (at {table.offset:#x}) has no partition {label!r}{hint}")
    part = matches[0]
    if not part.is_nvs:
        kind = "an nvs_keys partition" if part.subtype == _PT_SUBTYPE_NVS_KEYS else "not an NVS data partition"
        raise UsageError(f"partition {label!r} (type {part.type:#x}, subtype {part.subtype:#x}) is {kind}")
    if part.offset + part.size > len(data):
        raise UsageError(
            f"partition {label!r} spans {part.offset:#x}..{part.offset + part.size:#x} but the dump ends at "
            f"{len(data):#x}"
        )
    source["partition"] = part.as_json()
    return data[part.offset : part.offset + part.size], source
