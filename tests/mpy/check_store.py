# ss_store under MicroPython, over the fake esp32.NVS, including the power-cut model check.
from fakenvs import BLOB, ESP_ERR_NVS_NOT_FOUND, FakeNVS, PowerCut, cut_states
from mpyunit import eq, raises, run, test

import ss_store

CFG_A = {
    "wifi_ssid": "Caf\u00e9 Net",
    "wifi_pass": "OldSecretPassA1",
    "device_id": "btn-01",
    "tenant": "acme",
    "building": "hq",
    "room": "101",
    "mqtt_uri": "mqtt://broker.local:1883",
}
CFG_B = {
    "wifi_ssid": "Other \"quoted\" \\ net",
    "wifi_pass": "NewSecretPassB2",
    "device_id": "btn-02",
    "tenant": "acme",
    "building": "annex",
    "room": "7",
    "mqtt_uri": "mqtt://10.0.0.2:1884",
}
CFG_C = dict(CFG_A)
CFG_C["wifi_pass"] = "ThirdSecretPassC3"


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


@test
def test_blank_init():
    nvs, st = fresh()
    assert not st.provision_is_provisioned()
    eq(st.load_error.reason, "ESP_ERR_NVS_NOT_FOUND")
    eq(raises(ss_store.StoreError, st.provision_load_config).reason, "ESP_ERR_NVS_NOT_FOUND")
    eq(nvs.calls, 0, "mutating calls on blank init")


@test
def test_round_trip_and_persistence():
    nvs, st = fresh()
    st.provision_save_config(CFG_A)
    eq(st.provision_load_config(), CFG_A)
    nvs2, st2 = fresh(nvs.durable)
    eq(st2.provision_load_config(), CFG_A)
    assert st2.load_error is None


@test
def test_load_returns_copy():
    nvs, st = fresh(provisioned(CFG_A))
    c = st.provision_load_config()
    c["wifi_pass"] = "changed"
    eq(st.provision_load_config(), CFG_A)


@test
def test_resave_replaces_and_erases_old_secret():
    nvs, st = fresh(provisioned(CFG_A))
    st.provision_save_config(CFG_B)
    eq(st.provision_load_config(), CFG_B)
    eq(state(fresh(nvs.durable)[1]), CFG_B)
    assert not contains(nvs.durable, CFG_A["wifi_pass"])
    eq(len(nvs.blobs()), 1)


@test
def test_clear():
    nvs, st = fresh(provisioned(CFG_A))
    st.provision_clear()
    assert not st.provision_is_provisioned()
    eq(nvs.durable, {})
    assert not fresh(nvs.durable)[1].provision_is_provisioned()


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
    key = None
    for k in base:
        if base[k][0] == BLOB:
            key = k
    raw = base[key][1]
    for i in range(len(raw)):
        bad = dict(base)
        b = bytearray(raw)
        b[i] ^= 0x01
        bad[key] = (BLOB, bytes(b))
        nvs, st = fresh(bad)
        assert not st.provision_is_provisioned(), i
        eq(st.load_error.reason, "CORRUPT", "byte %d" % i)


@test
def test_oversized_record_is_corrupt():
    base = provisioned(CFG_A)
    bad = dict(base)
    for k in bad:
        if bad[k][0] == BLOB:
            bad[k] = (BLOB, b"x" * 5000)
    nvs, st = fresh(bad)
    eq(st.load_error.reason, "CORRUPT")


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
            assert len(runs) >= 3, name
            eq(state(fresh(runs[-1][1], autocommit)[1]), want_new, name + " completed")
            for k, durable in runs:
                what = "%s, cut after %s calls, autocommit=%s" % (name, k, autocommit)
                nvs, st = fresh(durable, autocommit)
                got = state(st)
                assert got == want_old or got == want_new, what
                if got is None:
                    eq(st.load_error.reason, "ESP_ERR_NVS_NOT_FOUND", what)
                    assert not contains(nvs.durable, CFG_A["wifi_pass"]), what + ": old secret lingers"
                    assert not contains(nvs.durable, CFG_B["wifi_pass"]), what + ": new secret lingers"
                # and the store is usable again afterwards
                st.provision_save_config(CFG_C)
                eq(state(fresh(nvs.durable, autocommit)[1]), CFG_C, what + ": save after recovery")


def _init(st):
    st.provision_init()
    return st


@test
def test_power_cut_during_recovery():
    # A cut during the cleanup that provision_init does after an interrupted clear.
    old = provisioned(CFG_A)
    runs = cut_states(lambda nvs: _init(ss_store.Store(nvs)), old, lambda st: st.provision_clear())
    for k, durable in runs:
        runs2 = cut_states(lambda nvs: ss_store.Store(nvs), durable, lambda st: st.provision_init())
        for k2, d2 in runs2:
            got = state(fresh(d2)[1])
            assert got is None or got == CFG_A, (k, k2)


@test
def test_io_error_is_store_error():
    class Full(FakeNVS):
        def set_blob(self, key, value):
            raise OSError(-0x1105)  # ESP_ERR_NVS_NOT_ENOUGH_SPACE
    nvs = Full(provisioned(CFG_A))
    st = ss_store.Store(nvs)
    st.provision_init()
    eq(raises(ss_store.StoreError, st.provision_save_config, CFG_B).reason, "IO")
    eq(st.provision_load_config(), CFG_A)
    eq(state(fresh(nvs.durable)[1]), CFG_A)


@test
def test_fake_nvs_semantics():
    nvs = FakeNVS()
    eq(raises(OSError, nvs.get_i32, "k").args[0], ESP_ERR_NVS_NOT_FOUND)
    nvs.set_blob("k", b"abc")
    eq(raises(OSError, nvs.get_i32, "k").args[0], ESP_ERR_NVS_NOT_FOUND)
    eq(raises(OSError, nvs.get_blob, "k", bytearray(2)).args[0], -0x110C)
    buf = bytearray(8)
    eq(nvs.get_blob("k", buf), 3)
    eq(bytes(buf[:3]), b"abc")
    eq(nvs.reset().durable, {})
    nvs.commit()
    eq(nvs.reset().get_blob("k", buf), 3)
    nvs.budget = nvs.calls
    raises(PowerCut, nvs.commit)


run()
