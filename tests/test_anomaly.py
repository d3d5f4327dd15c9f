"""Anomalies (issue 12): each rule of safesignal.alerts.anomaly, and properties over streams."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from safesignal.alerts.anomaly import (
    KINDS,
    MAX_SEQ_GAP,
    Known,
    Seen,
    anomalies,
    kind,
    provisioned,
    remember,
)

A = "24:0a:c4:00:00:01"
B = "24:0a:c4:00:00:02"
REC = provisioned(chip_id=A, building="hq", room="r101", at=1000.0)


def seen(**kw: object) -> Seen:
    base: dict[str, object] = dict(tenant="acme", building="hq", room="r101", device_id="btn-01", chip_id=A,
                                   epoch=7, seq=5, at=2000.0)
    base.update(kw)
    return Seen(**base)  # type: ignore[arg-type]


def kinds(known: Known | None, s: Seen) -> list[str]:
    return [kind(f) for f in anomalies(known, s)]


def test_nothing_wrong() -> None:
    assert anomalies(REC, seen()) == []
    after = remember(REC, seen(seq=4))
    assert anomalies(after, seen(seq=5)) == []
    assert anomalies(after, seen(seq=4 + MAX_SEQ_GAP)) == []  # lost alerts, no more than an outbox holds


def test_chip_mismatch_against_the_record() -> None:
    flags = anomalies(REC, seen(chip_id=B))
    assert [kind(f) for f in flags] == ["chip-mismatch"]
    assert B in flags[0] and A in flags[0] and "btn-01" in flags[0] and "provisioning record" in flags[0]
    # The record wins over the last chip seen: a re-provisioned board is not a clone of the old one.
    assert kinds(dataclasses.replace(REC, last_chip_id=B), seen(chip_id=A)) == []
    assert kinds(dataclasses.replace(REC, last_chip_id=A), seen(chip_id=B)) == ["chip-mismatch"]


def test_chip_mismatch_against_the_last_alert_without_a_recorded_chip() -> None:
    k = remember(provisioned(chip_id=None, building="hq", room="r101", at=1.0), seen(chip_id=A))
    assert kinds(k, seen(chip_id=B, seq=6)) == ["chip-mismatch"]
    assert "its last alert" in anomalies(k, seen(chip_id=B, seq=6))[0]
    assert kinds(k, seen(chip_id=A, seq=6)) == []


def test_chip_missing() -> None:
    assert kinds(REC, seen(chip_id=None)) == ["chip-missing"]
    assert kinds(provisioned(chip_id=None, building="hq", room="r101", at=1.0), seen(chip_id=None)) == []


def test_location_mismatch() -> None:
    assert kinds(REC, seen(room="r102")) == ["location-mismatch"]
    assert kinds(REC, seen(building="annex")) == ["location-mismatch"]
    f = anomalies(REC, seen(building="annex", room="r9"))[0]
    assert "annex/r9" in f and "hq/r101" in f


def test_epoch_change_without_a_provisioning_record_in_between() -> None:
    k = remember(REC, seen(epoch=7, seq=30))
    assert kinds(k, seen(epoch=8, seq=0)) == ["epoch-change"]
    assert kinds(k, seen(epoch=None, seq=31)) == ["epoch-change"]
    # A provisioning in between (a new board, an erased flash) starts a new baseline.
    again = provisioned(chip_id=A, building="hq", room="r101", at=3000.0)
    assert kinds(again, seen(epoch=8, seq=0)) == []


def test_seq_jump_without_a_provisioning_record_in_between() -> None:
    k = remember(REC, seen(seq=10))
    assert kinds(k, seen(seq=10 + MAX_SEQ_GAP + 1)) == ["seq-jump"]
    assert kinds(k, seen(seq=10 + MAX_SEQ_GAP)) == []
    assert kinds(k, seen(seq=3)) == []  # a late redelivery, not a jump
    assert kinds(provisioned(chip_id=A, building="hq", room="r101", at=3.0), seen(seq=10_000)) == []


def test_never_provisioned() -> None:
    assert kinds(None, seen()) == ["unprovisioned"]
    no_record = Known(None, None, None, None, None, None, None)
    assert kinds(no_record, seen()) == ["unprovisioned"]
    # Without a record the other rules still look at what was seen on the wire.
    k = remember(None, seen(chip_id=A, epoch=7, seq=5))
    assert kinds(k, seen(chip_id=B, epoch=9, seq=0)) == ["chip-mismatch", "epoch-change", "unprovisioned"]


def test_remember_keeps_the_highest_seq_of_an_epoch_and_the_last_chip() -> None:
    k = remember(remember(REC, seen(seq=9)), seen(seq=4, chip_id=None))
    assert (k.last_epoch, k.last_seq, k.last_chip_id) == (7, 9, A)
    k = remember(k, seen(epoch=8, seq=0))
    assert (k.last_epoch, k.last_seq) == (8, 0)
    assert (k.chip_id, k.building, k.room, k.provisioned_at) == (A, "hq", "r101", 1000.0)


chips = st.sampled_from([A, B, None])
places = st.sampled_from([("hq", "r101"), ("hq", "r102"), ("annex", "r101")])


@given(st.lists(st.tuples(chips, places, st.sampled_from([7, 8, None]), st.integers(0, 500)), max_size=30),
       st.booleans())
def test_flags_are_well_formed_and_name_the_device(stream: list[tuple[str | None, tuple[str, str], int | None, int]],
                                                  with_record: bool) -> None:
    k: Known | None = REC if with_record else None
    for chip, (b, r), ep, sq in stream:
        s = seen(chip_id=chip, building=b, room=r, epoch=ep, seq=sq, device_id="dev-x")
        flags = anomalies(k, s)
        assert [kind(f) for f in flags] == [x for x in KINDS if x in {kind(f) for f in flags}]  # ordered, unique
        assert all(f.startswith(kind(f) + ": ") and "dev-x" in f for f in flags)
        assert ("unprovisioned" in map(kind, flags)) == (not with_record)
        k = remember(k, s)


@given(st.lists(st.integers(0, MAX_SEQ_GAP), min_size=1, max_size=40))
def test_a_real_device_is_never_flagged(gaps: list[int]) -> None:
    """One provisioned chip in its room, one epoch, seq rising with gaps no larger than an
    outbox (and redeliveries of earlier ones): no flags, ever."""
    k: Known = REC
    seq = 0
    for i, g in enumerate(gaps):
        seq += g
        for sq in [seq, seq // 2] if i % 5 == 4 else [seq]:  # every fifth also a redelivery of an earlier one
            s = seen(seq=sq)
            assert anomalies(k, s) == [], (k, s)
            k = remember(k, s)


@given(st.integers(0, 10_000), st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_epoch_change_is_flagged_whatever_the_seq(sq: int, e1: int, e2: int) -> None:
    k = remember(REC, seen(epoch=e1, seq=sq))
    assert ("epoch-change" in kinds(k, seen(epoch=e2, seq=sq))) == (e1 != e2)
