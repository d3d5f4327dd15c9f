# ssproto: quoting round trips, split_args grammar, validators, status lines, secret check.
# Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython and under CPython
# (tests/test_ssproto.py adds property tests and CPython-only strings).
import binascii
import hashlib

from mpyunit import eq, raises, run, test

import ssproto

P = ssproto.ProtocolError
DISTINCT = "Zq9SecretValue"
HEX64 = "0123456789abcdefABCDEF" * 2 + "0123456789abcdefABCD"

TRICKY = [
    "",
    " ",
    "  ",
    "plain",
    "a b",
    "two words",
    " lead",
    "trail ",
    "\t",
    "tab\there",
    '"',
    '""',
    'a"b',
    "\\",
    "\\\\",
    'back\\slash and "quote"',
    '\\"',
    '"\\',
    "caf\u00e9",
    "\u65e5\u672c",
    "\u65e5\u672c\u8a9e \u30cd\u30c3\u30c8",
    "\U0001f600",
    "\U0001f600 emoji",
    "\x00nul",
    "x\x00y",
    "\x7fdel",
    "\x1besc",
    "--confirm",
    "OK",
    "ERR X y",
    "mqtt://h:1883",
    "'single'",
    "a b\tc  d",
]


def invalid(fn, *args):
    e = raises(P, fn, *args)
    eq(e.code, ssproto.E_INVALID, "%s%r" % (getattr(fn, "__name__", "call"), args))
    return e


# --- quoting ------------------------------------------------------------------------------

@test
def test_quote_round_trip_single():
    for s in TRICKY:
        q = ssproto.quote(s)
        assert "\r" not in q and "\n" not in q, repr(s)
        eq(ssproto.split_args(q), [s], repr(s))


@test
def test_join_round_trip_all():
    eq(ssproto.split_args(ssproto.join_args(TRICKY)), TRICKY)
    eq(ssproto.split_args(ssproto.join_args([])), [])


@test
def test_quote_bare_when_safe():
    eq(ssproto.quote("abc"), "abc")
    eq(ssproto.quote("abc-1.2_x"), "abc-1.2_x")
    eq(ssproto.quote("caf\u00e9"), "caf\u00e9")
    eq(ssproto.quote(""), '""')
    eq(ssproto.quote("a b"), '"a b"')
    eq(ssproto.quote('a"b\\c'), '"a\\"b\\\\c"')


@test
def test_quote_rejects_line_breaks():
    for s in ("a\rb", "a\nb", "\r\n", DISTINCT + "\n"):
        invalid(ssproto.quote, s)


# --- split_args grammar -------------------------------------------------------------------

@test
def test_split_grammar():
    cases = [
        ("", []),
        ("   \t ", []),
        ("a", ["a"]),
        ("a b", ["a", "b"]),
        ("a\tb", ["a", "b"]),
        ("  a   b  ", ["a", "b"]),
        ('"a b" c', ["a b", "c"]),
        ('""', [""]),
        ('a "" b', ["a", "", "b"]),
        ('"" ""', ["", ""]),
        ('ab"cd"ef', ["abcdef"]),
        ('"a"b', ["ab"]),
        ('a"b c"', ["ab c"]),
        ('"a\\"b"', ['a"b']),
        ('"a\\\\b"', ["a\\b"]),
        ('"\t"', ["\t"]),
        ("a\\ b", ["a b"]),
        ("\\x", ["x"]),
        ('\\"', ['"']),
        ("\\\\", ["\\"]),
        ('"\'"', ["'"]),
        ("'a b'", ["'a", "b'"]),
        ("caf\u00e9 \u20ac", ["caf\u00e9", "\u20ac"]),
        ("a\u00a0b", ["a\u00a0b"]),  # only space and tab separate
    ]
    for line, want in cases:
        eq(ssproto.split_args(line), want, repr(line))


@test
def test_split_errors():
    for line in ('"abc', 'a "b', '"', 'x"', '"a\\n"', '"\\x"', '"\\ "', "abc\\", '"abc\\', "\\"):
        e = raises(P, ssproto.split_args, line)
        eq(e.code, ssproto.E_QUOTE, repr(line))


@test
def test_protocol_error_is_value_error():
    e = P(ssproto.E_USAGE, "m")
    assert isinstance(e, ValueError)
    eq((e.code, e.message, str(e)), (ssproto.E_USAGE, "m", "m"))


# --- validators ---------------------------------------------------------------------------

@test
def test_check_ssid():
    for s in ("a", "x" * 32, "\u00e9" * 16, "\u20ac" * 10 + "xx", "\U0001f600" * 8, "My Network", "My Net", " ",
              'a"b\\c'):
        eq(ssproto.check_ssid(s), s)
    for s in ("", "x" * 33, "\u00e9" * 16 + "x", "\u20ac" * 11, "\U0001f600" * 8 + "x", "a\x00b", "a\tb", "a\x1f",
              "a\x7f", "a\x1b"):
        invalid(ssproto.check_ssid, s)
    # U+0080..U+009F are control characters too (U+009B is an 8-bit CSI for terminals, U+0085
    # a line break for str.splitlines); the SSID is echoed to the console and logs.
    for s in ("a\x85b", "a\x9b2J", "\x80"):
        invalid(ssproto.check_ssid, s)


@test
def test_check_passphrase():
    eq(len(HEX64), 64)
    for s in ("", "x" * 8, "x" * 63, HEX64, " !~\"\\'abc", " ~!\"#$%&'", "p" * 20):
        eq(ssproto.check_passphrase(s), s)
    for s in ("x", "x" * 7, "g" * 64, HEX64[:-1] + "g", "a" * 65, HEX64 + "0", "p\u00e4sswort1", "\u20ac" * 10,
              "passw\tord1", "password\x7f", "password\x00"):
        invalid(ssproto.check_passphrase, s)


@test
def test_check_ident():
    for s in ("a", "Z", "0", "x" * 64, "btn-01.a_b", "9-", "A9"):
        eq(ssproto.check_ident("tenant", s), s)
    for s in ("", "x" * 65, "-a", "_a", ".a", "a b", "a/b", "a:b", "\u00e9", "a\x00"):
        e = invalid(ssproto.check_ident, "tenant", s)
        assert "tenant" in e.message, repr(s)


@test
def test_mqtt_uri():
    good = [
        ("mqtt://h", ("mqtt", "h", 1883)),
        ("mqtt://h/", ("mqtt", "h", 1883)),
        ("mqtt://broker.local:1", ("mqtt", "broker.local", 1)),
        ("mqtt://10.0.0.2:65535", ("mqtt", "10.0.0.2", 65535)),
        ("mqtt://a-b.c:8883/", ("mqtt", "a-b.c", 8883)),
        ("mqtt://H0ST:01883", ("mqtt", "H0ST", 1883)),
        (ssproto.DEFAULT_MQTT_URI, ("mqtt", "safesignal-edge.local", 1883)),
        ("mqtts://h:8884", ("mqtts", "h", 8884)),
        ("mqtts://broker.example", ("mqtts", "broker.example", 8883)),
    ]
    for uri, want in good:
        eq(ssproto.parse_mqtt_uri(uri), want, uri)
        eq(ssproto.check_mqtt_uri(uri), uri)
    bad = [
        "mqtts://", "mqtts://h:0", "mqtts:/h", "http://h", "h:1883", "", "MQTT://h",
        "mqtt://", "mqtt:///", "mqtt://:1883",
        "mqtt://h:0", "mqtt://h:65536", "mqtt://h:99999", "mqtt://h:123456", "mqtt://h:", "mqtt://h:-1",
        "mqtt://h:+1", "mqtt://h: 1", "mqtt://h:12a",
        "mqtt://-h", "mqtt://h-", "mqtt://a..b", "mqtt://.a", "mqtt://u@h", "mqtt://h/x", "mqtt://h_x",
        "mqtt://[::1]:1883", "mqtt://h\u00e9", "mqtt://" + "a" * 200, "mqtt://" + "a" * 64 + ".b",
    ]
    for uri in bad:
        invalid(ssproto.parse_mqtt_uri, uri)
        invalid(ssproto.check_mqtt_uri, uri)


@test
def test_mqtt_uri_port_must_be_ascii_digits():
    # str.isdigit() is true for superscripts and non-ASCII digits on CPython (not on
    # MicroPython): int() then either fails with a plain ValueError that quotes the value, or
    # the host accepts a URI the device rejects.
    for port in ("\u00b2", "\u0661\u0668\u0668\u0663", "\uff11\uff18\uff18\uff13"):
        invalid(ssproto.parse_mqtt_uri, "mqtt://h:" + port)


@test
def test_check_nonce():
    for s in ("0" * 16, "aB" * 32, "0123456789abcdef0"):
        eq(ssproto.check_nonce(s), s)
    for s in ("", "0" * 15, "0" * 65, "g" * 16, "0" * 15 + " "):
        invalid(ssproto.check_nonce, s)


@test
def test_messages_never_contain_value():
    calls = [
        (ssproto.check_passphrase, (DISTINCT + "\u00e4",)),
        (ssproto.check_passphrase, (DISTINCT * 5,)),
        (ssproto.check_passphrase, (DISTINCT[:7],)),
        (ssproto.check_ssid, (DISTINCT * 3,)),
        (ssproto.check_ssid, (DISTINCT + "\x01",)),
        (ssproto.check_ident, ("room", DISTINCT + "/")),
        (ssproto.check_ident, ("room", DISTINCT * 5)),
        (ssproto.parse_mqtt_uri, ("mqtt://" + DISTINCT + "_:1",)),
        (ssproto.parse_mqtt_uri, ("mqtt://h:" + DISTINCT,)),
        (ssproto.parse_mqtt_uri, ("mqtts://" + DISTINCT + "_",)),
        (ssproto.parse_mqtt_uri, (DISTINCT,)),
        (ssproto.check_nonce, (DISTINCT,)),
        (ssproto.quote, (DISTINCT + "\n",)),
        (ssproto.split_args, ('"' + DISTINCT,)),
        (ssproto.split_args, ('"' + DISTINCT + '\\q"',)),
    ]
    for fn, args in calls:
        e = raises(P, fn, *args)
        what = "%s%r" % (fn.__name__, args)
        assert DISTINCT not in str(e), what
        assert DISTINCT not in e.message, what
        assert DISTINCT[:7] not in str(e), what


# --- status lines ---------------------------------------------------------------------------

@test
def test_parse_status():
    cases = [
        ("OK", (True, "", "")),
        ("OK pong", (True, "", "pong")),
        ("OK pong x", (True, "", "pong x")),
        ("OK pong \"a b\"", (True, "", 'pong "a b"')),
        ("OK ", (True, "", "")),
        ("ERR QUOTE unterminated quote", (False, "QUOTE", "unterminated quote")),
        ("ERR INVALID x", (False, "INVALID", "x")),
        ("ERR CODE", (False, "CODE", "")),
    ]
    for line, want in cases:
        eq(ssproto.parse_status(line), want, repr(line))
    for line in ("", "OKAY", "ok", "ERR", "ERROR x", " OK", "[WIFI] OK", "WiFi SSID: OK", "WiFi SSID: x"):
        eq(ssproto.parse_status(line), None, repr(line))


@test
def test_status_line_builders():
    eq(ssproto.parse_status(ssproto.ok_line()), (True, "", ""))
    for text in ("", "t u", "pong \"a b\"", "caf\u00e9 \\ \t"):
        eq(ssproto.parse_status(ssproto.ok_line(text)), (True, "", text), repr(text))
    for code in ("USAGE", "QUOTE", "NVS", "INVALID"):
        eq(ssproto.parse_status(ssproto.err_line(code, "m n")), (False, code, "m n"), code)


@test
def test_is_log_line():
    for line in ("[WIFI] Connecting", "[MQTT] x", "[A] x", "[BOOT_2] x", "[WIFI] "):
        assert ssproto.is_log_line(line), line
    for line in ("", "[", "[] x", "[wifi] x", "[WIFI]x", "[WIFI]", "WIFI] x", "OK", "[WI FI] x", " [WIFI] x",
                 "[\u00c9] x"):
        assert not ssproto.is_log_line(line), line


@test
def test_status_field_round_trip():
    for label, name in ssproto.STATUS_FIELDS:
        for v in TRICKY:
            line = ssproto.status_line(label, v)
            what = label + repr(v)
            eq(ssproto.parse_status(line), None, what)
            assert not ssproto.is_log_line(line), what
            eq(ssproto.parse_status_field(line), (name, v), what)


@test
def test_status_field_labels_unique_and_unknown():
    labels = [lb for lb, _ in ssproto.STATUS_FIELDS]
    eq(len(set(labels)), len(labels), "duplicate labels")
    eq(ssproto.parse_status_field("Nope: x"), None)
    eq(ssproto.parse_status_field("WiFi SSID: a b"), None)
    eq(ssproto.parse_status_field("WiFi: connected"), ("wifi_state", "connected"))
    eq(ssproto.parse_status_field("WiFi SSID: \"\""), ("wifi_ssid", ""))


@test
def test_wpa_psk_ieee_802_11i_vectors():
    # IEEE 802.11i-2004 Annex H.4.2 test vectors
    eq(binascii.hexlify(ssproto.wpa_psk(hashlib.sha1, "password", "IEEE")).decode(),
       "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e")
    eq(binascii.hexlify(ssproto.wpa_psk(hashlib.sha1, "ThisIsAPassword", "ThisIsASSID")).decode(),
       "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af")
    raw = "0123456789abcdef" * 4
    eq(ssproto.wpa_psk(hashlib.sha1, raw, "any"), binascii.unhexlify(raw))
    eq(ssproto.wpa_psk(hashlib.sha1, "", "open"), b"")


@test
def test_secret_check_known_answer():
    want = binascii.hexlify(hashlib.sha256(b"safesignal-psk-check\x00n0\x00caf\xc3\xa9\x00pw").digest()[:8]).decode()
    eq(ssproto.secret_check(hashlib.sha256, "n0", "caf\u00e9", b"pw"), want)
    assert ssproto.secret_check(hashlib.sha256, "n0", "a", b"bc") != ssproto.secret_check(
        hashlib.sha256, "n0", "ab", b"c"
    )


run()
