"""Anomalies in arriving alerts: what a registry (or ``safesignal monitor``) flags while still
delivering every alert.

:func:`anomalies` compares one arrived alert (:class:`Seen`) with what is known of its
(tenant, device id) (:class:`Known`) and returns flags, each a stable short string
``"<kind>: <text>"``; the kind before the colon is machine-readable (:data:`KINDS`), the text is
for people and may change.  An empty list means nothing is wrong.  Flags never drop an alert.

The rules (a device id is unique within its tenant):

- ``chip-mismatch`` — the alert names a chip other than the one recorded at the latest
  provisioning (``Known.chip_id``) or, without a recorded chip, other than the one the last
  alert named (``Known.last_chip_id``): a clone, or two devices given the same id.
- ``chip-missing`` — the alert names no chip although one is recorded or was seen before:
  firmware from before the chip id, or a publisher hiding which chip it is.
- ``location-mismatch`` — published under a building or room other than the registered one
  (``Known.building``/``room``; None = nothing to compare).  Under mutual TLS the broker's ACL
  binds a certificate to its device id only, so a stolen certificate can publish under any room
  of its tenant: this is where that shows.
- ``epoch-change`` — the alert's epoch differs from the last alert's: the device's flash was
  erased (a new outbox), which needs a new provisioning, or another device uses the id.
- ``seq-jump`` — same epoch, but seq is more than :data:`MAX_SEQ_GAP` past the last one.  A
  device numbers every press it stores; a gap means numbered alerts that never arrived, which a
  real device produces only by losing more than a full outbox (64 alerts, ss_outbox.CAPACITY)
  while offline.  A publisher that jumps ahead also makes the real device's next alerts look
  like duplicates to a receiver that de-duplicates by (prefix, epoch, seq).
- ``unprovisioned`` — there is no provisioning record for the device id (``known`` is None or
  ``known.provisioned_at`` is None).

"With no provisioning record in between": ``Known.last_epoch``, ``last_seq`` and
``last_chip_id`` describe the last alert seen **since the latest provisioning record** (None
when none has arrived since).  A registry keeps them so with :func:`provisioned` (which clears
them when it records a provisioning) and :func:`remember` (after each alert); a re-provisioned
device (a new board, an erased flash: a new epoch) therefore starts a new baseline and is not
flagged, while an epoch change or jump without one is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

CHIP_MISMATCH = "chip-mismatch"
CHIP_MISSING = "chip-missing"
LOCATION_MISMATCH = "location-mismatch"
EPOCH_CHANGE = "epoch-change"
SEQ_JUMP = "seq-jump"
UNPROVISIONED = "unprovisioned"
KINDS = (CHIP_MISMATCH, CHIP_MISSING, LOCATION_MISMATCH, EPOCH_CHANGE, SEQ_JUMP, UNPROVISIONED)

# More numbered-but-missing alerts than the device's outbox holds (ss_outbox.CAPACITY).
MAX_SEQ_GAP = 64


@dataclass(frozen=True)
class Known:
    """What a registry knows of one (tenant, device_id)."""

    chip_id: str | None  # from the latest provisioning record (None: no record, or none recorded)
    building: str | None  # registered at the latest provisioning (None: no record)
    room: str | None
    provisioned_at: float | None  # Unix time of the latest provisioning record (None: no record)
    last_epoch: int | None  # of the last alert seen from this device id (since that record)
    last_seq: int | None
    last_chip_id: str | None  # chip id last seen on the wire


@dataclass(frozen=True)
class Seen:
    """One arrived alert."""

    tenant: str
    building: str
    room: str
    device_id: str
    chip_id: str | None
    epoch: int | None
    seq: int
    at: float


def kind(flag: str) -> str:
    """The machine-readable kind of a flag (the part before ``": "``)."""
    return flag.partition(":")[0]


def anomalies(known: Known | None, seen: Seen) -> list[str]:
    """The flags for one arrived alert, in the order of :data:`KINDS`; empty if none."""
    flags: list[str] = []
    dev = seen.device_id
    k = known if known is not None else Known(None, None, None, None, None, None, None)
    expected_chip = k.chip_id if k.chip_id is not None else k.last_chip_id
    where = "the provisioning record" if k.chip_id is not None else "its last alert"
    if expected_chip is not None:
        if seen.chip_id is None:
            flags.append(f"{CHIP_MISSING}: {dev} sent no chip id; {where} names chip {expected_chip}")
        elif seen.chip_id != expected_chip:
            flags.append(f"{CHIP_MISMATCH}: {dev} sent from chip {seen.chip_id}; {where} names chip "
                         f"{expected_chip} (a clone or a duplicate device id)")
    if k.building is not None and k.room is not None and (seen.building, seen.room) != (k.building, k.room):
        flags.append(f"{LOCATION_MISMATCH}: {dev} published under {seen.building}/{seen.room}, "
                     f"expected {k.building}/{k.room}")
    if k.last_epoch is not None and seen.epoch != k.last_epoch:
        got = "no epoch" if seen.epoch is None else f"epoch {seen.epoch}"
        flags.append(f"{EPOCH_CHANGE}: {dev} sent {got} after epoch {k.last_epoch} "
                     "with no provisioning record in between")
    elif k.last_seq is not None and seen.seq - k.last_seq > MAX_SEQ_GAP:
        flags.append(f"{SEQ_JUMP}: {dev} sent seq {seen.seq} after seq {k.last_seq} "
                     "with no provisioning record in between")
    if k.provisioned_at is None:
        flags.append(f"{UNPROVISIONED}: {dev} has no provisioning record")
    return flags


def remember(known: Known | None, seen: Seen) -> Known:
    """``known`` after the alert ``seen``: its epoch, seq and chip id become the last ones (within
    one epoch the highest seq is kept, so a late redelivery does not lower it)."""
    k = known if known is not None else Known(None, None, None, None, None, None, None)
    seq = seen.seq
    if k.last_seq is not None and seen.epoch == k.last_epoch:
        seq = max(seq, k.last_seq)
    return dataclasses.replace(k, last_epoch=seen.epoch, last_seq=seq,
                               last_chip_id=seen.chip_id if seen.chip_id is not None else k.last_chip_id)


def provisioned(*, chip_id: str | None, building: str, room: str, at: float) -> Known:
    """What is known right after a provisioning record: the recorded chip and place, and a new
    baseline (no last epoch, seq or chip id: earlier alerts do not count against the new ones)."""
    return Known(chip_id=chip_id, building=building, room=room, provisioned_at=at,
                 last_epoch=None, last_seq=None, last_chip_id=None)
