"""Unit tests of the ESP32 firmware modules, on CPython and under the MicroPython interpreter.

The store runs over tests/mpy/fakenvs.py, an in-memory esp32.NVS with the real semantics
(shared with the MicroPython-side scripts in tests/mpy/).
"""

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "firmware" / "esp32-button" / "lib"
MPY_TESTS = REPO / "tests" / "mpy"
for _p in (str(LIB), str(MPY_TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from fakenvs import BLOB, ESP_ERR_NVS_INVALID_LENGTH, ESP_ERR_NVS_NOT_FOUND, FakeNVS, PowerCut, cut_states  # noqa: E402

import ss_mqtt  # noqa: E402
import ss_store  # noqa: E402
import ssproto  # noqa: E402
from ss_compat import backoff_ms  # noqa: E402
from ss_console import Console, LineReader  # noqa: E402
from ss_store import StoreError  # noqa: E402

MICROPYTHON = Path(sys.executable).parent / "micropython"

SECRET_A = "OldSecretPassA1"
SECRET_B = "NewSecretPassB2"
SECRET_C = "ThirdSecretPassC3"
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
    "wifi_ssid": 'Other "quoted" \\ net',
    "wifi_pass": SECRET_B,
    "device_id": "btn-02",
    "tenant": "acme",
    "building": "annex",
    "room": "7",
    "mqtt_uri": "mqtt://10.0.0.2:1884",
}
CFG_C = dict(CFG_A, wifi_pass=SECRET_C, room="102")


# =========================================================================================
# The fake NVS itself
# =========================================================================================

def test_fake_nvs_semantics():
    nvs = FakeNVS()
    for call in (lambda: nvs.get_i32("k"), lambda: nvs.get_blob("k", bytearray(8)), lambda: nvs.erase_key("k")):
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.args[0] == ESP_ERR_NVS_NOT_FOUND
    nvs.set_blob("k", b"abc")
    nvs.set_i32("n", 7)
    with pytest.raises(OSError) as ei:
        nvs.get_i32("k")  # type mismatch looks like "missing"
    assert ei.value.args[0] == ESP_ERR_NVS_NOT_FOUND
    with pytest.raises(OSError) as ei:
        nvs.get_blob("n", bytearray(8))
    assert ei.value.args[0] == ESP_ERR_NVS_NOT_FOUND
    with pytest.raises(OSError) as ei:
        nvs.get_blob("k", bytearray(2))
    assert ei.value.args[0] == ESP_ERR_NVS_INVALID_LENGTH
    buf = bytearray(8)
    assert nvs.get_blob("k", buf) == 3 and bytes(buf[:3]) == b"abc"
    assert nvs.reset().durable == {}  # not committed: lost by a reset
    nvs.commit()
    assert nvs.reset().get_i32("n") == 7
    nvs.budget = nvs.calls
    with pytest.raises(PowerCut):
        nvs.set_i32("n", 8)
    assert nvs.get_i32("n") == 7


# =========================================================================================
# ss_store
# =========================================================================================

def fresh(durable=None, autocommit=False):
    nvs = FakeNVS(durable, autocommit=autocommit)
    st_ = ss_store.Store(nvs)
    st_.provision_init()
    return nvs, st_


def state(store):
    return store.provision_load_config() if store.provision_is_provisioned() else None


def provisioned(cfg, autocommit=False):
    nvs, s = fresh(autocommit=autocommit)
    s.provision_save_config(cfg)
    return nvs.durable


def holds(durable, secret):
    return any(t == BLOB and secret.encode() in v for t, v in durable.values())


def test_store_blank_init():
    nvs, s = fresh()
    assert not s.provision_is_provisioned()
    assert s.load_error.reason == "ESP_ERR_NVS_NOT_FOUND"
    with pytest.raises(StoreError) as ei:
        s.provision_load_config()
    assert ei.value.reason == "ESP_ERR_NVS_NOT_FOUND"
    assert nvs.calls == 0  # a blank boot writes nothing


@pytest.mark.parametrize("cfg", [CFG_A, CFG_B, dict(CFG_A, wifi_pass=""), dict(CFG_A, wifi_ssid="\u20ac" * 10 + "xx")])
def test_store_save_load_round_trip(cfg):
    nvs, s = fresh()
    s.provision_save_config(cfg)
    assert s.provision_is_provisioned()
    assert s.provision_load_config() == cfg
    _, s2 = fresh(nvs.durable)  # after a reset
    assert s2.load_error is None
    assert s2.provision_load_config() == cfg
    assert s2.generation == s.generation == 1


def test_store_load_returns_a_copy():
    _, s = fresh(provisioned(CFG_A))
    c = s.provision_load_config()
    c["wifi_pass"] = "changed"
    assert s.provision_load_config() == CFG_A


def test_store_ignores_extra_keys():
    nvs, s = fresh()
    s.provision_save_config(dict(CFG_A, extra="x"))
    assert fresh(nvs.durable)[1].provision_load_config() == CFG_A


def test_store_resave_replaces_and_forgets_old_secret():
    nvs, s = fresh(provisioned(CFG_A))
    s.provision_save_config(CFG_B)
    assert s.provision_load_config() == CFG_B
    assert state(fresh(nvs.durable)[1]) == CFG_B
    assert not holds(nvs.durable, SECRET_A)
    s.provision_save_config(CFG_C)
    assert state(fresh(nvs.durable)[1]) == CFG_C
    assert len(nvs.blobs()) == 1
    assert fresh(nvs.durable)[1].generation == 3


def test_store_clear():
    nvs, s = fresh(provisioned(CFG_A))
    s.provision_clear()
    assert not s.provision_is_provisioned()
    assert s.load_error.reason == "ESP_ERR_NVS_NOT_FOUND"
    assert nvs.durable == {}
    _, s2 = fresh(nvs.durable)
    assert not s2.provision_is_provisioned()
    s.provision_clear()  # clearing a blank store is fine


def test_store_incomplete_config_writes_nothing():
    nvs, s = fresh()
    cfg = dict(CFG_A)
    del cfg["room"]
    with pytest.raises(StoreError) as ei:
        s.provision_save_config(cfg)
    assert ei.value.reason == "INCOMPLETE"
    assert nvs.calls == 0


def _active_slot(durable):
    (key,) = [k for k, (t, _) in durable.items() if t == BLOB]
    return key


def test_store_corrupt_record_flipped_byte():
    base = provisioned(CFG_A)
    key = _active_slot(base)
    raw = base[key][1]
    for i in range(len(raw)):
        bad = dict(base)
        b = bytearray(raw)
        b[i] ^= 0x20
        bad[key] = (BLOB, bytes(b))
        _, s = fresh(bad)
        assert not s.provision_is_provisioned(), i
        assert s.load_error.reason == "CORRUPT", i
        with pytest.raises(StoreError):
            s.provision_load_config()


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d, k: d.update({k: (BLOB, d[k][1][:-1])}),  # truncated
        lambda d, k: d.update({k: (BLOB, b"")}),  # empty
        lambda d, k: d.update({k: (BLOB, b"x" * 5000)}),  # larger than the read buffer
        lambda d, k: d.pop(k),  # marker points at nothing
        lambda d, k: d.update({"active": ("i32", 2)}),  # marker points at the wrong slot
        lambda d, k: d.update({"active": ("i32", 3)}),  # wrong generation in the right slot
        lambda d, k: d.update({k: (BLOB, ss_store.encode_record(1, CFG_B)[:-32] + b"\x00" * 32)}),
    ],
)
def test_store_damaged_states_are_corrupt(mangle):
    d = dict(provisioned(CFG_A))
    mangle(d, _active_slot(d))
    _, s = fresh(d)
    assert not s.provision_is_provisioned()
    assert s.load_error.reason == "CORRUPT"


def test_store_save_after_corruption_recovers():
    d = dict(provisioned(CFG_A))
    d[_active_slot(d)] = (BLOB, b"garbage" * 10)
    nvs, s = fresh(d)
    s.provision_save_config(CFG_B)
    assert state(fresh(nvs.durable)[1]) == CFG_B


def test_record_encoding():
    rec = ss_store.encode_record(5, CFG_B)
    assert rec[:4] == b"SSC\x01"
    assert hashlib.sha256(rec[:-32]).digest() == rec[-32:]
    assert ss_store.decode_record(rec) == (5, CFG_B)


def test_store_io_error_keeps_old_config():
    class Full(FakeNVS):
        def set_blob(self, key, value):
            raise OSError(-0x1105)  # ESP_ERR_NVS_NOT_ENOUGH_SPACE

    nvs = Full(provisioned(CFG_A))
    s = ss_store.Store(nvs)
    s.provision_init()
    with pytest.raises(StoreError) as ei:
        s.provision_save_config(CFG_B)
    assert ei.value.reason == "IO"
    assert SECRET_B not in ei.value.message
    assert s.provision_load_config() == CFG_A
    assert state(fresh(nvs.durable)[1]) == CFG_A


def test_store_verify_failure_keeps_old_config():
    class Flaky(FakeNVS):
        def set_blob(self, key, value):
            super().set_blob(key, bytes(value)[:-1] + b"?")  # flash wrote something else

    nvs = Flaky(provisioned(CFG_A))
    s = ss_store.Store(nvs)
    s.provision_init()
    with pytest.raises(StoreError) as ei:
        s.provision_save_config(CFG_B)
    assert ei.value.reason == "VERIFY"
    assert s.provision_load_config() == CFG_A
    assert state(fresh(nvs.durable)[1]) == CFG_A


def test_store_module_level_api():
    nvs = FakeNVS()
    s = ss_store.provision_init(nvs)
    assert not ss_store.provision_is_provisioned()
    ss_store.provision_save_config(CFG_A)
    assert ss_store.provision_is_provisioned()
    assert ss_store.provision_load_config() == CFG_A
    ss_store.provision_clear()
    assert not s.provision_is_provisioned()


# --- power-cut model check ---------------------------------------------------------------

def _init(s):
    s.provision_init()
    return s


def _make(nvs):
    return _init(ss_store.Store(nvs))


SCENARIOS = {
    "save-from-blank": (lambda ac: {}, None, CFG_B, lambda s: s.provision_save_config(CFG_B)),
    "save-over-config": (lambda ac: provisioned(CFG_A, ac), CFG_A, CFG_B, lambda s: s.provision_save_config(CFG_B)),
    "clear": (lambda ac: provisioned(CFG_A, ac), CFG_A, None, lambda s: s.provision_clear()),
}


@pytest.mark.parametrize("autocommit", [False, True], ids=["commit-needed", "write-through"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_store_power_cut_at_every_step(scenario, autocommit):
    start_fn, old, new, op = SCENARIOS[scenario]
    start = start_fn(autocommit)
    runs = cut_states(_make, start, op, autocommit)
    assert len(runs) >= 3  # at least a write and a commit happened
    assert runs[0][1] == start  # no call made: nothing changed
    assert state(fresh(runs[-1][1], autocommit)[1]) == new
    for k, durable in runs:
        where = f"{scenario}: power cut after {k} mutating calls"
        nvs, s = fresh(durable, autocommit)  # must not raise
        got = state(s)
        assert got in (old, new), where
        if got is None:
            assert s.load_error.reason == "ESP_ERR_NVS_NOT_FOUND", where
            assert not holds(nvs.durable, SECRET_A), where + ": an erased secret survived the reboot"
            assert not holds(nvs.durable, SECRET_B), where + ": an unsaved secret survived the reboot"
        else:
            assert s.load_error is None, where
        # the store is fully usable afterwards
        s.provision_save_config(CFG_C)
        assert state(fresh(nvs.durable, autocommit)[1]) == CFG_C, where
        assert not holds(nvs.durable, SECRET_A) and not holds(nvs.durable, SECRET_B), where


def test_store_power_cut_during_boot_cleanup():
    # provision_init finishes an interrupted clear; cut that too, at every step.
    runs = cut_states(_make, provisioned(CFG_A), lambda s: s.provision_clear())
    for k, durable in runs:
        for k2, d2 in cut_states(ss_store.Store, durable, lambda s: s.provision_init()):
            assert state(fresh(d2)[1]) in (None, CFG_A), (k, k2)


# =========================================================================================
# ss_console
# =========================================================================================

class ByteStream:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    async def read(self, n):
        b = self.data[self.pos:self.pos + n]
        self.pos += len(b)
        return b


def read_lines(data):
    async def go():
        r = LineReader(ByteStream(data))
        out = []
        while True:
            try:
                out.append(await r.readline())
            except EOFError:
                return out

    return asyncio.run(go())


N = ssproto.MAX_LINE


@pytest.mark.parametrize(
    "data, want",
    [
        (b"a\rb\nc\r\nd\n", [b"a", b"b", b"c", b"d"]),
        (b"\r\n\r\n", [b"", b""]),
        (b"\r\r", [b"", b""]),
        (b"\n\r", [b"", b""]),
        (b"\n\n", [b"", b""]),
        (b"a\r\n\nb\r", [b"a", b"", b"b"]),
        (b"partial", []),  # EOF drops an unfinished line
        (b"ab\x08c\n", [b"ac"]),
        (b"ab\x7f\x7fc\r", [b"c"]),
        (b"\x08\x7fa\n", [b"a"]),
        (b"secret\x03ping\r\n", [b"ping"]),
        (b"x" * 2000 + b"\x03ok\n", [b"ok"]),
        (b"x" * N + b"\n", [b"x" * N]),
        (b"x" * (N + 1) + b"\nping\n", [None, b"ping"]),
        (b"y" * 3000 + b"\r\nok\r\n", [None, b"ok"]),
        ("caf\u00e9\r".encode(), ["caf\u00e9".encode()]),
    ],
)
def test_line_reader(data, want):
    assert read_lines(data) == want


@pytest.mark.parametrize(
    "typed, want",
    [("caf\u00e9\x7f", "caf"), ("x\u20ac\x08y", "xy"), ("\U0001f600\x7fok", "ok")],
)
def test_line_reader_backspace_removes_a_whole_character(typed, want):
    # A terminal sends one DEL per character; the line must stay valid UTF-8.
    assert read_lines(typed.encode() + b"\n") == [want.encode()]


class FakeStore:
    def __init__(self, cfg=None, fail=False):
        self.cfg = dict(cfg) if cfg else None
        self.fail = fail
        self.saves = []
        self.clears = 0

    def provision_is_provisioned(self):
        return self.cfg is not None

    def provision_load_config(self):
        if self.cfg is None:
            raise StoreError("ESP_ERR_NVS_NOT_FOUND", "ESP_ERR_NVS_NOT_FOUND")
        return dict(self.cfg)

    def provision_save_config(self, cfg):
        if self.fail:
            raise StoreError("VERIFY", "record read back differs from what was written")
        self.saves.append(dict(cfg))
        self.cfg = dict(cfg)

    def provision_clear(self):
        if self.fail:
            raise StoreError("IO", "NVS erase failed (-1)")
        self.clears += 1
        self.cfg = None


class Link:
    def __init__(self, state, ip=""):
        self.state = state
        self.ip = ip


class Rig:
    """A Console over a fake store and reset, driven line by line; output through capsys."""

    def __init__(self, capsys, store=None, **kw):
        self.capsys = capsys
        self.store = store if store is not None else FakeStore()
        self.resets = 0
        self.console = Console(self.store, "aa:bb:cc", "safesignal-button test", self._reset, **kw)
        self.all = []

    async def _reset(self):
        self.resets += 1
        print("<RESET>")

    def out(self):
        text = self.capsys.readouterr().out
        assert text == "" or text.endswith("\n")
        lines = text.split("\n")[:-1]
        self.all += lines
        return lines

    def cmd(self, line):
        asyncio.run(self.console.handle(line))
        lines = self.out()
        if lines and lines[-1] == "<RESET>":
            lines = lines[:-1]
        return lines

    def raw(self, data):
        asyncio.run(self.console.handle_bytes(data))
        return self.out()


def reply(lines):
    """Exactly one status line, and it is the last line; returns its parse."""
    assert lines, "no reply"
    for ln in lines[:-1]:
        assert ssproto.parse_status(ln) is None, f"status line before the end: {ln!r}"
    st_ = ssproto.parse_status(lines[-1])
    assert st_ is not None, f"reply does not end with a status line: {lines!r}"
    return st_


def fields_of(lines):
    out = {}
    for ln in lines[:-1]:
        f = ssproto.parse_status_field(ln)
        assert f is not None, ln
        out[f[0]] = f[1]
    return out


def test_console_help_and_ping(capsys):
    r = Rig(capsys)
    lines = r.cmd("help")
    assert reply(lines) == (True, "", "")
    assert any("provision_set_wifi" in ln for ln in lines)
    assert reply(r.cmd("ping")) == (True, "", "pong")
    assert reply(r.cmd("ping tok")) == (True, "", "pong tok")
    assert reply(r.cmd('ping "a b"')) == (True, "", 'pong "a b"')
    assert reply(r.cmd("ping a b"))[:2] == (False, "USAGE")


@pytest.mark.parametrize("line", ["", "   ", "\t"])
def test_console_empty_line_is_silent(capsys, line):
    assert Rig(capsys).cmd(line) == []


@pytest.mark.parametrize(
    "line",
    ["Zq9-Typed-Secret", "provision_set_wif Zq9-Typed-Secret", "PING", "cmd_help", "_hint", "merged", '""',
     "Zq9-Typed-Secret more words", "ok", "run"],
)
def test_console_unknown_command_is_not_echoed(capsys, line):
    r = Rig(capsys)
    lines = r.cmd(line)
    assert reply(lines)[:2] == (False, "UNKNOWN")
    assert len(lines) == 1
    for word in line.split():
        if len(word) > 3:
            assert word not in lines[0]


SECRET = "Zq9-Secret-Pw!x"

BAD_INPUT = [
    ("provision_set_wifi", "USAGE"),
    ("provision_set_wifi " + SECRET, "USAGE"),
    ("provision_set_wifi net " + SECRET + " extra", "USAGE"),
    ('provision_set_wifi "" ' + SECRET, "INVALID"),
    ("provision_set_wifi " + "x" * 33 + " " + SECRET, "INVALID"),
    ("provision_set_wifi net Zq9-Sho", "INVALID"),
    ("provision_set_wifi net " + SECRET * 5, "INVALID"),
    ('provision_set_wifi net "' + SECRET + '\u00e4"', "INVALID"),
    ('provision_set_wifi "' + SECRET + '\t" pw', "INVALID"),
    ("provision_set_device a b c", "USAGE"),
    ("provision_set_device a b c d e", "USAGE"),
    ("provision_set_device -a b c d", "INVALID"),
    ("provision_set_device a b c d/e", "INVALID"),
    ("provision_set_device a b c " + SECRET, "INVALID"),
    ("provision_set_mqtt", "USAGE"),
    ("provision_set_mqtt a b", "USAGE"),
    ("provision_set_mqtt mqtts://h:8883", "INVALID"),
    ("provision_set_mqtt mqtt://h:0", "INVALID"),
    ("provision_set_mqtt mqtt://h:65536", "INVALID"),
    ("provision_set_mqtt " + SECRET, "INVALID"),
    ('provision_set_wifi "net ' + SECRET, "QUOTE"),
    ('provision_set_wifi net "a\\q"', "QUOTE"),
    ("provision_set_wifi net " + SECRET + "\\", "QUOTE"),
    ("provision_complete now", "USAGE"),
    ("provision_discard x", "USAGE"),
    ("provision_status x", "USAGE"),
    ("provision_verify", "USAGE"),
    ("provision_verify " + SECRET, "INVALID"),
    ("provision_reset", "CONFIRM"),
    ("provision_reset --confirm x", "CONFIRM"),
    ("provision_reset confirm", "CONFIRM"),
    ("provision_reset --CONFIRM", "CONFIRM"),
    ("provision", "USAGE"),
    ("provision clear now", "USAGE"),
    ("provision erase", "USAGE"),
    ("reboot now", "USAGE"),
]


@pytest.mark.parametrize("line, code", BAD_INPUT)
def test_console_bad_input_changes_nothing(capsys, line, code):
    store = FakeStore(CFG_A)
    r = Rig(capsys, store)
    staged = {"room": "r1", "wifi_ssid": "S", "wifi_pass": "pw-staged-1"}
    r.console.staged = dict(staged)
    lines = r.cmd(line)
    assert reply(lines)[:2] == (False, code)
    assert len(lines) == 1
    assert r.console.staged == staged
    assert store.saves == [] and store.clears == 0 and store.cfg == CFG_A
    assert r.resets == 0
    assert SECRET not in lines[0] and SECRET[:7] not in lines[0]


def test_console_bad_input_leaves_real_store_untouched(capsys):
    nvs, store = fresh(provisioned(CFG_A))
    before = dict(nvs.durable)
    calls = nvs.calls
    r = Rig(capsys, store)
    for line, _ in BAD_INPUT:
        r.cmd(line)
    assert nvs.calls == calls
    assert nvs.durable == before


def test_console_complete_without_wifi_is_incomplete(capsys):
    r = Rig(capsys)
    assert reply(r.cmd("provision_complete"))[:2] == (False, "INCOMPLETE")
    r.cmd("provision_set_device a b c d")
    assert reply(r.cmd("provision_complete"))[:2] == (False, "INCOMPLETE")
    r.cmd("provision_discard")
    r.cmd("provision_set_wifi net password1")
    assert reply(r.cmd("provision_complete"))[:2] == (False, "INCOMPLETE")
    assert r.store.saves == [] and r.resets == 0
    assert r.console.staged["wifi_ssid"] == "net"


def test_console_full_flow_never_prints_the_password(capsys):
    r = Rig(capsys)
    for line in (
        'provision_set_wifi "My Net" "' + SECRET + '"',
        "provision_set_device btn-01 acme hq 101",
    ):
        assert reply(r.cmd(line)) == (True, "", ""), line
    st_ = r.cmd("provision_status")
    f = fields_of(st_)
    assert f["provisioned"] == "no"
    assert f["wifi_password"] == "not set"
    assert f["pending"] == "building,device_id,room,tenant,wifi_ssid"
    assert reply(r.cmd("provision_complete")) == (True, "", "")
    assert r.resets == 1
    assert r.all[-2:] == ["OK", "<RESET>"]  # the reply is out before the reset
    assert r.console.staged == {}
    assert r.store.saves == [
        {"wifi_ssid": "My Net", "wifi_pass": SECRET, "device_id": "btn-01", "tenant": "acme", "building": "hq",
         "room": "101", "mqtt_uri": ssproto.DEFAULT_MQTT_URI}
    ]
    f = fields_of(r.cmd("provision_status"))
    assert f["provisioned"] == "yes"
    assert f["wifi_ssid"] == "My Net"
    assert f["wifi_password"] == "set"
    assert f["pending"] == "none"
    assert f["mqtt_uri"] == ssproto.DEFAULT_MQTT_URI
    assert f["chip_id"] == "aa:bb:cc"
    assert set(f) == {name for _, name in ssproto.STATUS_FIELDS}
    v = r.cmd("provision_verify 0123456789abcdef")
    assert reply(v) == (True, "", "")
    assert v[:-1] == ["Check: " + ssproto.secret_check(hashlib.sha256, "0123456789abcdef", "My Net", SECRET)]
    r.cmd("provision_set_wifi other " + SECRET)
    r.cmd("help")
    r.cmd(SECRET)
    r.cmd("ping")
    r.cmd("provision_reset --confirm")
    for ln in r.all:
        assert SECRET not in ln, ln


def test_console_status_open_network_and_links(capsys):
    cfg = dict(CFG_A, wifi_pass="")
    r = Rig(capsys, FakeStore(cfg), wifi=Link("connected", "10.0.0.9"), mqtt=Link("connected"))
    r.cmd("provision_set_mqtt mqtt://h:1")
    lines = r.cmd("provision_status")
    reply(lines)
    f = fields_of(lines)
    assert f["wifi_password"] == "open network"
    assert f["wifi_ssid"] == CFG_A["wifi_ssid"]
    assert f["wifi_state"] == "connected" and f["ip_address"] == "10.0.0.9" and f["mqtt_state"] == "connected"
    assert f["pending"] == "mqtt_uri"
    assert f["mqtt_uri"] == CFG_A["mqtt_uri"]  # staged values are not shown as committed


def test_console_complete_merges_with_stored_config(capsys):
    r = Rig(capsys, FakeStore(CFG_A))
    r.cmd("provision_set_mqtt mqtt://other:1")
    assert reply(r.cmd("provision_complete")) == (True, "", "")
    assert r.store.saves == [dict(CFG_A, mqtt_uri="mqtt://other:1")]


def test_console_store_failure_is_err_nvs(capsys):
    r = Rig(capsys, FakeStore(fail=True))
    r.cmd("provision_set_wifi net password1")
    r.cmd("provision_set_device a b c d")
    staged = dict(r.console.staged)
    lines = r.cmd("provision_complete")
    assert reply(lines)[:2] == (False, "NVS")
    assert r.console.staged == staged and r.resets == 0
    assert "password1" not in "\n".join(r.all)
    assert reply(r.cmd("provision_reset --confirm"))[:2] == (False, "NVS")
    assert r.resets == 0


def test_console_verify_requires_provisioning(capsys):
    assert reply(Rig(capsys).cmd("provision_verify 0123456789abcdef"))[:2] == (False, "STATE")


@pytest.mark.parametrize("line", ["provision_reset --confirm", "provision clear"])
def test_console_factory_reset(capsys, line):
    r = Rig(capsys, FakeStore(CFG_A))
    r.console.staged = {"room": "x"}
    assert reply(r.cmd(line)) == (True, "", "")
    assert r.store.clears == 1 and r.resets == 1 and r.console.staged == {}
    assert r.all[-2:] == ["OK", "<RESET>"]


def test_console_discard_and_reboot(capsys):
    r = Rig(capsys)
    r.cmd("provision_set_device a b c d")
    assert reply(r.cmd("provision_discard")) == (True, "", "")
    assert r.console.staged == {}
    assert reply(r.cmd("reboot")) == (True, "", "")
    assert r.resets == 1


def test_console_with_real_store(capsys):
    nvs, store = fresh()
    r = Rig(capsys, store)
    r.cmd("provision_set_wifi net " + SECRET)
    r.cmd("provision_set_device btn-01 acme hq 101")
    r.cmd("provision_set_mqtt mqtt://broker.local")
    assert reply(r.cmd("provision_complete")) == (True, "", "")
    after = fresh(nvs.durable)[1].provision_load_config()
    assert after["wifi_pass"] == SECRET and after["mqtt_uri"] == "mqtt://broker.local"
    assert reply(r.cmd("provision clear")) == (True, "", "")
    assert nvs.durable == {}


def test_console_invalid_utf8(capsys):
    r = Rig(capsys)
    lines = r.raw(b"provision_set_wifi net pass\xff\xfeword")
    assert reply(lines)[:2] == (False, "ENCODING")
    assert r.console.staged == {}


def test_console_run_loop(capsys):
    r = Rig(capsys)
    data = b"ping\r\n" + b"x" * 2000 + b"\r\nping 2\r\n\xff\n\r\n"
    with pytest.raises(EOFError):
        asyncio.run(r.console.run(ByteStream(data)))
    lines = r.out()
    assert [ssproto.parse_status(ln) for ln in lines] == [
        (True, "", "pong"),
        (False, "TOOLONG", f"line longer than {N} bytes discarded"),
        (True, "", "pong 2"),
        (False, "ENCODING", "line is not valid UTF-8"),
    ]


# =========================================================================================
# ss_mqtt
# =========================================================================================

@pytest.mark.parametrize(
    "n, want",
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (321, b"\xc1\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"),
        (268435455, b"\xff\xff\xff\x7f"),
    ],
)
def test_encode_length_spec_examples(n, want):
    # MQTT 3.1.1 section 2.2.3, Table 2.4 (and the worked example 321).
    assert ss_mqtt.encode_length(n) == want


def test_encode_connect_known_bytes():
    # MQTT 3.1.1 section 3.1: fixed header, then variable header
    #   00 04 'M' 'Q' 'T' 'T'   protocol name
    #   04                      protocol level 3.1.1
    #   02                      connect flags: clean session only
    #   00 3c                   keep alive 60 s
    # then the payload: client identifier as a 2-byte-length UTF-8 string.
    expected = bytes(
        [0x10, 18,
         0x00, 0x04, ord("M"), ord("Q"), ord("T"), ord("T"),
         0x04,
         0x02,
         0x00, 0x3C,
         0x00, 0x06]
    ) + b"btn-01"
    assert ss_mqtt.encode_connect("btn-01") == expected


def test_encode_connect_options_and_long_id():
    assert ss_mqtt.encode_connect("c", keepalive=300, clean=False) == (
        b"\x10\x0d\x00\x04MQTT\x04\x00\x01\x2c\x00\x01c"
    )
    cid = "d" * 200
    pkt = ss_mqtt.encode_connect(cid)
    assert pkt[:3] == b"\x10\xd4\x01"  # remaining length 212
    assert pkt[3:15] == b"\x00\x04MQTT\x04\x02\x00\x3c\x00\xc8"
    assert pkt[15:] == cid.encode()
    assert ss_mqtt.encode_connect("\u00e9")[-4:] == b"\x00\x02\xc3\xa9"
    assert ss_mqtt.encode_pingreq() == b"\xc0\x00"


def _read_all(data):
    async def go():
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        out = []
        while True:
            try:
                out.append(await ss_mqtt.read_packet(r))
            except (EOFError, OSError) as e:
                out.append(e)
                return out

    return asyncio.run(go())


def test_read_packet_sequence():
    body = bytes(range(200))
    got = _read_all(b"\x20\x02\x00\x00" + b"\xd0\x00" + b"\x30\xc8\x01" + body)
    assert got[:3] == [(0x20, b"\x00\x00"), (0xD0, b""), (0x30, body)]
    assert isinstance(got[3], EOFError)  # clean EOF at a packet boundary


def test_read_packet_round_trip_connect():
    pkt = ss_mqtt.encode_connect("btn-01")
    got = _read_all(pkt)
    assert got[0] == (0x10, pkt[2:])


def test_read_packet_bad_length():
    got = _read_all(b"\x30\xff\xff\xff\xff\x7f")
    assert isinstance(got[0], OSError)


@pytest.mark.parametrize("data", [b"\x20", b"\x20\x02\x00", b"\x30\x80"])
def test_read_packet_truncated(data):
    got = _read_all(data)
    assert len(got) == 1 and isinstance(got[0], (EOFError, OSError))


# =========================================================================================
# ss_compat.backoff_ms
# =========================================================================================

@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(0, 200), st.integers(0, 0xFFFF))
def test_backoff_default_bounds(attempt, rnd):
    base = min(1000 << attempt, 60000)
    d = backoff_ms(attempt, rnd)
    assert base // 2 <= d <= base


def test_backoff_extremes():
    for attempt in range(12):
        base = min(1000 << attempt, 60000)
        assert backoff_ms(attempt, 0) == base // 2
        assert backoff_ms(attempt, base // 2) == base
    assert backoff_ms(0, 0) == 500
    assert backoff_ms(100, 0xFFFF) <= 60000


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(0, 40), st.integers(0, 0xFFFF), st.integers(2, 5000), st.integers(0, 10**7))
def test_backoff_bounds_any_limits(attempt, rnd, lo, extra):
    # The docstring's contract: exponential from lo, capped at hi, then 50%..100% jitter.
    hi = lo + extra
    base = min(lo << attempt, hi)
    d = backoff_ms(attempt, rnd, lo, hi)
    assert base // 2 <= d <= base


# =========================================================================================
# The same kind of checks under the MicroPython interpreter (tests/mpy/check_*.py)
# =========================================================================================

MPY_SCRIPTS = sorted(MPY_TESTS.glob("check_*.py"))


def test_mpy_scripts_exist():
    assert MICROPYTHON.exists(), MICROPYTHON
    assert {p.name for p in MPY_SCRIPTS} >= {"check_ssproto.py", "check_store.py", "check_console.py", "check_mqtt.py"}


@pytest.mark.parametrize("script", MPY_SCRIPTS, ids=[p.stem for p in MPY_SCRIPTS])
def test_under_micropython(script):
    env = dict(os.environ)
    env["MICROPYPATH"] = f"{LIB}:{MPY_TESTS}:.frozen"
    proc = subprocess.run(
        [str(MICROPYTHON), "-X", "heapsize=128k", str(script)],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    failures = [ln for ln in lines if ln.startswith("FAIL")]
    assert proc.returncode == 0, "micropython " + script.name + " failed:\n" + ("\n".join(failures) or out)
    assert lines and lines[-1].endswith(" passed, 0 failed"), out
    assert int(lines[-1].split()[0]) > 0, out
