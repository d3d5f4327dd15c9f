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
    eq(ob.replaced, list(range(CAPACITY - TEST_MAX)))
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
    eq(ob.replaced, [0])
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
