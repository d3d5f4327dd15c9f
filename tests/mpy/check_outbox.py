# ss_outbox: alerts in flash until acknowledged, power cuts at every write, full outbox.
# Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython and under CPython.
from fakenvs import FakeNVS, PowerCut
from mpyunit import eq, raises, run, test

import ss_nvs
import ss_outbox
import ssproto.msg as msg
from ss_outbox import CAPACITY, TEST_MAX, Outbox, OutboxError

PFX = msg.prefix("acme", "hq", "101", "btn-01")


def fresh(nvs=None):
    ob = Outbox(nvs if nvs is not None else FakeNVS())
    ob.load()
    return ob


@test
def test_add_entry_ack():
    nvs = FakeNVS()
    ob = fresh(nvs)
    eq(ob.add(PFX, "panic", 1767225600, 1234), 0)
    eq(ob.add(PFX, "test", None, 5), 1)
    eq(ob.pending, [0, 1])
    topic, payload = ob.entry(0)
    eq(topic, PFX + "/alert")
    d = msg.parse_message(topic, payload)
    eq((d["seq"], d["type"], d["ts"], d["uptime_ms"], d["room"]), (0, "panic", 1767225600, 1234, "101"))
    ob.ack(0)
    eq(ob.pending, [1])
    eq(ob.entry(0), None)
    nvs2 = nvs.reset()
    again = fresh(nvs2)
    eq((again.pending, again.next_seq), ([1], 2))
    again.ack(1)
    eq(fresh(nvs2.reset()).pending, [])
    eq(fresh(nvs2.reset()).next_seq, 2, "sequence numbers are never reused")


@test
def test_power_cut_at_every_write():
    # Every prefix of the writes of one add(): after the reboot the alert is either absent
    # (and its seq unused) or present with a seq below "next".  Both NVS models.
    for auto in (False, True):
        for budget in range(6):
            nvs = FakeNVS(autocommit=auto)
            ob = fresh(nvs)
            ob.add(PFX, "panic", None, 0)
            nvs.budget = nvs.calls + budget
            try:
                ob.add(PFX, "panic", None, 1)
                done = True
            except PowerCut:
                done = False
            after = fresh(nvs.reset())
            assert after.pending in ([0], [0, 1]), (auto, budget, after.pending)
            if done:
                eq(after.pending, [0, 1], "completed add is durable")
            eq(after.next_seq, after.pending[-1] + 1)
            eq(after.add(PFX, "panic", None, 2), after.next_seq - 1)


def _add_as_the_button_does(ob, nvs, kind, up):
    """add() with the heap running out at nvs.oom_at; on MemoryError offer it again (ss_button
    keeps the press) unless "next" moved on, which means the alert was committed (Outbox.add's
    promise).  Returns (its seq, whether the heap ran out inside add())."""
    before = ob.next_seq
    try:
        seq = ob.add(PFX, kind, None, up)
    except MemoryError:
        nvs.oom_at = None
        if ob.next_seq != before:
            return before, True
        return ob.add(PFX, kind, None, up), True
    ran_out = nvs.oom_at is None
    nvs.oom_at = None
    return seq, ran_out


@test
def test_out_of_memory_at_every_step_of_add_loses_no_alert():
    # The heap runs out at each NVS call of one add() in turn (before the call or after it), on
    # a device whose outbox is new (the epoch is drawn) or not, under both NVS models.  The
    # press is then offered again as the button does.  Every alert is stored exactly once, the
    # next one gets the next seq, and all of them are still there after a reset.  (Before: a
    # MemoryError at the read-back left a committed alert untracked; the next alert took its
    # slot and the alert was lost.)
    for after in (False, True):
        for auto in (False, True):
            for first in (True, False):
                k = 0
                while True:  # every step of add(), until one more than it has
                    k += 1
                    nvs = FakeNVS(autocommit=auto)
                    ob = fresh(nvs)
                    want = []
                    if not first:
                        eq(ob.add(PFX, "panic", None, 0), 0)
                        want.append(0)
                    nvs.oom_at, nvs.oom_after = nvs.api + k, after
                    seq, ran_out = _add_as_the_button_does(ob, nvs, "panic", 1)
                    eq(seq, len(want), "the press's seq")
                    want.append(seq)
                    eq(ob.add(PFX, "panic", None, 2), seq + 1, "the next press")
                    want.append(seq + 1)
                    where = (after, auto, first, k)
                    eq(ob.pending, want, "pending %r" % (where,))
                    for s in want:
                        assert ob.entry(s) is not None, (where, s)
                    again = fresh(nvs.reset())
                    eq((again.pending, again.next_seq), (want, want[-1] + 1), "after a reset %r" % (where,))
                    eq(len(nvs.blobs()), len(want), "one entry per alert in flash %r" % (where,))
                    if not ran_out:
                        break
                assert k > 4, k  # add() made several calls, each was a failure point


@test
def test_out_of_memory_while_a_test_alert_gives_way():
    # TEST_MAX test alerts wait; a new one takes the oldest one's slot.  Out of memory at each
    # step: the newest TEST_MAX are kept, each once.
    for after in (False, True):
        k = 0
        while True:
            k += 1
            nvs = FakeNVS()
            ob = fresh(nvs)
            for i in range(TEST_MAX):
                ob.add(PFX, "test", None, i)
            nvs.oom_at, nvs.oom_after = nvs.api + k, after
            seq, ran_out = _add_as_the_button_does(ob, nvs, "test", 9)
            eq(seq, TEST_MAX)
            want = list(range(1, TEST_MAX + 1))
            eq(ob.pending, want, "pending %r" % ((after, k),))
            eq(fresh(nvs.reset()).pending, want)
            eq(len(nvs.blobs()), TEST_MAX)
            if not ran_out:
                break
        assert k > 3, k


@test
def test_repaired_sequence_survives_the_delivery():
    # Power cut after the entry, before "next" (write-through NVS): the boot moves "next" past
    # the entry durably, so delivering and erasing it never frees its seq for reuse.
    nvs = FakeNVS(autocommit=True)
    ob = fresh(nvs)
    nvs.budget = nvs.calls + 2  # the epoch and the blob are written, the counter is not
    try:
        ob.add(PFX, "panic", None, 0)
    except PowerCut:
        pass
    n2 = nvs.reset()
    after = fresh(n2)
    eq((after.pending, after.next_seq), ([0], 1))
    after.ack(0)
    again = fresh(n2.reset())
    eq((again.pending, again.next_seq), ([], 1))
    eq(again.add(PFX, "panic", None, 1), 1)


@test
def test_full_flash_uses_the_seq_too():
    class Tiny(FakeNVS):
        def set_blob(self, key, value):
            raise OSError(ss_nvs.ESP_ERR_NVS_NOT_ENOUGH_SPACE)

    ob = fresh(Tiny())
    raises(OutboxError, ob.add, PFX, "panic", None, 0)
    eq((ob.pending, ob.next_seq), ([], 1))


@test
def test_full_outbox_keeps_the_old_alerts_and_uses_the_seq():
    nvs = FakeNVS()
    ob = fresh(nvs)
    for i in range(CAPACITY):
        ob.add(PFX, "panic", None, i)
    raises(OutboxError, ob.add, PFX, "panic", None, 99)
    eq(len(ob.pending), CAPACITY)
    eq(ob.next_seq, CAPACITY + 1, "the lost alert's seq shows as a gap")
    eq(ob.dropped, 1)
    ob.ack(0)
    eq(ob.add(PFX, "panic", None, 100), CAPACITY + 1)
    eq(fresh(nvs.reset()).pending, list(range(1, CAPACITY)) + [CAPACITY + 1])


def kinds(ob):
    return [msg.parse_message(*ob.entry(s))["type"] for s in ob.pending]


@test
def test_test_alerts_never_crowd_out_a_panic():
    # The field trial: broker down, 64 alert_test, then the button.  The test alerts are capped
    # at TEST_MAX (the newest kept), and the panic is stored.
    nvs = FakeNVS()
    ob = fresh(nvs)
    for i in range(CAPACITY):
        eq(ob.add(PFX, "test", None, i), i, "every test alert gets its seq")
    eq(ob.pending, list(range(CAPACITY - TEST_MAX, CAPACITY)), "only the newest TEST_MAX wait")
    eq(ob.replaced, CAPACITY - TEST_MAX)
    eq(ob.add(PFX, "panic", None, 99), CAPACITY)
    eq(kinds(ob), ["test"] * TEST_MAX + ["panic"])
    again = fresh(nvs.reset())
    eq(again.pending, ob.pending, "the same after a reboot")
    eq(len([k for k in nvs.durable if k.startswith("q")]), TEST_MAX + 1, "replaced entries left the flash")


@test
def test_a_full_outbox_gives_a_panic_the_oldest_test_alerts_place():
    nvs = FakeNVS()
    ob = fresh(nvs)
    for i in range(TEST_MAX):
        ob.add(PFX, "test", None, i)
    for i in range(CAPACITY - TEST_MAX):
        ob.add(PFX, "panic", None, i)
    eq(len(ob.pending), CAPACITY)
    seq = ob.add(PFX, "panic", None, 0)
    eq(ob.pending[-1], seq)
    eq(ob.pending[0], 1, "the oldest test alert (seq 0) made room")
    eq(ob.replaced, 1)
    raises(OutboxError, ob.add, PFX, "test", None, 0)  # full, fewer than TEST_MAX tests: no panic gives way
    eq(kinds(ob).count("panic"), CAPACITY - TEST_MAX + 1)
    # all test alerts give way, one per panic; then CAPACITY panics fill it, and the next is refused
    for i in range(TEST_MAX - 1):
        ob.add(PFX, "panic", None, i)
    eq(kinds(ob), ["panic"] * CAPACITY)
    raises(OutboxError, ob.add, PFX, "panic", None, 0)
    eq(fresh(nvs.reset()).pending, ob.pending)


@test
def test_full_flash_a_panic_takes_a_test_alerts_place():
    class Tight(FakeNVS):
        room = True

        def set_blob(self, key, value):
            if not self.room and key not in self.view and key not in self.durable:
                raise OSError(ss_nvs.ESP_ERR_NVS_NOT_ENOUGH_SPACE)
            return FakeNVS.set_blob(self, key, value)

    nvs = Tight()
    ob = fresh(nvs)
    ob.add(PFX, "test", None, 0)
    ob.add(PFX, "panic", None, 1)
    nvs.room = False  # the partition is full: only existing keys can be rewritten
    seq = ob.add(PFX, "panic", None, 2)
    eq((ob.pending, kinds(ob)), ([1, seq], ["panic", "panic"]))


@test
def test_power_cut_while_a_panic_replaces_a_test_alert():
    # Every prefix of the writes: after the reboot the test alert or the panic is in its slot,
    # never neither and never a damaged entry; seq numbers stay unique.
    for auto in (False, True):
        for budget in range(6):
            nvs = FakeNVS(autocommit=auto)
            ob = fresh(nvs)
            ob.add(PFX, "test", None, 0)
            for i in range(CAPACITY - 1):
                ob.add(PFX, "panic", None, i)
            nvs.budget = nvs.calls + budget
            try:
                ob.add(PFX, "panic", None, 99)
                done = True
            except PowerCut:
                done = False
            after = fresh(nvs.reset())
            eq(len(after.pending), CAPACITY, (auto, budget))
            eq([n for n in after.notices if "damaged" in n], [], (auto, budget))
            eq(kinds(after).count("test") + (after.pending[-1] == CAPACITY), 1, (auto, budget))
            if done:
                eq(after.pending[-1], CAPACITY)
            assert after.next_seq > after.pending[-1]


@test
def test_damaged_entry_is_dropped_with_a_notice():
    nvs = FakeNVS()
    ob = fresh(nvs)
    ob.add(PFX, "panic", None, 0)
    ob.add(PFX, "panic", None, 1)
    t, raw = nvs.durable["q01"]
    nvs.durable["q01"] = (t, raw[:-1] + bytes([raw[-1] ^ 1]))  # slot 1 holds seq 1
    again = fresh(nvs.reset())
    eq(again.pending, [0])
    eq(again.next_seq, 2)
    assert [n for n in again.notices if "damaged" in n], again.notices


@test
def test_clear_keeps_the_sequence():
    nvs = FakeNVS()
    ob = fresh(nvs)
    ob.add(PFX, "panic", None, 0)
    ob.clear()
    again = fresh(nvs.reset())
    eq((again.pending, again.next_seq), ([], 1))


@test
def test_epoch_names_the_sequence():
    nvs = FakeNVS()
    ob = fresh(nvs)
    eq((ob.epoch, nvs.durable), (None, {}), "a blank device's flash stays blank")
    ob.add(PFX, "panic", None, 0)
    assert isinstance(ob.epoch, int) and 0 <= ob.epoch < 2 ** 31
    eq(msg.parse_message(*ob.entry(0))["epoch"], ob.epoch)
    ob.clear()
    again = fresh(nvs.reset())
    eq(again.epoch, ob.epoch, "kept across reboots and a factory reset")
    erased = fresh(FakeNVS())  # esptool erase_flash: seq starts again, under a new epoch
    erased.add(PFX, "panic", None, 0)
    eq(erased.pending, [0])
    assert erased.epoch != ob.epoch


@test
def test_entry_codec():
    raw = ss_outbox.encode_entry(PFX, 7, "test", 1.5, 3)
    eq(ss_outbox.decode_entry(raw), (PFX, 7, "test", 1.5, 3))
    eq(ss_outbox.decode_entry(raw[:-1]), None)
    eq(ss_outbox.decode_entry(b""), None)


run()
