"""NVS has history: the virtual flash writes as ESP-IDF's NVS does (an append-only log of 32-byte
entries on 4 KB pages; safesignal/sim/flash.py follows ESP-IDF v5.5 nvs_storage.cpp, nvs_page.cpp,
nvs_pagemanager.cpp), power cuts land between any two physical flash writes, and the power-up
recovery ESP-IDF does brings every image back to old-or-new.

Library level (fast): the write path against ESP-IDF's rules; then thousands of alerts and
several re-provisionings with the firmware's own store and outbox code (bench/power_cut.py
Scenario: ss_store / ss_outbox run unmodified on CPython over esp32.NVS semantics), read back
with our reader and, encrypted, through esp-idf-nvs-partition-gen's decrypt; then 500+ power
cuts at random flash writes during saves and alerts.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from safesignal.nvs.format import (
    NvsKeys,
    derive_hmac_keys,
    keys_partition,
    parse_partition,
)
from safesignal.sim.flash import FlashNvs, PowerCut
from support.power_cut import Scenario

KEYS = derive_hmac_keys(bytes(range(1, 33)))
PAGE = 4096


def states(image: bytes, page: int) -> list[int]:
    base = page * PAGE + 32
    return [(image[base + n // 4] >> ((n % 4) * 2)) & 3 for n in range(126)]


def header(image: bytes, page: int) -> tuple[int, int]:
    state, seq = struct.unpack_from("<II", image, page * PAGE)
    return state, seq


def entry(image: bytes, page: int, n: int, keys: NvsKeys | None = None) -> bytes:
    off = page * PAGE + 64 + n * 32
    raw = image[off : off + 32]
    return raw if keys is None else keys.decrypt_entry(off, raw)


def written_items(image: bytes, keys: NvsKeys | None = None) -> list[tuple[int, int, bytes]]:
    """(page, entry, header) of every entry whose bitmap says written and that reads as an item header."""
    out = []
    for p in range(len(image) // PAGE):
        if header(image, p)[0] == 0xFFFFFFFF:
            continue
        for n, s in enumerate(states(image, p)):
            if s == 0b10:
                out.append((p, n, entry(image, p, n, keys)))
    return out


def flash(tmp_path: Path, keys: NvsKeys | None = None) -> FlashNvs:
    f = FlashNvs(tmp_path / "nvs.bin", write_through=True, keys=keys)
    f.create()
    f.open("ns")
    return f


def values(path: Path, keys: NvsKeys | None = None) -> dict[str, int | bytes]:
    part = parse_partition(path.read_bytes(), strict=True, keys=keys)
    return {e.key: e.value for e in part.entries if e.namespace == "ns"}


# -- the write path against ESP-IDF's rules -----------------------------------------------------


@pytest.mark.parametrize("keys", [None, KEYS], ids=["plain", "encrypted"])
def test_set_writes_new_then_erases_old(tmp_path: Path, keys: NvsKeys | None) -> None:
    f = flash(tmp_path, keys)
    f.set("ns", "k", "i32", 1)
    image = f.path.read_bytes()
    first = [n for n, s in enumerate(states(image, 0)) if s == 0b10]
    f.set("ns", "k", "i32", 2)
    image = f.path.read_bytes()
    st = states(image, 0)
    # the old copy stays where it was, erased (bitmap 00); the new one is appended after it
    assert st[first[-1]] == 0b00
    assert st[first[-1] + 1] == 0b10
    assert entry(image, 0, first[-1], keys)[24:28] == struct.pack("<i", 1)
    assert values(f.path, keys) == {"k": 2}
    # the same value again writes nothing (Storage::writeItem compares first)
    before = f.flash_writes
    f.set("ns", "k", "i32", 2)
    assert f.flash_writes == before


def test_cut_between_new_and_erase_old_is_recovered_at_power_up(tmp_path: Path) -> None:
    """Fails against the rewrite-everything flash: there an image holding both copies was
    never cleaned up at power-up (nor could a cut ever land between the two writes)."""
    f = flash(tmp_path)
    f.set("ns", "k", "i32", 1)
    f.cut_after_flash_writes(3)  # 1: new entry, 2: its bitmap word, 3: the old entry's bitmap word
    with pytest.raises(PowerCut):
        f.set("ns", "k", "i32", 2)
    part = parse_partition(f.path.read_bytes())
    assert part.counts.get("duplicate_key") == 1  # both copies are written: new first, then erase old
    g = FlashNvs(f.path)  # nvs_flash_init: PageManager::load erases the older copy
    assert g.get("ns", "k", "i32") == 2
    assert parse_partition(f.path.read_bytes(), strict=True).issues == []


@pytest.mark.parametrize("torn", [False, True])
def test_cut_in_a_blob_write_keeps_the_old_value(tmp_path: Path, torn: bool) -> None:
    f = flash(tmp_path)
    f.set("ns", "b", "blob", b"old" * 100)
    for n in range(1, 40):
        f.cut_after_flash_writes(n, torn=torn, seed=n)
        try:
            f.set("ns", "b", "blob", b"new" * 100)
        except PowerCut:
            f.power_up()
            got = f.get("ns", "b", "blob")
            assert got in (b"old" * 100, b"new" * 100)
            assert parse_partition(f.path.read_bytes(), strict=True).issues == []
            if got == b"new" * 100:
                f.set("ns", "b", "blob", b"old" * 100)
            continue
        break
    else:
        raise AssertionError("the write never completed")
    assert n > 5  # the cut really landed inside the write several times


def test_full_page_makes_the_next_page_active(tmp_path: Path) -> None:
    f = flash(tmp_path)
    for i in range(130):
        f.set("ns", f"k{i}", "u32", i)
    image = f.path.read_bytes()
    assert header(image, 0) == (0xFFFFFFFC, 0)  # FULL, sequence 0
    assert header(image, 1) == (0xFFFFFFFE, 1)  # ACTIVE, sequence 1
    assert values(f.path) == {f"k{i}": i for i in range(130)}


def test_reclaim_moves_live_entries_and_keeps_a_spare_page(tmp_path: Path) -> None:
    """Fails against the rewrite-everything flash: it never erased a sector nor reused a page."""
    f = flash(tmp_path)
    f.set("ns", "keep", "blob", b"K" * 700)
    for i in range(2000):
        f.set("ns", "n", "i32", i)
        image = f.path.read_bytes()
        if i % 97 == 0:
            assert any(header(image, p)[0] == 0xFFFFFFFF for p in range(6)), "no spare page left"
    assert sum(f.sector_erases) > 0
    image = f.path.read_bytes()
    seqs = [header(image, p)[1] for p in range(6) if header(image, p)[0] != 0xFFFFFFFF]
    assert max(seqs) >= 6  # pages were reclaimed and activated again
    assert values(f.path) == {"keep": b"K" * 700, "n": 1999}


def test_blob_versions_alternate(tmp_path: Path) -> None:
    f = flash(tmp_path)
    starts = []
    for v in (b"a" * 50, b"b" * 50, b"c" * 50):
        f.set("ns", "b", "blob", v)
        live = [h for _, _, h in written_items(f.path.read_bytes()) if h[1] == 0x48]
        assert len(live) == 1
        starts.append(live[0][29])  # the blob index's chunk start: VER_0 (0x00) / VER_1 (0x80)
        chunks = [h[3] for _, _, h in written_items(f.path.read_bytes()) if h[1] == 0x42]
        assert chunks == [live[0][29]]  # the old version's chunk is erased
    assert starts == [0x00, 0x80, 0x00]
    assert values(f.path) == {"b": b"c" * 50}


def test_multi_page_blob_placement(tmp_path: Path) -> None:
    f = flash(tmp_path)
    for i in range(118):  # leave 7 entries: tailroom (126 - 119 - 1) * 32 = 192 < 400
        f.set("ns", f"k{i}", "u8", i % 256)
    f.set("ns", "small", "blob", b"s" * 1000)  # does not fit, tailroom < CHUNK_MAX_SIZE / 10: a new page
    chunks = [(p, h[3]) for p, _, h in written_items(f.path.read_bytes()) if h[1] == 0x42]
    assert chunks == [(1, 0)]
    for i in range(20):  # page 1 now has room left >= 400 bytes but less than the next blob
        f.set("ns", f"m{i}", "u8", i)
    f.set("ns", "big", "blob", bytes(range(256)) * 12)  # 3072 bytes: split over pages 1 and 2
    big = sorted((p, h[3]) for p, _, h in written_items(f.path.read_bytes()) if h[1] == 0x42 and h[8:11] == b"big")
    assert big == [(1, 0), (2, 1)]
    assert values(f.path)["big"] == bytes(range(256)) * 12


def test_namespace_entries_are_never_erased(tmp_path: Path) -> None:
    f = flash(tmp_path)
    f.open("other")
    for i in range(1500):
        f.set("ns", "n", "i32", i)
        f.set("other", "m", "i32", -i)
    image = f.path.read_bytes()
    for p in range(6):
        if header(image, p)[0] == 0xFFFFFFFF:
            continue
        for n, s in enumerate(states(image, p)):
            if s == 0b00:
                assert entry(image, p, n)[0] != 0, "an erased namespace entry"
    part = parse_partition(image, strict=True)
    assert part.namespaces == {"ns": 1, "other": 2}


@pytest.mark.parametrize("write_through", [False, True])
def test_nvs_open_writes_a_new_namespace_at_once(tmp_path: Path, write_through: bool) -> None:
    """esp32.NVS(ns) is nvs_open(NVS_READWRITE): a new namespace's entry reaches the flash at
    once, whatever the write model, and a power cut before it leaves no namespace
    (nvs_storage.cpp Storage::createOrOpenNamespace).  The earlier model wrote it only with the
    namespace's first item, so a device that booted once left a blank chip's flash blank."""
    f = flash(tmp_path)
    f.set_write_through(write_through)
    blank = f.path.read_bytes()
    f.open_rw("provision")
    f.open_rw("provision")  # opening again writes nothing
    image = f.path.read_bytes()
    assert image != blank and not f.pending
    assert parse_partition(image, strict=True).namespaces == {"provision": 1}
    assert parse_partition(image, strict=True).entries == []
    writes = f.flash_writes
    f.cut_after_flash_writes(1)
    with pytest.raises(PowerCut):
        f.open_rw("outbox")
    assert f.flash_writes == writes
    f.power_up()
    assert parse_partition(f.path.read_bytes(), strict=True).namespaces == {"provision": 1}


@pytest.mark.parametrize("cut", range(1, 12))
def test_cut_during_reclaim_is_finished_at_power_up(tmp_path: Path, cut: int) -> None:
    f = flash(tmp_path)
    f.set("ns", "keep", "blob", b"K" * 300)
    i = 0
    while sum(f.sector_erases) == 0:  # run up to the first reclaim, remembering its start
        assert i < 5000, "no page was ever reclaimed"
        snapshot = f.path.read_bytes()
        i += 1
        f.set("ns", "n", "i32", i)
    f.path.write_bytes(snapshot)
    g = FlashNvs(f.path, write_through=True)
    g.cut_after_flash_writes(cut)
    try:
        g.set("ns", "n", "i32", i)
    except PowerCut:
        pass
    h = FlashNvs(f.path)  # recovery: a FREEING page is copied again and erased
    assert h.get("ns", "n", "i32") in (i - 1, i)
    assert h.get("ns", "keep", "blob") == b"K" * 300
    part = parse_partition(f.path.read_bytes(), strict=True)
    assert "freeing" not in [p.state for p in part.pages]


def test_reader_understands_an_interrupted_reclaim(tmp_path: Path) -> None:
    """A FREEING page and the half-filled page it is being copied to: the reader (like ESP-IDF)
    takes the items from the FREEING page and ignores the partial copies."""
    f = flash(tmp_path)
    f.set("ns", "keep", "blob", b"K" * 300)
    i = 0
    while sum(f.sector_erases) == 0:  # every page half live, half erased: the victim has items to copy
        assert i < 5000, "no page was ever reclaimed"
        snapshot = f.path.read_bytes()
        i += 1
        f.set("ns", f"u{i}" if i % 2 else "n", "i32", i)
    content = values(f.path)
    with_copies = 0
    for cut in range(1, 30):
        f.path.write_bytes(snapshot)
        g = FlashNvs(f.path, write_through=True)
        g.cut_after_flash_writes(cut)
        try:
            g.set("ns", f"u{i}" if i % 2 else "n", "i32", i)
            break  # the cut came after the last write
        except PowerCut:
            pass
        image = f.path.read_bytes()
        part = parse_partition(image)
        freeing = [p for p in part.pages if p.state == "freeing"]
        if not freeing:
            continue
        newest = max((p for p in part.pages if p.seq is not None), key=lambda p: p.seq or 0)
        if newest.state == "active" and newest.written > 0 and newest.seq != freeing[0].seq:
            with_copies += 1
        if newest.state == "active" and newest.written > 0 and newest.seq != freeing[0].seq:
            assert part.interrupted["reclaim_copy_entries"] == newest.written
        assert part.issues == [], part.issues
        before = dict(content)
        del before[f"u{i}" if i % 2 else "n"]
        assert {e.key: e.value for e in part.entries if e.key in before} == before
    assert with_copies >= 3, "no cut left a FREEING page with part of its copy made"


def test_blank_chip_file_only_at_first_power_up_and_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "nvs.bin"
    f = FlashNvs(path)
    assert not path.exists()
    f.create()
    assert path.stat().st_mode & 0o777 == 0o600
    f.set_write_through(True)
    f.set("ns", "k", "i32", 1)
    assert path.stat().st_mode & 0o777 == 0o600


# -- a device's life: thousands of alerts, several re-provisionings -----------------------------


def expected_content(sc: Scenario) -> dict[tuple[str, str], int | bytes]:
    """What the flash must hold: the committed configuration and the outbox's state."""
    assert sc.cfg is not None
    cfg, ident = sc.cfg
    gen = sc.dev.store.generation
    import ss_outbox
    import ss_store

    want: dict[tuple[str, str], int | bytes] = {("provision", "active"): gen}
    want[("provision", f"cfg{gen % 2}")] = ss_store.encode_record(
        gen, cfg, ss_store.identity_digest(ident) if ident else None
    )
    if ident:
        for p in ("key", "cert", "ca"):
            want[("provision", f"{p}{gen % 2}")] = ident[p]
    ob = sc.dev.outbox
    want[("outbox", "next")] = ob.next_seq
    assert ob.epoch is not None
    want[("outbox", "epoch")] = ob.epoch
    for seq, slot in ob._slot.items():
        raw = sc.dev.flash.get("outbox", f"q{slot:02d}", "blob")
        assert isinstance(raw, bytes) and ss_outbox.decode_entry(raw) is not None and seq in sc.pending
        want[("outbox", f"q{slot:02d}")] = raw
    return want


@pytest.mark.parametrize("keys", [None, KEYS], ids=["plain", "encrypted"])
def test_thousands_of_alerts_and_reprovisionings_read_back_exactly(tmp_path: Path, keys: NvsKeys | None) -> None:
    sc = Scenario(tmp_path / "nvs.bin", keys=keys, seed=11)
    for round_ in range(5):
        sc.step("save")
        for _ in range(600):
            sc.step("alert")
            if len(sc.pending) > 3:
                sc.step("ack")
        assert round_ < 4 or sc.alerts >= 3000
    assert sc.saves == 5 and sum(sc.sector_erases) > 20  # pages were filled and reclaimed many times
    image = sc.path.read_bytes()
    want = expected_content(sc)
    part = parse_partition(image, strict=True, keys=keys)
    assert {(e.namespace, e.key): e.value for e in part.entries} == want
    assert sum(p.erased for p in part.pages) > 0  # history: erased entries are in the image
    if keys is not None:
        (tmp_path / "keys.bin").write_bytes(keys_partition(keys))
        (tmp_path / "dev.bin").write_bytes(image)
        subprocess.run(
            [sys.executable, "-m", "esp_idf_nvs_partition_gen", "decrypt", "dev.bin", "keys.bin", "dec.bin"],
            check=False, capture_output=True, cwd=tmp_path,
        )
        (tmp_path / "keys.bin").unlink()
        plain = parse_partition((tmp_path / "dec.bin").read_bytes(), strict=True)
        assert {(e.namespace, e.key): e.value for e in plain.entries} == want
    # and the device itself reads it back at the next boot
    sc.dev = sc.boot(None)
    assert sc.dev.store.provision_load_config() == sc.cfg[0] if sc.cfg else False


# -- power cuts at random flash writes during saves and alerts -----------------------------------


@pytest.mark.parametrize(("keys", "cuts", "seed"), [(None, 420, 5), (KEYS, 120, 6)], ids=["plain", "encrypted"])
def test_power_cuts_at_random_flash_writes_always_boot_to_old_or_new(
    tmp_path: Path, keys: NvsKeys | None, cuts: int, seed: int
) -> None:
    """Every cut is followed by a boot that runs the firmware's recovery (Outbox.load,
    Store.provision_init) after ESP-IDF's (nvs_flash_init); Scenario.boot checks: the
    configuration is the old or the new one, no stored alert is lost, none appears twice or from
    nowhere, no sequence number is handed out again, the epoch stays, the image is clean."""
    sc = Scenario(tmp_path / "nvs.bin", keys=keys, seed=seed)
    sc.run(300, save_every=40)  # some history first
    for _ in range(100):
        if sc.total_cuts >= cuts:
            break
        sc.run(50, cut_rate=0.5, save_every=6)
    assert sc.total_cuts >= cuts
    print(sc.figures())
    assert sc.cuts["save"] >= cuts // 12 and sc.cuts["alert"] >= cuts // 5 and sc.cuts["ack"] >= cuts // 12
    # both outcomes really happened: the checks saw cuts before and after each commit point
    for outcome in ("save->old", "save->new", "alert->stored", "alert->not stored", "ack->gone"):
        assert sc.outcomes[outcome] > 0, sc.outcomes
