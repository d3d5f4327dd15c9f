"""Reader and writer for ESP-IDF NVS partition images (``components/nvs_flash``), plain or encrypted.

The virtual ESP32 keeps its NVS partition in a flash-image file, and ``safesignal nvs dump``
reads images pulled off real devices, so both directions live here.

Format (page format version 2, as written by ESP-IDF >= 4.0 and by Espressif's
``esp_idf_nvs_partition_gen/nvs_partition_gen.py``):

* The partition is a sequence of 4096-byte pages.  Each page starts with a 32-byte header
  ``State(4) Seq(4) Version(1) Reserved(19) CRC32(4)`` (CRC over bytes 4..27), then a 32-byte
  entry-state bitmap (2 bits per entry: ``11`` empty, ``10`` written, ``00`` erased), then 126
  entries of 32 bytes.
* An entry is ``NS(1) Type(1) Span(1) ChunkIndex(1) CRC32(4) Key(16) Data(8)``; its CRC covers
  the entry without the CRC field.  Strings, legacy blobs and blob chunks keep ``Size(2) Rsv(2)
  CRC32(4)`` in Data and the payload in the next ``Span - 1`` entries.  A blob index keeps
  ``Size(4) ChunkCount(1) ChunkStart(1) Rsv(2)``.
* Every CRC is ``zlib.crc32(data, 0xFFFFFFFF)`` (ESP-IDF: ``esp_rom_crc32_le(0xffffffff, ...)``).
* Namespaces are ``u8`` entries in namespace 0 whose key is the namespace name and whose value
  is the namespace index used by the entries of that namespace.

Encryption (ESP-IDF "NVS encryption", ``nvs_flash/src/nvs_encrypted_partition.cpp``): every
*written* 32-byte entry - item headers and the data entries of strings and blobs alike, the
unused tail of a last data entry padded with 0xFF before encryption - is encrypted on its own with
XTS-AES-256 (key = ``ekey + tkey``), the data unit being the entry and the tweak the entry's byte
address relative to the partition start, as a 16-byte little-endian number.  Page headers and
entry-state bitmaps are read and written raw; empty entries stay 0xFF.  The keys come from an
``nvs_keys`` partition (:func:`keys_partition` / :func:`read_keys_partition`) or are derived from
an eFuse HMAC key (:func:`derive_hmac_keys`).

:func:`parse_partition` follows the way ESP-IDF (``nvs_page.cpp``/``nvs_storage.cpp``) loads a
partition: damaged entries are skipped, the latest copy of a key wins, blob chunks without a
matching blob index are ignored; every such finding is reported in ``NvsPartition.issues`` and
counted by kind in ``NvsPartition.counts`` (kinds: :data:`FINDING_KINDS`).  With keys, an item
header whose CRC fails after decryption (wrong keys, or damage) is counted in
``NvsPartition.undecryptable``.  :func:`erase_unreadable` applies what ``Page::load`` writes to
flash at ``nvs_flash_init`` for entries it cannot read.

:func:`build_partition` lays out a fresh image exactly as ``nvs_partition_gen.py`` (package
``esp-idf-nvs-partition-gen`` 0.3.0, ``generate``; ``encrypt`` with keys) does for the same
content, including its quirks (see the notes in :class:`_Writer`).

Only :class:`NvsFormatError` (and its subclass :class:`NvsFullError`) is raised on purpose; no
function here puts a stored value into an exception message or an issue text (only namespace
names, keys, types, sizes and positions).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import struct
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from safesignal.errors import SafeSignalError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

__all__ = [
    "FINDING_KINDS",
    "KEYS_PARTITION_SIZE",
    "NVS_KEY_SIZE",
    "PAGE_SIZE",
    "NvsEntry",
    "NvsFormatError",
    "NvsFullError",
    "NvsKeys",
    "NvsPageInfo",
    "NvsPartition",
    "build_partition",
    "decrypt_image",
    "derive_hmac_keys",
    "encrypt_image",
    "erase_unreadable",
    "keys_partition",
    "parse_partition",
    "read_keys_partition",
]

log = logging.getLogger(__name__)


class NvsFormatError(SafeSignalError, ValueError):
    """Malformed NVS image (strict parsing) or content that cannot be written as NVS."""


class NvsFullError(NvsFormatError):
    """The content does not fit in the requested partition size."""


# -- layout constants (nvs_partition_gen.py: class Page; nvs_page.hpp) -------------------------------
PAGE_SIZE = 4096
ENTRY_SIZE = 32  # Page.SINGLE_ENTRY_SIZE
ENTRIES_PER_PAGE = 126  # Page.PAGE_PARAMS['max_entries']
BITMAP_OFFSET = 32  # Page.BITMAPARRAY_OFFSET
FIRST_ENTRY_OFFSET = 64  # Page.FIRST_ENTRY_OFFSET
MAX_KEY_BYTES = 15  # generate(): max_key_len; nvs_types.hpp Item::MAX_KEY_LENGTH
MAX_STRING_BYTES = 4000  # Page.PAGE_PARAMS['max_blob_size'][VERSION2], includes the NUL
MAX_NAMESPACES = 254  # nvs_storage.cpp: namespace indices 1..254
MAX_BLOB_CHUNKS = 128  # nvs_types.hpp: VerOffset VER_0_OFFSET=0x00 / VER_1_OFFSET=0x80

CHUNK_ANY = 0xFF  # Page.CHUNK_ANY
VERSION_2 = 0xFE  # Page.VERSION2
VERSION_1 = 0xFF  # Page.VERSION1

STATE_EMPTY = 0xFFFFFFFF  # nvs_page.hpp PageState::UNINITIALIZED
STATE_ACTIVE = 0xFFFFFFFE  # Page.ACTIVE
STATE_FULL = 0xFFFFFFFC  # Page.FULL
STATE_FREEING = 0xFFFFFFF8  # PageState::FREEING
STATE_CORRUPT = 0xFFFFFFF0  # PageState::CORRUPT
STATE_INVALID = 0x00000000  # PageState::INVALID

_STATE_NAMES = {
    STATE_EMPTY: "empty",
    STATE_ACTIVE: "active",
    STATE_FULL: "full",
    STATE_FREEING: "freeing",
    STATE_CORRUPT: "corrupt",
    STATE_INVALID: "invalid",
}

# entry-state bitmap values (nvs_page.hpp EntryState)
_ES_EMPTY = 0b11
_ES_WRITTEN = 0b10
_ES_ERASED = 0b00
_ES_ILLEGAL = 0b01

# item type codes (nvs_partition_gen.py: Page.U8 ... Page.BLOB_IDX)
_T_SZ = 0x21
_T_BLOB = 0x41
_T_BLOB_DATA = 0x42
_T_BLOB_IDX = 0x48
_VARIABLE_LENGTH = (_T_SZ, _T_BLOB, _T_BLOB_DATA)  # nvs_types.hpp isVariableLengthType()

# name -> (type code, struct format)
_INT_TYPES: dict[str, tuple[int, str]] = {
    "u8": (0x01, "<B"),
    "i8": (0x11, "<b"),
    "u16": (0x02, "<H"),
    "i16": (0x12, "<h"),
    "u32": (0x04, "<I"),
    "i32": (0x14, "<i"),
    "u64": (0x08, "<Q"),
    "i64": (0x18, "<q"),
}
_INT_BY_CODE: dict[int, tuple[str, str]] = {code: (name, fmt) for name, (code, fmt) in _INT_TYPES.items()}
ENTRY_TYPES = (*_INT_TYPES, "string", "blob")

_EMPTY_ENTRY = b"\xff" * ENTRY_SIZE

# -- encryption constants ------------------------------------------------------------------------
NVS_KEY_SIZE = 32  # nvs_flash.h NVS_KEY_SIZE: nvs_sec_cfg_t is eky[32] then tky[32]
# nvs_partition_gen.py generate_key(): the keys file is one 4096-byte buffer of 0xFF holding
# eky(32) tky(32) CRC32(4, little-endian, over eky+tky); nvs_api.cpp nvs_flash_generate_keys()
# writes the same first 68 bytes on the chip.
KEYS_PARTITION_SIZE = 4096
# nvs_sec_provider.c compute_nvs_keys_with_hmac(): the HMAC messages are uint32_t[8] arrays of
# 0xAEBE5A5A (E-key) and 0xCEDEA5A5 (T-key) on a little-endian chip, i.e. the bytes 5A 5A BE AE and
# A5 A5 DE CE repeated 8 times (nvs_partition_gen.py generate_key() uses the same byte strings).
_HMAC_EKEY_SEED = struct.pack("<8I", *[0xAEBE5A5A] * 8)
_HMAC_TKEY_SEED = struct.pack("<8I", *[0xCEDEA5A5] * 8)

# Kinds of findings counted in NvsPartition.counts.  Every issue text is counted under one kind;
# "header_crc_ok" and "entry_crc_ok" count good items and are not problems.
FINDING_KINDS: dict[str, str] = {
    "header_crc_ok": "page headers with a valid CRC",
    "header_crc_bad": "page headers with a bad CRC (page ignored)",
    "page_state": "pages in a state that is not loaded (corrupt, invalid, unknown)",
    "page_version": "pages with an unsupported format version",
    "page_dirty": "uninitialised pages that hold data",
    "seq_duplicate": "pages sharing a sequence number",
    "entry_crc_ok": "item headers with a valid CRC",
    "entry_crc_bad": "written entries read as an item header whose CRC fails",
    "undecryptable": "of those, entries read with keys (wrong keys, or damage)",
    "torn_entries": "half-written entries after the active page's free position",
    "bitmap_state": "entries with an inconsistent or illegal bitmap state",
    "bad_key": "item headers whose key is not NUL-terminated",
    "span": "items whose span does not match their size or type",
    "incomplete_item": "strings/blobs whose data entries are not all written",
    "data_crc_bad": "strings/blob chunks whose data CRC fails",
    "unknown_type": "items of an unknown type",
    "blob_index": "blob indexes with invalid chunk fields",
    "namespace_entry": "bad, redefined or clashing namespace entries",
    "undefined_namespace": "items in a namespace index no namespace entry defines",
    "string_nul": "strings without their trailing NUL",
    "duplicate_chunk": "blob chunks stored twice",
    "blob_missing_chunks": "blobs lacking chunks",
    "blob_size": "blobs whose chunks do not add up to the index's size",
    "orphan_chunks": "blob chunks no blob index refers to",
    "duplicate_key": "keys stored more than once",
}
_NOT_PROBLEMS = ("header_crc_ok", "entry_crc_ok")


def _crc32(data: bytes) -> int:
    """CRC-32 exactly as nvs_partition_gen.py computes it (``zlib.crc32(data, 0xFFFFFFFF)``)."""
    return zlib.crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF


def _entry_crc(entry: bytes | bytearray) -> int:
    """CRC of a 32-byte entry without its CRC field (bytes 0..3 and 8..31)."""
    return _crc32(bytes(entry[0:4]) + bytes(entry[8:32]))


def _int_range(fmt: str) -> tuple[int, int]:
    bits = struct.calcsize(fmt) * 8
    if fmt[-1].islower():
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


# -- keys and entry encryption ---------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class NvsKeys:
    """The two XTS-AES-256 keys of an encrypted NVS partition (ESP-IDF ``nvs_sec_cfg_t``).

    ``ekey`` encrypts the data, ``tkey`` the tweak.  ``repr()`` never shows them.
    """

    ekey: bytes
    tkey: bytes

    def __post_init__(self) -> None:
        for name in ("ekey", "tkey"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != NVS_KEY_SIZE:
                raise NvsFormatError(f"NVS {name} must be {NVS_KEY_SIZE} bytes")
        if hmac.compare_digest(self.ekey, self.tkey):
            # XTS needs two different keys (cryptography refuses them; nvs_sec_provider.c asserts it)
            raise NvsFormatError("NVS ekey and tkey must differ")

    def __repr__(self) -> str:
        return "NvsKeys(<hidden>)"

    def _cipher(self, address: int) -> Cipher[modes.XTS]:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        # nvs_encrypted_partition.cpp: data unit = one entry, tweak = its partition-relative address
        # (uint32 little-endian in a zeroed 16-byte array)
        return Cipher(algorithms.AES(self.ekey + self.tkey), modes.XTS(address.to_bytes(16, "little")))

    def encrypt_entry(self, address: int, entry: bytes) -> bytes:
        """Encrypt one 32-byte entry stored at ``address`` (bytes from the partition start)."""
        return self._cipher(address).encryptor().update(entry)

    def decrypt_entry(self, address: int, entry: bytes) -> bytes:
        """Decrypt one 32-byte entry stored at ``address`` (bytes from the partition start)."""
        return self._cipher(address).decryptor().update(entry)


def derive_hmac_keys(hmac_key: bytes) -> NvsKeys:
    """The XTS keys ESP-IDF's HMAC scheme derives from a 256-bit eFuse HMAC key.

    ``ekey = HMAC-SHA256(K, 0xAEBE5A5A x 8)``, ``tkey = HMAC-SHA256(K, 0xCEDEA5A5 x 8)``, the seeds
    as little-endian uint32 arrays (esp-idf ``components/nvs_sec_provider/nvs_sec_provider.c``).
    """
    if not isinstance(hmac_key, bytes) or len(hmac_key) != 32:
        raise NvsFormatError("the eFuse HMAC key must be 32 bytes")
    ekey = hmac.new(hmac_key, _HMAC_EKEY_SEED, hashlib.sha256).digest()
    tkey = hmac.new(hmac_key, _HMAC_TKEY_SEED, hashlib.sha256).digest()
    return NvsKeys(ekey, tkey)


def keys_partition(keys: NvsKeys) -> bytes:
    """An ``nvs_keys`` partition image holding ``keys``, byte for byte as nvs_partition_gen.py's
    ``generate-key`` writes it: ekey, tkey, CRC32 of both (little-endian), 0xFF up to 4096 bytes."""
    body = keys.ekey + keys.tkey
    return (body + struct.pack("<I", _crc32(body))).ljust(KEYS_PARTITION_SIZE, b"\xff")


def read_keys_partition(data: bytes) -> NvsKeys:
    """The keys in an ``nvs_keys`` partition image (as nvs_api.cpp ``nvs_flash_read_security_cfg``).

    Needs at least the 68 bytes ``ekey tkey CRC32``; raises :class:`NvsFormatError` for an erased
    (all 0xFF, "not initialised") partition and for a CRC mismatch ("corrupt key partition").
    """
    data = bytes(data)
    size = 2 * NVS_KEY_SIZE
    if len(data) < size + 4:
        raise NvsFormatError(f"an nvs_keys partition holds at least {size + 4} bytes, got {len(data)}")
    body = data[:size]
    (crc,) = struct.unpack_from("<I", data, size)
    if body == b"\xff" * size and crc == 0xFFFFFFFF:
        raise NvsFormatError("the nvs_keys partition is erased (no keys generated yet)")
    if _crc32(body) != crc:
        raise NvsFormatError("the nvs_keys partition is corrupt (CRC mismatch)")
    return NvsKeys(body[:NVS_KEY_SIZE], body[NVS_KEY_SIZE:])


def _entry_states(page: bytes | bytearray) -> list[int]:
    return [(page[BITMAP_OFFSET + n // 4] >> ((n % 4) * 2)) & 0b11 for n in range(ENTRIES_PER_PAGE)]


def _set_entry_state(data: bytearray, page_base: int, n: int, state: int) -> None:
    off = page_base + BITMAP_OFFSET + n // 4
    shift = (n % 4) * 2
    data[off] = (data[off] & ~(0b11 << shift) & 0xFF) | (state << shift)


def _entry_address(page_index: int, n: int) -> int:
    return page_index * PAGE_SIZE + FIRST_ENTRY_OFFSET + n * ENTRY_SIZE


def _crypt_page(
    page: bytes, page_index: int, keys: NvsKeys, encrypt: bool, states: Iterable[int]
) -> bytes:
    """``page`` with the entries whose bitmap state is in ``states`` encrypted or decrypted."""
    wanted = set(states)
    out = bytearray(page)
    crypt = keys.encrypt_entry if encrypt else keys.decrypt_entry
    for n, state in enumerate(_entry_states(page)):
        if state in wanted:
            off = FIRST_ENTRY_OFFSET + n * ENTRY_SIZE
            out[off : off + ENTRY_SIZE] = crypt(_entry_address(page_index, n), bytes(page[off : off + ENTRY_SIZE]))
    return bytes(out)


def _check_image(image: bytes | bytearray) -> bytes:
    data = bytes(image)
    if not data or len(data) % PAGE_SIZE:
        raise NvsFormatError(f"NVS image size {len(data)} is not a non-zero multiple of {PAGE_SIZE}")
    return data


def _crypt_image(image: bytes, keys: NvsKeys, encrypt: bool) -> bytes:
    data = _check_image(image)
    pages = []
    for index in range(len(data) // PAGE_SIZE):
        page = data[index * PAGE_SIZE : (index + 1) * PAGE_SIZE]
        if struct.unpack_from("<I", page, 0)[0] != STATE_EMPTY:
            page = _crypt_page(page, index, keys, encrypt, (_ES_WRITTEN, _ES_ERASED, _ES_ILLEGAL))
        pages.append(page)
    return b"".join(pages)


def encrypt_image(image: bytes, keys: NvsKeys) -> bytes:
    """Encrypt every non-empty entry (bitmap state written, erased or illegal) of every initialised
    page of a plain image; headers, bitmaps and empty entries stay as they are."""
    return _crypt_image(image, keys, True)


def decrypt_image(image: bytes, keys: NvsKeys) -> bytes:
    """The inverse of :func:`encrypt_image` (what nvs_partition_gen.py's ``decrypt`` produces for an
    image whose written entries are contiguous from the start of each page)."""
    return _crypt_image(image, keys, False)


# -- public data model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NvsEntry:
    """One key/value pair.

    ``type`` is one of ``u8 i8 u16 i16 u32 i32 u64 i64 string blob``; ``value`` is an ``int`` for the
    integer types and ``bytes`` for ``string`` (without the trailing NUL) and ``blob``.
    """

    namespace: str
    key: str
    type: str
    value: int | bytes


@dataclass(frozen=True)
class NvsPageInfo:
    """Summary of one physical page."""

    index: int
    state: str  # empty, active, full, freeing, corrupt, invalid or unknown
    seq: int | None  # None for empty (uninitialised) pages
    version: int | None  # header version byte (0xFE = v2, 0xFF = v1); None for empty pages
    header_ok: bool  # header CRC valid (always True for empty pages)
    written: int
    erased: int
    empty: int
    illegal: int
    crc_ok: int = 0  # item headers with a valid CRC (loaded pages only)
    crc_bad: int = 0  # written entries read as item headers whose CRC fails (undecryptable with keys)


@dataclass
class NvsPartition:
    """Result of :func:`parse_partition`.

    ``counts`` counts findings by kind (see :data:`FINDING_KINDS`), including the non-problems
    ``header_crc_ok`` and ``entry_crc_ok``; ``undecryptable`` is the number of written entries that
    failed their CRC after decryption (0 when no keys were given).
    """

    entries: list[NvsEntry]
    namespaces: dict[str, int]
    issues: list[str] = field(default_factory=list)
    pages: list[NvsPageInfo] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    undecryptable: int = 0
    # Leftovers of an interrupted write that ESP-IDF completes at power-up by design, so no problem
    # (not in ``issues``/``counts``): "reclaim_copy_entries" = written entries of a page that a cut
    # reclaim was filling from a FREEING page (PageManager::load erases it and copies again).
    interrupted: dict[str, int] = field(default_factory=dict)

    def get(self, namespace: str, key: str) -> NvsEntry | None:
        for entry in self.entries:
            if entry.namespace == namespace and entry.key == key:
                return entry
        return None

    def as_dict(self) -> dict[str, dict[str, NvsEntry]]:
        result: dict[str, dict[str, NvsEntry]] = {name: {} for name in self.namespaces}
        for entry in self.entries:
            result.setdefault(entry.namespace, {})[entry.key] = entry
        return result

    @property
    def problems(self) -> dict[str, int]:
        """The non-zero counts of findings that are problems."""
        return {k: v for k, v in self.counts.items() if v and k not in _NOT_PROBLEMS}


# -- reader ----------------------------------------------------------------------------------------


class _Report:
    """Issue texts plus a count per kind of finding."""

    def __init__(self) -> None:
        self.issues: list[str] = []
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, text: str, count: int = 1) -> None:
        assert kind in FINDING_KINDS, kind
        self.issues.append(text)
        self.counts[kind] += count

    def count(self, kind: str, count: int = 1) -> None:
        assert kind in FINDING_KINDS, kind
        self.counts[kind] += count


@dataclass
class _Raw:
    """One entry that passed the per-page checks, before namespaces/blobs/duplicates are resolved."""

    rank: int  # position of its page in sequence-number order
    page: int  # physical page index
    slot: int  # entry index inside the page
    ns: int
    code: int
    chunk: int
    key: str
    value: int | bytes  # int for integers; payload for strings/blobs/chunks; total size for a blob index
    count: int = 0  # blob index: chunk count
    start: int = 0  # blob index: chunk start (version offset)

    @property
    def pos(self) -> tuple[int, int]:
        return (self.rank, self.slot)

    @property
    def where(self) -> str:
        return f"page {self.page} entry {self.slot}"


def _entry(page: bytes, n: int) -> bytes:
    off = FIRST_ENTRY_OFFSET + n * ENTRY_SIZE
    return page[off : off + ENTRY_SIZE]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


class _PageScanner:
    """Extracts the CRC-valid, self-consistent items of one loaded page (nvs_page.cpp mLoadEntryTable).

    ``page`` is the page as read through the partition (written entries decrypted when the image is
    encrypted); ``raw`` is the page as stored, for the checks ESP-IDF makes with ``read_raw``.
    """

    def __init__(
        self, rank: int, index: int, page: bytes, raw: bytes, active: bool, report: _Report, encrypted: bool
    ) -> None:
        self.rank = rank
        self.index = index
        self.page = page
        self.raw = raw
        self.active = active
        self.report = report
        self.encrypted = encrypted
        self.states = _entry_states(raw)
        self.items: list[_Raw] = []
        self.crc_ok = 0
        self.crc_bad = 0

    def issue(self, kind: str, text: str, count: int = 1) -> None:
        self.report.add(kind, f"page {self.index}: {text}", count)

    def scan(self) -> list[_Raw]:
        states = self.states
        end = ENTRIES_PER_PAGE
        torn: set[int] = set()
        if self.active:
            # ESP-IDF: the first empty entry is where writing continues; entries from there whose first
            # word is not blank were half-written when power failed and count as erased.
            first_empty = next((n for n, s in enumerate(states) if s == _ES_EMPTY), ENTRIES_PER_PAGE)
            end = first_empty
            while end < ENTRIES_PER_PAGE and _entry(self.raw, end)[:4] != b"\xff\xff\xff\xff":
                torn.add(end)
                end += 1
            if torn:
                self.issue(
                    "torn_entries",
                    f"{_plural(len(torn), 'half-written entry')} from entry {first_empty} ignored "
                    "(interrupted write)",
                    len(torn),
                )
            late = sum(1 for n in range(end, ENTRIES_PER_PAGE) if states[n] == _ES_WRITTEN)
            if late:
                self.issue(
                    "bitmap_state", f"{_plural(late, 'entry')} marked written after the first free entry ignored", late
                )
        dirty = sum(
            1
            for n in range(ENTRIES_PER_PAGE)
            if states[n] == _ES_EMPTY and n not in torn and _entry(self.raw, n) != _EMPTY_ENTRY
        )
        if dirty:
            self.issue("bitmap_state", f"{_plural(dirty, 'entry')} marked empty but holding data ignored", dirty)
        illegal = [n for n in range(ENTRIES_PER_PAGE) if states[n] == _ES_ILLEGAL]
        if illegal:
            self.issue(
                "bitmap_state", f"{_plural(len(illegal), 'entry')} with an illegal bitmap state ignored", len(illegal)
            )

        for n in torn:
            states[n] = _ES_ERASED  # as nvs_page.cpp does before it reads the page's items
        bad_start = -1
        bad_count = 0
        n = 0
        while n < end:
            if states[n] != _ES_WRITTEN:
                n += 1
                continue
            raw = _entry(self.page, n)
            if struct.unpack_from("<I", raw, 4)[0] != _entry_crc(raw):
                self.crc_bad += 1
                if bad_count and bad_start + bad_count == n:
                    bad_count += 1
                else:
                    self._flush_bad(bad_start, bad_count)
                    bad_start, bad_count = n, 1
                n += 1
                continue
            self.crc_ok += 1
            self.report.count("entry_crc_ok")
            n += self._item(n, raw)
        self._flush_bad(bad_start, bad_count)
        return self.items

    def _flush_bad(self, start: int, count: int) -> None:
        if not count:
            return
        if self.encrypted:
            self.report.count("undecryptable", count)
            what = "cannot be decrypted with these keys (wrong keys, or damaged), skipped"
            if count == 1:
                text = f"entry {start} {what}"
            else:
                text = f"entries {start}-{start + count - 1}: {count} entries {what}"
        elif count == 1:
            text = f"entry {start}: bad entry CRC, skipped"
        else:
            text = f"entries {start}-{start + count - 1}: {count} entries with bad CRC skipped"
        self.issue("entry_crc_bad", text, count)

    def _skip(self, n: int, span: int) -> int:
        """Entries to step over after rejecting the CRC-valid header at ``n``."""
        return span if 1 <= span and n + span <= ENTRIES_PER_PAGE else 1

    def _item(self, n: int, raw: bytes) -> int:
        """Parse the CRC-valid entry at ``n``; return how many entries it occupies."""
        ns, code, span, chunk = raw[0], raw[1], raw[2], raw[3]
        where = f"entry {n}"
        key_field = raw[8:24]
        nul = key_field.find(0)
        if nul < 0:
            self.issue("bad_key", f"{where}: key is not NUL-terminated, skipped")
            return self._skip(n, span)
        key = key_field[:nul].decode("utf-8", "backslashreplace")
        where = f"entry {n} ({key!r})"

        def add(value: int | bytes, count: int = 0, start: int = 0) -> None:
            self.items.append(_Raw(self.rank, self.index, n, ns, code, chunk, key, value, count, start))

        if code in _INT_BY_CODE:
            if span != 1:
                self.issue("span", f"{where}: integer item with span {span}, skipped")
                return 1
            add(struct.unpack_from(_INT_BY_CODE[code][1], raw, 24)[0])
            return 1
        if code in _VARIABLE_LENGTH:
            size = struct.unpack_from("<H", raw, 24)[0]
            data_crc = struct.unpack_from("<I", raw, 28)[0]
            need = 1 + (size + ENTRY_SIZE - 1) // ENTRY_SIZE
            if span != need or n + span > ENTRIES_PER_PAGE:
                self.issue("span", f"{where}: span {span} does not match data size {size}, skipped")
                return self._skip(n, span)
            if any(self.states[j] != _ES_WRITTEN for j in range(n + 1, n + span)):
                self.issue("incomplete_item", f"{where}: data entries not all written (incomplete item), skipped")
                return span
            off = FIRST_ENTRY_OFFSET + (n + 1) * ENTRY_SIZE
            payload = self.page[off : off + size]
            if _crc32(payload) != data_crc:
                self.issue("data_crc_bad", f"{where}: data CRC mismatch, skipped")
                return span
            add(payload)
            return span
        if code == _T_BLOB_IDX:
            if span != 1:
                self.issue("span", f"{where}: blob index with span {span}, skipped")
                return self._skip(n, span)
            size = struct.unpack_from("<I", raw, 24)[0]
            count, start = raw[28], raw[29]
            if chunk != CHUNK_ANY:
                self.issue("blob_index", f"{where}: blob index with chunk index {chunk}, skipped")
            elif start not in (0x00, 0x80) or not 1 <= count <= MAX_BLOB_CHUNKS:
                self.issue(
                    "blob_index", f"{where}: blob index with chunk start {start:#04x} and count {count}, skipped"
                )
            else:
                add(size, count, start)
            return 1
        self.issue("unknown_type", f"{where}: unknown item type {code:#04x}, skipped")
        return 1


def _page_info(index: int, page: bytes, report: _Report) -> tuple[NvsPageInfo, bool]:
    """Summarise a page; return it and whether its entries should be loaded."""
    states = _entry_states(page)
    counts = {s: states.count(s) for s in (_ES_WRITTEN, _ES_ERASED, _ES_EMPTY, _ES_ILLEGAL)}
    state, seq, version = struct.unpack_from("<IIB", page, 0)
    name = _STATE_NAMES.get(state, "unknown")
    if state == STATE_EMPTY:
        if page != b"\xff" * PAGE_SIZE:
            report.add("page_dirty", f"page {index}: uninitialised page holds data, ignored")
        info = NvsPageInfo(
            index,
            name,
            None,
            None,
            True,
            counts[_ES_WRITTEN],
            counts[_ES_ERASED],
            counts[_ES_EMPTY],
            counts[_ES_ILLEGAL],
        )
        return info, False
    header_ok = struct.unpack_from("<I", page, 28)[0] == _crc32(page[4:28])
    info = NvsPageInfo(
        index,
        name,
        seq,
        version,
        header_ok,
        counts[_ES_WRITTEN],
        counts[_ES_ERASED],
        counts[_ES_EMPTY],
        counts[_ES_ILLEGAL],
    )
    if not header_ok:
        report.add("header_crc_bad", f"page {index}: bad header CRC, page ignored")
        return info, False
    report.count("header_crc_ok")
    if state not in (STATE_ACTIVE, STATE_FULL, STATE_FREEING):
        report.add("page_state", f"page {index}: page state {name} ({state:#010x}), page ignored")
        return info, False
    if version not in (VERSION_2, VERSION_1):
        report.add("page_version", f"page {index}: unsupported format version {version:#04x}")
    return info, True


def _page_state(page: bytes) -> int:
    return int(struct.unpack_from("<I", page, 0)[0])


def _ns_label(index: int, names: dict[int, str]) -> str:
    return repr(names[index]) if index in names else f"#{index}"


def _resolve(items: list[_Raw], report: _Report) -> tuple[list[NvsEntry], dict[str, int]]:
    """Apply namespaces, assemble blobs and keep the latest copy of every key (nvs_storage.cpp)."""
    items = sorted(items, key=lambda r: r.pos)

    # namespaces: u8 items in namespace 0
    ns_by_name: dict[str, _Raw] = {}
    names: dict[int, str] = {}
    data_items: list[_Raw] = []
    for r in items:
        if r.ns != 0:
            data_items.append(r)
            continue
        if r.code != _INT_TYPES["u8"][0]:
            report.add(
                "namespace_entry", f"{r.where}: item {r.key!r} in namespace 0 is not a namespace entry, skipped"
            )
            continue
        assert isinstance(r.value, int)
        if not 1 <= r.value <= MAX_NAMESPACES:
            report.add("namespace_entry", f"{r.where}: namespace {r.key!r} has invalid index {r.value}, skipped")
            continue
        if r.key in ns_by_name:
            report.add("namespace_entry", f"{r.where}: namespace {r.key!r} defined again, the later definition wins")
        if r.value in names and names[r.value] != r.key:
            report.add(
                "namespace_entry", f"{r.where}: namespaces {names[r.value]!r} and {r.key!r} share index {r.value}"
            )
        ns_by_name[r.key] = r
        names[r.value] = r.key
    namespaces: dict[str, int] = {}
    for r in sorted(ns_by_name.values(), key=lambda r: r.pos):
        assert isinstance(r.value, int)
        namespaces[r.key] = r.value

    undefined: dict[int, int] = {}
    candidates: list[tuple[tuple[int, int], int, NvsEntry]] = []  # (position, ns index, entry)
    chunks: dict[tuple[int, str, int], _Raw] = {}
    indexes: list[_Raw] = []
    for r in data_items:
        if r.ns not in names:
            undefined[r.ns] = undefined.get(r.ns, 0) + 1
            continue
        ns_name = names[r.ns]
        if r.code in _INT_BY_CODE:
            assert isinstance(r.value, int)
            candidates.append((r.pos, r.ns, NvsEntry(ns_name, r.key, _INT_BY_CODE[r.code][0], r.value)))
        elif r.code == _T_SZ:
            assert isinstance(r.value, bytes)
            value = r.value
            if value.endswith(b"\x00"):
                value = value[:-1]
            else:
                report.add("string_nul", f"{r.where}: string {ns_name!r}/{r.key!r} is not NUL-terminated")
            candidates.append((r.pos, r.ns, NvsEntry(ns_name, r.key, "string", value)))
        elif r.code == _T_BLOB:
            assert isinstance(r.value, bytes)
            candidates.append((r.pos, r.ns, NvsEntry(ns_name, r.key, "blob", r.value)))
        elif r.code == _T_BLOB_DATA:
            ident = (r.ns, r.key, r.chunk)
            if ident in chunks:
                report.add(
                    "duplicate_chunk",
                    f"{r.where}: blob chunk {r.chunk} of {ns_name!r}/{r.key!r} stored twice, the later copy wins",
                )
            chunks[ident] = r
        else:
            indexes.append(r)
    for ns_index, count in sorted(undefined.items()):
        report.add(
            "undefined_namespace", f"{_plural(count, 'item')} in undefined namespace index {ns_index} skipped", count
        )

    # v2 blobs: a blob index plus chunks start .. start + count - 1
    referenced: set[tuple[int, str, int]] = set()
    for r in indexes:
        ns_name = names[r.ns]
        wanted = [(r.ns, r.key, r.start + i) for i in range(r.count)]
        referenced.update(wanted)
        missing = [ident[2] for ident in wanted if ident not in chunks]
        if missing:
            report.add(
                "blob_missing_chunks",
                f"{r.where}: blob {ns_name!r}/{r.key!r} lacks chunk(s) {', '.join(map(str, missing))}, skipped",
            )
            continue
        parts = []
        for ident in wanted:
            payload = chunks[ident].value
            assert isinstance(payload, bytes)
            parts.append(payload)
        blob = b"".join(parts)
        expected = r.value
        assert isinstance(expected, int)
        if len(blob) != expected:
            report.add(
                "blob_size",
                f"{r.where}: blob {ns_name!r}/{r.key!r} index says {expected} bytes but its chunks "
                f"hold {len(blob)}, skipped",
            )
            continue
        candidates.append((r.pos, r.ns, NvsEntry(ns_name, r.key, "blob", blob)))
    orphans: dict[tuple[int, str], list[int]] = {}
    for chunk_id in chunks:
        if chunk_id not in referenced:
            orphans.setdefault((chunk_id[0], chunk_id[1]), []).append(chunk_id[2])
    for (ns_index, key), chunk_ids in orphans.items():
        owner = f"{_ns_label(ns_index, names)}/{key!r}"
        report.add(
            "orphan_chunks",
            f"{_plural(len(chunk_ids), 'orphan blob chunk')} of {owner} "
            f"(chunk index {', '.join(map(str, sorted(chunk_ids)))}) ignored",
            len(chunk_ids),
        )

    # the latest copy of every (namespace, key) wins
    candidates.sort(key=lambda c: c[0])
    live: dict[tuple[int, str], tuple[tuple[int, int], NvsEntry]] = {}
    copies: dict[tuple[int, str], int] = {}
    for pos, ns_index, entry in candidates:
        name_id = (ns_index, entry.key)
        copies[name_id] = copies.get(name_id, 0) + 1
        live[name_id] = (pos, entry)
    for name_id, count in copies.items():
        if count > 1:
            entry = live[name_id][1]
            report.add(
                "duplicate_key",
                f"duplicate key {entry.namespace!r}/{entry.key!r}: {count} copies, the latest one wins",
            )
    winners = sorted(live.values(), key=lambda w: w[0])
    return [entry for _, entry in winners], namespaces


def parse_partition(image: bytes, *, strict: bool = False, keys: NvsKeys | None = None) -> NvsPartition:
    """Read an NVS partition image; with ``keys``, an encrypted one.

    Damaged or inconsistent content is skipped the way ESP-IDF skips it and described in
    ``issues`` (counted by kind in ``counts``); with ``strict=True`` any such finding raises
    :class:`NvsFormatError` instead.  With keys, written entries are decrypted before they are
    checked, and entries whose CRC then fails are counted in ``undecryptable``.  The image length
    must be a non-zero multiple of :data:`PAGE_SIZE`.
    """
    data = _check_image(image)
    if keys is not None and not isinstance(keys, NvsKeys):
        raise NvsFormatError(f"keys must be NvsKeys, not {type(keys).__name__}")
    report = _Report()
    pages: list[NvsPageInfo] = []
    loaded: list[tuple[int, int, bytes, bool]] = []  # (seq, index, bytes, active)
    for index in range(len(data) // PAGE_SIZE):
        page = data[index * PAGE_SIZE : (index + 1) * PAGE_SIZE]
        info, load = _page_info(index, page, report)
        pages.append(info)
        if load:
            assert info.seq is not None
            loaded.append((info.seq, index, page, info.state == "active"))
    loaded.sort(key=lambda p: (p[0], p[1]))
    for before, after in itertools.pairwise(loaded):
        if before[0] == after[0]:
            report.add("seq_duplicate", f"pages {before[1]} and {after[1]} share sequence number {after[0]}")
    # A cut during a reclaim (nvs_pagemanager.cpp requestNewPage: mark the victim FREEING, copy its
    # live items to a new page, erase it) leaves the FREEING page complete and the newest page a
    # partial copy of it; PageManager::load erases that copy and starts again, so it is not read.
    interrupted: dict[str, int] = {}
    if loaded and any(_page_state(raw) == STATE_FREEING for _, _, raw, _ in loaded):
        newest = loaded[-1]
        if newest[3] and _page_state(newest[2]) == STATE_ACTIVE:
            interrupted["reclaim_copy_entries"] = pages[newest[1]].written
            loaded = loaded[:-1]
    items: list[_Raw] = []
    for rank, (_, index, raw, active) in enumerate(loaded):
        # ESP-IDF reads entries through the (decrypting) partition, headers and bitmaps raw
        page = raw if keys is None else _crypt_page(raw, index, keys, False, (_ES_WRITTEN,))
        scanner = _PageScanner(rank, index, page, raw, active, report, keys is not None)
        items.extend(scanner.scan())
        pages[index] = replace(pages[index], crc_ok=scanner.crc_ok, crc_bad=scanner.crc_bad)
    entries, namespaces = _resolve(items, report)
    issues = report.issues
    log.debug("parsed NVS image: %d pages, %d entries, %d issues", len(pages), len(entries), len(issues))
    if strict and issues:
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise NvsFormatError(f"malformed NVS image: {issues[0]}{more}")
    return NvsPartition(
        entries=entries,
        namespaces=namespaces,
        issues=issues,
        pages=pages,
        counts=dict(report.counts),
        undecryptable=report.counts["undecryptable"],
        interrupted=interrupted,
    )


# -- what nvs_flash_init writes back ------------------------------------------------------------------


def erase_unreadable(image: bytes, keys: NvsKeys | None) -> tuple[bytes, int]:
    """Mark the entries ESP-IDF cannot read as erased, as ``Page::load`` does at ``nvs_flash_init``.

    Returns the new image and the number of entries whose bitmap state changed to erased; only
    bitmaps change, entry bytes stay.  Follows ``Page::mLoadEntryTable`` (esp-idf
    ``components/nvs_flash/src/nvs_page.cpp``) on pages whose header CRC is valid and whose state is
    active, full or freeing, reading entries through ``keys`` when given:

    * an entry whose bitmap says written but whose CRC fails when read as an item header is
      erased on its own (so the data entries of an item whose header failed are each read as a
      header, fail and are erased too) - with the wrong keys that is every written entry;
    * a string/blob whose data entries are not all written is erased with its whole span;
    * active page only: half-written entries (not blank from the first free entry on) and
      entries in the illegal bitmap state are erased.

    Not applied: the clean-up of duplicate keys (the older copy is readable; :func:`parse_partition`
    already ignores it), and ESP-IDF's handling of a CRC-valid header with an impossible span
    (it stops loading the page there; so does this function).
    """
    data = bytearray(_check_image(image))
    erased = sum(_PageEraser(data, index, keys).run() for index in range(len(data) // PAGE_SIZE))
    return bytes(data), erased


class _PageEraser:
    """:func:`erase_unreadable` for one page (nvs_page.cpp ``Page::mLoadEntryTable``)."""

    def __init__(self, data: bytearray, index: int, keys: NvsKeys | None) -> None:
        self.data = data
        self.index = index
        self.base = index * PAGE_SIZE
        self.page = bytes(data[self.base : self.base + PAGE_SIZE])
        self.keys = keys
        self.states = _entry_states(self.page)

    def erase(self, n: int, count: int = 1) -> int:
        changed = 0
        for j in range(n, n + count):
            if self.states[j] != _ES_ERASED:
                self.states[j] = _ES_ERASED
                _set_entry_state(self.data, self.base, j, _ES_ERASED)
                changed += 1
        return changed

    def read(self, n: int) -> bytes:
        raw = _entry(self.page, n)
        return raw if self.keys is None else self.keys.decrypt_entry(_entry_address(self.index, n), raw)

    def run(self) -> int:
        page, states = self.page, self.states
        state = struct.unpack_from("<I", page, 0)[0]
        if state not in (STATE_ACTIVE, STATE_FULL, STATE_FREEING):
            return 0
        if struct.unpack_from("<I", page, 28)[0] != _crc32(page[4:28]):
            return 0  # a corrupt page is not loaded
        erased = 0
        active = state == STATE_ACTIVE
        if active:
            end = next((n for n, s in enumerate(states) if s == _ES_EMPTY), ENTRIES_PER_PAGE)
            while end < ENTRIES_PER_PAGE and _entry(page, end)[:4] != b"\xff\xff\xff\xff":
                erased += self.erase(end)
                end += 1
            n = 0
        else:
            end = ENTRIES_PER_PAGE
            n = next((i for i, s in enumerate(states) if s == _ES_WRITTEN), ENTRIES_PER_PAGE)
        while n < end:
            if states[n] != _ES_WRITTEN:
                if active and states[n] == _ES_ILLEGAL:
                    erased += self.erase(n)
                n += 1
                continue
            item = self.read(n)
            if struct.unpack_from("<I", item, 4)[0] != _entry_crc(item):
                erased += self.erase(n)
                n += 1
                continue
            span = item[2]
            if not active and span == 0:
                break  # NVS_ASSERT_OR_RETURN(item.span > 0): loading this page stops
            if item[1] in _VARIABLE_LENGTH:
                if n + span > ENTRIES_PER_PAGE:
                    break  # the entry-table lookup past the page end fails: loading this page stops
                if any(states[j] != _ES_WRITTEN for j in range(n, n + span)):
                    erased += self.erase(n, span)
            elif active:
                span = 1  # on the active page only variable-length items advance by their span
            n += max(span, 1)
        return erased

# -- writer ----------------------------------------------------------------------------------------


def _name_bytes(what: str, name: object) -> bytes:
    if not isinstance(name, str):
        raise NvsFormatError(f"{what} must be a str, not {type(name).__name__}")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise NvsFormatError(f"{what} {name!r} cannot be encoded as UTF-8") from None
    if not raw:
        raise NvsFormatError(f"{what} must not be empty")
    if b"\x00" in raw:
        raise NvsFormatError(f"{what} {name!r} contains a NUL character")
    if len(raw) > MAX_KEY_BYTES:
        raise NvsFormatError(f"{what} {name!r} is {len(raw)} bytes long; the limit is {MAX_KEY_BYTES}")
    return raw


@dataclass(frozen=True)
class _Item:
    """A validated entry ready for layout."""

    ns_name: bytes
    key: bytes
    type: str
    value: int | bytes


def _validate(entries: Iterable[NvsEntry]) -> list[_Item]:
    items: list[_Item] = []
    seen: set[tuple[bytes, bytes]] = set()
    namespaces: set[bytes] = set()
    for entry in entries:
        if not isinstance(entry, NvsEntry):
            raise NvsFormatError(f"expected NvsEntry, got {type(entry).__name__}")
        ns_name = _name_bytes("namespace name", entry.namespace)
        key = _name_bytes("key", entry.key)
        label = f"{entry.namespace!r}/{entry.key!r}"
        if (ns_name, key) in seen:
            raise NvsFormatError(f"key {label} given more than once")
        seen.add((ns_name, key))
        namespaces.add(ns_name)
        if len(namespaces) > MAX_NAMESPACES:
            raise NvsFormatError(f"more than {MAX_NAMESPACES} namespaces")
        value = entry.value
        if entry.type in _INT_TYPES:
            if not isinstance(value, int) or isinstance(value, bool):
                raise NvsFormatError(f"value of {label} must be an int for type {entry.type}")
            low, high = _int_range(_INT_TYPES[entry.type][1])
            if not low <= value <= high:
                raise NvsFormatError(f"value of {label} is out of range for type {entry.type}")
        elif entry.type in ("string", "blob"):
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise NvsFormatError(f"value of {label} must be bytes for type {entry.type}")
            value = bytes(value)
            if entry.type == "string":
                if b"\x00" in value:
                    raise NvsFormatError(f"string {label} contains a NUL byte")
                if len(value) + 1 > MAX_STRING_BYTES:
                    raise NvsFormatError(
                        f"string {label} is {len(value) + 1} bytes with its NUL; "
                        f"the limit is {MAX_STRING_BYTES}"
                    )
        else:
            raise NvsFormatError(
                f"unknown type {entry.type!r} for {label}; expected one of {', '.join(ENTRY_TYPES)}"
            )
        items.append(_Item(ns_name, key, entry.type, value))
    return items


class _Writer:
    """Lays out entries the way nvs_partition_gen.py (esp-idf-nvs-partition-gen 0.3.0) does.

    Behaviour copied from the tool (class NVS / class Page), because the output must match it byte
    for byte:

    * ``check_size``: partitions of at least 0x3000 bytes keep their last page unused (blank) as the
      spare page ESP-IDF's garbage collector needs; smaller partitions are "read-only" and every page
      may hold data.
    * Pages get sequence numbers 0, 1, 2, ... and start ACTIVE; opening a new page marks the previous
      one FULL.  Unused pages stay blank (all 0xFF), so the last written page stays ACTIVE.
    * A namespace entry (``u8`` in namespace 0) is written just before the first entry of its
      namespace; namespace indices count up from 1.
    * A primitive moves to a new page only when the page has no entry left.  A string moves to a new
      page when it would reach the last entry of the page (``entry_num + span >= 126``, not ``>``).
    * A blob is always split into BLOB_DATA chunks filling the tailroom of the current page (even a
      zero-length chunk when only one entry is left) followed by a BLOB_INDEX; chunk indices start at
      0 (version 0).  When the remaining tailroom after the last chunk is under one entry, the tool
      opens a new page before writing the index.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        read_only = size < 3 * PAGE_SIZE  # check_size(): below 0x3000 no page is reserved
        self.available = size if read_only else size - PAGE_SIZE
        self.pages: list[bytearray] = []
        self.entry_num = 0
        self.ns_index: dict[bytes, int] = {}
        self._new_page()

    @property
    def page(self) -> bytearray:
        return self.pages[-1]

    def _new_page(self) -> None:
        if self.pages:
            struct.pack_into("<I", self.page, 0, STATE_FULL)
        if self.available < PAGE_SIZE:
            raise NvsFullError(f"the content does not fit in a {self.size:#x}-byte NVS partition")
        self.available -= PAGE_SIZE
        page = bytearray(b"\xff" * PAGE_SIZE)
        struct.pack_into("<II", page, 0, STATE_ACTIVE, len(self.pages))
        page[8] = VERSION_2
        struct.pack_into("<I", page, 28, _crc32(bytes(page[4:28])))
        self.pages.append(page)
        self.entry_num = 0

    def _put(self, data: bytes | bytearray, count: int) -> None:
        """Write ``data`` at the next free entry and mark ``count`` entries written."""
        off = FIRST_ENTRY_OFFSET + self.entry_num * ENTRY_SIZE
        self.page[off : off + len(data)] = data
        for _ in range(count):
            bit = self.entry_num * 2
            self.page[BITMAP_OFFSET + bit // 8] &= ~(1 << (bit % 8)) & 0xFF
            self.entry_num += 1

    @staticmethod
    def _header(ns: int, code: int, span: int, chunk: int, key: bytes) -> bytearray:
        entry = bytearray(b"\xff" * ENTRY_SIZE)
        entry[0:4] = bytes((ns, code, span, chunk))
        entry[8:24] = key.ljust(16, b"\x00")
        return entry

    def _seal(self, entry: bytearray) -> bytearray:
        struct.pack_into("<I", entry, 4, _entry_crc(entry))
        return entry

    def _primitive(self, ns: int, key: bytes, type_name: str, value: int) -> None:
        if self.entry_num >= ENTRIES_PER_PAGE:
            self._new_page()
        code, fmt = _INT_TYPES[type_name]
        entry = self._header(ns, code, 1, CHUNK_ANY, key)
        struct.pack_into(fmt, entry, 24, value)
        self._put(self._seal(entry), 1)

    def _string(self, ns: int, key: bytes, value: bytes) -> None:
        data = value + b"\x00"
        data_entries = (len(data) + ENTRY_SIZE - 1) // ENTRY_SIZE
        span = data_entries + 1
        # The tool moves on when the string would reach the page's last entry (">=").  A string needing
        # the whole page (3969..4000 bytes) makes the tool fail; ESP-IDF accepts it on an empty page.
        if self.entry_num and self.entry_num + span >= ENTRIES_PER_PAGE:
            self._new_page()
        entry = self._header(ns, _T_SZ, span, CHUNK_ANY, key)
        struct.pack_into("<HxxI", entry, 24, len(data), _crc32(data))
        entry[26:28] = b"\xff\xff"
        self._put(self._seal(entry), 1)
        self._put(data, data_entries)

    def _blob(self, ns: int, key: bytes, value: bytes) -> None:
        if self.entry_num >= ENTRIES_PER_PAGE:
            self._new_page()
        remaining = len(value)
        offset = 0
        chunk_count = 0
        while True:
            if chunk_count >= MAX_BLOB_CHUNKS:
                raise NvsFormatError(f"blob of {len(value)} bytes needs more than {MAX_BLOB_CHUNKS} chunks")
            tailroom = (ENTRIES_PER_PAGE - self.entry_num - 1) * ENTRY_SIZE
            chunk_size = min(tailroom, remaining)
            remaining -= chunk_size
            chunk = value[offset : offset + chunk_size]
            data_entries = (chunk_size + ENTRY_SIZE - 1) // ENTRY_SIZE
            entry = self._header(ns, _T_BLOB_DATA, data_entries + 1, chunk_count, key)
            struct.pack_into("<HxxI", entry, 24, chunk_size, _crc32(chunk))
            entry[26:28] = b"\xff\xff"
            self._put(self._seal(entry), 1)
            self._put(chunk, data_entries)
            chunk_count += 1
            if remaining or tailroom - chunk_size < ENTRY_SIZE:
                self._new_page()
            offset += chunk_size
            if not remaining:
                break
        entry = self._header(ns, _T_BLOB_IDX, 1, CHUNK_ANY, key)
        struct.pack_into("<IBB", entry, 24, len(value), chunk_count, 0)
        self._put(self._seal(entry), 1)

    def write(self, item: _Item) -> None:
        ns = self.ns_index.get(item.ns_name)
        if ns is None:
            ns = len(self.ns_index) + 1
            self.ns_index[item.ns_name] = ns
            self._primitive(0, item.ns_name, "u8", ns)
        if item.type == "string":
            assert isinstance(item.value, bytes)
            self._string(ns, item.key, item.value)
        elif item.type == "blob":
            assert isinstance(item.value, bytes)
            self._blob(ns, item.key, item.value)
        else:
            assert isinstance(item.value, int)
            self._primitive(ns, item.key, item.type, item.value)

    def image(self) -> bytes:
        data = b"".join(self.pages)
        return data + b"\xff" * (self.size - len(data))


def build_partition(entries: Iterable[NvsEntry], size: int, keys: NvsKeys | None = None) -> bytes:
    """Build a fresh NVS partition image of ``size`` bytes holding ``entries`` in the given order.

    The layout matches ``nvs_partition_gen.py generate`` (esp-idf-nvs-partition-gen 0.3.0) byte for
    byte when each namespace's entries are given contiguously; unused bytes are 0xFF.  With ``keys``
    every written entry is encrypted, which matches ``nvs_partition_gen.py encrypt --inputkey`` with
    the same keys byte for byte.  Raises :class:`NvsFormatError` for content NVS cannot hold and
    :class:`NvsFullError` when it does not fit.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % PAGE_SIZE:
        raise NvsFormatError(f"NVS partition size must be a positive multiple of {PAGE_SIZE}")
    if keys is not None and not isinstance(keys, NvsKeys):
        raise NvsFormatError(f"keys must be NvsKeys, not {type(keys).__name__}")
    items = _validate(entries)
    writer = _Writer(size)
    for item in items:
        writer.write(item)
    image = writer.image()
    # the writer leaves every entry either written or empty, so this encrypts exactly the written ones
    return image if keys is None else encrypt_image(image, keys)
