# Alert outbox: every alert is in flash before it is sent, and leaves flash only when the
# broker has acknowledged it (MQTT QoS 1 PUBACK).  Survives WiFi loss, broker restarts,
# resets and power cuts; a receiver de-duplicates by (device, seq).
#
# Layout (namespace "outbox"):
#   i32  "next"   the next sequence number (per device, never reused, kept by a factory reset)
#   i32  "epoch"  random, drawn when the outbox is first created: names this run of sequence
#                 numbers, so a device whose flash was erased (seq back at 0) is not mistaken
#                 for a repeat of its old alerts
#   blob "qNN"    one pending alert in slot NN (0 <= NN < CAPACITY; any free slot)
# An entry is  b"SSQ" + version(1) + JSON {"p": topic prefix, "s": seq, "t": type, "ts": ..,
# "up": ..} + 8 bytes of SHA-256 over everything before it.  The topic prefix is stored with
# the alert, so an alert raised before a re-provisioning is still reported for the room where
# the button was pressed.
#
# Order of writes for a new alert: entry, then "next", then commit; read back.  A power cut
# between the two leaves an entry whose seq is >= "next": load() moves "next" past it.
# Out of memory (MemoryError) is treated like a power cut in RAM: see Outbox.add.

import ss_nvs
import ssproto.msg as msg
import ssproto.records as records
from ss_compat import const

NAMESPACE = records.OUTBOX
CAPACITY = const(64)
# Test alerts (provisioning, `alert_test`) never crowd out a panic: at most TEST_MAX of them wait
# at once (a newer one takes the place of the oldest), and a panic that finds the outbox full
# takes the place of the oldest waiting test alert.  So all CAPACITY slots are open to panics.
TEST_MAX = const(4)
_KEY_NEXT = "next"
_KEY_EPOCH = "epoch"
_BUF = const(512)

_key = records.q_key
encode_entry = records.encode_entry  # record format: ssproto/records.py


def decode_entry(raw):
    """(prefix, seq, kind, ts, up) or None if the entry is damaged."""
    try:
        e = records.decode_entry(raw)
    except ValueError:
        return None
    if e[2] not in msg.KINDS:
        return None
    return e


def _same(buf, n, rec):
    """buf[:n] == rec, without allocating (a slice would)."""
    if n is None or n != len(rec):
        return False
    for i in range(n):
        if buf[i] != rec[i]:
            return False
    return True


class OutboxError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = message


class Outbox:
    def __init__(self, nvs):
        self._nvs = nvs  # esp32.NVS(NAMESPACE), made by the composition root
        self.next_seq = 0
        self.pending = []  # sequence numbers in flash, ascending
        self._slot = {}  # seq -> slot
        self._kind = {}  # seq -> "panic" / "test"
        self.replaced = 0  # test alerts dropped to make room (this boot)
        self.notices = []
        self.dropped = 0  # alerts not stored because the outbox was full (this boot)
        self.epoch = None
        self._readback = bytearray(_BUF)  # add()'s read-back: allocated once, so it cannot fail

    def _get_blob(self, key):
        return ss_nvs.get_blob(self._nvs, key, _BUF)

    def _erase(self, key):
        ss_nvs.erase(self._nvs, key)

    def load(self):
        nxt = ss_nvs.get_i32(self._nvs, _KEY_NEXT) or 0
        self.epoch = ss_nvs.get_i32(self._nvs, _KEY_EPOCH)  # None until the first alert: a blank device stays blank
        pending = []
        damaged = False
        self._slot = {}
        self._kind = {}
        for slot in range(CAPACITY):
            key = _key(slot)
            raw = self._get_blob(key)
            if raw is None:
                continue
            e = decode_entry(raw)
            if e is None or e[1] in self._slot:
                self.notices.append("Outbox entry %s was damaged and is erased" % key)
                self._erase(key)
                damaged = True
                continue
            pending.append(e[1])
            self._slot[e[1]] = slot
            self._kind[e[1]] = e[2]
        if damaged:
            self._nvs.commit()
        pending.sort()
        if pending and pending[-1] >= nxt:
            # A power cut between the entry and "next": move "next" past it, durably (else
            # once the entry is delivered and erased, its seq would be handed out again).
            nxt = pending[-1] + 1
            self._nvs.set_i32(_KEY_NEXT, nxt)
            self._nvs.commit()
        self.next_seq = nxt
        self.pending = pending
        if pending:
            self.notices.append("%d undelivered alert(s) in the outbox (seq %d..%d)"
                                % (len(pending), pending[0], pending[-1]))

    def add(self, pfx, kind, ts, up):
        """Store a new alert; returns its sequence number.  Raises OutboxError if the outbox
        is full (the sequence number is used up anyway, so receivers see the gap).

        Out of memory: everything that allocates happens before the commit, including room
        for the bookkeeping, so a MemoryError leaves either nothing (not committed: the
        bookkeeping is undone and ``next_seq`` is unchanged; the caller may try again) or a
        committed alert that is tracked (``next_seq`` has moved on).  A MemoryError after
        the write used to lose the alert: the read-back allocated its buffer, the slot stayed
        marked free and the next alert overwrote it."""
        seq = self.next_seq
        used = list(self._slot.values())
        slot = 0
        while slot in used:
            slot += 1
        victim = self._victim(kind, slot >= CAPACITY)
        if victim is not None:
            slot = self._slot[victim]  # overwritten in place: NVS keeps the old entry or the new
        full = slot >= CAPACITY
        key = _key(slot)
        rec = None if full else encode_entry(pfx, seq, kind, ts, up)
        epoch = None
        if self.epoch is None:
            import os

            epoch = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
        if not full:  # the bookkeeping's room, taken now (undone below unless committed)
            self.pending.append(seq)
            self._slot[seq] = slot
            self._kind[seq] = kind
        committed = False
        try:
            if epoch is not None:
                self._nvs.set_i32(_KEY_EPOCH, epoch)  # committed with the first alert
            if not full:
                try:
                    self._nvs.set_blob(key, rec)
                except OSError as e:
                    if ss_nvs.errno(e) != ss_nvs.ESP_ERR_NVS_NOT_ENOUGH_SPACE:
                        raise
                    alt = self._victim(kind, True) if victim is None else None
                    if alt is None:
                        full = True  # the flash is full: same as a full outbox ("next" moves on)
                        self._untrack(seq)
                    else:  # the flash is full: a panic takes the oldest test alert's place
                        victim, slot = alt, self._slot[alt]
                        key = _key(slot)
                        self._slot[seq] = slot
                        self._erase(key)
                        self._nvs.set_blob(key, rec)
            self._nvs.set_i32(_KEY_NEXT, seq + 1)
            self._nvs.commit()
            committed = True
        except OSError as e:
            raise OutboxError("NVS write failed (%d)" % ss_nvs.errno(e))
        finally:
            if not committed:
                self._untrack(seq)
        # Committed: from here on nothing allocates until the alert is tracked and read back.
        self.next_seq = seq + 1
        if epoch is not None:
            self.epoch = epoch
        if full:
            self._untrack(seq)
            self.dropped += 1
            raise OutboxError("outbox full (%d undelivered alerts in flash): alert %d not stored"
                              % (len(self.pending), seq))
        if victim is not None:
            self._untrack(victim)
            self.replaced += 1
        n = ss_nvs.get_blob_into(self._nvs, key, self._readback)
        if not _same(self._readback, n, rec):
            raise OutboxError("alert %d read back differs from what was written" % seq)
        return seq

    def _untrack(self, seq):
        # No allocation: list.remove and dict deletion only shrink.
        if seq in self.pending:
            self.pending.remove(seq)
        if seq in self._slot:
            del self._slot[seq]
        if seq in self._kind:
            del self._kind[seq]

    def _victim(self, kind, full):
        """The waiting test alert a new alert takes the place of, or None: for a test alert the
        oldest once TEST_MAX wait, for any other alert the oldest when the outbox is full."""
        tests = [s for s in self.pending if self._kind.get(s) == "test"]
        if not tests:
            return None
        if kind == "test":
            return tests[0] if len(tests) >= TEST_MAX else None
        return tests[0] if full else None

    def entry(self, seq, chip_id=""):
        """(topic, payload bytes) of a pending alert, read from flash; None if it is gone.  The
        chip id is added here, at publish, not stored: entries written by older firmware carry
        none and still publish, and the alert names the chip that actually sends it."""
        if seq not in self._slot:
            return None
        raw = self._get_blob(_key(self._slot[seq]))
        e = decode_entry(raw) if raw is not None else None
        if e is None or e[1] != seq:
            return None
        return e[0] + "/" + msg.ALERT, msg.alert_payload(e[0], e[1], e[2], e[3], e[4], self.epoch, chip_id)

    def ack(self, seq):
        """The broker has the alert: remove it from flash."""
        if seq in self.pending:
            self.pending.remove(seq)
            self._erase(_key(self._slot.pop(seq)))
            self._kind.pop(seq, None)
            self._nvs.commit()

    def clear(self):
        """Factory reset: drop undelivered alerts (they name the old identity); keep "next"."""
        for slot in range(CAPACITY):
            self._erase(_key(slot))
        self._nvs.commit()
        self.pending = []
        self._slot = {}
        self._kind = {}
