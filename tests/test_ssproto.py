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


# --- checked lines ------------------------------------------------------------------------------

def _receive(lines):
    """Feed checked-line pieces to a device-side Checked; returns (acks, result or error code)."""
    import binascii

    c = ssproto.Checked()
    acks = []
    for raw in lines:
        try:
            got = c.feed(raw, binascii.crc32) if ssproto.is_checked(raw) else (c.reset() or b"<plain>")
        except ProtocolError as e:
            return acks, e.code
        if got is None:
            acks.append(c.got())
        else:
            return acks, got
    return acks, None


@FAST
@given(st.lists(line_text, min_size=1, max_size=8), st.integers(min_value=8, max_value=ssproto.PIECE))
def test_checked_lines_round_trip(args, piece):
    import binascii

    line = ssproto.join_args(args)
    b = line.encode()
    if len(b) > ssproto.MAX_LINE:
        return
    lines = ssproto.checked_lines(line, binascii.crc32, piece)
    assert all(b"\r" not in x and b"\n" not in x for x in lines)
    assert all(len(x) + 2 <= ssproto.RX_BUFFER for x in lines)  # each piece fits the board's ring
    acks, got = _receive(lines)
    assert got == b
    assert acks == [min(piece * (i + 1), len(b)) for i in range(len(lines) - 1)]


@FAST
@given(st.lists(line_text, min_size=1, max_size=8), st.integers(min_value=8, max_value=ssproto.PIECE),
       st.data())
def test_checked_lines_with_a_lost_byte_never_run(args, piece, data):
    import binascii

    line = ssproto.join_args(args)
    if len(line.encode()) > ssproto.MAX_LINE:
        return
    lines = ssproto.checked_lines(line, binascii.crc32, piece)
    k = data.draw(st.integers(0, len(lines) - 1))
    at = data.draw(st.integers(0, len(lines[k]) - 1))
    damaged = list(lines)
    damaged[k] = lines[k][:at] + lines[k][at + 1:]
    _, got = _receive(damaged)
    assert not isinstance(got, bytes) or got == b"<plain>", got  # ERR code or incomplete, never run


def test_longest_line_fits_the_ring_piece_by_piece():
    import binascii

    lines = ssproto.checked_lines("x" * ssproto.MAX_LINE, binascii.crc32)
    assert max(len(x) for x in lines) + 2 <= ssproto.RX_BUFFER
    assert lines[0].startswith(b"@1024:")
