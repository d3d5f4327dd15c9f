# ss_console: LineReader, and Console over a fake store (and over the real one on the fake NVS).
# Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython and under CPython.
# Output is captured by shadowing the module-global name ``print`` in ss_console (a module
# attribute assignment, which works on MicroPython where builtins cannot be patched).  The hook
# accepts exactly what a bare print(line) passes, so every output is one whole line; anything
# written another way would reach this script's stdout, which the pytest runner rejects.
import asyncio
import binascii
import hashlib

import idfixture
from fakenvs import FakeNVS
from mpyunit import eq, raises, run, test

import ss_console
import ss_ec
import ss_identity
import ss_store
import ssproto
import ssproto.msg as msg
from ss_mqtt import ProbeError
from ss_outbox import Outbox
from ss_store import StoreError

N = ssproto.MAX_LINE
SECRET = "Zq9-Secret-Pw!x"
CFG = {
    "wifi_ssid": "Caf\u00e9 Net",
    "wifi_pass": SECRET,
    "device_id": "btn-01",
    "tenant": "acme",
    "building": "hq",
    "room": "101",
    "mqtt_uri": "mqtt://broker.local:1883",
}


def variant_cfg(**changes):
    c = dict(CFG)
    c.update(changes)
    return c


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


# --- LineReader ----------------------------------------------------------------------------

@test
def test_line_endings():
    eq(lines_of(b"a\rb\nc\r\nd\n"), [b"a", b"b", b"c", b"d"])
    eq(lines_of(b"\r\n\r\n"), [b"", b""])
    eq(lines_of(b"\r\r"), [b"", b""])
    eq(lines_of(b"\n\r"), [b"", b""])
    eq(lines_of(b"\n\n"), [b"", b""])
    eq(lines_of(b"a\r\n\nb\r"), [b"a", b"", b"b"])
    eq(lines_of("caf\u00e9\r".encode()), ["caf\u00e9".encode()])
    eq(lines_of(b"partial"), [], "EOF drops an unfinished line")


@test
def test_backspace_and_del():
    eq(lines_of(b"ab\x08c\n"), [b"ac"])
    eq(lines_of(b"ab\x7f\x7fc\r"), [b"c"])
    eq(lines_of(b"ab\x7f\x7fc\n"), [b"c"])
    eq(lines_of(b"\x08\x7fa\n"), [b"a"])


@test
def test_backspace_removes_whole_utf8_character():
    # A terminal sends one DEL per character; the line must stay valid UTF-8.
    for typed, want in (("caf\u00e9\x7f", "caf"), ("x\u20ac\x08y", "xy"), ("\U0001f600\x7fok", "ok")):
        eq(lines_of(typed.encode() + b"\n"), [want.encode()], repr(typed))


@test
def test_ctrl_c_discards_line():
    eq(lines_of(b"secret\x03ping\r\n"), [b"ping"])
    eq(lines_of(b"secret\x03ping\n"), [b"ping"])
    eq(lines_of(b"x" * 2000 + b"\x03ok\n"), [b"ok"])


@test
def test_over_long_lines():
    eq(lines_of(b"x" * N + b"\n"), [b"x" * N])
    eq(lines_of(b"x" * (N + 1) + b"\nping\n"), [None, b"ping"])
    eq(lines_of(b"y" * 3000 + b"\r\nok\r\n"), [None, b"ok"])


@test
def test_form_feed_is_ignored():
    # Ctrl-L (redraw in a terminal) before or inside a command changes nothing.
    eq(lines_of(b"\x0cping\r\n"), [b"ping"])
    eq(lines_of(b"pi\x0cng\n\x0c\x0c\n"), [b"ping", b""])


class _Stream:
    """An asyncio-stream-like reader over a real file: ``s`` is the underlying stream, as
    asyncio.StreamReader(sys.stdin.buffer) has it; counts the awaited reads (loop rounds)."""

    def __init__(self, f):
        self.s = f
        self.rounds = 0

    async def read(self, n):
        self.rounds += 1
        return self.s.read(n)


@test
def test_line_reader_takes_all_waiting_bytes_per_round():
    import os

    path = "/tmp/ss_check_console_%d.bin" % (int.from_bytes(os.urandom(4), "big"))
    data = b"provision_status\r\n" * 20
    with open(path, "wb") as f:
        f.write(data)
    try:
        with open(path, "rb") as f:
            st = _Stream(f)

            async def go():
                r = ss_console.LineReader(st)
                out = []
                try:
                    while True:
                        out.append(await r.readline())
                except EOFError:
                    return out
            got = asyncio.run(go())
    finally:
        os.remove(path)
    eq(got, [b"provision_status"] * 20)
    # one round for the whole buffer (the bytes were all waiting), one more to see the end
    assert st.rounds <= 3, "one byte per round: %d rounds for %d bytes" % (st.rounds, len(data))


# --- Console -------------------------------------------------------------------------------

class FakeStore:
    def __init__(self, cfg=None, fail=False):
        self.cfg = dict(cfg) if cfg else None
        self.fail = fail
        self.saves = []
        self.idents = []
        self.ident = None
        self.clears = 0

    def identity(self):
        return dict(self.ident) if self.ident is not None else None

    def provision_is_provisioned(self):
        return self.cfg is not None

    def provision_load_config(self):
        if self.cfg is None:
            raise StoreError("ESP_ERR_NVS_NOT_FOUND", "ESP_ERR_NVS_NOT_FOUND")
        return dict(self.cfg)

    def provision_save_config(self, cfg, ident=None):
        if self.fail:
            raise StoreError("VERIFY", "record read back differs from what was written")
        self.saves.append(dict(cfg))
        self.idents.append(ident)
        self.cfg = dict(cfg)
        self.ident = dict(ident) if ident is not None else None

    def provision_clear(self):
        if self.fail:
            raise StoreError("IO", "NVS erase failed (-1)")
        self.clears += 1
        self.cfg = None
        self.ident = None


class Link:
    def __init__(self, state, ip=""):
        self.state = state
        self.ip = ip


class FakeApp:
    """ss_app.App's interface for the console: a scripted connect test, a real outbox."""

    def __init__(self, store, probe=None):
        self.store = store
        self.probe = probe  # None: the test passes; (code, message): it fails so
        self.tests = []
        self.test_idents = []
        self.outbox = Outbox(FakeNVS())
        self.outbox.load()
        self.wifi = None
        self.mqtt = None

    async def connect_test(self, cfg, ident=None):
        self.tests.append(dict(cfg))
        self.test_idents.append(ident)
        if self.probe is not None:
            raise ProbeError(self.probe[0], self.probe[1])

    async def stop(self):
        self.stopped = True

    def resume(self):
        self.resumed = True

    def radio_on(self):
        self.radio = True

    def alert(self, kind, cfg=None):
        if cfg is None:
            cfg = self.store.provision_load_config()
        return self.outbox.add(msg.cfg_prefix(cfg), kind, None, 0)


class Rig:
    """A Console over a store (a FakeStore unless given) and a fake reset.

    ``out`` collects every line printed, "<RESET>" where the reset ran; cmd/raw/loop return the
    lines one call printed, without a final "<RESET>"."""

    def __init__(self, cfg=None, fail=False, store=None, probe=None, **links):
        self.out = []
        self.resets = 0
        self.store = store if store is not None else FakeStore(cfg, fail)
        self.app = FakeApp(self.store, probe)
        self.console = ss_console.Console(self.store, "aa:bb:cc", "safesignal-button test", self._reset,
                                          app=self.app, **links)

    async def _reset(self):
        self.resets += 1
        self.out.append("<RESET>")

    def _print(self, *a, **kw):
        assert not kw, "print with %r" % kw
        assert len(a) == 1 and isinstance(a[0], str), "print%r" % (a,)
        assert "\n" not in a[0] and "\r" not in a[0], "line break inside %r" % a[0]
        self.out.append(a[0])

    def _capture(self, coro):
        start = len(self.out)
        ss_console.print = self._print
        try:
            asyncio.run(coro)
        finally:
            del ss_console.print
        got = self.out[start:]
        if got and got[-1] == "<RESET>":
            got = got[:-1]
        return got

    def cmd(self, line):
        return self._capture(self.console.handle(line))

    def raw(self, data):
        return self._capture(self.console.handle_bytes(data))

    def loop(self, data):
        """Console.run over a byte stream, until it ends in EOFError."""
        async def go():
            try:
                await self.console.run(Bytes(data))
            except EOFError:
                return
            raise AssertionError("run() ended without EOFError")
        return self._capture(go())


def reply(lines):
    """Assert exactly one status line, the last; return its parse."""
    assert lines, "no reply"
    for ln in lines[:-1]:
        assert ssproto.parse_status(ln) is None, "status line before the end: %r" % ln
    st = ssproto.parse_status(lines[-1])
    assert st is not None, "last line is not a status line: %r" % lines[-1]
    return st


def fields_of(lines):
    reply(lines)
    fields = {}
    for ln in lines[:-1]:
        f = ssproto.parse_status_field(ln)
        assert f is not None, ln
        fields[f[0]] = f[1]
    return fields


@test
def test_help_and_ping():
    r = Rig()
    out = r.cmd("help")
    eq(reply(out), (True, "", ""))
    assert [ln for ln in out if "provision_set_wifi" in ln], "help does not list provision_set_wifi"
    eq(reply(r.cmd("ping")), (True, "", "pong"))
    eq(reply(r.cmd("ping tok")), (True, "", "pong tok"))
    eq(reply(r.cmd('ping "a b"')), (True, "", 'pong "a b"'))
    eq(reply(r.cmd("ping a b"))[:2], (False, "USAGE"))


@test
def test_empty_line_is_silent():
    r = Rig()
    for line in ("", "   ", "\t"):
        eq(r.cmd(line), [], repr(line))


@test
def test_unknown_command_not_echoed():
    r = Rig()
    for line in ("Zq9-Typed-Secret", "provision_set_wif Zq9-Typed-Secret", "PING", "cmd_help", "_hint", "merged",
                 '""', "Zq9-Typed-Secret more words", "ok", "run"):
        out = r.cmd(line)
        eq(reply(out)[:2], (False, "UNKNOWN"), line)
        eq(len(out), 1, line)
        for part in line.split() + [line]:
            if len(part) > 3 or not part.isalpha():
                assert part not in out[0], line


# Lines that must be refused with the given code, changing nothing.
BAD_INPUT_BY_CODE = {
    "USAGE": [
        "provision_set_wifi",
        "provision_set_wifi " + SECRET,
        "provision_set_wifi net " + SECRET + " extra",
        "provision_set_device a b c",
        "provision_set_device a b c d e",
        "provision_set_mqtt",
        "provision_set_mqtt a b",
        "provision_complete now",
        "provision_discard x",
        "provision_status x",
        "provision_verify",
        "provision",
        "provision clear now",
        "provision erase",
        "reboot now",
    ],
    "INVALID": [
        'provision_set_wifi "" ' + SECRET,
        "provision_set_wifi " + "x" * 33 + " " + SECRET,
        "provision_set_wifi net Zq9-Sho",
        "provision_set_wifi net " + SECRET * 5,
        'provision_set_wifi net "' + SECRET + '\u00e4"',
        'provision_set_wifi "' + SECRET + '\t" pw',
        "provision_set_device -a b c d",
        "provision_set_device a b c d/e",
        "provision_set_device a b c " + SECRET,
        "provision_set_mqtt mqtts://h:0",
        "provision_set_mqtt mqtt://h:0",
        "provision_set_mqtt mqtt://h:65536",
        "provision_set_mqtt " + SECRET,
        "provision_verify " + SECRET,
    ],
    "QUOTE": [
        'provision_set_wifi "net ' + SECRET,
        'provision_set_wifi net "a\\q"',
        "provision_set_wifi net " + SECRET + "\\",
    ],
    "CONFIRM": [
        "provision_reset",
        "provision_reset --confirm x",
        "provision_reset confirm",
        "provision_reset --CONFIRM",
    ],
}
BAD_INPUT = [(line, code) for code in BAD_INPUT_BY_CODE for line in BAD_INPUT_BY_CODE[code]]


@test
def test_bad_input_leaves_state_alone():
    for line, code in BAD_INPUT:
        r = Rig(CFG)
        staged = {"room": "r1", "wifi_ssid": "S", "wifi_pass": "pw-staged-1"}
        r.console.staged = dict(staged)
        out = r.cmd(line)
        eq(reply(out)[:2], (False, code), line)
        eq(len(out), 1, line)
        eq(r.console.staged, staged, line)
        eq(r.store.saves, [], line)
        eq(r.store.clears, 0, line)
        eq(r.store.cfg, CFG, line)
        eq(r.resets, 0, line)
        assert SECRET not in out[0] and SECRET[:7] not in out[0], line
        assert staged["wifi_pass"] not in out[0], line


def real_store(durable=None):
    nvs = FakeNVS(durable)
    st = ss_store.Store(nvs)
    st.provision_init()
    return nvs, st


@test
def test_bad_input_leaves_real_store_untouched():
    nvs, st = real_store()
    st.provision_save_config(CFG)
    nvs, st = real_store(nvs.durable)
    before = dict(nvs.durable)
    calls = nvs.calls
    r = Rig(store=st)
    for line, _ in BAD_INPUT:
        r.cmd(line)
    eq(nvs.calls, calls)
    eq(nvs.durable, before)


@test
def test_complete_requires_wifi_and_device():
    r = Rig()
    eq(reply(r.cmd("provision_complete"))[:2], (False, "INCOMPLETE"))
    r.cmd("provision_set_device a b c d")
    eq(reply(r.cmd("provision_complete"))[:2], (False, "INCOMPLETE"))
    r.cmd("provision_discard")
    r.cmd("provision_set_wifi net password1")
    eq(reply(r.cmd("provision_complete"))[:2], (False, "INCOMPLETE"))
    eq(r.store.saves, [])
    eq(r.resets, 0)
    eq(r.console.staged["wifi_ssid"], "net")


@test
def test_full_flow_never_prints_the_password():
    r = Rig()
    for line in (
        'provision_set_wifi "My Net" "' + SECRET + '"',
        "provision_set_device btn-01 acme hq 101",
    ):
        eq(reply(r.cmd(line)), (True, "", ""), line)
    eq(r.console.staged["wifi_pass"], SECRET)
    o = r.cmd("provision_status")
    eq(reply(o), (True, "", ""))
    f = fields_of(o)
    eq(f["provisioned"], "no")
    eq(f["wifi_password"], "not set")
    eq(f["pending"], "building,device_id,room,tenant,wifi_pass,wifi_ssid")
    eq(reply(r.cmd("provision_complete")), (True, "", ""))
    eq(r.resets, 1)
    eq(r.out[-2:], ["OK", "<RESET>"], "the reply is out before the reset")
    eq(r.console.staged, {})
    eq(r.store.saves, [{
        "wifi_ssid": "My Net", "wifi_pass": SECRET, "device_id": "btn-01", "tenant": "acme",
        "building": "hq", "room": "101", "mqtt_uri": ssproto.DEFAULT_MQTT_URI,
    }])
    f = fields_of(r.cmd("provision_status"))
    eq(f["provisioned"], "yes")
    eq(f["wifi_ssid"], "My Net")
    eq(f["wifi_password"], "set")
    eq(f["pending"], "none")
    eq(f["mqtt_uri"], ssproto.DEFAULT_MQTT_URI)
    eq(f["chip_id"], "aa:bb:cc")
    eq(sorted(f), sorted([name for _, name in ssproto.STATUS_FIELDS]))
    o = r.cmd("provision_verify 0123456789abcdef")
    eq(reply(o), (True, "", ""))
    psk = ssproto.wpa_psk(hashlib.sha1, SECRET, "My Net")
    eq(o[:-1], ["Check: " + ssproto.secret_check(hashlib.sha256, "0123456789abcdef", "My Net", psk)])
    r.cmd("provision_set_wifi other " + SECRET)
    r.cmd("help")
    r.cmd(SECRET)
    r.cmd("ping")
    r.cmd("provision_reset --confirm")
    for ln in r.out:
        assert SECRET not in ln, ln


@test
def test_status_open_network_and_links():
    r = Rig(variant_cfg(wifi_pass=""), wifi=Link("connected", "10.0.0.9"), mqtt=Link("connected"))
    r.cmd("provision_set_mqtt mqtt://h:1")
    f = fields_of(r.cmd("provision_status"))
    eq(f["wifi_password"], "open network")
    eq(f["wifi_ssid"], CFG["wifi_ssid"])
    eq(f["wifi_state"], "connected")
    eq(f["ip_address"], "10.0.0.9")
    eq(f["mqtt_state"], "connected")
    eq(f["pending"], "mqtt_uri")
    eq(f["mqtt_uri"], CFG["mqtt_uri"], "staged values are not shown as committed")


@test
def test_complete_merges_with_stored_config():
    r = Rig(CFG)
    r.cmd("provision_set_mqtt mqtt://other:1")
    eq(reply(r.cmd("provision_complete")), (True, "", ""))
    eq(r.store.saves, [variant_cfg(mqtt_uri="mqtt://other:1")])


@test
def test_verify_requires_provisioning():
    eq(reply(Rig().cmd("provision_verify 0123456789abcdef"))[:2], (False, "STATE"))


@test
def test_store_failure_is_err_nvs():
    r = Rig(fail=True)
    r.cmd("provision_set_wifi net password1")
    r.cmd("provision_set_device a b c d")
    staged = dict(r.console.staged)
    eq(reply(r.cmd("provision_complete"))[:2], (False, "NVS"))
    eq(r.console.staged, staged)
    eq(r.resets, 0)
    for ln in r.out:
        assert "password1" not in ln, ln
    eq(reply(r.cmd("provision_reset --confirm"))[:2], (False, "NVS"))
    eq(r.resets, 0)


@test
def test_factory_reset():
    for line in ("provision_reset --confirm", "provision clear"):
        r = Rig(CFG)
        r.console.staged = {"room": "x"}
        eq(reply(r.cmd(line)), (True, "", ""), line)
        eq(r.store.clears, 1, line)
        eq(r.resets, 1, line)
        eq(r.console.staged, {}, line)
        eq(r.out[-2:], ["OK", "<RESET>"], line)


@test
def test_discard_and_reboot():
    r = Rig()
    r.cmd("provision_set_device a b c d")
    eq(reply(r.cmd("provision_discard")), (True, "", ""))
    eq(r.console.staged, {})
    eq(reply(r.cmd("reboot")), (True, "", ""))
    eq(r.resets, 1)


@test
def test_with_real_store():
    nvs, st = real_store()
    r = Rig(store=st)
    r.cmd("provision_set_wifi net " + SECRET)
    r.cmd("provision_set_device btn-01 acme hq 101")
    r.cmd("provision_set_mqtt mqtt://broker.local")
    eq(reply(r.cmd("provision_complete")), (True, "", ""))
    after = real_store(nvs.durable)[1].provision_load_config()
    eq(after["wifi_pass"], SECRET)
    eq(after["mqtt_uri"], "mqtt://broker.local")
    eq(reply(r.cmd("provision clear")), (True, "", ""))
    eq(nvs.durable, {})


@test
def test_connect_test_failure_saves_nothing():
    for code in ssproto.CONNECT_TEST_CODES:
        r = Rig(probe=(code, "why it failed"))
        r.cmd("provision_set_wifi net " + SECRET)
        r.cmd("provision_set_device btn-01 acme hq 101")
        staged = dict(r.console.staged)
        o = r.cmd("provision_complete")
        eq(reply(o), (False, code, "why it failed"), code)
        eq(len(r.app.tests), 1)
        eq(r.app.tests[0]["wifi_pass"], SECRET)
        eq(r.store.saves, [], code)
        eq(r.resets, 0, code)
        eq(r.console.staged, staged, "staged values stay for the next try")
        eq(r.app.outbox.pending, [], "no test alert")
        # then the right settings go through without a factory reset
        r.app.probe = None
        eq(reply(r.cmd("provision_complete")), (True, "", ""))
        eq(len(r.store.saves), 1)
        eq(r.resets, 1)
        for ln in r.out:
            assert SECRET not in ln, ln


@test
def test_complete_stores_a_test_alert():
    r = Rig()
    r.cmd("provision_set_wifi net " + SECRET)
    r.cmd("provision_set_device btn-01 acme hq 101")
    o = r.cmd("provision_complete")
    eq(reply(o), (True, "", ""))
    eq(r.app.outbox.pending, [0])
    topic, payload = r.app.outbox.entry(0)
    eq(topic, "safesignal/acme/hq/101/btn-01/alert")
    d = msg.parse_message(topic, payload)
    eq((d["type"], d["seq"], d["device"]), ("test", 0, "btn-01"))


@test
def test_offline_skips_the_connect_test():
    r = Rig(probe=("WIFI_NO_AP", "not here"))
    r.cmd("provision_set_wifi net " + SECRET)
    r.cmd("provision_set_device btn-01 acme hq 101")
    eq(reply(r.cmd("provision_complete --offline")), (True, "", ""))
    eq(r.app.tests, [])
    eq(len(r.store.saves), 1)
    eq(r.resets, 1)
    eq(reply(Rig().cmd("provision_complete --now"))[:2], (False, "USAGE"))


@test
def test_alert_test_command():
    eq(reply(Rig().cmd("alert_test"))[:2], (False, "STATE"))
    r = Rig(CFG)
    eq(reply(r.cmd("alert_test")), (True, "", "seq 0"))
    eq(reply(r.cmd("alert_test")), (True, "", "seq 1"))
    f = fields_of(r.cmd("provision_status"))
    eq((f["alerts_pending"], f["next_alert_seq"]), ("2", "2"))
    eq(reply(r.cmd("alert_test now"))[:2], (False, "USAGE"))


@test
def test_invalid_utf8_line():
    r = Rig()
    eq(reply(r.raw(b"provision_set_wifi net pass\xff\xfeword"))[:2], (False, "ENCODING"))
    eq(r.console.staged, {})


@test
def test_run_loop():
    r = Rig()
    out = r.loop(b"ping\r\n" + b"x" * 2000 + b"\r\nping 2\r\n\xff\n\r\n")
    eq([ssproto.parse_status(ln) for ln in out], [
        (True, "", "pong"),
        (False, "TOOLONG", "line longer than %d bytes discarded" % N),
        (True, "", "pong 2"),
        (False, "ENCODING", "line is not valid UTF-8"),
    ])


# --- device identity (mqtts://) --------------------------------------------------------------

def _b64(der):
    return binascii.b2a_base64(der).decode().strip()


def identity_rig(**kw):
    """A Rig whose key generation yields the fixture key (idfixture.DEV_D), staged for btn-01."""
    r = Rig(**kw)
    d = idfixture.DEV_D
    x, y = ss_ec.public_key(d)
    ss_identity.new_key = lambda: ss_store.KEY_MAGIC + d.to_bytes(32, "big") + ss_ec.encode_point(x, y)
    for line in ("provision_set_wifi net password1", "provision_set_device btn-01 acme hq 101",
                 "provision_set_mqtt mqtts://broker.example:8883"):
        eq(reply(r.cmd(line))[0], True, line)
    return r


def _secret_forms():
    d = idfixture.DEV_D.to_bytes(32, "big")
    h = "".join(["%02x" % b for b in d])
    return [h, h.upper(), _b64(d)[:40], _b64(b"\x00" + d)[:40], _b64(b"\x00\x00" + d)[:40]]


@test
def test_identity_csr_then_certificates_then_complete():
    real_new_key = ss_identity.new_key
    try:
        r = identity_rig()
        out = r.cmd("provision_identity_csr")
        ok, code, text = reply(out)
        eq((ok, text[:4]), (True, "csr "))
        csr = binascii.a2b_base64(text[4:])
        eq(csr, ss_identity.csr(ss_identity.new_key(), "btn-01"), "CSR of the staged key, CN = device id")
        eq(r.app.radio, True, "radio on before the key is drawn")
        eq(reply(r.cmd("provision_set_cert " + _b64(idfixture.CERT)))[0], True)
        eq(reply(r.cmd("provision_set_ca " + _b64(idfixture.CA)))[0], True)
        status = r.cmd("provision_status")
        eq(ssproto.parse_status_field([ln for ln in status if ln.startswith("Pending")][0])[1],
           "building,device_id,identity,mqtt_uri,room,tenant,wifi_pass,wifi_ssid")
        eq(reply(r.cmd("provision_complete"))[0], True)
        saved = r.store.idents[-1]
        eq((saved["cert"], saved["ca"], saved["key"]), (idfixture.CERT, idfixture.CA, ss_identity.new_key()))
        eq(r.app.test_idents[-1], saved, "the connect test used the new identity")
        status = r.cmd("provision_status")
        fields = dict([ssproto.parse_status_field(ln) for ln in status[:-1]])
        eq(fields["certificate"], "CN=btn-01 issued by SafeSignal acme CA")
        eq(fields["certificate_expires"], "2036-01-01T00:00:00Z")
        eq(fields["certificate_sha256"], "".join(["%02x" % b for b in hashlib.sha256(idfixture.CERT).digest()]))
        # The private key never appears in any output, in any usual encoding.
        for line in r.out:
            for form in _secret_forms():
                eq(form in line, False, "key material in console output")
    finally:
        ss_identity.new_key = real_new_key


@test
def test_identity_refusals_save_nothing():
    real_new_key = ss_identity.new_key
    try:
        r = identity_rig()
        eq(reply(r.cmd("provision_set_cert " + _b64(idfixture.CERT)))[:2], (False, "STATE"))  # no key yet
        eq(reply(r.cmd("provision_complete"))[:2], (False, "INCOMPLETE"))  # mqtts without identity
        r.cmd("provision_identity_csr")
        eq(reply(r.cmd("provision_set_cert " + _b64(idfixture.CERT_OTHER_KEY)))[:2], (False, "IDENTITY"))
        eq(reply(r.cmd("provision_set_cert not-base64!"))[:2], (False, "INVALID"))
        eq(reply(r.cmd("provision_set_cert " + _b64(b"\x30\x03\x02\x01\x01")))[:2], (False, "IDENTITY"))
        eq(reply(r.cmd("provision_set_ca " + _b64(idfixture.CA[:-5])))[:2], (False, "IDENTITY"))
        eq(reply(r.cmd("provision_complete"))[:2], (False, "INCOMPLETE"))  # no cert, no CA staged
        # A certificate for another device id, or from another CA: refused at complete.
        r.cmd("provision_set_cert " + _b64(idfixture.CERT_OTHER_ID))
        r.cmd("provision_set_ca " + _b64(idfixture.CA))
        ok, code, text = reply(r.cmd("provision_complete"))
        eq((ok, code, "btn-99" in text), (False, "IDENTITY", True))
        r.cmd("provision_set_cert " + _b64(idfixture.CERT_OTHER_CA))
        ok, code, text = reply(r.cmd("provision_complete"))
        eq((ok, code, "not issued by this CA" in text), (False, "IDENTITY", True))
        # The right issuer name, but signed by another key: the signature is checked.
        r.cmd("provision_set_cert " + _b64(idfixture.CERT_FORGED))
        ok, code, text = reply(r.cmd("provision_complete"))
        eq((ok, code, "signature" in text), (False, "IDENTITY", True))
        # The right certificate for another tenant's configuration: its broker would drop alerts.
        r.cmd("provision_set_cert " + _b64(idfixture.CERT))
        r.cmd("provision_set_device btn-01 other hq 101")
        ok, code, text = reply(r.cmd("provision_complete"))
        eq((ok, code, "tenant 'acme', not 'other'" in text), (False, "IDENTITY", True))
        eq((r.store.saves, r.app.tests), ([], []))
        # Discard forgets the staged key too.
        r.cmd("provision_discard")
        eq(r.console.ident, {})
    finally:
        ss_identity.new_key = real_new_key


@test
def test_stored_identity_is_kept_while_it_names_the_device():
    real_new_key = ss_identity.new_key
    try:
        r = identity_rig()
        r.cmd("provision_identity_csr")
        r.cmd("provision_set_cert " + _b64(idfixture.CERT))
        r.cmd("provision_set_ca " + _b64(idfixture.CA))
        eq(reply(r.cmd("provision_complete"))[0], True)
        # New WiFi only: the stored identity goes with the new record.
        eq(reply(r.cmd("provision_set_wifi net2 password2"))[0], True)
        eq(reply(r.cmd("provision_complete"))[0], True)
        eq(r.store.idents[-1]["cert"], idfixture.CERT)
        # Another device id: the stored certificate no longer fits; mqtts:// needs a new one.
        r.cmd("provision_set_device btn-02 acme hq 101")
        eq(reply(r.cmd("provision_complete"))[:2], (False, "INCOMPLETE"))
        # Plain mqtt:// with the new id: saved without an identity.
        r.cmd("provision_set_mqtt mqtt://broker.example")
        eq(reply(r.cmd("provision_complete"))[0], True)
        eq(r.store.idents[-1], None)
    finally:
        ss_identity.new_key = real_new_key


@test
def test_rig_rejects_output_that_is_not_one_line():
    r = Rig()
    raises(AssertionError, r._print, "a", "b")
    raises(AssertionError, r._print, "a", end="")
    raises(AssertionError, r._print, "a\nb")


run()


# --- checked lines (what the tools send) -----------------------------------------------------

def _wire(line, piece=ssproto.PIECE):
    return [x + b"\r\n" for x in ssproto.checked_lines(line, binascii.crc32, piece)]


def _device_line():
    return ssproto.join_args(["provision_set_device", "d" * 60, "t" * 60, "b" * 60, "r" * 60])


@test
def test_checked_line_in_pieces_runs_once_whole():
    r = Rig()
    pieces = _wire(_device_line(), 64)
    eq(len(pieces) > 3, True)
    out = r.loop(b"".join(pieces))
    acks = out[:len(pieces) - 1]
    eq(acks, ["OK +%d" % (64 * (i + 1)) for i in range(len(pieces) - 1)])
    eq(out[len(pieces) - 1:], ["Device configuration saved", "(held in RAM until provision_complete writes it to NVS)",
                               "OK"])
    eq(r.console.staged["device_id"], "d" * 60)


@test
def test_checked_short_line_and_ctrl_l_before_it():
    r = Rig()
    out = r.loop(b"\x0c" + b"".join(_wire("ping abc")))
    eq(out, ["OK pong abc"])


@test
def test_checked_line_missing_a_byte_is_not_run():
    line = _device_line()
    for piece in (64, ssproto.PIECE):
        pieces = _wire(line, piece)
        for k in range(len(pieces)):
            for at in (0, 1, 5, len(pieces[k]) - 3):  # the mark, the header, the text
                r = Rig()
                damaged = list(pieces)
                damaged[k] = pieces[k][:at] + pieces[k][at + 1:]
                out = r.loop(b"".join(damaged))
                eq(r.console.staged, {}, "piece %d byte %d" % (k, at))
                eq(any(x.startswith("ERR ") for x in out), True, "piece %d byte %d: %r" % (k, at, out))
                eq("OK" in out, False)


@test
def test_checked_line_with_a_lost_line_ending_is_not_run():
    pieces = _wire(_device_line(), 64)
    for k in range(len(pieces) - 1):
        r = Rig()
        damaged = list(pieces)
        damaged[k] = pieces[k][:-2]  # CR LF lost: two pieces become one line
        out = r.loop(b"".join(damaged))
        eq(r.console.staged, {}, "line ending %d" % k)
        eq(out[-1].startswith("ERR CHECKSUM") or out[-1].startswith("OK +"), True, out[-1])


@test
def test_checked_line_wrong_crc_and_malformed_headers():
    for bad in (b"@8:00000000 ping abc\r\n", b"@x:00000000 ping\r\n", b"@4:0000 ping\r\n", b"@ ping\r\n",
                b"+ping\r\n", b"@99999:00000000 x\r\n"):
        r = Rig()
        out = r.loop(bad)
        eq(len(out), 1, repr(bad))
        assert out[0].startswith("ERR CHECKSUM ") or out[0].startswith("ERR TOOLONG "), (bad, out)


@test
def test_plain_line_abandons_a_checked_line():
    pieces = _wire(_device_line(), 64)
    r = Rig()
    # a piece that lost its "+" is a plain line inside a checked one: nothing of it runs
    out = r.loop(pieces[0] + b"reboot\r\n" + b"".join(pieces[1:]))
    eq(out[:2], ["OK +64", "ERR CHECKSUM checked line interrupted; nothing was run"])
    eq(out[2].startswith("ERR CHECKSUM continuation"), True, out[2])
    eq((r.console.staged, r.resets), ({}, 0))
    # an empty line abandons it quietly; the next plain line runs
    r = Rig()
    out = r.loop(pieces[0] + b"\r\nping\r\n")
    eq(out, ["OK +64", "OK pong"])
    # and a new start replaces an unfinished one
    r = Rig()
    out = r.loop(pieces[0] + b"".join(pieces))
    eq(out[-1], "OK")
    eq(r.console.staged["room"], "r" * 60)


@test
def test_password_in_a_damaged_checked_line_is_not_echoed():
    r = Rig()
    pieces = _wire(ssproto.join_args(["provision_set_wifi", "Net", SECRET]))
    out = r.loop(pieces[0][:20] + pieces[0][21:])
    eq(len(out), 1)
    assert out[0].startswith("ERR CHECKSUM"), out
    assert SECRET not in out[0] and SECRET[:6] not in out[0]
    eq(r.console.staged, {})
