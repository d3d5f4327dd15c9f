"""Fuzzing the serial console (ss_console over the real Store, Outbox and ssproto) with hypothesis.

The inputs, the reference model and the properties are the rig's, tests/support/fuzz_console.py
(its docstring has the method; bench/fuzz_console.py runs it for many more inputs): random command lines (every command,
valid and invalid values, passwords in the wrong places, random quoting, garbage), raw bytes,
byte streams through the line reader (CR/LF/CRLF, backspace, Ctrl-C, over-long lines), the
identity flow with host-issued and mutated certificates, connect-test failures and injected NVS
faults.  Each reply must be exactly one status line (the last), match the model, never hold a
password or the private key, and leave the flash untouched unless a provision_complete or factory
reset answered OK (then a new Store reads back exactly the merged configuration).  The parser
pieces are checked against independent reference implementations.  Last, 1,500 random
lines against a virtual device (the firmware under MicroPython, over a pty).

Counts: 400 console sequences (about 4,800 operations, 5,000 lines), 2,500 split_args texts, 1,500
argument lists, 800 line-reader streams; 1,500 lines against the virtual device.  The file takes
about 30 s (the device part about 4 s).  The bugs it found keep their reproducers below.
"""

from __future__ import annotations

import random
import string
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from support import fuzz_console as fc
from support.guard import SecretGuard

# The firmware modules and the fake NVS, as the rig imported them (it puts them on sys.path).
FakeNVS = fc.FakeNVS
Outbox = fc.Outbox
ss_console = fc.ss_console
ss_store = fc.ss_store

FUZZ = settings(
    database=None,
    deadline=None,  # the rig's own SIGALRM deadline (5 s per operation) catches a hang
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

ANY = st.characters(exclude_categories=("Cs",))  # any code point but surrogates (a line is UTF-8)
ALPHABETS: dict[str, st.SearchStrategy[str]] = {k: st.sampled_from(list(v)) for k, v in fc.ALPHABETS.items()}
ALPHABETS["any"] = ANY


class DataChooser(fc.Chooser):
    """fuzz_console's generators, driven by hypothesis's draws."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def text(self, kind: str, lo: int, hi: int) -> str:
        return self.data.draw(st.text(ALPHABETS[kind], min_size=lo, max_size=hi))

    def binary(self, lo: int, hi: int) -> bytes:
        return self.data.draw(st.binary(min_size=lo, max_size=hi))


# =========================================================================================
# The grammar: split_args, quote/join_args, LineReader against reference implementations
# =========================================================================================

@settings(FUZZ, max_examples=2500)
@given(st.one_of(st.text(ANY, max_size=60), st.text(ALPHABETS["tricky"], max_size=40)))
def test_split_args_matches_the_documented_grammar(text: str) -> None:
    fc.check_split(text)


@settings(FUZZ, max_examples=1500)
@given(st.lists(st.one_of(st.text(ANY, max_size=16), st.text(ALPHABETS["tricky"], max_size=10)), max_size=6))
def test_join_args_round_trip(args: list[str]) -> None:
    """split_args(join_args(args)) == args; join_args refuses CR/LF (they would end the line)."""
    fc.check_round_trip(args)


@settings(FUZZ, max_examples=800)
@given(st.data())
def test_line_reader_matches_the_documented_editing(data: st.DataObject) -> None:
    fc.check_line_reader(fc.stream_bytes(DataChooser(data)))


# =========================================================================================
# The console: sequences of lines, bytes, streams, certificates, faults
# =========================================================================================

# No shrinking: an example costs up to ~100 ms (key generation, signature checks) and shrinking
# one can take minutes; the failure names the operation and prints the ones before it with
# their replies, and hypothesis prints the draws.
@settings(FUZZ, max_examples=400, phases=[Phase.explicit, Phase.generate])
@given(st.data())
def test_console_sequences(data: st.DataObject) -> None:
    case = fc.Gen(DataChooser(data)).case(max_ops=25)
    fc.run_case(case)


def test_rig_catches_an_echoed_password() -> None:
    """The checks bite: a console that repeated a rejected password fails the secret check."""
    case = fc.Case(["~not-echoed-pw\u00e9"], False, [("line", 'provision_set_wifi net "~not-echoed-pw\u00e9"')])
    original = ss_console.Console.err

    def leaky(self: ss_console.Console, code: str, message: str) -> None:
        original(self, code, message + " (~not-echoed-pw\u00e9)")

    ss_console.Console.err = leaky  # type: ignore[method-assign]
    try:
        with pytest.raises(fc.Failure, match="repeats an argument|WiFi password appears"):
            fc.run_case(case)
    finally:
        ss_console.Console.err = original  # type: ignore[method-assign]


def test_fixed_scenarios() -> None:
    """Deterministic paths the random cases reach only now and then: mqtts:// with an identity,
    an injected NVS fault during the save, many test alerts (at most TEST_MAX wait: a new one
    replaces the oldest, so never ERR OUTBOX), verify."""
    ops: list[tuple[Any, ...]] = [
        ("line", 'provision_set_wifi "Caf\u00e9 Net" "~pw-for-mqtts 1"'),
        ("line", "provision_set_device btn-01 acme hq 101"),
        ("line", "provision_set_mqtt mqtts://broker.fuzz:8883"),
        ("line", "provision_complete"),  # INCOMPLETE: mqtts:// without an identity
        ("line", "provision_identity_csr"),
        ("cert", "other_key", 0, [], "std"),  # IDENTITY
        ("cert", "good", 0, [], "std"),
        ("ca", 1, [], "std"),
        ("line", "provision_complete"),  # IDENTITY: issued by CA 0, CA 1 staged
        ("ca", 0, [], "std"),
        ("fault", 2),
        ("line", "provision_complete --offline"),  # ERR NVS; the rig power-cycles
        ("line", "provision_status"),
        ("line", 'provision_set_wifi "Caf\u00e9 Net" "~pw-for-mqtts 1"'),
        ("line", "provision_set_device btn-01 acme hq 101"),
        ("line", "provision_set_mqtt mqtts://broker.fuzz:8883"),
        ("line", "provision_identity_csr"),
        ("line", "provision_set_cert AAAA"),  # IDENTITY: not a certificate
        ("cert", "good", 0, [], "std"),
        ("ca", 0, [], "junk"),
        ("line", "provision_complete"),
        ("line", "provision_status"),
        ("line", "provision_verify 0123456789abcdef0123"),
        ("line", 'provision_set_wifi other "~pw-second-one"'),
        ("line", "provision_complete --offline"),  # keeps the stored identity (same device id and tenant)
        ("line", "provision_status"),
        *[("line", "alert_test")] * 70,  # more than the outbox's 64 slots
        ("line", "provision_status"),  # Alerts pending: TEST_MAX
        ("line", "provision_reset --confirm"),
        ("line", "provision_status"),
    ]
    rig = fc.run_case(fc.Case(["~pw-for-mqtts 1", "~pw-second-one"], False, ops))
    assert (rig.stats["ERR NVS"], rig.stats["ERR OUTBOX"], rig.stats["ERR IDENTITY"]) == (1, 0, 3), rig.stats
    assert rig.boots >= 4 and rig.stored is None


# =========================================================================================
# Bugs the fuzzer found (fixed): each keeps its reproducer
# =========================================================================================

NASTY_CA = len(fc.CA_CNS)  # index of the CA named "CA\r\nOK spoofed status" in fc.pki().cas


def test_certificate_name_with_a_line_break_is_refused() -> None:
    """A CA whose CN holds CR/LF (it would be printed and forge a status line) is refused."""
    fc.run_case(fc.Case([], False, [("ca", NASTY_CA, [], "std")]))


def _say(con: ss_console.Console, line: str) -> list[str]:
    out: list[str] = []
    ss_console.print = out.append  # type: ignore[attr-defined]
    try:
        coro = con.handle(line)
        try:
            coro.send(None)
        except (StopIteration, fc.SystemReset):
            pass
    finally:
        del ss_console.print  # type: ignore[attr-defined]
    return out


def test_status_still_answers_with_a_stored_ca_name_with_a_line_break() -> None:
    """The console refuses such certificates, but a factory image could still hold one:
    provision_status must answer (the certificate shown as unusable), not fail for good."""
    import ss_identity

    nvs = FakeNVS()
    store = ss_store.Store(nvs)
    store.provision_init()
    key = ss_identity.new_key()
    cert, _ = fc.pki().issue(key[36:], "btn-01", "acme", NASTY_CA)
    cfg = {"wifi_ssid": "net", "wifi_pass": "~pw-nasty-ca", "device_id": "btn-01", "tenant": "acme",
           "building": "hq", "room": "101", "mqtt_uri": "mqtts://broker.fuzz:8883"}
    store.provision_save_config(cfg, {"key": key, "cert": cert, "ca": fc.pki().cas[NASTY_CA][0]})
    outbox = Outbox(FakeNVS())
    outbox.load()

    async def reset() -> None:
        raise fc.SystemReset()

    store2 = ss_store.Store(FakeNVS(nvs.durable))
    store2.provision_init()
    con = ss_console.Console(store2, "chip", "fw", reset, app=fc.FakeApp(store2, outbox))
    out = _say(con, "provision_status")
    assert out[-1] == "OK", out
    assert any(x.startswith("Certificate: \"unusable") for x in out), out


# =========================================================================================
# The virtual device: random lines over a real pty, the firmware under MicroPython
# =========================================================================================

PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " \t"
# Commands that cannot provision, erase or reboot (and no key generation: slow under MicroPython).
SAFE = ("ping", "help", "provision_status", "provision_discard", "provision_set_wifi", "provision_set_device",
        "provision_set_mqtt", "provision_set_cert", "provision_set_ca", "provision_verify", "provision_reset",
        "alert_test")
CONTROL = [b"\x00", b"\x01", b"\x03", b"\x04", b"\x08", b"\x1b", b"\x1b[A", b"\x7f", b"\x9b", b"\xff", b"\xc3",
           "\u00e9".encode(), "\u20ac".encode(), "\U0001f600".encode(), "\u2028".encode(), b"\t"]


UNSAFE = {"provision_complete", "provision", "reboot", "provision_identity_csr"}


def _safe(data: bytes) -> bool:
    """Nothing in these bytes, as the device's line editor sees them, can provision, erase, reboot
    or make a key."""
    for raw in fc.ref_lines(data):
        try:
            args = fc.ref_split(raw.decode("utf-8")) if raw is not None else []
        except (UnicodeDecodeError, fc.RefQuote):
            continue
        if args and (args[0] in UNSAFE or args == ["provision_reset", "--confirm"] or len(args[0]) > 200):
            return False
    return True


def _device_line(rng: random.Random, passwords: list[str], gen: fc.Gen) -> bytes:
    k = rng.random()
    if k < 0.3:  # the CPython fuzzer's grammar (its passwords are not registered: they may be echoed by design)
        while not _safe(data := gen.line().encode() + rng.choice([b"\r", b"\n", b"\r\n"])):
            pass
        return data
    k = rng.random()
    if k < 0.3:  # printable garbage
        body = "".join(rng.choice(PRINTABLE) for _ in range(rng.randint(0, 60))).encode()
    elif k < 0.6:  # a safe command with random arguments
        args = [rng.choice(SAFE)] + ["".join(rng.choice(PRINTABLE) for _ in range(rng.randint(0, 12)))
                                     for _ in range(rng.randint(0, 4))]
        body = " ".join(args).encode()
    elif k < 0.8:  # a password where it belongs (staged in RAM only) or where it does not
        pw = rng.choice(passwords)
        body = rng.choice(['provision_set_wifi net "%s"', '"%s"', "provision_set_device %s a b c",
                           'provision_set_wifi "%s"', "provision_verify %s", "provision_reset %s",
                           'provision_set_mqtt "%s"']).replace("%s", pw).encode()
    elif k < 0.97:  # raw bytes: control characters, invalid and valid UTF-8
        body = b"".join(rng.choice(CONTROL) if rng.random() < 0.4 else rng.choice(PRINTABLE).encode()
                        for _ in range(rng.randint(1, 30)))
    else:  # the longest lines there are, and longer (upper case; lower case: the long-word test below)
        body = rng.choice([b"Z", b"z", b"\xc3\xa9"]) * rng.choice([1025, 3000]) if rng.random() < 0.5 else \
            b"Z" * rng.choice([1023, 1024])
    return body + rng.choice([b"\r", b"\n", b"\r\n"])


def test_virtual_device_survives_random_lines(make_sim: Any, guard: SecretGuard) -> None:
    rng = random.Random(0x5AFE)
    passwords = [guard.secret(f"~dev-fuzz-pw-{i}-" + "".join(rng.choice(string.ascii_letters) for _ in range(8)))
                 for i in range(3)]
    sim = make_sim()
    seen: list[str] = []
    gen = fc.Gen(fc.RandomChooser(rng))
    with sim.session() as s:
        s.sync()
        guard.output("console before", "\n".join(s.received))
        s.received.clear()  # the boot log
        boot_id = s.last_boot_id
        boots = sim.control.state()["boots"]
        flash = sim.flash.read_bytes()
        for _ in range(1500):
            s._ser.write(_device_line(rng, passwords, gen))
            s.sync()
            seen.extend(s.received)
            s.received.clear()
        st = s.status()
        seen.extend(s.received)
    guard.output("console", "\n".join(seen))
    assert st["boot_id"] == boot_id and sim.control.state()["boots"] == boots, "the device restarted"
    assert st["provisioned"] == "no"
    assert sim.flash.read_bytes() == flash, "the flash changed"
    assert not [x for x in seen if "Traceback" in x or x.startswith((">>>", "[BOOT]", "ERR INTERNAL"))]
    codes = {x.split()[1] for x in seen if x.startswith("ERR ")}
    assert codes >= {"UNKNOWN", "USAGE", "INVALID", "QUOTE", "ENCODING", "TOOLONG", "CONFIRM", "STATE"}, codes


def test_virtual_device_long_command_word(make_sim: Any, guard: SecretGuard) -> None:
    sim = make_sim()
    with sim.session() as s:
        s.sync()
        s._ser.write(b"z" * 252 + b"\r\n")
        deadline = time.monotonic() + 10
        while (line := s.read_line(deadline)) is not None:
            if line.startswith("ERR ") or line.startswith("[BOOT]"):
                break
        guard.output("console", "\n".join(s.received))
    assert line is not None and line.startswith("ERR UNKNOWN"), line


def test_virtual_device_refuses_invalid_utf8(make_sim: Any, guard: SecretGuard) -> None:
    sim = make_sim()
    replies = []
    with sim.session() as s:
        s.sync()
        for bad in (b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"):  # U+D800, overlong "/", U+110000
            s._ser.write(b"ping x" + bad + b"\r\n")
            deadline = time.monotonic() + 10
            while (line := s.read_line(deadline)) is not None and not line.startswith(("OK", "ERR ")):
                pass
            replies.append(line)
        guard.output("console", "\n".join(s.received))
    assert all(r is not None and r.startswith("ERR ENCODING") for r in replies), replies
