# ssproto.spake2p (SPAKE2+, RFC 9383) under the interpreter that runs it: the Appendix C
# vectors of P256-SHA256-HKDF-SHA256-HMAC-SHA256 (tests/data, the RFC's text), the M and N
# comb tables, wrong secrets, invalid shares, the verifier record.  Runtime-neutral:
# tests/test_firmware_units.py runs it under MicroPython and CPython.  PBKDF2, cryptography
# cross-checks and a host Prover against a MicroPython Verifier are in tests/test_spake2p.py.
import hashlib

from mpyunit import eq, raises, run, test
from rfc9383 import vectors

from ssproto import p256, spake2p
from ssproto.spake2p import PakeError, Prover, Verifier, VerifierKey

V = vectors("tests/data/rfc9383-appendix-c-vectors.txt")[b"SPAKE2+-P256-SHA256-HKDF-SHA256-HMAC-SHA256 Test Vectors"]
IDS = (V["Context"], V["idProver"], V["idVerifier"])


def i(b):
    return int.from_bytes(b, "big")


W0, W1, X, Y = i(V["w0"]), i(V["w1"]), i(V["x"]), i(V["y"])
SALT = bytes(range(16))
ADDR = b"\xaa\xbb\xcc\x00\x11\x22"


@test
def test_vector_messages():
    p = Prover(W0, W1, IDS[0], IDS[1], IDS[2], x=X)
    eq(p.share, V["shareP"], "shareP")
    v = Verifier(VerifierKey(W0, V["L"]), None, IDS[0], IDS[1], IDS[2], y=Y)
    r = v.respond(p.share)
    eq(r, V["shareV"] + V["HMAC(K_confirmV, shareP)"], "shareV || confirmV")
    cp = p.finish(r)
    eq(cp, V["HMAC(K_confirmP, shareV)"], "confirmP")
    eq(p.key, V["K_shared"], "prover K_shared")
    eq(v.finish(cp), V["K_shared"], "verifier K_shared")


@test
def test_vector_intermediates():
    eq(p256.encode_point(*p256.mul_g(W1)), V["L"], "L = w1*G")
    eq(spake2p.prover_share(W0, X), V["shareP"], "shareP")
    sv, z, vv = spake2p.verifier_points(VerifierKey(W0, V["L"]), Y, V["shareP"])
    eq((sv, z, vv), (V["shareV"], V["Z"], V["V"]), "verifier Y, Z, V")
    eq(spake2p.prover_points(W0, W1, X, V["shareV"]), (V["Z"], V["V"]), "prover Z, V")
    tt = spake2p.transcript(IDS[0], IDS[1], IDS[2], V["shareP"], V["shareV"], V["Z"], V["V"], W0)
    eq(tt, V["TT"], "TT")
    eq(spake2p.key_schedule(tt), (V["K_main"], V["K_confirmP"], V["K_confirmV"], V["K_shared"]), "keys")


@test
def test_m_n_and_their_tables():
    M = p256.encode_point(spake2p.MX, spake2p.MY)
    N = p256.encode_point(spake2p.NX, spake2p.NY)
    # as in the vector's TT (after the context and identities: 8+56, 8+6, 8+6 bytes)
    off = 8 + len(IDS[0]) + 8 + len(IDS[1]) + 8 + len(IDS[2])
    eq(V["TT"][off:off + 8 + 65], b"\x41" + bytes(7) + M, "M in TT")
    eq(V["TT"][off + 73:off + 73 + 8 + 65], b"\x41" + bytes(7) + N, "N in TT")
    # RFC 9382 section 6, compressed: M = 02 886e2f97..., N = 03 d8bbd6c6...
    eq((spake2p.MY & 1, spake2p.MX >> 224), (0, 0x886E2F97), "M compressed")
    eq((spake2p.NY & 1, spake2p.NX >> 224), (1, 0xD8BBD6C6), "N compressed")
    eq(spake2p._M_TABLE, bytes(p256.comb_table(4, 64, (spake2p.MX, spake2p.MY))), "M table")
    eq(spake2p._N_TABLE, bytes(p256.comb_table(4, 64, (spake2p.NX, spake2p.NY))), "N table")
    for k in (1, 2, W0, p256.N - 1, (1 << 256) - 1 - (1 << 255)):
        eq(p256._affine(*spake2p._mul_m(k)), p256.mul(k, (spake2p.MX, spake2p.MY)), "k*M")
        eq(p256._affine(*spake2p._mul_n(k)), p256.mul(k, (spake2p.NX, spake2p.NY)), "k*N")


def _record(w0, w1):
    return w0, p256.encode_point(*p256.mul_g(w1))


@test
def test_verifier_from_w0_and_L_caches_its_key():
    spake2p.forget()
    w0, w1 = p256.generate_private_key(), p256.generate_private_key()
    L = _record(w0, w1)[1]
    for _ in range(2):
        p = Prover(w0, w1, b"ctx")
        v = Verifier(w0, L, b"ctx")
        eq(v.finish(p.finish(v.respond(p.share))), p.key, "key")
    k = spake2p._KEY
    eq((k.w0, k.L), (w0, L), "cached")
    v = Verifier(w0, L, b"ctx")
    assert v._vk is k  # the same record: the same key, not recomputed
    w0b = w0 + 1
    v = Verifier(w0b, L, b"ctx")
    eq(spake2p._KEY.w0, w0b, "another record replaces it")
    p = Prover(w0, w1, b"ctx")
    raises(PakeError, p.finish, v.respond(p.share))
    spake2p.forget()
    eq(spake2p._KEY, None, "forgotten")
    raises(ValueError, Verifier, w0, bytes(65), b"ctx")


@test
def test_random_exchange_agrees():
    w0, w1 = p256.generate_private_key(), p256.generate_private_key()
    ctx = spake2p.context("SafeSignal-1A2B", ADDR, SALT, spake2p.ITERATIONS)
    p = Prover(w0, w1, ctx)
    v = Verifier(VerifierKey(*_record(w0, w1)), None, ctx)
    key = v.finish(p.finish(v.respond(p.share)))
    eq(len(key), 32, "key length")
    eq(key, p.key, "same key")


def _wrong_prover_confirm(w0, w1, ctx, response, share_p, x):
    # what a Prover holding other secrets sends (the real one stops before; an attacker need not)
    share_v = response[:65]
    z, vv = spake2p.prover_points(w0, w1, x, share_v)
    kcp = spake2p.key_schedule(spake2p.transcript(ctx, b"", b"", share_p, share_v, z, vv, w0))[1]
    return p256.hmac_sha256(kcp, share_v)


@test
def test_wrong_secrets_fail_on_both_sides():
    w0, w1 = p256.generate_private_key(), p256.generate_private_key()
    ctx = spake2p.context("SafeSignal-1A2B", ADDR, SALT, spake2p.ITERATIONS)
    L = _record(w0, w1)[1]
    for bw0, bw1 in ((w0 + 1, w1), (w0, w1 + 1), (w0 + 1, w1 + 1)):  # wrong w0, wrong w1 only, both
        x = p256.generate_private_key()
        p = Prover(bw0, bw1, ctx, x=x)
        v = Verifier(VerifierKey(w0, L), None, ctx)
        r = v.respond(p.share)
        e = raises(PakeError, p.finish, r)
        assert "device confirmation failed" in str(e)
        eq(p.key, None, "no key")
        e = raises(PakeError, v.finish, _wrong_prover_confirm(bw0, bw1, ctx, r, p.share, x))
        assert "host confirmation failed" in str(e)
        raises(PakeError, v.finish, b"\x00" * 32)  # and the verifier is spent


@test
def test_context_mismatch_fails():
    w0, w1 = p256.generate_private_key(), p256.generate_private_key()
    a = spake2p.context("SafeSignal-1A2B", ADDR, SALT, spake2p.ITERATIONS)
    for b in (spake2p.context("SafeSignal-1A2C", ADDR, SALT, spake2p.ITERATIONS),
              spake2p.context("SafeSignal-1A2B", ADDR[:5] + b"\x23", SALT, spake2p.ITERATIONS),
              spake2p.context("SafeSignal-1A2B", ADDR, SALT, spake2p.ITERATIONS + 1),
              spake2p.context("SafeSignal-1A2B", ADDR, SALT, spake2p.ITERATIONS, b"v2")):
        assert a != b
        p = Prover(w0, w1, b)
        v = Verifier(VerifierKey(*_record(w0, w1)), None, a)
        raises(PakeError, p.finish, v.respond(p.share))


def _bad_points():
    g = p256.encode_point(p256.GX, p256.GY)
    off = bytearray(g)
    off[64] ^= 1  # not on the curve
    big = b"\x04" + p256.P.to_bytes(32, "big") + g[33:]  # x >= p
    return [b"", b"\x00", g[:64], g + b"\x00", b"\x02" + g[1:33], b"\x03" + g[1:], bytes(off), big, bytes(65),
            b"\x04" + bytes(64)]


@test
def test_invalid_shares_refused():
    w0, w1 = p256.generate_private_key(), p256.generate_private_key()
    L = _record(w0, w1)[1]
    for bad in _bad_points():
        e = raises(PakeError, Verifier(VerifierKey(w0, L), None, b"c").respond, bad)
        assert "invalid share" in str(e)
        raises(PakeError, Prover(w0, w1, b"c").finish, bad[:65] + bytes(97 - len(bad[:65])))
    # X = w0*M makes X - w0*M the point at infinity: refused, not computed with
    wm = p256.encode_point(*p256.mul(w0, (spake2p.MX, spake2p.MY)))
    raises(PakeError, Verifier(VerifierKey(w0, L), None, b"c").respond, wm)
    wn = p256.encode_point(*p256.mul(w0, (spake2p.NX, spake2p.NY)))
    raises(PakeError, Prover(w0, w1, b"c").finish, wn + bytes(32))
    raises(PakeError, Prover(w0, w1, b"c").finish, bytes(96))  # wrong length


@test
def test_one_exchange_per_object():
    w0, w1 = p256.generate_private_key(), p256.generate_private_key()
    L = _record(w0, w1)[1]
    p = Prover(w0, w1, b"c")
    v = Verifier(VerifierKey(w0, L), None, b"c")
    raises(PakeError, v.finish, bytes(32))
    r = v.respond(p.share)
    raises(PakeError, v.respond, p.share)
    cp = p.finish(r)
    raises(PakeError, p.finish, r)
    v.finish(cp)
    raises(PakeError, v.finish, cp)


@test
def test_ct_eq_and_hkdf():
    assert spake2p.ct_eq(b"", b"")
    assert spake2p.ct_eq(b"abc", b"abc")
    assert not spake2p.ct_eq(b"abc", b"abd")
    assert not spake2p.ct_eq(b"abc", b"ab")
    assert not spake2p.ct_eq(b"\x80bc", b"abc")
    # RFC 5869 appendix A.1 (SHA-256)
    okm = spake2p.hkdf(bytes([0x0B] * 22), bytes(range(0xF0, 0xFA)), 42, bytes(range(13)))
    eq(okm.hex(), "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865", "A.1")


@test
def test_record_and_context():
    w0, w1 = p256.generate_private_key(), p256.generate_private_key()
    rec = w0.to_bytes(32, "big") + _record(w0, w1)[1] + SALT + spake2p.ITERATIONS.to_bytes(4, "big")
    eq(len(rec), spake2p.RECORD_LEN, "record length")
    eq(spake2p.parse_record(rec), (w0, _record(w0, w1)[1], SALT, spake2p.ITERATIONS), "parsed")
    vk, salt, it = spake2p.verifier_key(rec)
    eq((vk.w0, vk.L, salt, it), (w0, _record(w0, w1)[1], SALT, spake2p.ITERATIONS), "verifier key")
    eq(vk.ltab, bytes(p256.comb_table(4, 64, p256.mul_g(w1))), "L table")
    eq(vk.wm, p256.mul(w0, (spake2p.MX, spake2p.MY)), "w0*M")
    eq(vk.wn, p256.mul(w0, (spake2p.NX, spake2p.NY)), "w0*N")
    raises(ValueError, VerifierKey, 0, _record(w0, w1)[1])
    raises(ValueError, VerifierKey, w0, bytes(65))
    raises(ValueError, spake2p.parse_record, rec[:-1])
    raises(ValueError, spake2p.parse_record, bytes(32) + rec[32:])  # w0 = 0
    raises(ValueError, spake2p.parse_record, rec[:33] + bytes(64) + rec[97:])  # L not on the curve
    raises(ValueError, spake2p.parse_record, rec[:113] + (1000).to_bytes(4, "big"))  # too few iterations
    ctx = spake2p.context(b"SafeSignal-1A2B", ADDR, SALT, 600000, b"v1")
    eq(ctx, spake2p.CONTEXT_TAG + b"\x0f" + bytes(7) + b"SafeSignal-1A2B" + b"\x06" + bytes(7) + ADDR
       + b"\x10" + bytes(7) + SALT + b"\x04" + bytes(7) + b"\x00\x09\x27\xc0" + b"\x02" + bytes(7) + b"v1", "context")
    raises(ValueError, spake2p.context, "n", ADDR[:5], SALT, 600000)
    raises(ValueError, spake2p.context, "n", ADDR, SALT[:15], 600000)
    raises(ValueError, spake2p.context, "n", ADDR, SALT, spake2p.ITER_MAX + 1)


@test
def test_pin_derivation_host_only():
    for bad in ("12345", "1234567", "12345a", "١٢٣٤٥٦", ""):
        raises(ValueError, spake2p.check_pin, bad)
    eq(spake2p.check_pin("012345"), b"012345", "pin")
    if not hasattr(hashlib, "pbkdf2_hmac"):  # MicroPython: the device never derives w0, w1
        raises(ValueError, spake2p.derive_w, "123456", SALT, spake2p.ITER_MIN)
        return
    rec = spake2p.make_record("123456", SALT, spake2p.ITER_MIN)
    w0, L, salt, it = spake2p.parse_record(rec)
    ctx = spake2p.context("n", ADDR, salt, it)
    w0p, w1p = spake2p.derive_w("123456", salt, it)
    eq(w0p, w0, "w0")
    p = Prover(w0p, w1p, ctx)
    v = Verifier(VerifierKey(w0, L), None, ctx)
    v.finish(p.finish(v.respond(p.share)))


run()
