"""The encrypted channel after SPAKE2+ (ssproto.channel): AES-CCM built on one AES-ECB block
primitive, checked byte for byte against `cryptography`'s AESCCM (random keys, nonces, tag
lengths, and plaintext/associated-data lengths including 0 and beyond whole blocks), frames
against an independent construction (cryptography's HKDF and AESCCM), and every refusal:
tampering at each byte, replay, reordering, truncation, reflection, the channel dead after a
failure.  The same known answers run under MicroPython over cryptolib in
tests/mpy/check_channel.py; the MicroPython device side against this host side is in
tests/test_spake2p.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "firmware" / "esp32-button" / "lib"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))

from ssproto import channel  # noqa: E402
from ssproto.channel import Channel, ChannelError  # noqa: E402

MANY = settings(max_examples=400, deadline=None, database=None)


@MANY
@given(key=st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       nonce=st.integers(7, 13).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       tag=st.sampled_from([4, 6, 8, 10, 12, 14, 16]),
       data=st.one_of(st.sampled_from([0, 1, 15, 16, 17, 32, 48, 49, 255, 256, 1000]), st.integers(0, 700))
       .flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       aad=st.one_of(st.just(b""), st.binary(max_size=300)))
def test_ccm_matches_cryptography(key: bytes, nonce: bytes, tag: int, data: bytes, aad: bytes) -> None:
    ref = AESCCM(key, tag).encrypt(nonce, data, aad or None)
    ecb = channel.ecb_cryptography(key)
    assert channel.ccm_encrypt(ecb, nonce, data, aad, tag) == ref
    assert channel.ccm_decrypt(ecb, nonce, ref, aad, tag) == data
    bad = bytearray(ref)
    bad[len(ref) // 2] ^= 0x01
    assert channel.ccm_decrypt(ecb, nonce, bytes(bad), aad, tag) is None


def test_ccm_rejects_bad_parameters() -> None:
    ecb = channel.ecb_cryptography(bytes(16))
    for nonce, tag in ((bytes(6), 16), (bytes(14), 16), (bytes(13), 5), (bytes(13), 18)):
        with pytest.raises(ValueError):
            channel.ccm_encrypt(ecb, nonce, b"x", b"", tag)
    with pytest.raises(ValueError):  # a 13-byte nonce leaves 2 length bytes: < 65536
        channel.ccm_encrypt(ecb, bytes(13), bytes(65536))
    assert channel.ccm_decrypt(ecb, bytes(13), bytes(15)) is None  # shorter than the tag


def _reference_frames(k_shared: bytes, info: bytes, direction: int, msgs: list[bytes]) -> list[bytes]:
    key = HKDF(hashes.SHA256(), 16, None, info).derive(k_shared)
    out = []
    for ctr, m in enumerate(msgs):
        nonce = bytes([direction]) + bytes(8) + ctr.to_bytes(4, "big")
        out.append(ctr.to_bytes(4, "big") + AESCCM(key, 16).encrypt(nonce, m, None))
    return out


def test_frames_match_an_independent_construction() -> None:
    for _ in range(20):
        k = os.urandom(32)
        msgs = [os.urandom(n) for n in (0, 1, 16, 17, 100, 1000, 65535)]
        host, dev = Channel(k, False), Channel(k, True)
        assert [host.seal(m) for m in msgs] == _reference_frames(k, channel.INFO_TO_DEVICE, 1, msgs)
        assert [dev.seal(m) for m in msgs] == _reference_frames(k, channel.INFO_TO_HOST, 2, msgs)
        assert [len(f) - len(m) for f, m in zip(_reference_frames(k, b"", 1, msgs), msgs, strict=True)] \
            == [channel.OVERHEAD] * len(msgs)


def test_round_trip_both_ways_interleaved() -> None:
    k = os.urandom(32)
    host, dev = Channel(k, False), Channel(k, True)
    for i in range(50):
        m = os.urandom(i * 7)
        assert dev.open(host.seal(m)) == m
        assert host.open(dev.seal(m[::-1])) == m[::-1]
    assert (host.sent, host.received, dev.sent, dev.received) == (50, 50, 50, 50)
    with pytest.raises(ValueError):
        host.seal(bytes(65536))


def test_every_tampered_byte_is_refused() -> None:
    k = os.urandom(32)
    frame = Channel(k, False).seal(b"provision_set wifi_password <secret>")
    for i in range(len(frame)):
        for bit in (0x01, 0x80):
            dev = Channel(k, True)
            bad = bytearray(frame)
            bad[i] ^= bit
            with pytest.raises(ChannelError):
                dev.open(bytes(bad))
            assert dev.dead
    for cut in (0, 1, 4, 19, len(frame) - 1):
        with pytest.raises(ChannelError):
            Channel(k, True).open(frame[:cut])
    with pytest.raises(ChannelError):
        Channel(k, True).open(frame + b"\x00")
    assert Channel(k, True).open(frame) == b"provision_set wifi_password <secret>"


def test_replay_reorder_reflection_and_dead_channel() -> None:
    k = os.urandom(32)
    host, dev = Channel(k, False), Channel(k, True)
    f0, f1, f2 = host.seal(b"a"), host.seal(b"b"), host.seal(b"c")
    assert dev.open(f0) == b"a"
    with pytest.raises(ChannelError, match="expected 1"):
        dev.open(f0)  # replay
    assert dev.dead
    with pytest.raises(ChannelError, match="closed"):
        dev.open(f1)  # the right frame, but the channel died
    with pytest.raises(ChannelError, match="closed"):
        dev.seal(b"x")
    dev = Channel(k, True)
    with pytest.raises(ChannelError, match="expected 0"):
        dev.open(f1)  # reordered (f0 held back)
    dev = Channel(k, True)
    dev.open(f0)
    with pytest.raises(ChannelError, match="expected 1"):
        dev.open(f2)  # f1 dropped
    # reflection: the host's own frame back to the host (other key, other direction)
    with pytest.raises(ChannelError, match="authentication failed"):
        Channel(k, False).open(f0)
    # a frame under another session's key
    with pytest.raises(ChannelError, match="authentication failed"):
        Channel(os.urandom(32), True).open(f0)
    # a frame whose counter field was rewritten to the expected one fails authentication
    dev = Channel(k, True)
    with pytest.raises(ChannelError, match="authentication failed"):
        dev.open(bytes(4) + f1[4:])


def test_default_ecb_on_cpython_is_cryptography() -> None:
    key = os.urandom(16)
    assert channel.default_ecb(key)(bytes(32)) == channel.ecb_cryptography(key)(bytes(32))
