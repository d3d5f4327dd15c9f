"""The virtual device's flash: its NVS partition, kept in ESP-IDF's NVS format in a file.

Two write models, switchable while the device runs (``write_through``):

* **commit** (default): writes are held per boot until ``commit``, and uncommitted writes are
  lost at a reset or power cut.  This is all MicroPython's ``esp32.NVS`` documentation
  promises ("changes are only guaranteed to be written to flash after ``commit``").
* **write-through**: every ``set``/``erase`` reaches the flash at once and ``commit`` has
  nothing left to do.  This is what ESP-IDF actually does (``nvs_set_*``/``nvs_erase_key``
  write the flash; ``nvs_commit`` is a no-op in the current implementation).

Either way a write reaches the flash through ESP-IDF's own write path (ESP-IDF v5.5, the
version MicroPython's esp32 port recommends; ``components/nvs_flash/src``), modelled below:
NVS is an append-only log of 32-byte entries on 4 KB pages.  A ``set`` writes the new item at
the active page's next free entry (entry, then its 2-bit state in the page's entry-state
bitmap, written a 32-bit word at a time) and only then marks the old copy erased; a full page is
marked FULL and the next free page becomes active; when only the spare page is left, the page
with the most erased entries is marked FREEING, its live entries are copied to a fresh page and
it is erased.  Blobs are chunks (version 0 or 1 chunk indices) plus a blob index entry;
namespace entries are never erased.  At power-up (:meth:`FlashNvs.power_up`, i.e.
``nvs_flash_init``) the recovery ESP-IDF does is applied: half-written entries, entries whose CRC
fails, incomplete strings/blobs, the older copy of an item left by a cut between "write new" and
"erase old", a reclaim cut short (a FREEING page), blob indexes without their chunks and orphan
chunks.

The image file is updated in place, one physical flash operation at a time (an entry or run of
entries, a bitmap word, a page-state word, a page header, a page erase), so a power cut can land
between any two of them: :meth:`FlashNvs.cut_after_flash_writes` arms a cut, and the flash
operation it hits raises :class:`PowerCut` (the write does not happen, or with ``torn=True`` an
entry write is left half done), as does every later one until the next power-up.  The file is
mode 0600 (it holds the WiFi password) and is created only when the device first writes or
powers up (:meth:`FlashNvs.create`).

With ``keys`` the partition is encrypted as ESP-IDF's NVS encryption does it (XTS-AES per
entry, tweak = the entry's address, keys derived from the chip's eFuse HMAC key;
safesignal/nvs/format.py); page headers and bitmaps are written raw.  At power-up, entries the chip
cannot decrypt (an image written by another chip) fail their CRC and are marked erased, as
``nvs_flash_init`` does; their bytes stay in the flash.

Firmware that is correct under the commit model is correct under both.
"""

from __future__ import annotations

import binascii
import logging
import os
import random
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safesignal.errors import UsageError
from safesignal.nvs.format import (
    _INT_TYPES,
    _T_BLOB,
    _T_BLOB_DATA,
    _T_BLOB_IDX,
    _T_SZ,
    BITMAP_OFFSET,
    CHUNK_ANY,
    ENTRIES_PER_PAGE,
    ENTRY_SIZE,
    FIRST_ENTRY_OFFSET,
    MAX_KEY_BYTES,
    PAGE_SIZE,
    STATE_ACTIVE,
    STATE_CORRUPT,
    STATE_EMPTY,
    STATE_FREEING,
    STATE_FULL,
    STATE_INVALID,
    VERSION_2,
    NvsFormatError,
    NvsKeys,
    _crc32,
    _entry_crc,
)
from safesignal.sim.parts import HwOp

log = logging.getLogger(__name__)

# The hardened board's partition table (firmware/boards/SAFESIGNAL_S3/partitions-safesignal.csv):
# nvs at 0x11000, 0x6000 bytes (MicroPython's own tables, ports/esp32/partitions-*.csv, put the
# same 0x6000 bytes at 0x9000; the table moved to make room for the secure-boot bootloader).
# Only esp32.Partition.info() shows the offset: NVS addresses (and XTS tweaks) are relative.
NVS_OFFSET = 0x11000
NVS_SIZE = 0x6000

# esp-idf components/nvs_flash/include/nvs.h (ESP_ERR_NVS_BASE 0x1100); MicroPython raises OSError(-code).
ESP_ERR_NVS_NOT_FOUND = 0x1102
ESP_ERR_NVS_TYPE_MISMATCH = 0x1103
ESP_ERR_NVS_NOT_ENOUGH_SPACE = 0x1105
ESP_ERR_NVS_INVALID_STATE = 0x110B
ESP_ERR_NVS_KEY_TOO_LONG = 0x1109
ESP_ERR_NVS_INVALID_LENGTH = 0x110C
ESP_ERR_NVS_VALUE_TOO_LONG = 0x110E
ESP_ERR_NVS_NEW_VERSION_FOUND = 0x1110

FILE_MODE = 0o600  # the image holds the WiFi password

# nvs_page.hpp / nvs_types.hpp (ESP-IDF v5.5)
_N = ENTRIES_PER_PAGE
_INVALID_ENTRY = 0xFFFFFFFF  # Page::INVALID_ENTRY
_CHUNK_MAX_SIZE = ENTRY_SIZE * (_N - 1)  # Page::CHUNK_MAX_SIZE = 4000
_NS_INDEX = 0  # Page::NS_INDEX: namespace entries live in namespace 0
_NS_ANY = 0xFF  # Page::NS_ANY
_T_ANY = 0xFF  # ItemType::ANY
_T_U8 = 0x01
_VER_0 = 0x00  # VerOffset::VER_0_OFFSET
_VER_1 = 0x80  # VerOffset::VER_1_OFFSET
_VER_ANY = 0xFF  # VerOffset::VER_ANY
_NVS_VERSION = VERSION_2  # Page::NVS_VERSION (0xFE); an older header version byte (lower) is newer
_ES_EMPTY, _ES_WRITTEN, _ES_ERASED, _ES_ILLEGAL = 0b11, 0b10, 0b00, 0b01  # nvs_page.hpp EntryState
_VARIABLE = (_T_SZ, _T_BLOB, _T_BLOB_DATA)  # nvs_types.hpp isVariableLengthType()


class NvsOpError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class PowerCut(BaseException):  # noqa: N818 - an event, not an error; BaseException: nothing may swallow it
    """The power went during a flash operation: that operation and every later one do not happen."""


class _PageFull(Exception):
    """ESP_ERR_NVS_PAGE_FULL (internal to the write path)."""


def check_flash_path(path: Path) -> None:
    """Raise UsageError unless ``path`` is an existing regular file or can be created."""
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise UsageError(f"--flash {path}: not a regular file")
        if not os.access(path, os.R_OK):
            raise UsageError(f"--flash {path}: not readable")
        parent = path.parent
    else:
        parent = path.parent
        if not parent.is_dir():
            raise UsageError(f"--flash {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        # a blank chip's file is made next to its final name and renamed
        raise UsageError(f"--flash {path}: directory {parent} is not writable")


# -- the chip: bytes, one physical operation at a time ------------------------------------------


class _Chip:
    """The NVS partition's flash.  NOR flash: a write can only clear bits (the new content is ANDed
    with the old); an erase sets a whole 4 KB sector to 0xFF.  Every operation reaches the file at
    once.  Entries are written through the (optionally encrypting) partition, headers and bitmaps
    raw (nvs_partition.cpp / nvs_encrypted_partition.cpp ``write`` vs ``write_raw``)."""

    def __init__(self, path: Path, size: int, keys: NvsKeys | None) -> None:
        self.path = path
        self.size = size
        self.keys = keys
        self.data = bytearray(b"\xff" * size)
        self.exists = False
        self.writes = 0  # physical write operations (entries, bitmap words, page states/headers)
        self.sector_erases = [0] * (size // PAGE_SIZE)  # erase cycles per sector
        self._budget: int | None = None  # operations left before the cut
        self._torn = False
        self._rng = random.Random(0)
        self.dead = False

    def load(self) -> None:
        try:
            image = self.path.read_bytes()
        except FileNotFoundError:
            self.exists = False
            self.data = bytearray(b"\xff" * self.size)
            return
        self.exists = True
        self.data = bytearray(image)
        self.size = len(image)
        if len(self.sector_erases) != self.size // PAGE_SIZE:
            self.sector_erases = [0] * (self.size // PAGE_SIZE)

    def arm(self, n: int, torn: bool, seed: int) -> None:
        self._budget = n if n > 0 else None
        self._torn = torn
        self._rng = random.Random(seed)

    def _gate(self) -> bool:
        """Count one operation; True if the power goes during it."""
        if self.dead:
            raise PowerCut("flash operation after a power cut")
        if self._budget is None:
            return False
        self._budget -= 1
        if self._budget > 0:
            return False
        self._budget = None
        self.dead = True
        return True

    def _create(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.unlink()  # a leftover could carry another owner or mode; O_EXCL below
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the umask
            os.write(fd, bytes(self.data))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        os.close(fd)
        os.replace(tmp, self.path)
        self.exists = True

    def create(self) -> None:
        if not self.exists:
            self._create()

    def _persist(self, addr: int, length: int) -> None:
        if not self.exists:
            self._create()
            return
        fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.pwrite(fd, bytes(self.data[addr : addr + length]), addr)
        finally:
            os.close(fd)

    def _program(self, addr: int, data: bytes, tearable: bool) -> None:
        cut = self._gate()
        if cut:
            if not (tearable and self._torn):
                raise PowerCut(f"power cut: write of {len(data)} bytes at {addr:#x} did not happen")
            # A torn write: only some of its words reached the flash (always the first one, the
            # word ESP-IDF's Page::mLoadEntryTable looks at; CRCs catch the rest).
            words = len(data) // 4
            data = data[: 4 * self._rng.randint(1, max(1, words - 1))]
        for i, b in enumerate(data):
            self.data[addr + i] &= b
        self._persist(addr, len(data))
        if cut:
            raise PowerCut(f"power cut: write at {addr:#x} torn after {len(data)} bytes")
        self.writes += 1

    def write_raw(self, addr: int, data: bytes) -> None:
        """A page header, page-state word or bitmap word: not encrypted; modelled as never torn
        (a cut either lands before it or after it)."""
        self._program(addr, data, tearable=False)

    def write_entries(self, addr: int, plain: bytes) -> None:
        """One or more 32-byte entries, encrypted each on its own with its address as tweak."""
        if self.keys is not None:
            plain = b"".join(
                self.keys.encrypt_entry(addr + o, plain[o : o + ENTRY_SIZE]) for o in range(0, len(plain), ENTRY_SIZE)
            )
        self._program(addr, plain, tearable=True)

    def read_entries(self, addr: int, count: int = 1) -> bytes:
        raw = bytes(self.data[addr : addr + count * ENTRY_SIZE])
        if self.keys is None:
            return raw
        return b"".join(
            self.keys.decrypt_entry(addr + o, raw[o : o + ENTRY_SIZE]) for o in range(0, len(raw), ENTRY_SIZE)
        )

    def erase_sector(self, index: int) -> None:
        if self._gate():
            raise PowerCut(f"power cut: erase of sector {index} did not happen")
        base = index * PAGE_SIZE
        self.data[base : base + PAGE_SIZE] = b"\xff" * PAGE_SIZE
        self._persist(base, PAGE_SIZE)
        self.sector_erases[index] += 1


# -- items (nvs_types.hpp Item) -------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    raw: bytes  # the 32-byte item header, plain

    @property
    def ns(self) -> int:
        return self.raw[0]

    @property
    def type(self) -> int:
        return self.raw[1]

    @property
    def span(self) -> int:
        return self.raw[2]

    @property
    def chunk(self) -> int:
        return self.raw[3]

    @property
    def key(self) -> bytes:
        k = self.raw[8:24]
        n = k.find(0)
        return k if n < 0 else k[:n]

    @property
    def data(self) -> bytes:
        return self.raw[24:32]

    @property
    def var_size(self) -> int:
        return int(struct.unpack_from("<H", self.raw, 24)[0])

    @property
    def var_crc(self) -> int:
        return int(struct.unpack_from("<I", self.raw, 28)[0])

    @property
    def blob_size(self) -> int:
        return int(struct.unpack_from("<I", self.raw, 24)[0])

    @property
    def blob_count(self) -> int:
        return self.raw[28]

    @property
    def blob_start(self) -> int:
        return self.raw[29]

    def consistent(self, index: int) -> bool:
        """nvs_types.cpp Item::checkHeaderConsistency."""
        if struct.unpack_from("<I", self.raw, 4)[0] != _entry_crc(self.raw):
            return False
        t = self.type
        if t in {code for code, _ in _INT_TYPES.values()}:
            return self.span == 1
        if t == _T_BLOB_IDX:
            return self.span == 1 and self.chunk == CHUNK_ANY and self.blob_size <= 127 * (_N - 1) * ENTRY_SIZE
        if t in _VARIABLE:
            if t == _T_BLOB_DATA and self.chunk == CHUNK_ANY:
                return False
            size = self.var_size
            if size > (_N - index - 1) * ENTRY_SIZE or self.span > _N - index:
                return False
            return self.span == (size + ENTRY_SIZE - 1) // ENTRY_SIZE + 1
        return False


def _make_item(ns: int, type_: int, span: int, key: bytes, chunk: int, data: bytes) -> bytes:
    """An item header as nvs_types.hpp Item(...) builds it (key NUL-padded, data 0xFF-filled) with its CRC."""
    raw = bytearray(b"\xff" * ENTRY_SIZE)
    raw[0:4] = bytes((ns, type_, span, chunk))
    raw[8:24] = key[:MAX_KEY_BYTES].ljust(16, b"\x00")
    raw[24 : 24 + len(data)] = data
    struct.pack_into("<I", raw, 4, _entry_crc(raw))
    return bytes(raw)


# -- a page (nvs_page.cpp) --------------------------------------------------------------------------


class _Page:
    def __init__(self, chip: _Chip, index: int) -> None:
        self.chip = chip
        self.index = index
        self.base = index * PAGE_SIZE
        self.state = STATE_INVALID
        self.seq = 0
        self.version = _NVS_VERSION
        self.es = [_ES_EMPTY] * _N
        self.next_free = _INVALID_ENTRY
        self.first_used = _INVALID_ENTRY
        self.used = 0
        self.erased = 0
        self.items: dict[int, _Item] = {}  # mHashList: the written item headers by entry index
        self.crc_erased = 0  # entries erased at load because their header was inconsistent

    def addr(self, n: int) -> int:
        return self.base + FIRST_ENTRY_OFFSET + n * ENTRY_SIZE

    def read_item(self, n: int) -> _Item:
        return _Item(self.chip.read_entries(self.addr(n)))

    @property
    def has_seq(self) -> bool:
        """Page::getSeqNumber succeeds."""
        return self.state not in (STATE_EMPTY, STATE_INVALID, STATE_CORRUPT)

    # Page::load
    def load(self) -> None:
        data = self.chip.data
        header = bytes(data[self.base : self.base + 32])
        state, seq, version = struct.unpack_from("<IIB", header, 0)
        self.state = STATE_INVALID
        if state == STATE_EMPTY:
            self.state = STATE_EMPTY
            if data[self.base : self.base + PAGE_SIZE] != b"\xff" * PAGE_SIZE:
                self.state = STATE_CORRUPT  # "page isn't as empty after all"
        elif struct.unpack_from("<I", header, 28)[0] == _crc32(header[4:28]):
            self.state, self.seq = state, seq
            if version < _NVS_VERSION:
                raise NvsOpError(ESP_ERR_NVS_NEW_VERSION_FOUND)
            self.version = version
        if self.state in (STATE_FULL, STATE_ACTIVE, STATE_FREEING):
            self._load_entry_table()
        elif self.state != STATE_EMPTY:
            self.state = STATE_CORRUPT  # a bad header CRC or an unknown state

    def _load_entry_table(self) -> None:
        """Page::mLoadEntryTable, with the writes it makes to the flash."""
        bitmap = self.chip.data[self.base + BITMAP_OFFSET : self.base + FIRST_ENTRY_OFFSET]
        self.es = [(bitmap[n // 4] >> ((n % 4) * 2)) & 0b11 for n in range(_N)]
        self.used = self.es.count(_ES_WRITTEN)
        self.erased = self.es.count(_ES_ERASED)
        self.first_used = next((n for n, s in enumerate(self.es) if s == _ES_WRITTEN), _INVALID_ENTRY)
        if self.state == STATE_ACTIVE:
            self.next_free = next((n for n, s in enumerate(self.es) if s == _ES_EMPTY), _INVALID_ENTRY)
            # entries written but not yet marked in the bitmap when the power went: first word not blank
            while self.next_free < _N:
                a = self.addr(self.next_free)
                if self.chip.data[a : a + 4] == b"\xff\xff\xff\xff":
                    break
                old = self.es[self.next_free]
                self.alter_entry_state(self.next_free, _ES_ERASED)
                self.next_free += 1
                if old == _ES_WRITTEN:
                    self.used -= 1
                self.erased += 1
            end = min(self.next_free, _N)
            last = _INVALID_ENTRY
            item: _Item | None = None
            i = 0
            while i < end:
                span = 1
                st = self.es[i]
                if st == _ES_ERASED:
                    last = _INVALID_ENTRY
                elif st == _ES_ILLEGAL:
                    last = _INVALID_ENTRY
                    self.erase_entry_and_span(i)
                else:
                    last = i
                    item = self.read_item(i)
                    if not item.consistent(i):
                        self.crc_erased += 1
                        self.erase_entry_and_span(i)
                    else:
                        self.items[i] = item
                        dup = self._hash_find(0, item.ns, item.key, item.chunk)
                        if item.type in _VARIABLE:
                            span = item.span
                            if any(self.es[j] != _ES_WRITTEN for j in range(i, i + span)):
                                last = _INVALID_ENTRY
                                self.erase_entry_and_span(i)
                                i += span
                                continue
                        if dup < i:
                            self.erase_entry_and_span(dup)  # an older copy on this page
                i += span
            if last != _INVALID_ENTRY and item is not None:
                # "check that last item is not duplicate" (note: for a blob chunk this finds the first
                # chunk of the key, whatever its version, as ESP-IDF's findItem does)
                found = self.find_item(item.ns, item.type, item.key)
                if found is not None and found[0] < last:
                    self.erase_entry_and_span(found[0])
        else:  # FULL or FREEING
            i = self.first_used
            while i < _N:
                if self.es[i] != _ES_WRITTEN:
                    i += 1
                    continue
                item = self.read_item(i)
                if not item.consistent(i):
                    self.crc_erased += 1
                    self.erase_entry_and_span(i)
                    i += 1
                    continue
                if item.span == 0:
                    break  # NVS_ASSERT_OR_RETURN(item.span > 0)
                self.items[i] = item
                span = item.span
                if item.type in _VARIABLE and any(self.es[j] != _ES_WRITTEN for j in range(i + 1, i + span)):
                    self.erase_entry_and_span(i)
                i += span

    def _hash_find(self, start: int, ns: int, key: bytes, chunk: int) -> int:
        """HashList::find: the first written item at or after ``start`` with this (ns, key, chunk)."""
        for n, it in self.items.items():
            if n >= start and it.ns == ns and it.key == key and it.chunk == chunk:
                return n
        return _INVALID_ENTRY

    # Page::initialize, alterEntryState, alterEntryRangeState, alterPageState, erase
    def initialize(self) -> None:
        header = bytearray(b"\xff" * 32)
        struct.pack_into("<IIB", header, 0, STATE_ACTIVE, self.seq, self.version)
        struct.pack_into("<I", header, 28, _crc32(bytes(header[4:28])))
        self.chip.write_raw(self.base, bytes(header))
        self.state = STATE_ACTIVE
        self.next_free = 0
        self.es = [_ES_EMPTY] * _N

    def _word(self, w: int) -> bytes:
        v = 0
        for k in range(16):
            v |= self.es[w * 16 + k] << (2 * k) if w * 16 + k < _N else 0b11 << (2 * k)
        return struct.pack("<I", v)

    def alter_entry_state(self, n: int, state: int) -> None:
        self.es[n] = state
        w = n // 16
        self.chip.write_raw(self.base + BITMAP_OFFSET + w * 4, self._word(w))

    def alter_entry_range_state(self, begin: int, end: int, state: int) -> None:
        # from the last entry back, one word write each time the word changes
        w = (end - 1) // 16
        for i in range(end - 1, begin - 1, -1):
            self.es[i] = state
            nxt = -1 if i == begin else (i - 1) // 16
            if nxt != w:
                self.chip.write_raw(self.base + BITMAP_OFFSET + w * 4, self._word(w))
            w = nxt

    def alter_page_state(self, state: int) -> None:
        self.chip.write_raw(self.base, struct.pack("<I", state))
        self.state = state

    def mark_full(self) -> None:
        self.alter_page_state(STATE_FULL)

    def mark_freeing(self) -> None:
        self.alter_page_state(STATE_FREEING)

    def erase(self) -> None:
        self.chip.erase_sector(self.index)
        self.used = self.erased = 0
        self.first_used = self.next_free = _INVALID_ENTRY
        self.state = STATE_EMPTY
        self.es = [_ES_EMPTY] * _N
        self.items = {}

    def var_tailroom(self) -> int:
        """Page::getVarDataTailroom."""
        if self.state == STATE_EMPTY:
            return _CHUNK_MAX_SIZE
        if self.state == STATE_FULL:
            return 0
        return (_N - self.next_free - 1) * ENTRY_SIZE if self.next_free < _N - 1 else 0

    # Page::writeEntry, writeEntryData, writeItem
    def _write_entry(self, raw: bytes) -> None:
        self.chip.write_entries(self.addr(self.next_free), raw)
        self.alter_entry_state(self.next_free, _ES_WRITTEN)
        if self.first_used == _INVALID_ENTRY:
            self.first_used = self.next_free
        self.used += 1
        self.next_free += 1

    def _write_entry_data(self, data: bytes) -> None:
        count = len(data) // ENTRY_SIZE
        self.chip.write_entries(self.addr(self.next_free), data)
        self.alter_entry_range_state(self.next_free, self.next_free + count, _ES_WRITTEN)
        self.used += count
        self.next_free += count

    def write_item(self, ns: int, type_: int, key: bytes, data: bytes, chunk: int = CHUNK_ANY) -> None:
        if self.state == STATE_INVALID:
            raise NvsOpError(ESP_ERR_NVS_INVALID_STATE)
        if self.state == STATE_EMPTY:
            self.initialize()
        if self.state == STATE_FULL:
            raise _PageFull()
        if len(data) > _CHUNK_MAX_SIZE:
            raise NvsOpError(ESP_ERR_NVS_VALUE_TOO_LONG)
        variable = type_ in _VARIABLE
        count = 1 + ((len(data) + ENTRY_SIZE - 1) // ENTRY_SIZE if variable else 0)
        if self.next_free == _INVALID_ENTRY or self.next_free + count > _N:
            raise _PageFull()
        at = self.next_free
        if not variable:
            raw = _make_item(ns, type_, 1, key, chunk, data)
            self.items[at] = _Item(raw)
            self._write_entry(raw)
            return
        raw = _make_item(ns, type_, count, key, chunk, struct.pack("<HHI", len(data), 0xFFFF, _crc32(data)))
        self.items[at] = _Item(raw)
        self._write_entry(raw)
        left = len(data) - len(data) % ENTRY_SIZE
        if left:
            self._write_entry_data(data[:left])
        if len(data) > left:
            self._write_entry(data[left:].ljust(ENTRY_SIZE, b"\xff"))

    def read_payload(self, n: int, item: _Item) -> bytes:
        """Page::readVariableLengthItemData (no check of the data CRC here: cmp/read do that)."""
        return self.chip.read_entries(self.addr(n + 1), item.span - 1)[: item.var_size]

    # Page::eraseEntryAndSpan (no purge: ESP-IDF v5.5 leaves the bytes of erased entries)
    def erase_entry_and_span(self, n: int) -> None:
        span = 1
        if self.es[n] == _ES_WRITTEN:
            item = self.read_item(n)
            self.items.pop(n, None)
            if not item.consistent(n):
                self.alter_entry_state(n, _ES_ERASED)
                self.used -= 1
                self.erased += 1
            else:
                span = item.span
                for i in range(n + span - 1, n - 1, -1):
                    if self.es[i] == _ES_WRITTEN:
                        self.used -= 1
                    self.erased += 1
                if span == 1:
                    self.alter_entry_state(n, _ES_ERASED)
                else:
                    self.alter_entry_range_state(n, n + span, _ES_ERASED)
        else:
            self.alter_entry_state(n, _ES_ERASED)
        if n == self.first_used:
            self.first_used = _INVALID_ENTRY
            for i in range(n + span, min(self.next_free, _N)):
                if self.es[i] == _ES_WRITTEN:
                    self.first_used = i
                    break
        if self.next_free != _INVALID_ENTRY and n + span > self.next_free:
            self.next_free = n + span

    # Page::copyItems: entry by entry, each followed by its bitmap word
    def copy_items(self, other: _Page) -> None:
        if self.first_used == _INVALID_ENTRY:
            return
        if other.state == STATE_EMPTY:
            other.initialize()
        i = self.first_used
        while i < _N:
            if self.es[i] != _ES_WRITTEN:
                i += 1
                continue
            raw = self.chip.read_entries(self.addr(i))
            item = _Item(raw)
            other.items[other.next_free] = item
            other._write_entry(raw)
            end = i + max(item.span, 1)
            for j in range(i + 1, end):
                other._write_entry(self.chip.read_entries(self.addr(j)))
            i = end

    # Page::findItem
    def find_item(
        self,
        ns: int,
        type_: int,
        key: bytes | None,
        start: int = 0,
        chunk: int = CHUNK_ANY,
        chunk_start: int = _VER_ANY,
    ) -> tuple[int, _Item] | None:
        if self.state in (STATE_CORRUPT, STATE_INVALID, STATE_EMPTY) or start >= _N:
            return None
        begin = self.first_used
        if self.first_used < start < _N:
            begin = start
        if ns != _NS_ANY and key is not None and (type_ != _T_BLOB_DATA or chunk != CHUNK_ANY):
            begin = self._hash_find(begin, ns, key, chunk)  # the hash list: (ns, key, chunk index)
            if begin >= _N:
                return None
        end = min(self.next_free, _N)
        for n, it in list(self.items.items()):
            if n < begin or n >= end:
                continue
            if ns != _NS_ANY and it.ns != ns:
                continue
            if key is not None and it.key != key:
                continue
            if type_ == _T_BLOB_DATA:
                if chunk != CHUNK_ANY and it.chunk != chunk:
                    continue
                if chunk == CHUNK_ANY and it.type != _T_BLOB_DATA:
                    continue
            if type_ == _T_BLOB and chunk == CHUNK_ANY:
                if it.type == _T_BLOB_IDX:
                    return None  # ESP_ERR_NVS_TYPE_MISMATCH
                if it.type == _T_BLOB_DATA:
                    continue
            if type_ == _T_BLOB_IDX:
                if it.chunk != CHUNK_ANY:
                    continue
                if chunk_start != _VER_ANY and it.blob_start != chunk_start:
                    continue
            if type_ != _T_ANY and it.type != type_:
                if key is None and ns == _NS_ANY and chunk == CHUNK_ANY:
                    continue
                return None  # ESP_ERR_NVS_TYPE_MISMATCH
            return n, it
        return None

    def erase_item(self, ns: int, type_: int, key: bytes, chunk: int = CHUNK_ANY, chunk_start: int = _VER_ANY) -> bool:
        found = self.find_item(ns, type_, key, chunk=chunk, chunk_start=chunk_start)
        if found is None:
            return False
        self.erase_entry_and_span(found[0])
        return True


# -- the page manager (nvs_pagemanager.cpp) --------------------------------------------------------


class _PageManager:
    def __init__(self, chip: _Chip) -> None:
        self.chip = chip
        self.pages = [_Page(chip, i) for i in range(chip.size // PAGE_SIZE)]
        self.used: list[_Page] = []  # mPageList, in sequence-number order
        self.free: list[_Page] = []  # mFreePageList
        self.seq = 0

    def load(self) -> None:
        """PageManager::load, including its power-loss recovery."""
        for p in self.pages:
            p.load()
            if not p.has_seq:
                self.free.append(p)
            else:
                pos = next((k for k, q in enumerate(self.used) if q.seq > p.seq), len(self.used))
                self.used.insert(pos, p)
        if not self.used:
            self.seq = 0
            self.activate_page()
            return
        self.seq = self.used[-1].seq + 1
        # a cut after a new item was written but before the old one was erased: a duplicate
        last_page = self.used[-1]
        last: _Item | None = None
        for _, it in last_page.items.items():
            last = it
        if last is not None:
            erased = False
            for p in self.used[:-1]:
                if p.state != STATE_FREEING and p.erase_item(last.ns, last.type, last.key, chunk=last.chunk):
                    erased = True
                    break
            if not erased and last.type == _T_BLOB_IDX:
                for p in self.used[:-1]:  # an old-format blob (type BLOB) replaced by a blob index
                    if p.state != STATE_FREEING and p.erase_item(last.ns, _T_BLOB, last.key, chunk=last.chunk):
                        break
        # a cut while a page was being freed: redo the copy into a fresh page
        for p in list(self.used):
            if p.state == STATE_FREEING:
                newest = self.used[-1]
                if newest.state == STATE_ACTIVE:
                    newest.erase()
                    self.used.remove(newest)
                    self.free.append(newest)
                self.activate_page()
                p.copy_items(self.used[-1])
                p.erase()
                self.used.remove(p)
                self.free.append(p)
                break
        if not self.free:
            raise NvsOpError(0x110D)  # ESP_ERR_NVS_NO_FREE_PAGES

    def activate_page(self) -> None:
        if not self.free:
            raise NvsOpError(ESP_ERR_NVS_NOT_ENOUGH_SPACE)
        p = self.free[0]
        if p.state == STATE_CORRUPT:
            p.erase()
        self.free.pop(0)
        self.used.append(p)
        p.seq = self.seq
        self.seq += 1

    def request_new_page(self) -> None:
        """PageManager::requestNewPage (v5.5 order: activate, mark FREEING, copy, erase)."""
        if not self.free:
            raise NvsOpError(ESP_ERR_NVS_INVALID_STATE)
        if len(self.free) >= 2:
            self.activate_page()
            return
        victim: _Page | None = None
        most = 0
        for p in self.used:
            unused = _N - p.used
            if unused > most:
                victim, most = p, unused
        if victim is None:
            raise NvsOpError(ESP_ERR_NVS_NOT_ENOUGH_SPACE)
        self.activate_page()
        new = self.used[-1]
        victim.mark_freeing()
        victim.copy_items(new)
        victim.erase()
        self.used.remove(victim)
        self.free.append(victim)

    @property
    def current(self) -> _Page:
        return self.used[-1]


# -- the storage (nvs_storage.cpp) ------------------------------------------------------------------


@dataclass
class _BlobIndexNode:
    ns: int
    key: bytes
    start: int
    count: int
    size: int
    seen_size: int = 0
    seen_count: int = 0


class _Storage:
    def __init__(self, chip: _Chip) -> None:
        self.chip = chip
        self.pm = _PageManager(chip)
        self.namespaces: dict[str, int] = {}

    def _items(self, type_: int) -> Iterator[tuple[_Page, int, _Item]]:
        """Every item of one type, page by page (Page::findItem(NS_ANY, type, nullptr, ...) in a loop)."""
        for p in list(self.pm.used):
            if p.state in (STATE_CORRUPT, STATE_INVALID, STATE_EMPTY):
                continue
            for n, it in list(p.items.items()):
                if it.type == type_ and n in p.items:
                    yield p, n, it

    def init(self) -> None:
        """Storage::init: load the pages, the namespaces, then clean up the blobs."""
        self.pm.load()
        self.namespaces = {}
        for _, _, it in self._items(_T_U8):
            if it.ns == _NS_INDEX:
                self.namespaces[it.key.decode("utf-8", "replace")] = it.data[0]
        nodes = [
            _BlobIndexNode(it.ns, it.key, it.blob_start, it.blob_count, it.blob_size)
            for _, _, it in self._items(_T_BLOB_IDX)
        ]
        # eraseMismatchedBlobIndexes
        for _, _, it in self._items(_T_BLOB_DATA):
            for node in nodes:
                top = _VER_1 if node.start == _VER_0 else _VER_ANY
                if node.key == it.key and node.ns == it.ns and node.start <= it.chunk < top:
                    node.seen_size += it.var_size
                    node.seen_count += 1
                    break
        for node in list(nodes):
            if node.seen_size != node.size or node.seen_count != node.count:
                for p in self.pm.used:
                    if p.state in (STATE_CORRUPT, STATE_INVALID, STATE_EMPTY):
                        continue
                    if p.erase_item(node.ns, _T_BLOB_IDX, node.key, chunk=CHUNK_ANY, chunk_start=node.start):
                        break
                nodes.remove(node)
        # eraseOrphanDataBlobs
        for p, _, it in self._items(_T_BLOB_DATA):
            if not any(
                n.key == it.key and n.ns == it.ns and n.start <= it.chunk < n.start + n.count for n in nodes
            ):
                p.erase_item(it.ns, _T_BLOB_DATA, it.key, chunk=it.chunk)

    def find_item(
        self, ns: int, type_: int, key: bytes, chunk: int = CHUNK_ANY, chunk_start: int = _VER_ANY
    ) -> tuple[_Page, int, _Item] | None:
        for p in self.pm.used:
            found = p.find_item(ns, type_, key, chunk=chunk, chunk_start=chunk_start)
            if found is not None:
                return p, found[0], found[1]
        return None

    def open_namespace(self, name: str) -> int:
        """Storage::createOrOpenNamespace(name, canCreate=true): nvs_open(NVS_READWRITE)."""
        if name in self.namespaces:
            return self.namespaces[name]
        used = set(self.namespaces.values()) | {0, 255}
        ns = next((i for i in range(1, 255) if i not in used), 255)
        if ns == 255:
            raise NvsOpError(ESP_ERR_NVS_NOT_ENOUGH_SPACE)
        self.write_item(_NS_INDEX, _T_U8, name.encode(), bytes([ns]))
        self.namespaces[name] = ns
        return ns

    def _cmp_item(self, page: _Page, n: int, item: _Item, data: bytes) -> bool:
        if item.type in _VARIABLE:
            return item.var_size == len(data) and page.read_payload(n, item) == data
        return item.data[: len(data)] == data

    def _cmp_blob(self, ns: int, key: bytes, data: bytes) -> bool:
        """Storage::cmpMultiPageBlob: True if the stored blob equals ``data``."""
        found = self.find_item(ns, _T_BLOB_IDX, key)
        if found is None or found[2].blob_size != len(data):
            return False
        idx = found[2]
        offset = 0
        for c in range(idx.blob_count):
            chunk = self.find_item(ns, _T_BLOB_DATA, key, chunk=idx.blob_start + c)
            if chunk is None:
                break
            p, n, it = chunk
            if it.var_size > len(data) - offset or p.read_payload(n, it) != data[offset : offset + it.var_size]:
                return False
            offset += it.var_size
        return offset == len(data)

    def write_item(self, ns: int, type_: int, key: bytes, data: bytes) -> None:
        """Storage::writeItem: write the new item(s), then erase the old one."""
        matched = False
        if type_ == _T_BLOB:
            found = self.find_item(ns, _T_BLOB_IDX, key)
        else:
            found = self.find_item(ns, type_, key)
        if found is not None:
            matched = True
        else:
            found = self.find_item(ns, _T_ANY, key)
        seq = found[0].seq if found is not None else -1
        if type_ == _T_BLOB:
            start = _VER_0
            if matched and found is not None:
                if self._cmp_blob(ns, key, data):
                    return  # the same value: nothing is written
                start = _VER_0 if found[2].blob_start == _VER_1 else _VER_1  # toggle the version
            self._write_multi_page_blob(ns, key, data, start)
        else:
            if matched and found is not None and self._cmp_item(found[0], found[1], found[2], data):
                return
            page = self.pm.current
            try:
                page.write_item(ns, type_, key, data)
            except _PageFull:
                if page.state != STATE_FULL:
                    page.mark_full()
                self.pm.request_new_page()
                try:
                    self.pm.current.write_item(ns, type_, key, data)
                except _PageFull:
                    raise NvsOpError(ESP_ERR_NVS_NOT_ENOUGH_SPACE) from None
        if found is None:
            return
        old_page, old_n, old = found
        if old.type == _T_BLOB_IDX:
            self._erase_multi_page_blob(ns, key, old.blob_start)
            return
        if old_page.state not in (STATE_ACTIVE, STATE_FULL) or old_page.seq != seq:
            again = self.find_item(ns, old.type, key)  # the page was reclaimed meanwhile
            if again is None:
                raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
            old_page, old_n, _ = again
        old_page.erase_entry_and_span(old_n)

    def _write_multi_page_blob(self, ns: int, key: bytes, data: bytes, start: int) -> None:
        """Storage::writeMultiPageBlob: chunks filling each page's tailroom, then the blob index."""
        max_pages = min(len(self.pm.pages) - 1, (CHUNK_ANY - 1) // 2)
        if len(data) > max_pages * _CHUNK_MAX_SIZE:
            raise NvsOpError(ESP_ERR_NVS_VALUE_TOO_LONG)
        count = 0
        remaining = len(data)
        offset = 0
        try:
            while True:
                page = self.pm.current
                tailroom = page.var_tailroom()
                if (
                    count == 0
                    and (tailroom < len(data) or (tailroom == 0 and not data))
                    and tailroom < _CHUNK_MAX_SIZE // 10
                ):
                    # the first chunk would be small: start the blob on a new page
                    if page.state != STATE_FULL:
                        page.mark_full()
                    self.pm.request_new_page()
                    if self.pm.current.var_tailroom() == tailroom:
                        raise NvsOpError(ESP_ERR_NVS_NOT_ENOUGH_SPACE)
                    continue
                if not tailroom:
                    raise NvsOpError(ESP_ERR_NVS_NOT_ENOUGH_SPACE)
                size = min(remaining, tailroom)
                remaining -= size
                page.write_item(ns, _T_BLOB_DATA, key, data[offset : offset + size], start + count)
                count += 1
                if remaining or tailroom - size < ENTRY_SIZE:
                    if page.state != STATE_FULL:
                        page.mark_full()
                    self.pm.request_new_page()
                offset += size
                if not remaining:
                    index = struct.pack("<IBBH", len(data), count, start, 0xFFFF)
                    self.pm.current.write_item(ns, _T_BLOB_IDX, key, index)
                    return
        except (NvsOpError, _PageFull):
            # erase the chunks written so far
            for c in range(start, start + count):
                found = self.find_item(ns, _T_BLOB_DATA, key, chunk=c)
                if found is not None:
                    found[0].erase_entry_and_span(found[1])
            raise

    def _erase_multi_page_blob(self, ns: int, key: bytes, start: int) -> None:
        """Storage::eraseMultiPageBlob for one version: the index first, then its chunks."""
        found = self.find_item(ns, _T_BLOB_IDX, key, chunk_start=start)
        if found is None:
            raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
        page, n, idx = found
        page.erase_entry_and_span(n)
        for c in range(idx.blob_start, idx.blob_start + idx.blob_count):
            chunk = self.find_item(ns, _T_BLOB_DATA, key, chunk=c)
            if chunk is None:
                raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
            chunk[0].erase_entry_and_span(chunk[1])

    def erase_item(self, ns: int, key: bytes) -> None:
        """Storage::eraseItem(ns, ANY, key): nvs_erase_key."""
        found = self.find_item(ns, _T_ANY, key)
        if found is None:
            raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
        page, n, it = found
        if it.type == _T_BLOB_IDX:
            self._erase_multi_page_blob(ns, key, it.blob_start)
        else:
            page.erase_entry_and_span(n)

    def read(self, ns: int, type_: int, key: bytes) -> bytes:
        """Storage::readItem; blobs through readMultiPageBlob (then a legacy BLOB)."""
        if type_ == _T_BLOB:
            found = self.find_item(ns, _T_BLOB_IDX, key)
            if found is not None:
                idx = found[2]
                parts = []
                for c in range(idx.blob_count):
                    chunk = self.find_item(ns, _T_BLOB_DATA, key, chunk=idx.blob_start + c)
                    if chunk is None:
                        break
                    parts.append(chunk[0].read_payload(chunk[1], chunk[2]))
                value = b"".join(parts)
                if len(value) != idx.blob_size:
                    self._erase_multi_page_blob(ns, key, idx.blob_start)  # readMultiPageBlob's clean-up
                    raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
                return value
        found = self.find_item(ns, type_, key)
        if found is None:
            raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
        page, n, it = found
        if it.type in _VARIABLE:
            value = page.read_payload(n, it)
            if _crc32(value) != it.var_crc:
                page.erase_entry_and_span(n)  # Page::readItem: a bad data CRC erases the item
                raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
            return value
        return it.data


_TYPE_CODES = {name: code for name, (code, _) in _INT_TYPES.items()} | {"string": _T_SZ, "blob": _T_BLOB}
_MISSING = object()


@dataclass(frozen=True)
class _Change:
    type: str
    value: int | bytes


class FlashNvs:
    """The NVS partition.  The constructor reads an existing image (or starts blank) but
    creates no file; the file appears when the device first writes or :meth:`create` is called."""

    def __init__(self, path: Path, size: int = NVS_SIZE, *, write_through: bool = False,
                 keys: NvsKeys | None = None) -> None:
        self.path = path
        self.size = size
        self.write_through = write_through
        self.keys = keys
        self.unreadable = 0  # entries found at power-ups that this chip could not read (CRC fails)
        self.pending: dict[tuple[str, str], _Change | None] = {}
        self._opened: list[str] = []
        self.chip = _Chip(path, size, keys)
        self.storage = _Storage(self.chip)
        self.power_up()

    # --- power ------------------------------------------------------------------------------
    def power_up(self) -> None:
        """nvs_flash_init: read the flash (file) and apply ESP-IDF's power-up recovery.
        Uncommitted writes are gone."""
        self.pending = {}
        try:
            self.chip.load()
        except OSError as err:
            raise UsageError(f"--flash {self.path}: {err.strerror or err}") from None
        if not self.chip.data or len(self.chip.data) % PAGE_SIZE:
            raise UsageError(f"--flash {self.path}: not an NVS partition image: size {len(self.chip.data)} "
                             f"is not a non-zero multiple of {PAGE_SIZE}")
        self.size = self.chip.size
        self.chip.dead = False
        self.storage = _Storage(self.chip)
        try:
            self.storage.init()
        except NvsOpError as err:
            raise UsageError(f"--flash {self.path}: nvs_flash_init fails ({err.code:#x})") from None
        unreadable = sum(p.crc_erased for p in self.storage.pm.pages) if self.keys is not None else 0
        if unreadable:
            self.unreadable += unreadable  # over all power-ups of this FlashNvs
            log.warning("flash %s: %d entries cannot be read with this chip's key: marked erased",
                        self.path, unreadable)

    def cut_after_flash_writes(self, n: int, *, torn: bool = False, seed: int = 0) -> None:
        """Arm a power cut: the ``n``-th physical flash operation from now (entry write, bitmap
        word, page state/header, sector erase) does not happen (``torn``: an entry write is left
        partly done) and raises :class:`PowerCut`, as does every later one until
        :meth:`power_up`.  ``n <= 0`` disarms."""
        self.chip.arm(n, torn, seed)

    @property
    def flash_writes(self) -> int:
        return self.chip.writes

    @property
    def sector_erases(self) -> list[int]:
        return list(self.chip.sector_erases)

    def create(self) -> None:
        """Write the blank image if there is no file yet (a fresh chip's erased flash)."""
        self.chip.create()

    @property
    def namespaces(self) -> list[str]:
        """Namespaces in the flash (index order), then those opened but not yet written."""
        stored = sorted(self.storage.namespaces, key=lambda n: self.storage.namespaces[n])
        return stored + [n for n in self._opened if n not in self.storage.namespaces]

    # --- the esp32.NVS operations ------------------------------------------------------
    def open(self, ns: str) -> None:
        """The name check of nvs_open; the namespace's entry is written by :meth:`open_rw`
        (the device) or with the namespace's first item (library use)."""
        if not ns or len(ns.encode()) > MAX_KEY_BYTES:
            raise NvsOpError(ESP_ERR_NVS_KEY_TOO_LONG)
        if ns not in self._opened:
            self._opened.append(ns)

    def open_rw(self, ns: str) -> None:
        """nvs_open(ns, NVS_READWRITE), what MicroPython's esp32.NVS(ns) does: a new namespace's
        entry is written at once, whatever the write model (Storage::createOrOpenNamespace), so a
        blank chip's flash changes at the firmware's first boot."""
        self.open(ns)
        self.storage.open_namespace(ns)

    def _lookup(self, ns: str, key: str, type_: str) -> int | bytes:
        v = self.pending.get((ns, key), _MISSING)
        if v is not _MISSING:
            if isinstance(v, _Change) and v.type == type_:
                return v.value
            raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
        index = self.storage.namespaces.get(ns)
        if index is None:
            raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
        raw = self.storage.read(index, _TYPE_CODES[type_], key.encode())
        if type_ in _INT_TYPES:
            return int(struct.unpack_from(_INT_TYPES[type_][1], raw)[0])
        if type_ == "string" and raw.endswith(b"\x00"):
            return raw[:-1]
        return raw

    def get(self, ns: str, key: str, type_: str) -> int | bytes:
        if type_ not in _TYPE_CODES:
            raise NvsOpError(ESP_ERR_NVS_TYPE_MISMATCH)
        return self._lookup(ns, key, type_)  # nvs_get_* looks up by key and type

    def set(self, ns: str, key: str, type_: str, value: int | bytes) -> None:
        if not key or len(key.encode()) > MAX_KEY_BYTES:
            raise NvsOpError(ESP_ERR_NVS_KEY_TOO_LONG)
        if type_ not in _TYPE_CODES:
            raise NvsOpError(ESP_ERR_NVS_TYPE_MISMATCH)
        self.open(ns)
        self._change(ns, key, _Change(type_, value))

    def erase(self, ns: str, key: str) -> None:
        v = self.pending.get((ns, key), _MISSING)
        if v is None or (v is _MISSING and not self._stored(ns, key)):
            raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
        self._change(ns, key, None)

    def _stored(self, ns: str, key: str) -> bool:
        index = self.storage.namespaces.get(ns)
        return index is not None and self.storage.find_item(index, _T_ANY, key.encode()) is not None

    def commit(self) -> None:
        """Write what is pending.  In write-through mode nothing is pending (except writes
        held before a switch from commit mode), so this is normally a no-op."""
        while self.pending:
            (ns, key), change = next(iter(self.pending.items()))
            self._apply(ns, key, change)
            del self.pending[(ns, key)]

    def set_write_through(self, on: bool) -> None:
        """Switch the write model.  Writes still pending from commit mode stay pending until
        the next commit (or are lost at a reset), whatever the new mode."""
        self.write_through = on

    def drop_pending(self) -> None:
        """A reset or power cut: what was not committed is gone, and the chip powers up again."""
        self.power_up()

    def read_raw(self, offset: int, length: int) -> bytes:
        """Raw partition bytes, as esp32.Partition.readblocks sees them (ciphertext when encrypted)."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise NvsOpError(0x102)  # ESP_ERR_INVALID_ARG (esp_err.h)
        return bytes(self.chip.data[offset : offset + length])

    # --- the hardware channel (parts.py): the esp32 stub's NVS and Partition("nvs") -------
    # The supervisor keeps what crosses parts: power_cut_after counts these ops' writes
    # (supervisor._MUTATING) and nvs_latency delays their replies; a PowerCut raised here by
    # cut_after_flash_writes is turned into a killed device there.
    def ops(self) -> Mapping[str, HwOp]:
        return {"nvs_open": self._hw_open, "nvs_get": self._hw_get, "nvs_set": self._hw_set,
                "nvs_erase": self._hw_erase, "nvs_commit": self._hw_commit, "part_read": self._hw_part_read}

    def _hw_open(self, req: dict[str, Any]) -> Any:
        self.open_rw(req["ns"])
        return None

    def _hw_get(self, req: dict[str, Any]) -> Any:
        v = self.get(req["ns"], req["key"], req["type"])
        if req["type"] == "blob":
            assert isinstance(v, bytes)
            if len(v) > int(req["size"]):
                raise NvsOpError(0x110C)  # ESP_ERR_NVS_INVALID_LENGTH
            return v.hex()
        return v

    def _hw_set(self, req: dict[str, Any]) -> Any:
        value = binascii.unhexlify(req["value"]) if req["type"] == "blob" else int(req["value"])
        self.set(req["ns"], req["key"], req["type"], value)
        return None

    def _hw_erase(self, req: dict[str, Any]) -> Any:
        self.erase(req["ns"], req["key"])
        return None

    def _hw_commit(self, req: dict[str, Any]) -> Any:
        self.commit()
        return None

    def _hw_part_read(self, req: dict[str, Any]) -> Any:
        # esp32.Partition("nvs").readblocks: raw bytes, ciphertext if encrypted
        return self.read_raw(int(req["offset"]), int(req["length"])).hex()

    # --- the write path -------------------------------------------------------------------
    def _change(self, ns: str, key: str, change: _Change | None) -> None:
        if not self.write_through:
            self.pending.pop((ns, key), None)  # a rewritten key goes last, as it was written last
            self.pending[(ns, key)] = change
            return
        # On top of the flash's content; older writes still held from commit mode stay held.
        self._apply(ns, key, change)
        self.pending.pop((ns, key), None)

    def _apply(self, ns: str, key: str, change: _Change | None) -> None:
        index = self.storage.open_namespace(ns)
        k = key.encode()
        if change is None:
            self.storage.erase_item(index, k)
            return
        if change.type in _INT_TYPES:
            assert isinstance(change.value, int)
            data = struct.pack(_INT_TYPES[change.type][1], change.value)
        else:
            assert isinstance(change.value, bytes)
            data = change.value + b"\x00" if change.type == "string" else change.value
            if change.type == "string" and len(data) > _CHUNK_MAX_SIZE:
                raise NvsOpError(ESP_ERR_NVS_VALUE_TOO_LONG)
        try:
            self.storage.write_item(index, _TYPE_CODES[change.type], k, data)
        except NvsFormatError:
            raise NvsOpError(ESP_ERR_NVS_VALUE_TOO_LONG) from None
