"""The fuzz rig for the NVS reader (safesignal.nvs.format) and ``safesignal nvs dump`` (safesignal.nvs.dump):
inputs, properties and the run loop.  tests/test_fuzz_nvs.py draws inputs with hypothesis;
bench/fuzz_nvs.py runs many more and prints JSON.

Method (also in bench/README.md): every input is one of

* a mutation of a valid image - SafeSignal-like content (configuration records holding a WiFi
  password, outbox records, an identity private key and certificate, ESP-IDF WiFi credentials)
  and multi-page strings/blobs, each plain and encrypted (XTS-AES, the HMAC scheme's keys), plus a
  blank partition.  Structured mutations are applied to the plaintext - page-header rewrites
  (state, sequence number, version, with or without a valid CRC), entry-state bitmap rewrites,
  item-field rewrites (namespace, type, span, chunk index, size, chunk count/start, key bytes),
  copies of entries to other slots - then, for half of the inputs, every header and item CRC is
  recomputed so the checks behind the CRCs are reached; the image is then encrypted for the
  encrypted bases, and raw mutations are applied to the final bytes: bit flips, byte writes,
  junk runs, truncation and extension;
* random bytes (1-3 pages, or any length), half of them with plausible page headers and
  CRC-valid entries of random fields;
* random bytes carrying an ESP partition table (random rows), as a whole-flash dump.

Every input is run through ``parse_partition`` without keys, with the right keys and with wrong
keys, through strict parsing, ``erase_unreadable`` (no keys and right keys), ``build_report`` +
``render_text`` + ``render_json`` (no keys, right keys, wrong keys), and, for structured inputs,
``parse_partition(encrypt_image(plain), keys)`` against ``parse_partition(plain)``.  Properties:

1. only the documented errors: ``NvsFormatError`` from safesignal.nvs.format (and only for an image
   that is not a whole number of 4096-byte pages), ``UsageError`` from build_report; the
   renderers never raise and the JSON parses;
2. parse results are consistent: unique keys, value types match item types, finding kinds known,
   ``issues`` non-empty exactly when a problem was counted, strict parsing raises exactly then,
   ``undecryptable`` only with keys and equal to the bad-CRC count, page CRC counts add up;
3. ``erase_unreadable`` changes only bitmaps, only to "erased", and counts exactly those changes;
4. encryption is transparent: decrypting what ``encrypt_image`` made reads the same entries;
5. no planted secret (WiFi password, private key, WiFi PSK; raw or hex) appears in any issue or
   error text, nor in the dump's text or JSON output - unless the dump shows it as the value of
   an entry its masking policy classifies as not secret (a mutation renamed the key);
6. nothing hangs: each input must finish within ``--deadline`` seconds (default 5).

:func:`run` tries seeded random inputs; :func:`summary` is the JSON document bench/fuzz_nvs.py prints.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from safesignal.errors import UsageError
from safesignal.nvs.dump import MASK, build_report, classify, render_json, render_text
from safesignal.nvs.format import (
    FINDING_KINDS,
    PAGE_SIZE,
    NvsEntry,
    NvsFormatError,
    NvsKeys,
    NvsPartition,
    build_partition,
    derive_hmac_keys,
    encrypt_image,
    erase_unreadable,
    parse_partition,
)
from ssproto import records

KEYS = derive_hmac_keys(b"fuzz-hmac-key-0123456789abcdef!!")
OTHER_KEYS = NvsKeys(b"\x11" * 32, b"\x22" * 32)
PASSWORD = "fz-wifi-pass-7c1e9a0b"
PRIVATE_MARK = b"fz-private-key-3d5f8a21"
PSK = b"fz-net-psk-9b2c4e6d1f"
SECRETS: tuple[bytes, ...] = (PASSWORD.encode(), PRIVATE_MARK, PSK)
SECRET_FORMS: tuple[str, ...] = tuple(f for s in SECRETS for f in (s.decode(), s.hex()))

ENTRY_TYPES = [0x01, 0x11, 0x02, 0x12, 0x04, 0x14, 0x08, 0x18, 0x21, 0x41, 0x42, 0x48]
PAGE_STATES = [0xFFFFFFFE, 0xFFFFFFFC, 0xFFFFFFF8, 0xFFFFFFF0, 0x00000000, 0xFFFFFFFF]


def _config_record(gen: int) -> bytes:
    """What the device's ss_store writes (the firmware codec, ssproto.records)."""
    cfg = {"wifi_ssid": "Fuzz Net", "wifi_pass": PASSWORD, "device_id": "fz-1", "tenant": "t", "building": "b",
           "room": "r", "mqtt_uri": "mqtt://edge:1883"}
    return bytes(records.encode_record(gen, cfg))


def _outbox_record(seq: int) -> bytes:
    """What the device's ss_outbox writes."""
    return bytes(records.encode_entry("safesignal/t/b/r/fz-1", seq, "panic", 0, 1))


SAFESIGNAL = [
    NvsEntry("provision", "active", "i32", 1),
    NvsEntry("provision", "cfg1", "blob", _config_record(1)),
    NvsEntry("outbox", "next", "i32", 3),
    NvsEntry("outbox", "q00", "blob", _outbox_record(1)),
    NvsEntry("outbox", "q01", "blob", _outbox_record(2)),
    NvsEntry("provision", "key1", "blob", b"SSK\x01" + PRIVATE_MARK + bytes(74)),  # the device's private key
    NvsEntry("provision", "cert1", "blob", b"\x30\x82\x01\x00" + bytes(60)),
    NvsEntry("nvs.net80211", "sta.pswd", "blob", PSK),
    NvsEntry("misc", "n8", "u8", 7),
    NvsEntry("misc", "n64", "i64", -(2**40)),
    NvsEntry("misc", "s", "string", b"hello fuzz"),
]
MULTIPAGE = [
    NvsEntry("a", "big", "blob", bytes(range(256)) * 20),
    NvsEntry("a", "str", "string", b"s" * 3000),
    NvsEntry("b", "small", "blob", b"\x01\x02"),
    NvsEntry("b", "empty", "blob", b""),
    *[NvsEntry("b", f"k{i}", "u16", i) for i in range(40)],
]


@dataclass(frozen=True)
class Base:
    name: str
    plain: bytes
    keys: NvsKeys | None  # encrypt the (mutated) plaintext with these


def _bases() -> list[Base]:
    safesignal = build_partition(SAFESIGNAL, 0x4000)
    multipage = build_partition(MULTIPAGE, 0x5000)
    blank = b"\xff" * 0x3000
    return [
        Base("safesignal", safesignal, None),
        Base("safesignal-encrypted", safesignal, KEYS),
        Base("multipage", multipage, None),
        Base("multipage-encrypted", multipage, KEYS),
        Base("blank", blank, None),
    ]


BASES = _bases()

# -- mutations: plain data, so hypothesis and random.Random can both produce them -----------------
# ("header", page, state_index, seq, version, fix_crc)   page header rewrite
# ("bitmap", page, slot, state)                         entry-state bitmap rewrite
# ("field", page, slot, offset 0..31, value)            one byte of an entry (item fields, key bytes)
# ("copy", page, slot, page, slot)                      an entry copied (marked written)
# ("flip", offset, bit) / ("set", offset, value)        raw byte changes (after encryption)
# ("junk", offset, bytes)                               a run of raw bytes
# ("truncate", length) / ("extend", count)              size changes
Mutation = tuple[Any, ...]


def _entry_off(page: int, slot: int) -> int:
    return page * PAGE_SIZE + 64 + slot * 32


def _set_state(image: bytearray, page: int, slot: int, state: int) -> None:
    off = page * PAGE_SIZE + 32 + slot // 4
    shift = (slot % 4) * 2
    image[off] = (image[off] & ~(3 << shift) & 0xFF) | (state << shift)


def _state(image: bytes | bytearray, page: int, slot: int) -> int:
    return (image[page * PAGE_SIZE + 32 + slot // 4] >> ((slot % 4) * 2)) & 3


def _fix_crcs(image: bytearray) -> None:
    for page in range(len(image) // PAGE_SIZE):
        base = page * PAGE_SIZE
        if image[base : base + 4] == b"\xff\xff\xff\xff":
            continue
        struct.pack_into("<I", image, base + 28, zlib.crc32(bytes(image[base + 4 : base + 28]), 0xFFFFFFFF))
        for slot in range(126):
            if _state(image, page, slot) == 0b10:
                off = _entry_off(page, slot)
                body = bytes(image[off : off + 4]) + bytes(image[off + 8 : off + 32])
                struct.pack_into("<I", image, off + 4, zlib.crc32(body, 0xFFFFFFFF))


def apply_structured(plain: bytes, mutations: Sequence[Mutation], fix_crcs: bool) -> bytes:
    image = bytearray(plain)
    pages = len(image) // PAGE_SIZE
    for m in mutations:
        kind = m[0]
        if kind == "header":
            _, page, state_index, seq, version, fix = m
            base = (page % pages) * PAGE_SIZE
            struct.pack_into("<IIB", image, base, PAGE_STATES[state_index % len(PAGE_STATES)], seq, version)
            if fix:
                struct.pack_into("<I", image, base + 28, zlib.crc32(bytes(image[base + 4 : base + 28]), 0xFFFFFFFF))
        elif kind == "bitmap":
            _, page, slot, state = m
            _set_state(image, page % pages, slot % 126, state & 3)
        elif kind == "field":
            _, page, slot, offset, value = m
            image[_entry_off(page % pages, slot % 126) + offset % 32] = value & 0xFF
        elif kind == "copy":
            _, sp, ss, dp, ds = m
            src, dst = _entry_off(sp % pages, ss % 126), _entry_off(dp % pages, ds % 126)
            image[dst : dst + 32] = image[src : src + 32]
            _set_state(image, dp % pages, ds % 126, 0b10)
    if fix_crcs:
        _fix_crcs(image)
    return bytes(image)


def apply_raw(image: bytes, mutations: Sequence[Mutation]) -> bytes:
    data = bytearray(image)
    for m in mutations:
        kind = m[0]
        if not data and kind != "extend":
            continue
        if kind == "flip":
            data[m[1] % len(data)] ^= 1 << (m[2] % 8)
        elif kind == "set":
            data[m[1] % len(data)] = m[2] & 0xFF
        elif kind == "junk":
            off = m[1] % len(data)
            data[off : off + len(m[2])] = m[2]
            del data[len(image) :]
        elif kind == "truncate":
            del data[m[1] % (len(data) + 1) :]
        elif kind == "extend":
            data += b"\xff" * m[1]
    return bytes(data)


def build_case(
    base: Base, structured: Sequence[Mutation], fix_crcs: bool, raw: Sequence[Mutation]
) -> tuple[bytes, bytes]:
    """(final image, mutated plaintext before encryption)."""
    plain = apply_structured(base.plain, structured, fix_crcs)
    image = plain if base.keys is None else encrypt_image(plain, base.keys)
    return apply_raw(image, raw), plain


def structured_random_image(rng: random.Random, pages: int) -> bytes:
    """Random bytes with plausible page headers and CRC-valid entries of random fields."""
    image = bytearray(rng.randbytes(pages * PAGE_SIZE))
    for page in range(pages):
        base = page * PAGE_SIZE
        state, version = rng.choice(PAGE_STATES[:5]), rng.choice([0xFE, 0xFF, 1])
        struct.pack_into("<IIB", image, base, state, rng.randrange(4), version)
        for slot in range(126):
            off = _entry_off(page, slot)
            image[off] = rng.choice([0, 1, 2, 3, rng.randrange(256)])
            image[off + 1] = rng.choice([*ENTRY_TYPES, rng.randrange(256)])
            image[off + 2] = rng.choice([0, 1, 2, 3, 126, rng.randrange(256)])
            image[off + 3] = rng.choice([0xFF, 0, 1, 0x80, rng.randrange(256)])
            image[off + 8 + rng.randrange(16)] = 0
            struct.pack_into("<H", image, off + 24, rng.choice([0, 1, 32, 33, 4000, rng.randrange(65536)]))
            image[off + 28] = rng.choice([0, 1, 2, 200])
            image[off + 29] = rng.choice([0, 0x80, 1])
    _fix_crcs(image)
    return bytes(image)


def flash_with_table(rng: random.Random, nvs: bytes) -> bytes:
    """A whole-flash dump with an ESP partition table (random rows, sometimes a real nvs row)."""
    size = 0x20000
    flash = bytearray(rng.randbytes(size) if rng.random() < 0.3 else b"\xff" * size)
    rows = []
    for i in range(rng.randrange(1, 6)):
        label = rng.choice([b"nvs", b"nvs_keys", b"phy_init", b"factory", rng.randbytes(16)])
        rows.append(struct.pack("<2sBBLL16sL", b"\xaa\x50", rng.choice([0, 1, rng.randrange(256)]),
                                rng.choice([0, 1, 2, 4, rng.randrange(256)]),
                                rng.choice([0x9000, 0x10000, rng.randrange(2**32)]),
                                rng.choice([len(nvs), 0x6000, 0, rng.randrange(2**32)]), label[:16],
                                rng.randrange(4)))
        if i == 0 and rng.random() < 0.7:
            rows[-1] = struct.pack("<2sBBLL16sL", b"\xaa\x50", 1, 2, 0x9000, len(nvs), b"nvs", 0)
    table = b"".join(rows)
    if rng.random() < 0.5:
        table += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(table).digest()
    offset = rng.choice([0x8000, 0x8000, 0x3000, 0x1F000])
    flash[offset : offset + len(table) + 32] = table + b"\xff" * 32
    flash[0x9000 : 0x9000 + len(nvs)] = nvs[: size - 0x9000]
    return bytes(flash)


# -- the properties ---------------------------------------------------------------------------------


class PropertyFailure(AssertionError):
    pass


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise PropertyFailure(what)


def _no_secret(text: str, where: str) -> None:
    for form in SECRET_FORMS:
        _require(form not in text, f"a secret appeared in {where}")


def _check_partition(part: NvsPartition, keys: NvsKeys | None) -> None:
    _require(len({(e.namespace, e.key) for e in part.entries}) == len(part.entries), "duplicate keys returned")
    for e in part.entries:
        _require(e.namespace in part.namespaces, "entry in an unlisted namespace")
        if e.type in ("string", "blob"):
            _require(isinstance(e.value, bytes), "string/blob value is not bytes")
        else:
            _require(isinstance(e.value, int) and not isinstance(e.value, bool), "integer value is not int")
    _require(set(part.counts) <= set(FINDING_KINDS), "unknown finding kind")
    _require(bool(part.issues) == bool(part.problems), "issues and problem counts disagree")
    if keys is None:
        _require(part.undecryptable == 0, "undecryptable without keys")
    else:
        _require(part.undecryptable == part.counts.get("entry_crc_bad", 0), "undecryptable != bad CRCs")
    _require(sum(p.crc_bad for p in part.pages) == part.counts.get("entry_crc_bad", 0), "page crc_bad sum")
    _require(sum(p.crc_ok for p in part.pages) == part.counts.get("entry_crc_ok", 0), "page crc_ok sum")
    for issue in part.issues:
        _no_secret(issue, "an issue")


def _check_erase(image: bytes, keys: NvsKeys | None) -> None:
    try:
        fixed, count = erase_unreadable(image, keys)
    except NvsFormatError as e:
        _require(not image or len(image) % PAGE_SIZE != 0, f"erase_unreadable refused a valid size: {e}")
        return
    _require(len(fixed) == len(image), "erase_unreadable changed the size")
    changed = 0
    for base in range(0, len(image), PAGE_SIZE):
        _require(image[base : base + 32] == fixed[base : base + 32], "erase_unreadable changed a page header")
        _require(image[base + 64 : base + PAGE_SIZE] == fixed[base + 64 : base + PAGE_SIZE],
                 "erase_unreadable changed an entry")
        for i in range(base + 32, base + 64):
            a, b = image[i], fixed[i]
            for shift in range(0, 8, 2) if a != b else ():
                old, new = (a >> shift) & 3, (b >> shift) & 3
                if old != new:
                    _require(new == 0, "erase_unreadable set a state other than erased")
                    changed += 1
    _require(changed == count, "erase_unreadable miscounted")


def _check_report(image: bytes, keys: NvsKeys | None, stats: Counter[str]) -> None:
    try:
        report = build_report(image, keys=keys)
    except UsageError as e:
        _no_secret(str(e), "a usage error")
        stats["report_usage_error"] += 1
        return
    text = render_text(report)
    js = render_json(report)
    doc = json.loads(js)
    for issue in doc["issues"]:
        _no_secret(issue, "a dump issue")
    shown = ""
    for e in doc["entries"]:
        _require(e["class"] == classify(e["namespace"], e["key"]), "class differs from classify()")
        if e["class"] == "secret":
            _require(e.get("masked") is True and e["value"] == MASK, "a secret entry is not masked")
        if e["class"] in ("plain", "outbox_record", "certificate"):
            shown += json.dumps(e, ensure_ascii=False) + str(e.get("value"))
    for form in SECRET_FORMS:
        if form not in shown:
            _require(form not in text, "a secret appeared in the dump's text output")
            _require(form not in js, "a secret appeared in the dump's JSON output")
    stats["report_clean" if report.clean else "report_problems"] += 1


def check(image: bytes, plain: bytes | None = None, stats: Counter[str] | None = None) -> None:
    """Run every property on ``image``; raise PropertyFailure (or the unexpected exception)."""
    stats = stats if stats is not None else Counter()
    valid_size = bool(image) and len(image) % PAGE_SIZE == 0
    for keys in (None, KEYS, OTHER_KEYS):
        try:
            part = parse_partition(image, keys=keys)
        except NvsFormatError as e:
            _require(not valid_size, f"parse_partition refused a valid size: {e}")
            _no_secret(str(e), "a format error")
        else:
            _require(valid_size, "parse_partition accepted an invalid size")
            _check_partition(part, keys)
            for kind, n in part.counts.items():
                if n:
                    stats[kind] += 1
            if keys is None:
                try:
                    strict = parse_partition(image, keys=keys, strict=True)
                except NvsFormatError as e:
                    _require(bool(part.issues), "strict parsing raised on a clean image")
                    _no_secret(str(e), "a strict-mode error")
                else:
                    _require(not part.issues and strict.entries == part.entries, "strict parsing missed issues")
        _check_report(image, keys, stats)
    for keys in (None, KEYS):
        _check_erase(image, keys)
    if plain is not None and plain and len(plain) % PAGE_SIZE == 0:
        through = parse_partition(encrypt_image(plain, KEYS), keys=KEYS)
        direct = parse_partition(plain)
        _require(through.entries == direct.entries, "decrypting encrypt_image() output reads other entries")
        _require(through.namespaces == direct.namespaces, "decrypting encrypt_image() output reads other namespaces")


# -- random inputs ------------------------------------------------------------------------------------


def random_mutations(rng: random.Random, pages: int) -> tuple[list[Mutation], bool, list[Mutation]]:
    structured: list[Mutation] = []
    for _ in range(rng.choice([0, 1, 2, 4, 8])):
        kind = rng.choice(["header", "bitmap", "field", "field", "field", "copy"])
        if kind == "header":
            seq = rng.choice([0, 1, 2, rng.randrange(2**32)])
            version = rng.choice([0xFE, 0xFF, rng.randrange(256)])
            structured.append(("header", rng.randrange(pages), rng.randrange(8), seq, version, rng.random() < 0.7))
        elif kind == "bitmap":
            structured.append(("bitmap", rng.randrange(pages), rng.randrange(126), rng.randrange(4)))
        elif kind == "field":
            offset = rng.choice([0, 1, 2, 3, 8, 9, 12, 23, 24, 25, 26, 28, 29, rng.randrange(32)])
            structured.append(("field", rng.randrange(pages), rng.randrange(60), offset,
                               rng.choice([0, 1, 2, 0x48, 0x42, 0x21, 0x80, 0xFF, rng.randrange(256)])))
        else:
            src, dst = (rng.randrange(pages), rng.randrange(60)), (rng.randrange(pages), rng.randrange(126))
            structured.append(("copy", *src, *dst))
    raw: list[Mutation] = []
    size = pages * PAGE_SIZE
    for _ in range(rng.choice([0, 0, 1, 2, 5])):
        kind = rng.choice(["flip", "flip", "set", "junk", "truncate", "extend"])
        if kind == "flip":
            raw.append(("flip", rng.randrange(size), rng.randrange(8)))
        elif kind == "set":
            raw.append(("set", rng.randrange(size), rng.randrange(256)))
        elif kind == "junk":
            raw.append(("junk", rng.randrange(size), rng.randbytes(rng.randrange(1, 80))))
        elif kind == "truncate":
            raw.append(("truncate", rng.choice([rng.randrange(size), size - PAGE_SIZE, size - 1])))
        else:
            raw.append(("extend", rng.choice([1, PAGE_SIZE, rng.randrange(PAGE_SIZE)])))
    return structured, rng.random() < 0.5, raw


def random_case(rng: random.Random) -> tuple[str, bytes, bytes | None]:
    """(kind, image, plaintext to check encryption transparency with, or None)."""
    roll = rng.random()
    if roll < 0.75:
        base = rng.choice(BASES)
        structured, fix, raw = random_mutations(rng, len(base.plain) // PAGE_SIZE)
        image, plain = build_case(base, structured, fix, raw)
        return f"mutated-{base.name}", image, plain
    if roll < 0.9:
        pages = rng.randrange(1, 4)
        if rng.random() < 0.5:
            return "random-structured", structured_random_image(rng, pages), None
        size = rng.choice([pages * PAGE_SIZE, rng.randrange(3 * PAGE_SIZE)])
        return "random-bytes", rng.randbytes(size), None
    nvs = rng.choice(BASES)
    image = nvs.plain if nvs.keys is None else encrypt_image(nvs.plain, nvs.keys)
    return "flash-dump", flash_with_table(rng, image), None


@dataclass
class Totals:
    tried: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    stats: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0


def run(examples: int, seconds: float, seed: int, deadline: float) -> Totals:
    totals = Totals()
    start = time.monotonic()
    i = 0
    while (examples <= 0 or i < examples) and (seconds <= 0 or time.monotonic() - start < seconds):
        case_seed = seed + i
        rng = random.Random(case_seed)
        kind, image, plain = random_case(rng)
        totals.kinds[kind] += 1
        t0 = time.monotonic()
        try:
            check(image, plain, totals.stats)
            elapsed = time.monotonic() - t0
            totals.slowest = max(totals.slowest, elapsed)
            if elapsed > deadline:
                raise PropertyFailure(f"took {elapsed:.2f} s (deadline {deadline} s)")
        except Exception as e:  # a failed property or any unexpected exception
            if len(totals.failures) < 20:
                totals.failures.append({
                    "seed": case_seed,
                    "kind": kind,
                    "error": f"{type(e).__name__}: {e}",
                    "where": traceback.format_exc(limit=-3).strip().splitlines()[-3:],
                })
            else:
                totals.failures.append({"seed": case_seed})
        totals.tried += 1
        i += 1
    totals.stats["elapsed_ms"] = int((time.monotonic() - start) * 1000)
    return totals


def summary(totals: Totals, seed: int) -> dict[str, Any]:
    """What bench/fuzz_nvs.py prints: inputs tried, failures (with the seed that reproduces each),
    inputs/s, and how many inputs hit each kind of finding."""
    elapsed = totals.stats["elapsed_ms"] / 1000
    return {
        "inputs_tried": totals.tried,
        "failures": len(totals.failures),
        "failure_details": totals.failures[:20],
        "inputs_per_s": round(totals.tried / elapsed, 1) if elapsed else None,
        "elapsed_s": round(elapsed, 1),
        "slowest_input_s": round(totals.slowest, 3),
        "seed": seed,
        "input_kinds": dict(sorted(totals.kinds.items())),
        "inputs_with_finding": dict(sorted((k, v) for k, v in totals.stats.items() if k != "elapsed_ms")),
    }
