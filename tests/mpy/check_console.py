# ss_console under MicroPython: LineReader and Console.handle with a fake store.
# Output is captured by shadowing the module-global name ``print`` in ss_console (a module
# attribute assignment, which works on MicroPython where builtins cannot be patched).
import asyncio
import hashlib

from mpyunit import eq, run, test

import ss_console
import ssproto
from ss_store import StoreError

SECRET = "Zq9-Secret-Pw!x"
CFG = {
    "wifi_ssid": "Net",
    "wifi_pass": SECRET,
    "device_id": "btn-01",
    "tenant": "acme",
    "building": "hq",
    "room": "101",
    "mqtt_uri": "mqtt://broker.local:1883",
}


class Bytes:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    async def read(self, n):
        b = self.data[self.pos:self.pos + n]
        self.pos += len(b)
        return b


def lines_of(data):
    async def go():
        r = ss_console.LineReader(Bytes(data))
        out = []
        while True:
            try:
                out.append(await r.readline())
            except EOFError:
                return out
    return asyncio.run(go())


@test
def test_line_endings():
    eq(lines_of(b"a\rb\nc\r\nd\n"), [b"a", b"b", b"c", b"d"])
    eq(lines_of(b"\r\n\r\n"), [b"", b""])
    eq(lines_of(b"\r\r"), [b"", b""])
    eq(lines_of(b"\n\r"), [b"", b""])
    eq(lines_of(b"\n\n"), [b"", b""])
    eq(lines_of(b"abc"), [])


@test
def test_backspace_and_del():
    eq(lines_of(b"ab\x08c\n"), [b"ac"])
    eq(lines_of(b"ab\x7f\x7fc\n"), [b"c"])
    eq(lines_of(b"\x08\x7fa\n"), [b"a"])


@test
def test_backspace_removes_whole_utf8_character():
    eq(lines_of("caf\u00e9".encode() + b"\x7f\n"), [b"caf"])
    eq(lines_of("x\u20ac".encode() + b"\x08y\n"), [b"xy"])


@test
def test_ctrl_c_discards_line():
    eq(lines_of(b"secret\x03ping\n"), [b"ping"])
    eq(lines_of(b"x" * 2000 + b"\x03ok\n"), [b"ok"])


@test
def test_over_long_lines():
    n = ssproto.MAX_LINE
    eq(lines_of(b"x" * n + b"\n"), [b"x" * n])
    eq(lines_of(b"x" * (n + 1) + b"\nping\n"), [None, b"ping"])
    eq(lines_of(b"y" * 3000 + b"\r\nok\r\n"), [None, b"ok"])


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
            raise StoreError("VERIFY", "simulated verify failure")
        self.saves.append(dict(cfg))
        self.cfg = dict(cfg)

    def provision_clear(self):
        if self.fail:
            raise StoreError("IO", "simulated erase failure")
        self.clears += 1
        self.cfg = None


class Rig:
    def __init__(self, cfg=None, fail=False):
        self.out = []
        self.resets = 0
        self.store = FakeStore(cfg, fail)

        async def reset():
            self.resets += 1
            self.out.append("<RESET>")

        self.console = ss_console.Console(self.store, "aa:bb", "fw 1", reset)

    def cmd(self, line):
        start = len(self.out)

        def hook(*a):
            self.out.append(" ".join([str(x) for x in a]))

        ss_console.print = hook
        try:
            asyncio.run(self.console.handle(line))
        finally:
            del ss_console.print
        got = self.out[start:]
        if got and got[-1] == "<RESET>":
            got = got[:-1]
        return got


def reply(lines):
    """Assert exactly one status line, the last; return its parse."""
    assert lines, "no reply"
    for ln in lines[:-1]:
        assert ssproto.parse_status(ln) is None, "status line before the end: %r" % ln
    st = ssproto.parse_status(lines[-1])
    assert st is not None, "last line is not a status line: %r" % lines[-1]
    return st


@test
def test_help_and_ping():
    r = Rig()
    assert reply(r.cmd("help"))[0]
    eq(reply(r.cmd("ping")), (True, "", "pong"))
    eq(reply(r.cmd('ping "a b"')), (True, "", 'pong "a b"'))
    eq(reply(r.cmd("ping a b"))[:2], (False, "USAGE"))
    eq(r.cmd(""), [])
    eq(r.cmd("   "), [])


@test
def test_unknown_command_not_echoed():
    r = Rig()
    for line in (SECRET, "provision_set_wif x", "PING", "cmd_help", "_hint", '""', "merged"):
        out = r.cmd(line)
        eq(reply(out)[:2], (False, "UNKNOWN"), line)
        for ln in out:
            assert line not in ln or line == "", line


@test
def test_bad_input_leaves_state_alone():
    bad = [
        ("provision_set_wifi", "USAGE"),
        ("provision_set_wifi only", "USAGE"),
        ("provision_set_wifi a b c", "USAGE"),
        ('provision_set_wifi "" password1', "INVALID"),
        ("provision_set_wifi " + "x" * 33 + " password1", "INVALID"),
        ("provision_set_wifi net short", "INVALID"),
        ('provision_set_wifi net "p\u00e4sswort1"', "INVALID"),
        ("provision_set_device a b c", "USAGE"),
        ("provision_set_device -a b c d", "INVALID"),
        ("provision_set_device a b c d/e", "INVALID"),
        ("provision_set_mqtt mqtts://h:8883", "INVALID"),
        ("provision_set_mqtt mqtt://h:0", "INVALID"),
        ("provision_set_mqtt", "USAGE"),
        ('provision_set_wifi "net', "QUOTE"),
        ("provision_complete now", "USAGE"),
        ("provision_discard x", "USAGE"),
        ("provision_status x", "USAGE"),
        ("provision_verify", "USAGE"),
        ("provision_verify xyz", "INVALID"),
        ("provision_reset", "CONFIRM"),
        ("provision_reset --confirm x", "CONFIRM"),
        ("provision_reset confirm", "CONFIRM"),
        ("provision", "USAGE"),
        ("provision clear now", "USAGE"),
        ("reboot now", "USAGE"),
    ]
    for line, code in bad:
        r = Rig(CFG)
        r.console.staged = {"room": "r1", "wifi_ssid": "S", "wifi_pass": SECRET}
        out = r.cmd(line)
        eq(reply(out)[:2], (False, code), line)
        eq(r.console.staged, {"room": "r1", "wifi_ssid": "S", "wifi_pass": SECRET}, line)
        eq(r.store.saves, [], line)
        eq(r.store.clears, 0, line)
        eq(r.store.cfg, CFG, line)
        eq(r.resets, 0, line)
        for ln in out:
            assert SECRET not in ln, line


@test
def test_complete_requires_wifi_and_device():
    r = Rig()
    eq(reply(r.cmd("provision_complete"))[:2], (False, "INCOMPLETE"))
    r.cmd("provision_set_wifi net password1")
    eq(reply(r.cmd("provision_complete"))[:2], (False, "INCOMPLETE"))
    eq(r.store.saves, [])
    eq(r.resets, 0)


@test
def test_full_provisioning_flow():
    r = Rig()
    out = []
    for line in (
        'provision_set_wifi "My Net" "' + SECRET + '"',
        "provision_set_device btn-01 acme hq 101",
        "provision_status",
    ):
        o = r.cmd(line)
        eq(reply(o), (True, "", ""), line)
        out += o
    eq(r.console.staged["wifi_pass"], SECRET)
    o = r.cmd("provision_complete")
    out += o
    eq(reply(o), (True, "", ""))
    eq(r.resets, 1)
    eq(r.out[-1], "<RESET>")
    eq(r.out[-2], "OK")
    eq(r.console.staged, {})
    eq(r.store.saves, [{
        "wifi_ssid": "My Net", "wifi_pass": SECRET, "device_id": "btn-01", "tenant": "acme",
        "building": "hq", "room": "101", "mqtt_uri": ssproto.DEFAULT_MQTT_URI,
    }])
    o = r.cmd("provision_status")
    out += o
    reply(o)
    fields = {}
    for ln in o[:-1]:
        f = ssproto.parse_status_field(ln)
        assert f is not None, ln
        fields[f[0]] = f[1]
    eq(fields["provisioned"], "yes")
    eq(fields["wifi_ssid"], "My Net")
    eq(fields["wifi_password"], "set")
    eq(fields["pending"], "none")
    eq(fields["mqtt_uri"], ssproto.DEFAULT_MQTT_URI)
    o = r.cmd("provision_verify 0123456789abcdef")
    out += o
    reply(o)
    eq(o[-2], "Check: " + ssproto.secret_check(hashlib.sha256, "0123456789abcdef", "My Net", SECRET))
    for ln in out:
        assert SECRET not in ln, ln


@test
def test_verify_requires_provisioning():
    r = Rig()
    eq(reply(r.cmd("provision_verify 0123456789abcdef"))[:2], (False, "STATE"))


@test
def test_store_failure_is_err_nvs():
    r = Rig(fail=True)
    r.cmd("provision_set_wifi net password1")
    r.cmd("provision_set_device a b c d")
    staged = dict(r.console.staged)
    eq(reply(r.cmd("provision_complete"))[:2], (False, "NVS"))
    eq(r.console.staged, staged)
    eq(r.resets, 0)


@test
def test_factory_reset():
    for line in ("provision_reset --confirm", "provision clear"):
        r = Rig(CFG)
        r.console.staged = {"room": "x"}
        eq(reply(r.cmd(line)), (True, "", ""), line)
        eq(r.store.clears, 1)
        eq(r.resets, 1)
        eq(r.console.staged, {})


@test
def test_invalid_utf8_line():
    r = Rig()
    start = len(r.out)

    def hook(*a):
        r.out.append(" ".join([str(x) for x in a]))

    ss_console.print = hook
    try:
        asyncio.run(r.console.handle_bytes(b"ping \xff\xfe"))
    finally:
        del ss_console.print
    eq(reply(r.out[start:])[:2], (False, "ENCODING"))


run()
