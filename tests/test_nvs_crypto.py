"""NVS encryption in safesignal.nvs.format against Espressif's own tool, both directions.

Espressif's ``esp-idf-nvs-partition-gen`` 0.3.0 runs through its real command line
(``python -m esp_idf_nvs_partition_gen ...``) as a subprocess; its exit codes are unreliable, so
every run is judged by the files it leaves.  Facts pinned here (see safesignal/nvs/format.py for the
upstream sources): XTS-AES-256 per written 32-byte entry, tweak = partition-relative address
little-endian; the nvs_keys file layout; the HMAC scheme's seeds and byte order; what
``nvs_flash_init`` (Page::load) does with entries it cannot read.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import random
import struct
import subprocess
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safesignal.nvs.format import (
    KEYS_PARTITION_SIZE,
    PAGE_SIZE,
    NvsEntry,
    NvsFormatError,
    NvsKeys,
    build_partition,
    decrypt_image,
    derive_hmac_keys,
    encrypt_image,
    erase_unreadable,
    keys_partition,
    parse_partition,
    read_keys_partition,
)

KEYS = NvsKeys(bytes(range(32)), bytes(range(100, 132)))
OTHER_KEYS = derive_hmac_keys(b"\x42" * 32)
PASSWORD = b"wifi-pass-DISTINCTIVE-4f1c9e"
BIG_BLOB = random.Random(7).randbytes(9000)  # chunks on three pages
LONG_TEXT = ("Lorem ipsum dolor sit amet " * 120)[:3000].encode()

# u8 / i32 / string / blob across several pages, multi-entry strings and blobs, two namespaces
CONTENT = [
    NvsEntry("provision", "u8", "u8", 200),
    NvsEntry("provision", "i32", "i32", -123456789),
    NvsEntry("provision", "pass", "string", PASSWORD),
    NvsEntry("provision", "empty", "string", b""),
    NvsEntry("provision", "long", "string", LONG_TEXT),
    NvsEntry("provision", "big", "blob", BIG_BLOB),
    NvsEntry("provision", "small", "blob", bytes.fromhex("00ff10a5")),
    NvsEntry("provision", "nothing", "blob", b""),
    *[NvsEntry("outbox", f"q{i:02d}", "i32", i * 1000 - 7) for i in range(64)],
    NvsEntry("outbox", "tail", "string", b"x" * 40),
]
SIZE = 0x6000


def entry_offset(page: int, slot: int) -> int:
    return page * PAGE_SIZE + 64 + slot * 32


def entry_state(image: bytes | bytearray, page: int, slot: int) -> int:
    return (image[page * PAGE_SIZE + 32 + slot // 4] >> ((slot % 4) * 2)) & 3


def set_entry_state(image: bytearray, page: int, slot: int, state: int) -> None:
    off = page * PAGE_SIZE + 32 + slot // 4
    shift = (slot % 4) * 2
    image[off] = (image[off] & ~(3 << shift) & 0xFF) | (state << shift)


def written_entries(image: bytes | bytearray) -> list[tuple[int, int]]:
    """(page, slot) of every entry marked written on an initialised page."""
    out = []
    for page in range(len(image) // PAGE_SIZE):
        if image[page * PAGE_SIZE : page * PAGE_SIZE + 4] == b"\xff\xff\xff\xff":
            continue
        out += [(page, slot) for slot in range(126) if entry_state(image, page, slot) == 0b10]
    return out


def find_header(plain: bytes, key: str, type_code: int) -> tuple[int, int]:
    want = key.encode().ljust(16, b"\x00")
    for page, slot in written_entries(plain):
        off = entry_offset(page, slot)
        if plain[off + 1] == type_code and plain[off + 8 : off + 24] == want:
            return page, slot
    raise AssertionError(f"no item {key!r}")


def run_tool(workdir: Path, *args: str) -> None:
    """Espressif's tool through its CLI; callers check the files it should have written."""
    subprocess.run(
        [sys.executable, "-m", "esp_idf_nvs_partition_gen", *args],
        cwd=workdir,
        capture_output=True,
        timeout=120,
        check=False,
    )


def write_csv(workdir: Path, entries: Sequence[NvsEntry]) -> Path:
    """A CSV for ``entries``; strings and blobs go through files so any content survives CSV."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = [["key", "type", "encoding", "value"]]
    current = None
    for i, e in enumerate(entries):
        if e.namespace != current:
            rows.append([e.namespace, "namespace", "", ""])
            current = e.namespace
        if isinstance(e.value, int):
            rows.append([e.key, "data", e.type, str(e.value)])
        elif e.type == "string" and e.value and len(e.value) < 100:
            rows.append([e.key, "data", "string", e.value.decode()])
        else:
            path = workdir / f"value{i}.bin"
            path.write_bytes(e.value)
            rows.append([e.key, "file", "string" if e.type == "string" else "binary", str(path)])
    path = workdir / "in.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return path


def tool_output(path: Path) -> bytes:
    assert path.exists() and path.stat().st_size > 0, f"the tool made no {path.name}"
    return path.read_bytes()


@pytest.fixture(scope="module")
def plain() -> bytes:
    return build_partition(CONTENT, SIZE)


@pytest.fixture(scope="module")
def encrypted() -> bytes:
    return build_partition(CONTENT, SIZE, KEYS)


# -- 1. ours -> the tool's decrypt -------------------------------------------------------------------


def test_encrypted_image_layout(plain: bytes, encrypted: bytes) -> None:
    assert len(encrypted) == SIZE
    written = written_entries(plain)
    assert len({p for p, _ in written}) >= 4  # the content really spans pages
    for page in range(SIZE // PAGE_SIZE):
        base = page * PAGE_SIZE
        assert encrypted[base : base + 64] == plain[base : base + 64]  # header and bitmap stay plain
        for slot in range(126):
            off = entry_offset(page, slot)
            if (page, slot) in written:
                assert encrypted[off : off + 32] != plain[off : off + 32]
            else:
                assert encrypted[off : off + 32] == plain[off : off + 32] == b"\xff" * 32
    # an entry's ciphertext depends on its address: the same plaintext at two addresses differs
    a, b = written[0], written[1]
    k = KEYS.encrypt_entry
    same = bytes(32)
    assert k(entry_offset(*a), same) != k(entry_offset(*b), same)
    assert decrypt_image(encrypted, KEYS) == plain
    assert encrypt_image(plain, KEYS) == encrypted


def test_tool_decrypts_our_image(tmp_path: Path, plain: bytes, encrypted: bytes) -> None:
    (tmp_path / "enc.bin").write_bytes(encrypted)
    (tmp_path / "keys.bin").write_bytes(keys_partition(KEYS))
    run_tool(tmp_path, "decrypt", "enc.bin", "keys.bin", "dec.bin")
    assert tool_output(tmp_path / "dec.bin") == plain


# -- 2. the tool's encrypt -> ours -------------------------------------------------------------------


def test_tool_encrypted_image_reads_back(tmp_path: Path, encrypted: bytes) -> None:
    csv_path = write_csv(tmp_path, CONTENT)
    (tmp_path / "keys.bin").write_bytes(keys_partition(KEYS))
    run_tool(tmp_path, "encrypt", csv_path.name, "enc.bin", hex(SIZE), "--inputkey", "keys.bin")
    run_tool(tmp_path, "generate", csv_path.name, "plain.bin", hex(SIZE))
    theirs = tool_output(tmp_path / "enc.bin")
    their_plain = tool_output(tmp_path / "plain.bin")
    part = parse_partition(theirs, keys=KEYS, strict=True)
    reference = parse_partition(their_plain, strict=True)
    assert part.entries == reference.entries == CONTENT
    assert part.namespaces == reference.namespaces == {"provision": 1, "outbox": 2}
    assert part.undecryptable == 0 and part.issues == []
    # and the writer produces the tool's bytes exactly, encrypted as well as plain
    assert theirs == encrypted
    assert their_plain == build_partition(CONTENT, SIZE)


def test_tool_generated_keys_file(tmp_path: Path) -> None:
    """``encrypt --keygen`` makes its own (random) keys file: ours reads it and decrypts the image."""
    entries = [
        NvsEntry("ns", "a", "u8", 1),
        NvsEntry("ns", "s", "string", b"hello"),
        NvsEntry("ns", "b", "blob", b"z" * 300),
    ]
    csv_path = write_csv(tmp_path, entries)
    run_tool(
        tmp_path, "encrypt", csv_path.name, "enc.bin", "0x3000", "--keygen", "--keyfile", "k.bin", "--outdir", "out"
    )
    key_file = tool_output(tmp_path / "out" / "keys" / "k.bin")
    assert len(key_file) == KEYS_PARTITION_SIZE
    keys = read_keys_partition(key_file)
    assert keys_partition(keys) == key_file
    image = tool_output(tmp_path / "out" / "enc.bin")
    assert parse_partition(image, keys=keys, strict=True).entries == entries
    assert build_partition(entries, 0x3000, keys) == image


# -- 3. HMAC-based key derivation -------------------------------------------------------------------

HMAC_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")


def test_hmac_derivation_by_hand() -> None:
    """nvs_sec_provider.c: uint32_t seeds {0xAEBE5A5A x 8} / {0xCEDEA5A5 x 8} as the little-endian
    chip stores them, i.e. the byte strings 5A 5A BE AE ... and A5 A5 DE CE ..."""
    e_seed = bytes([0x5A, 0x5A, 0xBE, 0xAE]) * 8
    t_seed = bytes([0xA5, 0xA5, 0xDE, 0xCE]) * 8
    keys = derive_hmac_keys(HMAC_KEY)
    assert keys.ekey == hmac.new(HMAC_KEY, e_seed, hashlib.sha256).digest()
    assert keys.tkey == hmac.new(HMAC_KEY, t_seed, hashlib.sha256).digest()
    # the big-endian reading of the same constants gives other keys
    assert keys.ekey != hmac.new(HMAC_KEY, struct.pack(">8I", *[0xAEBE5A5A] * 8), hashlib.sha256).digest()


def test_hmac_derivation_matches_tool(tmp_path: Path) -> None:
    (tmp_path / "hmac.bin").write_bytes(HMAC_KEY)
    run_tool(
        tmp_path, "generate-key", "--key_protect_hmac", "--kp_hmac_inputkey", "hmac.bin", "--keyfile", "k.bin",
        "--outdir", "out",
    )
    key_file = tool_output(tmp_path / "out" / "keys" / "k.bin")
    assert key_file == keys_partition(derive_hmac_keys(HMAC_KEY))
    assert read_keys_partition(key_file) == derive_hmac_keys(HMAC_KEY)


def test_tool_hmac_encrypted_image(tmp_path: Path) -> None:
    """An image the tool encrypts with HMAC-derived keys reads with the keys derived from the eFuse key."""
    (tmp_path / "hmac.bin").write_bytes(HMAC_KEY)
    csv_path = write_csv(tmp_path, CONTENT)
    run_tool(
        tmp_path, "encrypt", csv_path.name, "enc.bin", hex(SIZE), "--keygen", "--keyfile", "k.bin",
        "--key_protect_hmac", "--kp_hmac_inputkey", "hmac.bin", "--outdir", "out",
    )
    image = tool_output(tmp_path / "out" / "enc.bin")
    assert parse_partition(image, keys=derive_hmac_keys(HMAC_KEY), strict=True).entries == CONTENT


# -- keys: validation and the nvs_keys partition --------------------------------------------------


def test_keys_partition_format() -> None:
    part = keys_partition(KEYS)
    assert len(part) == 4096
    assert part[:64] == KEYS.ekey + KEYS.tkey
    assert part[64:68] == struct.pack("<I", zlib.crc32(KEYS.ekey + KEYS.tkey, 0xFFFFFFFF))
    assert part[68:] == b"\xff" * (4096 - 68)
    assert read_keys_partition(part) == KEYS
    assert read_keys_partition(part[:68]) == KEYS  # the padding is not needed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff" * 4096, "erased"),
        (b"\x00" * 67, "at least 68"),
        (keys_partition(KEYS)[:64] + b"\x00\x00\x00\x00", "CRC"),
        (bytes(64) + struct.pack("<I", zlib.crc32(bytes(64), 0xFFFFFFFF)), "differ"),  # ekey == tkey
    ],
)
def test_bad_keys_partitions(data: bytes, message: str) -> None:
    with pytest.raises(NvsFormatError, match=message):
        read_keys_partition(data)


def test_keys_validation_and_repr() -> None:
    with pytest.raises(NvsFormatError):
        NvsKeys(b"a" * 31, b"b" * 32)
    with pytest.raises(NvsFormatError):
        NvsKeys(b"a" * 32, b"a" * 32)
    with pytest.raises(NvsFormatError):
        derive_hmac_keys(b"short")
    text = repr(KEYS) + str(KEYS)
    assert KEYS.ekey.hex() not in text and "hidden" in text
    with pytest.raises(NvsFormatError):
        parse_partition(b"\xff" * PAGE_SIZE, keys=b"x" * 64)  # type: ignore[arg-type]


# -- 4. wrong keys -----------------------------------------------------------------------------------


def test_wrong_keys_read_nothing(encrypted: bytes) -> None:
    part = parse_partition(encrypted, keys=OTHER_KEYS)
    assert part.entries == [] and part.namespaces == {}
    assert part.undecryptable == len(written_entries(encrypted)) > 400
    assert part.counts["undecryptable"] == part.counts["entry_crc_bad"] == part.undecryptable
    assert "entry_crc_ok" not in part.counts
    assert all("cannot be decrypted" in i for i in part.issues)
    assert sum(p.crc_bad for p in part.pages) == part.undecryptable
    with pytest.raises(NvsFormatError):
        parse_partition(encrypted, keys=OTHER_KEYS, strict=True)
    # without any keys, the encrypted image is just as unreadable, counted as bad CRCs
    nokeys = parse_partition(encrypted)
    assert nokeys.entries == [] and nokeys.undecryptable == 0
    assert nokeys.counts["entry_crc_bad"] == part.undecryptable


def test_keys_on_plain_image(plain: bytes) -> None:
    part = parse_partition(plain, keys=KEYS)
    assert part.entries == [] and part.undecryptable == len(written_entries(plain))


# -- 5. erase_unreadable -------------------------------------------------------------------------


def test_erase_unreadable_right_keys_changes_nothing(encrypted: bytes, plain: bytes) -> None:
    assert erase_unreadable(encrypted, KEYS) == (encrypted, 0)
    assert erase_unreadable(plain, None) == (plain, 0)


def test_erase_unreadable_wrong_keys(encrypted: bytes) -> None:
    written = written_entries(encrypted)
    image, count = erase_unreadable(encrypted, OTHER_KEYS)
    assert count == len(written)
    assert written_entries(image) == []
    for page, slot in written:
        assert entry_state(image, page, slot) == 0b00
    # only bitmaps changed: headers and entry bytes are as they were
    diff = [i for i in range(SIZE) if image[i] != encrypted[i]]
    assert all(32 <= i % PAGE_SIZE < 64 for i in diff)
    # the chip now sees an empty, healthy NVS (erased entries are normal, not issues)
    for keys in (KEYS, OTHER_KEYS):
        part = parse_partition(image, keys=keys, strict=True)
        assert part.entries == [] and part.undecryptable == 0
    assert erase_unreadable(image, KEYS) == (image, 0)  # nothing left to do


def test_erase_unreadable_damaged_entries(plain: bytes, encrypted: bytes) -> None:
    image = bytearray(encrypted)
    # a primitive: one ciphertext bit
    i32 = find_header(plain, "i32", 0x14)
    image[entry_offset(*i32) + 20] ^= 0x01
    # a string's header: it and each of its data entries fail as item headers
    page, slot = find_header(plain, "tail", 0x21)
    span = plain[entry_offset(page, slot) + 2]
    image[entry_offset(page, slot) + 9] ^= 0x80
    # a string's data entry: the header is fine, the data CRC fails (nothing erased at load;
    # ESP-IDF erases the item when it is read)
    long_page, long_slot = find_header(plain, "long", 0x21)
    image[entry_offset(long_page, long_slot + 3)] ^= 0x01
    fixed, count = erase_unreadable(bytes(image), KEYS)
    assert count == 1 + span
    assert entry_state(fixed, *i32) == 0b00
    assert [entry_state(fixed, page, s) for s in range(slot, slot + span)] == [0b00] * span
    assert entry_state(fixed, long_page, long_slot) == 0b10
    before = parse_partition(bytes(image), keys=KEYS)
    assert before.undecryptable == 1 + span
    after = parse_partition(fixed, keys=KEYS)
    assert after.undecryptable == 0
    keys_after = {e.key for e in after.entries}
    assert keys_after == {e.key for e in CONTENT} - {"i32", "tail", "long"}
    assert any("data CRC" in i for i in after.issues)


def test_erase_unreadable_plain_and_page_rules(plain: bytes) -> None:
    image = bytearray(plain)
    # the last written page is ACTIVE: a half-written entry right after the last written one
    active = max(p for p, _ in written_entries(plain))
    assert plain[active * PAGE_SIZE : active * PAGE_SIZE + 4] == b"\xfe\xff\xff\xff"
    free = max(s for p, s in written_entries(plain) if p == active) + 1
    image[entry_offset(active, free) : entry_offset(active, free) + 4] = b"\x01\x01\x01\x00"
    # an illegal bitmap state on the active page, before the free position, on a one-entry item
    # (on an item header it would cascade: its data entries then fail as item headers)
    illegal = next(s for p, s in (find_header(plain, f"q{i:02d}", 0x14) for i in range(64)) if p == active)
    set_entry_state(image, active, illegal, 0b01)
    # a FULL page's string whose data entry is marked erased: the whole span goes
    page, slot = find_header(plain, "long", 0x21)
    assert plain[page * PAGE_SIZE : page * PAGE_SIZE + 4] == b"\xfc\xff\xff\xff"
    span = plain[entry_offset(page, slot) + 2]
    set_entry_state(image, page, slot + 5, 0b00)
    fixed, count = erase_unreadable(bytes(image), None)
    assert count == 1 + 1 + (span - 1)
    assert entry_state(fixed, active, free) == 0b00
    assert entry_state(fixed, active, illegal) == 0b00
    assert all(entry_state(fixed, page, s) == 0b00 for s in range(slot, slot + span))
    assert erase_unreadable(fixed, None) == (fixed, 0)


def test_erase_unreadable_skips_unloaded_pages(encrypted: bytes) -> None:
    image = bytearray(encrypted)
    image[8] ^= 0xFF  # page 0: bad header CRC -> not loaded, not touched
    fixed, count = erase_unreadable(bytes(image), OTHER_KEYS)
    assert fixed[:PAGE_SIZE] == bytes(image[:PAGE_SIZE])
    assert count == len([w for w in written_entries(encrypted) if w[0] != 0])
    with pytest.raises(NvsFormatError):
        erase_unreadable(b"\xff" * 100, KEYS)


# -- 6. no plaintext in the encrypted image ------------------------------------------------------


def test_no_plaintext_in_encrypted_image(plain: bytes, encrypted: bytes) -> None:
    for needle in (PASSWORD, b"provision", b"outbox", LONG_TEXT[:16], BIG_BLOB[1000:1016]):
        assert needle in plain
        assert needle not in encrypted


# -- properties ---------------------------------------------------------------------------------

NAMES = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=15)


@st.composite
def contents(draw: st.DrawFn) -> list[NvsEntry]:
    keys = draw(st.lists(NAMES, max_size=10, unique=True))
    entries = []
    for key in keys:
        kind = draw(st.sampled_from(["u8", "i32", "u64", "string", "blob"]))
        if kind == "string":
            value: int | bytes = draw(st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"\x01")))
        elif kind == "blob":
            value = draw(st.binary(max_size=5000))
        else:
            value = draw(st.integers(0, 255 if kind == "u8" else 2**31 - 1))
        entries.append(NvsEntry(draw(st.sampled_from(["a", "b"])), key, kind, value))
    entries.sort(key=lambda e: e.namespace)
    return entries


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=contents(), ekey=st.binary(min_size=32, max_size=32), tkey=st.binary(min_size=32, max_size=32))
def test_round_trip_encrypted(entries: list[NvsEntry], ekey: bytes, tkey: bytes) -> None:
    if ekey == tkey:
        return
    keys = NvsKeys(ekey, tkey)
    image = build_partition(entries, 0x5000, keys)
    assert parse_partition(image, keys=keys, strict=True).entries == entries
    assert decrypt_image(image, keys) == build_partition(entries, 0x5000)
    assert erase_unreadable(image, keys) == (image, 0)


def test_torn_entries_are_not_read(tmp_path: Path) -> None:
    """Entries from the active page's first free slot on whose raw first word is not blank were
    half-written (nvs_page.cpp marks them erased at load): even if their bitmap says written, they
    are not read - plain or encrypted - and erase_unreadable erases them."""
    entries = [NvsEntry("ns", "a", "u8", 1), NvsEntry("ns", "b", "u8", 2), NvsEntry("ns", "c", "u8", 3)]
    for keys in (None, KEYS):
        image = bytearray(build_partition(entries, 0x3000, keys))
        set_entry_state(image, 0, 1, 0b11)  # "a": back to empty, bytes left: the first free slot
        part = parse_partition(bytes(image), keys=keys)
        assert part.entries == [] and part.namespaces == {"ns": 1}
        assert part.counts["torn_entries"] == 3
        fixed, count = erase_unreadable(bytes(image), keys)
        assert count == 3 and [entry_state(fixed, 0, s) for s in range(4)] == [0b10, 0, 0, 0]
        assert parse_partition(fixed, keys=keys, strict=True).entries == []
