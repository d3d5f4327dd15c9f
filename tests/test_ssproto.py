"""ssproto, the console wire grammar shared by firmware and host: what needs CPython.

The fixed examples (grammar, validators, status lines, secret check) are in
tests/mpy/check_ssproto.py, which tests/test_firmware_units.py runs under MicroPython and under
CPython.  Here: hypothesis property tests, and strings only CPython can hold.
"""

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


@FAST
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=8, max_size=63))
def test_passphrase_printable_ascii_8_to_63_accepted(s):
    assert ssproto.check_passphrase(s) == s


@pytest.mark.parametrize("s", ["net\udcff", "\ud800"])
def test_ssid_lone_surrogate_is_a_protocol_error(s):
    # The host gets such strings from argv/env (surrogateescape of non-UTF-8 bytes) and only
    # catches ProtocolError; a UnicodeEncodeError would end in a traceback quoting the value.
    # (MicroPython strings cannot hold lone surrogates, so this one is CPython-only.)
    with pytest.raises(ProtocolError) as ei:
        ssproto.check_ssid(s)
    assert ei.value.code == ssproto.E_INVALID


@FAST
@given(st.text(alphabet=_ALPHABET, max_size=20), st.sampled_from(["USAGE", "QUOTE", "NVS", "INVALID"]))
def test_status_line_builders_round_trip(text, code):
    assert ssproto.parse_status(ssproto.ok_line(text)) == (True, "", text)
    msg = "m " + text
    assert ssproto.parse_status(ssproto.err_line(code, msg)) == (False, code, msg)


@FAST
@given(st.sampled_from(ssproto.STATUS_FIELDS), line_text)
def test_status_field_round_trip(field, value):
    label, name = field
    line = ssproto.status_line(label, value)
    assert ssproto.parse_status(line) is None
    assert not ssproto.is_log_line(line)
    assert ssproto.parse_status_field(line) == (name, value)


@settings(max_examples=25, deadline=None, database=None)
@given(
    password=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=8, max_size=63),
    ssid=st.text(min_size=1, max_size=10).filter(lambda x: len(x.encode()) <= 32),
)
def test_wpa_psk_matches_hashlib_pbkdf2(password: str, ssid: str) -> None:
    want = hashlib.pbkdf2_hmac("sha1", password.encode(), ssid.encode(), 4096, 32)
    assert ssproto.wpa_psk(hashlib.sha1, password, ssid) == want
