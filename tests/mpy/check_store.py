# ss_store over the fake esp32.NVS, including the power-cut model check.
# Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython and under CPython.
import hashlib

from fakenvs import BLOB, ESP_ERR_NVS_INVALID_LENGTH, ESP_ERR_NVS_NOT_FOUND, FakeNVS, PowerCut, cut_states
from mpyunit import eq, raises, run, test

import ss_store

SECRET_A = "OldSecretPassA1"
SECRET_B = "NewSecretPassB2"
CFG_A = {
    "wifi_ssid": "Caf\u00e9 Net",
    "wifi_pass": SECRET_A,
    "device_id": "btn-01",
    "tenant": "acme",
    "building": "hq",
    "room": "101",
    "mqtt_uri": "mqtt://broker.local:1883",
}
CFG_B = {
    "wifi_ssid": "Other \"quoted\" \\ net",
    "wifi_pass": SECRET_B,
    "device_id": "btn-02",
    "tenant": "acme",
    "building": "annex",
    "room": "7",
    "mqtt_uri": "mqtt://10.0.0.2:1884",
}


def variant(cfg, **changes):
    c = dict(cfg)
    c.update(changes)
    return c


CFG_C = variant(CFG_A, wifi_pass="ThirdSecretPassC3", room="102")


def fresh(durable=None, autocommit=False):
    nvs = FakeNVS(durable, autocommit=autocommit)
    st = ss_store.Store(nvs)
    st.provision_init()
    return nvs, st


def state(st):
    return st.provision_load_config() if st.provision_is_provisioned() else None


def provisioned(cfg, autocommit=False):
    nvs, st = fresh(autocommit=autocommit)
    st.provision_save_config(cfg)
    return nvs.durable


def contains(durable, secret):
    s = secret.encode("utf-8")
    for t, v in durable.values():
        if t == BLOB and s in v:
            return True
    return False


def active_slot(durable):
    keys = [k for k in durable if durable[k][0] == BLOB]
    eq(len(keys), 1, "record slots in use")
    return keys[0]


# --- the fake NVS itself -------------------------------------------------------------------

@test
def test_fake_nvs_semantics():
    nvs = FakeNVS()
    eq(raises(OSError, nvs.get_i32, "k").args[0], ESP_ERR_NVS_NOT_FOUND)
    eq(raises(OSError, nvs.get_blob, "k", bytearray(8)).args[0], ESP_ERR_NVS_NOT_FOUND)
    eq(raises(OSError, nvs.erase_key, "k").args[0], ESP_ERR_NVS_NOT_FOUND)
    nvs.set_blob("k", b"abc")
    nvs.set_i32("n", 7)
    # a value of the other type looks like a missing one
    eq(raises(OSError, nvs.get_i32, "k").args[0], ESP_ERR_NVS_NOT_FOUND)
    eq(raises(OSError, nvs.get_blob, "n", bytearray(8)).args[0], ESP_ERR_NVS_NOT_FOUND)
    eq(raises(OSError, nvs.get_blob, "k", bytearray(2)).args[0], ESP_ERR_NVS_INVALID_LENGTH)
    buf = bytearray(8)
    eq(nvs.get_blob("k", buf), 3)
    eq(bytes(buf[:3]), b"abc")
    eq(nvs.reset().durable, {}, "uncommitted changes survive a reset")
    nvs.commit()
    eq(nvs.reset().get_i32("n"), 7)
    eq(nvs.reset().get_blob("k", buf), 3)
    nvs.budget = nvs.calls
    raises(PowerCut, nvs.set_i32, "n", 8)
    raises(PowerCut, nvs.commit)
    eq(nvs.get_i32("n"), 7, "a cut call had an effect")


# --- ss_store ------------------------------------------------------------------------------

@test
def test_blank_init():
    nvs, st = fresh()
    assert not st.provision_is_provisioned()
    eq(st.load_error.reason, "ESP_ERR_NVS_NOT_FOUND")
    eq(raises(ss_store.StoreError, st.provision_load_config).reason, "ESP_ERR_NVS_NOT_FOUND")
    eq(nvs.calls, 0, "mutating calls on blank init")
    eq(st.notices, [])


@test
def test_record_with_an_invalid_value_is_unusable():
    # A factory image may hold values the console would refuse: treat the record as corrupt
    # instead of letting a task crash on it later.
    for field, bad in (("mqtt_uri", "mqtts://broker:0"), ("device_id", "a/b"), ("wifi_pass", "short")):
        nvs = FakeNVS()
        nvs.set_blob("cfg1", ss_store.encode_record(1, variant(CFG_A, **{field: bad})))
        nvs.set_i32("active", 1)
        nvs.commit()
        st = ss_store.Store(nvs)
        st.provision_init()
        assert not st.provision_is_provisioned(), field
        eq(st.load_error.reason, "CORRUPT")
        assert bad not in st.load_error.message


@test
def test_leftover_records_are_erased_and_reported():
    # A record without the marker (a clear cut short after erasing "active") must not linger,
    # and the boot log must say it was erased.
    nvs, st = fresh()
    st.provision_save_config(CFG_A)
    nvs.erase_key("active")
    nvs.commit()
    st2 = ss_store.Store(nvs)
    st2.provision_init()
    assert not st2.provision_is_provisioned()
    eq(len(st2.notices), 1)
    assert "Erased" in st2.notices[0]
    assert CFG_A["wifi_pass"] not in st2.notices[0]
    for k in ("cfg0", "cfg1"):
        raises(OSError, nvs.get_blob, k, bytearray(2048))


@test
def test_round_trip_and_persistence():
    for cfg in (CFG_A, CFG_B, variant(CFG_A, wifi_pass=""), variant(CFG_A, wifi_ssid="\u20ac" * 10 + "xx")):
        nvs, st = fresh()
        st.provision_save_config(cfg)
        assert st.provision_is_provisioned()
        eq(st.provision_load_config(), cfg)
        nvs2, st2 = fresh(nvs.durable)  # after a reset
        assert st2.load_error is None
        eq(st2.provision_load_config(), cfg)
        eq(st.generation, 1)
        eq(st2.generation, 1)


@test
def test_load_returns_copy():
    nvs, st = fresh(provisioned(CFG_A))
    c = st.provision_load_config()
    c["wifi_pass"] = "changed"
    eq(st.provision_load_config(), CFG_A)


@test
def test_extra_keys_are_not_stored():
    nvs, st = fresh()
    st.provision_save_config(variant(CFG_A, extra="x"))
    eq(fresh(nvs.durable)[1].provision_load_config(), CFG_A)


@test
def test_resave_replaces_and_erases_old_secret():
    nvs, st = fresh(provisioned(CFG_A))
    st.provision_save_config(CFG_B)
    eq(st.provision_load_config(), CFG_B)
    eq(state(fresh(nvs.durable)[1]), CFG_B)
    assert not contains(nvs.durable, SECRET_A)
    st.provision_save_config(CFG_C)
    eq(state(fresh(nvs.durable)[1]), CFG_C)
    eq(len(nvs.blobs()), 1)
    eq(fresh(nvs.durable)[1].generation, 3)


class Sizes(FakeNVS):
    """Records the buffer sizes get_blob is asked with."""

    def __init__(self, durable=None):
        super().__init__(durable)
        self.sizes = []

    def get_blob(self, key, buf):
        self.sizes.append(len(buf))
        return super().get_blob(key, buf)


@test
def test_unprovisioned_boot_reads_no_record_into_ram():
    # A blank or half-cleared device only asks whether records exist (1-byte buffer: a longer
    # blob answers ESP_ERR_NVS_INVALID_LENGTH): no 2 kB buffers in the 128 kB heap at boot.
    nvs, st = fresh()
    st.provision_save_config(CFG_A, ID_A)
    nvs.erase_key("active")
    nvs.commit()
    for durable in ({}, nvs.durable):
        sized = Sizes(durable)
        st2 = ss_store.Store(sized)
        st2.provision_init()
        assert not st2.provision_is_provisioned()
        eq(max(sized.sizes), 1, "largest get_blob buffer")
    eq(sized.view, {}, "leftover record and identity erased")
    eq(len(st2.notices), 1)
    sized.sizes = []
    st2.provision_clear()
    eq(max(sized.sizes), 1, "largest get_blob buffer while verifying a clear")


@test
def test_clear():
    nvs, st = fresh(provisioned(CFG_A))
    st.provision_clear()
    assert not st.provision_is_provisioned()
    eq(st.load_error.reason, "ESP_ERR_NVS_NOT_FOUND")
    eq(nvs.durable, {})
    assert not fresh(nvs.durable)[1].provision_is_provisioned()
    st.provision_clear()  # clearing a blank store is fine


@test
def test_incomplete_config_rejected_without_writes():
    nvs, st = fresh()
    cfg = dict(CFG_A)
    del cfg["room"]
    eq(raises(ss_store.StoreError, st.provision_save_config, cfg).reason, "INCOMPLETE")
    eq(nvs.calls, 0)


@test
def test_corrupt_record_every_byte():
    base = provisioned(CFG_A)
    key = active_slot(base)
    raw = base[key][1]
    for mask in (0x01, 0x20):
        for i in range(len(raw)):
            bad = dict(base)
            b = bytearray(raw)
            b[i] ^= mask
            bad[key] = (BLOB, bytes(b))
            nvs, st = fresh(bad)
            what = "byte %d ^ %#x" % (i, mask)
            assert not st.provision_is_provisioned(), what
            eq(st.load_error.reason, "CORRUPT", what)
            raises(ss_store.StoreError, st.provision_load_config)


@test
def test_damaged_states_are_corrupt():
    forged = ss_store.encode_record(1, CFG_B)[:-32] + b"\x00" * 32
    mangles = [
        ("truncated", lambda d, k: d.update({k: (BLOB, d[k][1][:-1])})),
        ("empty", lambda d, k: d.update({k: (BLOB, b"")})),
        ("larger than the read buffer", lambda d, k: d.update({k: (BLOB, b"x" * 5000)})),
        ("marker points at nothing", lambda d, k: d.pop(k)),
        ("marker points at the wrong slot", lambda d, k: d.update({"active": ("i32", 2)})),
        ("wrong generation in the right slot", lambda d, k: d.update({"active": ("i32", 3)})),
        ("checksum zeroed", lambda d, k: d.update({k: (BLOB, forged)})),
    ]
    for name, mangle in mangles:
        d = dict(provisioned(CFG_A))
        mangle(d, active_slot(d))
        nvs, st = fresh(d)
        assert not st.provision_is_provisioned(), name
        eq(st.load_error.reason, "CORRUPT", name)


@test
def test_save_after_corruption_recovers():
    d = dict(provisioned(CFG_A))
    d[active_slot(d)] = (BLOB, b"garbage" * 10)
    nvs, st = fresh(d)
    st.provision_save_config(CFG_B)
    eq(state(fresh(nvs.durable)[1]), CFG_B)


@test
def test_record_encoding():
    rec = ss_store.encode_record(5, CFG_B)
    eq(rec[:4], b"SSC\x01")
    eq(hashlib.sha256(rec[:-32]).digest(), rec[-32:])
    eq(ss_store.decode_record(rec), (5, CFG_B, None))


class Full(FakeNVS):
    def set_blob(self, key, value):
        raise OSError(-0x1105)  # ESP_ERR_NVS_NOT_ENOUGH_SPACE


class Flaky(FakeNVS):
    def set_blob(self, key, value):
        FakeNVS.set_blob(self, key, bytes(value)[:-1] + b"?")  # flash wrote something else


@test
def test_failed_save_keeps_old_config():
    for nvs_class, reason in ((Full, "IO"), (Flaky, "VERIFY")):
        nvs = nvs_class(provisioned(CFG_A))
        st = ss_store.Store(nvs)
        st.provision_init()
        e = raises(ss_store.StoreError, st.provision_save_config, CFG_B)
        eq(e.reason, reason)
        assert SECRET_B not in e.message, reason
        eq(st.provision_load_config(), CFG_A, reason)
        eq(state(fresh(nvs.durable)[1]), CFG_A, reason)


@test
def test_module_level_api():
    st = ss_store.provision_init(FakeNVS())
    assert not ss_store.provision_is_provisioned()
    ss_store.provision_save_config(CFG_A)
    assert ss_store.provision_is_provisioned()
    eq(ss_store.provision_load_config(), CFG_A)
    ss_store.provision_clear()
    assert not st.provision_is_provisioned()


# --- power-cut model check ---------------------------------------------------------------

def _init(st):
    st.provision_init()
    return st


@test
def test_power_cut_model():
    # For a save (from blank and over a configuration) and a clear: cut the power after every
    # possible number of NVS mutating calls, reboot from the durable state, and require the old
    # or the new configuration exactly.
    make = lambda nvs: _init(ss_store.Store(nvs))
    for autocommit in (False, True):
        blank = {}
        old = provisioned(CFG_A, autocommit)
        scenarios = [
            ("save from blank", blank, None, CFG_B, lambda st: st.provision_save_config(CFG_B)),
            ("save over config", old, CFG_A, CFG_B, lambda st: st.provision_save_config(CFG_B)),
            ("clear", old, CFG_A, None, lambda st: st.provision_clear()),
        ]
        for name, start, want_old, want_new, op in scenarios:
            runs = cut_states(make, start, op, autocommit)
            assert len(runs) >= 3, name  # at least a write and a commit happened
            eq(runs[0][1], start, name + ": cut before any call changed something")
            eq(state(fresh(runs[-1][1], autocommit)[1]), want_new, name + " completed")
            for k, durable in runs:
                what = "%s, cut after %s calls, autocommit=%s" % (name, k, autocommit)
                nvs, st = fresh(durable, autocommit)  # must not raise
                got = state(st)
                assert got == want_old or got == want_new, what
                if got is None:
                    eq(st.load_error.reason, "ESP_ERR_NVS_NOT_FOUND", what)
                    assert not contains(nvs.durable, SECRET_A), what + ": an erased secret survived the reboot"
                    assert not contains(nvs.durable, SECRET_B), what + ": an unsaved secret survived the reboot"
                else:
                    assert st.load_error is None, what
                # and the store is fully usable again afterwards
                st.provision_save_config(CFG_C)
                eq(state(fresh(nvs.durable, autocommit)[1]), CFG_C, what + ": save after recovery")
                assert not contains(nvs.durable, SECRET_A), what + ": old secret lingers after recovery"
                assert not contains(nvs.durable, SECRET_B), what + ": new secret lingers after recovery"


# Device identities: opaque to the store apart from the key blob's format.
KEY_A = ss_store.KEY_MAGIC + b"\xaa" * 32 + b"\x04" + b"\x01" * 64
KEY_B = ss_store.KEY_MAGIC + b"\xbb" * 32 + b"\x04" + b"\x02" * 64
ID_A = {"key": KEY_A, "cert": b"cert-A" * 50, "ca": b"ca" * 200}
ID_B = {"key": KEY_B, "cert": b"cert-B" * 60, "ca": b"ca" * 200}


def id_state(st):
    return (state(st), st.identity())


@test
def test_identity_round_trip_and_checks():
    nvs, st = fresh()
    st.provision_save_config(CFG_A, ID_A)
    eq(id_state(fresh(nvs.durable)[1]), (CFG_A, ID_A))
    st.provision_save_config(CFG_B)  # a new record without an identity drops the key
    eq(id_state(fresh(nvs.durable)[1]), (CFG_B, None))
    assert not contains_bytes(nvs.durable, KEY_A[4:36]), "an old device key lingers"
    raises(ss_store.StoreError, st.provision_save_config, CFG_A, {"key": b"short", "cert": b"c", "ca": b"c"})
    # A damaged identity makes the whole record unusable (never a half identity).
    st.provision_save_config(CFG_A, ID_A)
    slot = str(st.generation % 2)
    nvs.set_blob("cert" + slot, b"tampered")
    nvs.commit()
    _, st2 = fresh(nvs.durable)
    eq((state(st2), st2.load_error.reason), (None, "CORRUPT"))
    # A factory reset erases the key and the certificates too.
    st.provision_clear()
    assert not contains_bytes(nvs.durable, KEY_A[4:36]), "the device key survived a factory reset"
    eq([k for k in nvs.durable if k[:4] in ("cert", "key0", "key1") or k[:2] == "ca"], [])


def contains_bytes(durable, needle):
    for t, v in durable.values():
        if t == BLOB and needle in v:
            return True
    return False


@test
def test_power_cut_with_identities():
    # As test_power_cut_model, with identities: after a cut the device has the old configuration
    # with the old identity or the new one with the new identity, never a mix.
    make = lambda nvs: _init(ss_store.Store(nvs))
    for autocommit in (False, True):
        nvs, st = fresh(autocommit=autocommit)
        st.provision_save_config(CFG_A, ID_A)
        old = nvs.durable
        scenarios = [
            ("new identity", (CFG_A, ID_A), (CFG_B, ID_B), lambda st: st.provision_save_config(CFG_B, ID_B)),
            ("identity dropped", (CFG_A, ID_A), (CFG_B, None), lambda st: st.provision_save_config(CFG_B)),
            ("clear", (CFG_A, ID_A), (None, None), lambda st: st.provision_clear()),
        ]
        for name, want_old, want_new, op in scenarios:
            runs = cut_states(make, old, op, autocommit)
            eq(id_state(fresh(runs[-1][1], autocommit)[1]), want_new, name + " completed")
            for k, durable in runs:
                what = "%s, cut after %s calls, autocommit=%s" % (name, k, autocommit)
                nvs2, st2 = fresh(durable, autocommit)
                got = id_state(st2)
                assert got == want_old or got == want_new, what
                st2.provision_save_config(CFG_C)
                eq(id_state(fresh(nvs2.durable, autocommit)[1]), (CFG_C, None), what + ": save after recovery")
                for key in (KEY_A, KEY_B):
                    assert not contains_bytes(nvs2.durable, key[4:36]), what + ": a device key lingers"


@test
def test_power_cut_during_recovery():
    # provision_init finishes an interrupted clear; cut that too, at every step.
    old = provisioned(CFG_A)
    runs = cut_states(lambda nvs: _init(ss_store.Store(nvs)), old, lambda st: st.provision_clear())
    for k, durable in runs:
        runs2 = cut_states(lambda nvs: ss_store.Store(nvs), durable, lambda st: st.provision_init())
        for k2, d2 in runs2:
            got = state(fresh(d2)[1])
            assert got is None or got == CFG_A, (k, k2)


run()
