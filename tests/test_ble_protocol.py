"""ssproto.ble, the BLE provisioning protocol shared by the firmware and the host: framing over
ATT writes and notifications of any MTU, the lockout policy, the advertising data, the PIN
parameters.  The same module runs on the device (tests/test_ble_e2e.py drives it there)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ssproto.ble as P
from ssproto import spake2p


def test_lockout_policy_matches_the_issue() -> None:
    # 5 attempts free; then a wait that doubles from 30 s up to 1 h; hard lock at 20
    assert [P.lock_wait_s(n) for n in range(5)] == [0] * 5
    assert [P.lock_wait_s(n) for n in range(5, 13)] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert all(P.lock_wait_s(n) == 3600 for n in range(13, 20))
    assert P.lock_wait_s(20) is None and P.lock_wait_s(35) is None
    assert P.attempts_left(0) == 20 and P.attempts_left(19) == 1 and P.attempts_left(20) == 0


@given(st.lists(st.tuples(st.sampled_from([P.M_HELLO, P.M_DATA, P.M_SHARE_V]), st.binary(max_size=600)),
                min_size=1, max_size=5),
       st.sampled_from([23, 64, 185, 247]), st.randoms(use_true_random=False))
def test_frames_survive_any_mtu_and_any_cut(msgs: list[tuple[int, bytes]], mtu: int, rnd: object) -> None:
    stream = b"".join(P.frame(t, p) for t, p in msgs)
    pieces = P.chunks(stream, mtu)
    assert all(len(c) <= mtu - 3 for c in pieces)
    # the receiver sees writes merged (the device's append buffer) or cut anywhere
    d = P.Deframer()
    got: list[tuple[int, bytes]] = []
    i = 0
    while i < len(stream):
        n = rnd.randint(1, 300)  # type: ignore[attr-defined]
        got += d.feed(stream[i:i + n])
        i += n
    assert got == msgs and d.pending() == 0


def test_bad_frame_lengths_are_refused() -> None:
    with pytest.raises(P.BleError):
        P.Deframer().feed(b"\x00\x00\x01")
    with pytest.raises(P.BleError):
        P.Deframer().feed((P.MAX_MSG + 1).to_bytes(2, "big") + b"\x10")
    with pytest.raises(P.BleError):
        P.frame(P.M_DATA, bytes(P.MAX_MSG))


def test_advertising_data_fits_and_round_trips() -> None:
    name = P.name_for(bytes.fromhex("a0b1c2d3e4f5"))
    assert name == "SafeSignal-E4F5"
    for flags, window in ((0, 600), (P.ADV_PROVISIONED, 0), (P.ADV_PROVISIONED | P.ADV_LOCKED, 70000)):
        adv = P.adv_data(name, flags, window)
        assert len(adv) <= 31  # a legacy advertising PDU's payload
        info = P.parse_adv(adv)
        assert info == {"name": name, "provisioned": bool(flags & 1), "locked": bool(flags & 2),
                        "window_s": min(window, 0xFFFF)}
    assert P.parse_adv(bytes([2, 1, 6, 5, 9]) + b"Bulb") is None  # someone else's device
    assert P.parse_adv(b"\x05\xff\xff\xffSS") is None  # truncated


def test_params_and_errors_round_trip() -> None:
    salt = bytes(range(16))
    addr = bytes.fromhex("a0b1c2d3e4f5")
    p = P.params_payload(salt, 600000, 7, 120, addr, "SafeSignal-E4F5")
    assert P.parse_params(p) == (salt, 600000, 7, 120, addr, "SafeSignal-E4F5")
    assert P.parse_error(P.error_payload(P.ERR_WRONG_PIN, 30, 14, "wrong PIN")) == (P.ERR_WRONG_PIN, 30, 14,
                                                                                    "wrong PIN")
    with pytest.raises(P.BleError):
        P.parse_params(p[:20])


def test_fingerprint_is_a_short_hash_of_the_record_never_the_record() -> None:
    rec = spake2p.make_record("123456", bytes(16), spake2p.ITER_MIN)
    fp = P.fingerprint(hashlib.sha256, rec)
    assert fp == hashlib.sha256(rec).hexdigest()[:16]
    assert rec[:32].hex() not in fp and fp != P.fingerprint(hashlib.sha256, spake2p.make_record(
        "123457", bytes(16), spake2p.ITER_MIN))


def test_the_devices_record_length_is_spake2ps() -> None:
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "firmware" / "esp32-button"
                           / "lib"))
    try:
        import ss_bleauth
    finally:
        sys.path.pop(0)
    assert ss_bleauth._RECORD_LEN == spake2p.RECORD_LEN
