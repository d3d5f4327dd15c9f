# ssproto under MicroPython: quoting round trips, split_args grammar, validators, status lines.
from mpyunit import eq, raises, run, test

import ssproto

P = ssproto.ProtocolError

TRICKY = [
    "",
    " ",
    "  ",
    "plain",
    "two words",
    " lead",
    "trail ",
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
    "\u65e5\u672c\u8a9e \u30cd\u30c3\u30c8",
    "\U0001f600 emoji",
    "\x00nul",
    "\x7fdel",
    "\x1besc",
    "--confirm",
    "OK",
    "ERR X y",
    "mqtt://h:1883",
    "'single'",
    "a b\tc  d",
]


@test
def test_quote_round_trip_single():
    for s in TRICKY:
        eq(ssproto.split_args(ssproto.quote(s)), [s], repr(s))


@test
def test_join_round_trip_all():
    eq(ssproto.split_args(ssproto.join_args(TRICKY)), TRICKY)


@test
def test_quote_bare_when_safe():
    eq(ssproto.quote("abc"), "abc")
    eq(ssproto.quote(""), '""')
    eq(ssproto.quote("a b"), '"a b"')


@test
def test_quote_rejects_line_breaks():
    for s in ("a\rb", "a\nb", "\r\n"):
        e = raises(P, ssproto.quote, s)
        eq(e.code, ssproto.E_INVALID)


@test
def test_split_grammar():
    cases = [
        ("", []),
        ("   \t ", []),
        ("a b", ["a", "b"]),
        ("a\tb", ["a", "b"]),
        ("  a   b  ", ["a", "b"]),
        ('"a b" c', ["a b", "c"]),
        ('""', [""]),
        ('a "" b', ["a", "", "b"]),
        ('ab"cd"ef', ["abcdef"]),
        ('"a"b', ["ab"]),
        ('"a\\"b"', ['a"b']),
        ('"a\\\\b"', ["a\\b"]),
        ("a\\ b", ["a b"]),
        ("\\x", ["x"]),
        ('\\"', ['"']),
        ('"\'"', ["'"]),
    ]
    for line, want in cases:
        eq(ssproto.split_args(line), want, repr(line))


@test
def test_split_errors():
    for line in ('"abc', 'a "b', '"a\\n"', '"\\x"', "abc\\", '"abc\\'):
        e = raises(P, ssproto.split_args, line)
        eq(e.code, ssproto.E_QUOTE, repr(line))


@test
def test_check_ssid():
    for s in ("a", "x" * 32, "\u00e9" * 16, "My Network", " "):
        eq(ssproto.check_ssid(s), s)
    for s in ("", "x" * 33, "\u00e9" * 16 + "x", "\u20ac" * 11, "a\x00b", "a\tb", "a\x7f", "a\x1b"):
        eq(raises(P, ssproto.check_ssid, s).code, ssproto.E_INVALID, repr(s))


@test
def test_check_passphrase():
    for s in ("", "x" * 8, "x" * 63, "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789", " ~!\"#$%&'"):
        eq(ssproto.check_passphrase(s), s)
    for s in ("x" * 7, "g" * 64, "x" * 65, "a" * 65, "p\u00e4sswort1", "passw\tord", "password\x7f"):
        eq(raises(P, ssproto.check_passphrase, s).code, ssproto.E_INVALID, repr(s))


@test
def test_check_ident():
    for s in ("a", "0", "x" * 64, "btn-01.a_b", "A9"):
        eq(ssproto.check_ident("room", s), s)
    for s in ("", "x" * 65, "-a", "_a", ".a", "a b", "a/b", "\u00e9"):
        e = raises(P, ssproto.check_ident, "room", s)
        eq(e.code, ssproto.E_INVALID, repr(s))
        assert "room" in e.message


@test
def test_mqtt_uri():
    good = [
        ("mqtt://h", ("mqtt", "h", 1883)),
        ("mqtt://broker.local:1", ("mqtt", "broker.local", 1)),
        ("mqtt://10.0.0.2:65535", ("mqtt", "10.0.0.2", 65535)),
        ("mqtt://a-b.c:8883/", ("mqtt", "a-b.c", 8883)),
        (ssproto.DEFAULT_MQTT_URI, ("mqtt", "safesignal-edge.local", 1883)),
    ]
    for uri, want in good:
        eq(ssproto.parse_mqtt_uri(uri), want, uri)
        eq(ssproto.check_mqtt_uri(uri), uri)
    bad = [
        "mqtts://h:8883", "http://h", "h:1883", "mqtt://", "mqtt://:1883", "mqtt://h:0", "mqtt://h:65536",
        "mqtt://h:", "mqtt://h:-1", "mqtt://h:12a", "mqtt://h:123456", "mqtt://-h", "mqtt://h-", "mqtt://a..b",
        "mqtt://u@h", "mqtt://h/x", "mqtt://h_x", "mqtt://" + "a" * 200, "MQTT://h",
        "mqtt://h:\u00b2", "mqtt://h:\u0661\u0668\u0668\u0663",
    ]
    for uri in bad:
        eq(raises(P, ssproto.parse_mqtt_uri, uri).code, ssproto.E_INVALID, uri)


@test
def test_messages_never_contain_value():
    secret = "Zq9SecretValue"
    calls = [
        (ssproto.check_passphrase, (secret + "\u00e4",)),
        (ssproto.check_passphrase, (secret * 5,)),
        (ssproto.check_ssid, (secret * 3,)),
        (ssproto.check_ssid, (secret + "\x01",)),
        (ssproto.check_ident, ("tenant", secret + "/")),
        (ssproto.parse_mqtt_uri, ("mqtt://" + secret + "_:1",)),
        (ssproto.parse_mqtt_uri, ("mqtt://h:" + secret,)),
        (ssproto.check_nonce, (secret,)),
        (ssproto.quote, (secret + "\n",)),
        (ssproto.split_args, ('"' + secret,)),
    ]
    for fn, args in calls:
        e = raises(P, fn, *args)
        assert secret not in str(e), fn.__name__
        assert secret not in e.message, fn.__name__


@test
def test_parse_status():
    eq(ssproto.parse_status("OK"), (True, "", ""))
    eq(ssproto.parse_status("OK pong x"), (True, "", "pong x"))
    eq(ssproto.parse_status("ERR QUOTE unterminated quote"), (False, "QUOTE", "unterminated quote"))
    eq(ssproto.parse_status("ERR CODE"), (False, "CODE", ""))
    for line in ("", "OKAY", "ok", "ERR", "ERROR x", " OK", "[WIFI] OK", "WiFi SSID: x"):
        eq(ssproto.parse_status(line), None, repr(line))
    eq(ssproto.parse_status(ssproto.ok_line()), (True, "", ""))
    eq(ssproto.parse_status(ssproto.ok_line("t u")), (True, "", "t u"))
    eq(ssproto.parse_status(ssproto.err_line("NVS", "m n")), (False, "NVS", "m n"))


@test
def test_is_log_line():
    for line in ("[WIFI] Connecting", "[MQTT] x", "[A] x", "[BOOT_2] x"):
        assert ssproto.is_log_line(line), line
    for line in ("", "[] x", "[wifi] x", "[WIFI]x", "WIFI] x", "OK", "[WI FI] x", " [WIFI] x"):
        assert not ssproto.is_log_line(line), line


@test
def test_status_field_round_trip():
    for label, name in ssproto.STATUS_FIELDS:
        for v in TRICKY:
            eq(ssproto.parse_status_field(ssproto.status_line(label, v)), (name, v), label + repr(v))
    eq(ssproto.parse_status_field("Nope: x"), None)
    eq(ssproto.parse_status_field("WiFi SSID: a b"), None)


@test
def test_check_nonce():
    for s in ("0" * 16, "aB" * 32):
        eq(ssproto.check_nonce(s), s)
    for s in ("0" * 15, "0" * 65, "g" * 16, ""):
        eq(raises(P, ssproto.check_nonce, s).code, ssproto.E_INVALID)


run()
