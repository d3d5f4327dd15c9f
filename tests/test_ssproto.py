"""ssproto, the console wire grammar shared by firmware and host (CPython side)."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ssproto
from ssproto import ProtocolError

# Any string that can travel in one console line: everything but CR and LF, with the
# characters the grammar cares about made likely.
_ALPHABET = st.one_of(
    st.sampled_from(' \t"\\\'abc\x00\x7f\x1b\u00e9\u20ac\U0001f600'),
    st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
)
line_text = st.text(alphabet=_ALPHABET, max_size=40)

FAST = settings(max_examples=300, deadline=None, database=None)

DISTINCT = "Zq9SecretValue"


# --- quoting ----------------------------------------------------------------------------

@FAST
@given(line_text)
def test_quote_round_trip(s):
    q = ssproto.quote(s)
    assert "\r" not in q and "\n" not in q
    assert ssproto.split_args(q) == [s]


@FAST
@given(st.lists(line_text, max_size=6))
def test_join_args_round_trip(args):
    assert ssproto.split_args(ssproto.join_args(args)) == args


@pytest.mark.parametrize(
    "s",
    ["", " ", "a b", '"', "\\", '\\"', '"\\', "caf\u00e9", "\u65e5\u672c", "\U0001f600", "\t", "x\x00y", "OK"],
)
def test_quote_round_trip_examples(s):
    assert ssproto.split_args(ssproto.quote(s)) == [s]


def test_quote_leaves_safe_words_bare():
    assert ssproto.quote("abc-1.2_x") == "abc-1.2_x"
    assert ssproto.quote("caf\u00e9") == "caf\u00e9"
    assert ssproto.quote("") == '""'
    assert ssproto.quote("a b") == '"a b"'
    assert ssproto.quote('a"b\\c') == '"a\\"b\\\\c"'


@pytest.mark.parametrize("s", ["a\rb", "a\nb", "\r\n", DISTINCT + "\n"])
def test_quote_rejects_line_breaks(s):
    with pytest.raises(ProtocolError) as ei:
        ssproto.quote(s)
    assert ei.value.code == ssproto.E_INVALID
    assert DISTINCT not in str(ei.value)


# --- split_args grammar -------------------------------------------------------------------

@pytest.mark.parametrize(
    "line, want",
    [
        ("", []),
        ("  \t  ", []),
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
        ("'a b'", ["'a", "b'"]),
        ("caf\u00e9 \u20ac", ["caf\u00e9", "\u20ac"]),
        ("a\u00a0b", ["a\u00a0b"]),  # only space and tab separate
    ],
)
def test_split_args_grammar(line, want):
    assert ssproto.split_args(line) == want


@pytest.mark.parametrize(
    "line",
    ['"abc', 'a "b', '"', 'x"', '"a\\n"', '"\\x"', '"\\ "', "abc\\", '"abc\\', "\\"],
)
def test_split_args_errors(line):
    with pytest.raises(ProtocolError) as ei:
        ssproto.split_args(line)
    assert ei.value.code == ssproto.E_QUOTE


def test_protocol_error_is_value_error():
    e = ProtocolError(ssproto.E_USAGE, "m")
    assert isinstance(e, ValueError)
    assert (e.code, e.message, str(e)) == (ssproto.E_USAGE, "m", "m")


# --- validators -------------------------------------------------------------------------------

def _invalid(fn, *args):
    with pytest.raises(ProtocolError) as ei:
        fn(*args)
    assert ei.value.code == ssproto.E_INVALID
    return ei.value


@pytest.mark.parametrize(
    "s",
    ["a", "x" * 32, "\u00e9" * 16, "\u20ac" * 10 + "xx", "\U0001f600" * 8, "My Net", " ", 'a"b\\c'],
)
def test_ssid_ok(s):
    assert ssproto.check_ssid(s) == s


@pytest.mark.parametrize(
    "s",
    ["", "x" * 33, "\u00e9" * 16 + "x", "\u20ac" * 11, "\U0001f600" * 8 + "x", "a\x00b", "a\tb", "a\x1f", "a\x7f"],
)
def test_ssid_bad(s):
    _invalid(ssproto.check_ssid, s)


@pytest.mark.parametrize("s", ["a\x85b", "a\x9b2J", "\x80"])
def test_ssid_rejects_c1_control_characters(s):
    # U+0080..U+009F are control characters too (U+009B is an 8-bit CSI for terminals, U+0085
    # a line break for str.splitlines); the SSID is echoed to the console and logs.
    _invalid(ssproto.check_ssid, s)


@pytest.mark.parametrize("s", ["net\udcff", "\ud800"])
def test_ssid_lone_surrogate_is_a_protocol_error(s):
    # The host gets such strings from argv/env (surrogateescape of non-UTF-8 bytes) and only
    # catches ProtocolError; a UnicodeEncodeError would end in a traceback quoting the value.
    _invalid(ssproto.check_ssid, s)


HEX64 = "0123456789abcdefABCDEF" * 2 + "0123456789abcdefABCD"


@pytest.mark.parametrize("s", ["", "x" * 8, "x" * 63, HEX64, " !~\"\\'abc", "p" * 20])
def test_passphrase_ok(s):
    assert len(HEX64) == 64
    assert ssproto.check_passphrase(s) == s


@pytest.mark.parametrize(
    "s",
    ["x", "x" * 7, "g" * 64, HEX64[:-1] + "g", "a" * 65, HEX64 + "0", "p\u00e4sswort1", "\u20ac" * 10,
     "passw\tord1", "password\x7f", "password\x00"],
)
def test_passphrase_bad(s):
    _invalid(ssproto.check_passphrase, s)


@FAST
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=8, max_size=63))
def test_passphrase_printable_ascii_8_to_63_accepted(s):
    assert ssproto.check_passphrase(s) == s


@pytest.mark.parametrize("s", ["a", "Z", "0", "x" * 64, "btn-01.a_b", "9-"])
def test_ident_ok(s):
    assert ssproto.check_ident("tenant", s) == s


@pytest.mark.parametrize("s", ["", "x" * 65, "-a", "_a", ".a", "a b", "a/b", "a:b", "\u00e9", "a\x00"])
def test_ident_bad(s):
    e = _invalid(ssproto.check_ident, "tenant", s)
    assert "tenant" in e.message


@pytest.mark.parametrize(
    "uri, want",
    [
        ("mqtt://h", ("mqtt", "h", 1883)),
        ("mqtt://h/", ("mqtt", "h", 1883)),
        ("mqtt://broker.local:1", ("mqtt", "broker.local", 1)),
        ("mqtt://10.0.0.2:65535", ("mqtt", "10.0.0.2", 65535)),
        ("mqtt://a-b.c:8883/", ("mqtt", "a-b.c", 8883)),
        ("mqtt://H0ST:01883", ("mqtt", "H0ST", 1883)),
        (ssproto.DEFAULT_MQTT_URI, ("mqtt", "safesignal-edge.local", 1883)),
    ],
)
def test_mqtt_uri_ok(uri, want):
    assert ssproto.parse_mqtt_uri(uri) == want
    assert ssproto.check_mqtt_uri(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "mqtts://h:8883", "mqtts://h", "http://h", "h:1883", "", "MQTT://h",
        "mqtt://", "mqtt:///", "mqtt://:1883",
        "mqtt://h:0", "mqtt://h:65536", "mqtt://h:99999", "mqtt://h:123456", "mqtt://h:", "mqtt://h:-1",
        "mqtt://h:+1", "mqtt://h: 1", "mqtt://h:12a",
        "mqtt://-h", "mqtt://h-", "mqtt://a..b", "mqtt://.a", "mqtt://u@h", "mqtt://h/x", "mqtt://h_x",
        "mqtt://[::1]:1883", "mqtt://h\u00e9", "mqtt://" + "a" * 200, "mqtt://" + "a" * 64 + ".b",
    ],
)
def test_mqtt_uri_bad(uri):
    _invalid(ssproto.parse_mqtt_uri, uri)
    _invalid(ssproto.check_mqtt_uri, uri)


@pytest.mark.parametrize("port", ["\u00b2", "\u0661\u0668\u0668\u0663", "\uff11\uff18\uff18\uff13"])
def test_mqtt_uri_port_must_be_ascii_digits(port):
    # str.isdigit() is true for superscripts and non-ASCII digits on CPython (not on
    # MicroPython): int() then either fails with a plain ValueError that quotes the value, or
    # the host accepts a URI the device rejects.
    _invalid(ssproto.parse_mqtt_uri, "mqtt://h:" + port)


@pytest.mark.parametrize("s", ["0" * 16, "aB" * 32, "0123456789abcdef0"])
def test_nonce_ok(s):
    assert ssproto.check_nonce(s) == s


@pytest.mark.parametrize("s", ["", "0" * 15, "0" * 65, "g" * 16, "0" * 15 + " "])
def test_nonce_bad(s):
    _invalid(ssproto.check_nonce, s)


@pytest.mark.parametrize(
    "fn, args",
    [
        (ssproto.check_passphrase, (DISTINCT + "\u00e4",)),
        (ssproto.check_passphrase, (DISTINCT * 5,)),
        (ssproto.check_passphrase, (DISTINCT[:7],)),
        (ssproto.check_ssid, (DISTINCT * 3,)),
        (ssproto.check_ssid, (DISTINCT + "\x01",)),
        (ssproto.check_ident, ("room", DISTINCT + "/")),
        (ssproto.check_ident, ("room", DISTINCT * 5)),
        (ssproto.parse_mqtt_uri, ("mqtt://" + DISTINCT + "_:1",)),
        (ssproto.parse_mqtt_uri, ("mqtt://h:" + DISTINCT,)),
        (ssproto.parse_mqtt_uri, ("mqtts://" + DISTINCT,)),
        (ssproto.parse_mqtt_uri, (DISTINCT,)),
        (ssproto.check_nonce, (DISTINCT,)),
        (ssproto.split_args, ('"' + DISTINCT,)),
        (ssproto.split_args, ('"' + DISTINCT + '\\q"',)),
    ],
)
def test_error_messages_never_contain_the_value(fn, args):
    with pytest.raises(ProtocolError) as ei:
        fn(*args)
    assert DISTINCT not in str(ei.value)
    assert DISTINCT not in ei.value.message
    assert DISTINCT[:7] not in str(ei.value)


# --- status lines ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "line, want",
    [
        ("OK", (True, "", "")),
        ("OK pong", (True, "", "pong")),
        ("OK pong \"a b\"", (True, "", 'pong "a b"')),
        ("OK ", (True, "", "")),
        ("ERR QUOTE unterminated quote", (False, "QUOTE", "unterminated quote")),
        ("ERR INVALID x", (False, "INVALID", "x")),
        ("ERR CODE", (False, "CODE", "")),
        ("OKAY", None),
        ("ok", None),
        ("ERR", None),
        ("ERROR x", None),
        (" OK", None),
        ("", None),
        ("[WIFI] OK", None),
        ("WiFi SSID: OK", None),
    ],
)
def test_parse_status(line, want):
    assert ssproto.parse_status(line) == want


@FAST
@given(st.text(alphabet=_ALPHABET, max_size=20), st.sampled_from(["USAGE", "QUOTE", "NVS", "INVALID"]))
def test_status_line_builders_round_trip(text, code):
    assert ssproto.parse_status(ssproto.ok_line(text)) == (True, "", text)
    msg = "m " + text
    assert ssproto.parse_status(ssproto.err_line(code, msg)) == (False, code, msg)


@pytest.mark.parametrize("line", ["[WIFI] Connecting", "[MQTT] x", "[A] x", "[BOOT_2] x", "[WIFI] "])
def test_is_log_line_true(line):
    assert ssproto.is_log_line(line)


@pytest.mark.parametrize(
    "line", ["", "[", "[] x", "[wifi] x", "[WIFI]x", "[WIFI]", "WIFI] x", "OK", "[WI FI] x", " [WIFI] x", "[É] x"]
)
def test_is_log_line_false(line):
    assert not ssproto.is_log_line(line)


@FAST
@given(st.sampled_from(ssproto.STATUS_FIELDS), line_text)
def test_status_field_round_trip(field, value):
    label, name = field
    line = ssproto.status_line(label, value)
    assert ssproto.parse_status(line) is None
    assert not ssproto.is_log_line(line)
    assert ssproto.parse_status_field(line) == (name, value)


def test_status_field_labels_unique_and_unknown():
    labels = [lb for lb, _ in ssproto.STATUS_FIELDS]
    assert len(set(labels)) == len(labels)
    assert ssproto.parse_status_field("Nope: x") is None
    assert ssproto.parse_status_field("WiFi SSID: a b") is None
    assert ssproto.parse_status_field("WiFi: connected") == ("wifi_state", "connected")
    assert ssproto.parse_status_field("WiFi SSID: \"\"") == ("wifi_ssid", "")


def test_secret_check_known_answer():
    want = hashlib.sha256(b"safesignal-pass-check\x00n0\x00caf\xc3\xa9\x00pw").hexdigest()[:8]
    assert ssproto.secret_check(hashlib.sha256, "n0", "caf\u00e9", "pw") == want
    assert ssproto.secret_check(hashlib.sha256, "n0", "a", "bc") != ssproto.secret_check(
        hashlib.sha256, "n0", "ab", "c"
    )
