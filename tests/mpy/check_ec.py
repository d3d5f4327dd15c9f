# ss_ec (P-256) and ss_der (keys, CSR, certificate parser) under the interpreter that runs them.
# Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython and under CPython.
# The interoperability with `cryptography` and the large fuzz runs are in tests/test_ec.py.
import hashlib

from mpyunit import eq, raises, run, test

import ss_der
import ss_ec

# RFC 6979 appendix A.2.5: P-256 key pair, SHA-256 signatures of "sample" and "test".
X = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
UX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
UY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
VECTORS = (
    (b"sample",
     0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60,
     0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
     0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8),
    (b"test",
     0xD16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0,
     0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
     0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083),
    # C2SP CCTV rfc6979/README.md: the first nonce candidate is >= n and is rejected
    (b"wv[vnX",
     0x2AE40DF9D9DAB61D688DE3DCB9867A98ECC70DD4D6C0F6C228B6E4E0B18B29BC,
     0xEFD9073B652E76DA1B5A019C0E4A2E3FA529B035A6ABB91EF67F0ED7A1F21234,
     0x3DB4706C9D9F4A4FE13BB5E08EF0FAB53A57DBAB2061C83A35FA411C68D2BA33),
)
# 2G and (n-1)G, from the P-256 point multiplication list at point-at-infinity.org/ecc/nisttv
G2 = (0x7CF27B188D034F7E8A52380304B51AC3C08969E277F21B35A60B48FC47669978,
      0x07775510DB8ED040293D9AC69F7430DBBA7DADE63CE982299E04B79D227873D1)
GN1 = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
       0xB01CBD1C01E58065711814B583F061E9D431CCA994CEA1313449BF97C840AE0A)

# Test data made once on the host with `cryptography` (tests/test_ec.py checks the same code
# against it): the SEC 1 key and the CSR (CN=esp32-check) for the RFC 6979 key (both are
# deterministic), and a certificate for that key issued by "Acme Tenant CA" (CA_PUB), valid
# 2025-01-02T03:04:05Z (UTCTime) to 2060-06-07T08:09:10Z (GeneralizedTime).
KEY_DER = bytes.fromhex(
    "30770201010420c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721a00a06082a8648ce3d0301"
    "07a1440342000460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb67903fe1008b8bc99a41ae9"
    "e95628bc64f2f1b20c2d7e9f5177a3c294d4462299"
)
CSR_DER = bytes.fromhex(
    "3081d0307802010030163114301206035504030c0b65737033322d636865636b3059301306072a8648ce3d020106082a8648"
    "ce3d0301070342000460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb67903fe1008b8bc99a4"
    "1ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299a000300a06082a8648ce3d040302034800304502210089dea71914"
    "e56bdf113ad49248276c49f4da0dd34984461824b3e093b7498d58022003ccef04237f2f1eb6cae54bda464c5e5adf132e48"
    "03b0a7482cb8091ccf658f"
)
CERT_DER = bytes.fromhex(
    "308201683082010da00302010202144a3f00112233445566778899aabbccddeeff0011300a06082a8648ce3d040302302831"
    "0d300b060355040a0c0441636d653117301506035504030c0e41636d652054656e616e742043413020170d32353031303230"
    "33303430355a180f32303630303630373038303931305a30163114301206035504030c0b65737033322d636865636b305930"
    "1306072a8648ce3d020106082a8648ce3d0301070342000460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669"
    "622e60f29fb67903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299a3253023300c0603551d1301"
    "01ff0402300030130603551d25040c300a06082b06010505070302300a06082a8648ce3d0403020349003046022100d0a678"
    "667c654ba8d81070474f9d6c9f82fded3364b64d8836f923897bc9bb7b022100fbc881659c39654c041126ae45abea9fd96c"
    "8182f28257c02ddae0f58fcd11e7"
)
CA_PUB = bytes.fromhex(
    "0432186de93c770645df780706eea6434546bb639945e3267cb30473f6f20986426e0197fe3df8dabe2c89ce07dd9c5d23c0"
    "c54c129f9b705c0855c03137267b31"
)
ISSUER = bytes.fromhex(
    "3028310d300b060355040a0c0441636d653117301506035504030c0e41636d652054656e616e74204341")


@test
def test_rfc6979_vectors():
    eq(ss_ec.public_key(X), (UX, UY), "public key")
    for msg, k, r, s in VECTORS:
        dg = hashlib.sha256(msg).digest()
        eq(next(ss_ec.nonces(X, dg)), k, "nonce")
        eq(ss_ec.sign(X, dg), (r, s), "signature")
        assert ss_ec.verify((UX, UY), dg, r, s)
        assert ss_ec.verify(ss_ec.encode_point(UX, UY), dg, r, s)
        assert not ss_ec.verify((UX, UY), dg, s, r)


@test
def test_point_multiplication():
    eq(ss_ec.mul_g(2), G2, "2G comb")
    eq(ss_ec.mul(2, (ss_ec.GX, ss_ec.GY)), G2, "2G wnaf")
    eq(ss_ec.mul_g(ss_ec.N - 1), GN1, "(n-1)G")
    eq(ss_ec.mul_g(ss_ec.N), None, "nG")
    eq(ss_ec.mul(ss_ec.N - 1, (ss_ec.GX, ss_ec.GY)), GN1, "(n-1)G wnaf")
    k = 0x1234567890ABCDEF1234567890ABCDEF
    eq(ss_ec.mul(k, G2), ss_ec.mul_g(2 * k), "k(2G)")


@test
def test_comb_table():
    # the precomputed table in the module is what comb_table() computes, here too
    assert ss_ec._COMB_TABLE == ss_ec.comb_table()


@test
def test_inverse():
    for m in (ss_ec.P, ss_ec.N):
        for x in (1, 2, m - 1, 0xDEADBEEF):
            eq(ss_ec.inv_mod(x, m) * x % m, 1, "inverse")
    raises(ValueError, ss_ec.inv_mod, 0, ss_ec.P)


@test
def test_sign_verify_round_trip():
    d = ss_ec.generate_private_key()
    assert 0 < d < ss_ec.N
    pub = ss_ec.public_key(d)
    assert ss_ec.on_curve(pub[0], pub[1])
    eq(ss_ec.decode_point(ss_ec.encode_point(*pub)), pub, "point round trip")
    for i in range(3):
        dg = hashlib.sha256(b"msg %d" % i).digest()
        r, s = ss_ec.sign(d, dg)
        assert ss_ec.verify(pub, dg, r, s)
        eq(ss_ec.sig_from_der(ss_ec.sig_der(r, s)), (r, s), "sig DER")
        assert not ss_ec.verify(pub, dg, r, (s + 1) % ss_ec.N)
        assert not ss_ec.verify(pub, hashlib.sha256(b"other").digest(), r, s)


@test
def test_ecdh_agrees():
    a = ss_ec.generate_private_key()
    b = ss_ec.generate_private_key()
    pa = ss_ec.public_key(a)
    pb = ss_ec.public_key(b)
    eq(ss_ec.ecdh(a, pb), ss_ec.ecdh(b, ss_ec.encode_point(*pa)), "shared secret")


@test
def test_hmac_sha256_rfc4231_case_2():
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
    eq(ss_ec.hmac_sha256(b"Jefe", b"what do ya want for nothing?"), bytes.fromhex(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"), "HMAC")
    # RFC 4231 test case 6: a 131-byte key (hashed first)
    eq(ss_ec.hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First"), bytes.fromhex(
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"), "HMAC long key")


@test
def test_bad_points_rejected():
    enc = ss_ec.encode_point(UX, UY)
    for bad in (enc[:-1], b"\x02" + enc[1:33], enc[:-1] + bytes([enc[-1] ^ 1]), b"\x04" + bytes(64)):
        raises(ValueError, ss_ec.decode_point, bad)
    assert not ss_ec.verify(enc[:-1] + bytes([enc[-1] ^ 1]), bytes(32), 1, 1)


@test
def test_private_key_der():
    eq(ss_der.private_key_der(X, (UX, UY)), KEY_DER, "SEC1 DER")
    eq(ss_der.private_key_der(X, ss_ec.encode_point(UX, UY)), KEY_DER, "SEC1 DER from bytes")
    raises(ValueError, ss_der.private_key_der, 0, (UX, UY))


def _csr_parts(der):
    # (certificationRequestInfo, (r, s)) of a CSR, with the parser's building blocks
    s, e = ss_der._get(der, 0, len(der), 0x30, "CSR")
    eq(e, len(der), "CSR length")
    i_s, i_e = ss_der._get(der, s, e, 0x30, "info")
    alg, _, p = ss_der._alg(der, i_e, e)
    eq(alg, ss_der.ECDSA_SHA256, "CSR signature algorithm")
    b_s, b_e = ss_der._bits(der, p, e, "signature")
    eq(b_e, e, "CSR end")
    return der[s:i_e], ss_ec.sig_from_der(der[b_s:b_e])


@test
def test_csr_builds_and_self_verifies():
    der = ss_der.csr_der(X, (UX, UY), "esp32-check")
    eq(der, CSR_DER, "CSR bytes (deterministic signature)")
    info, (r, s) = _csr_parts(der)
    assert ss_ec.verify((UX, UY), hashlib.sha256(info).digest(), r, s)
    # a fresh key: the CSR's signature verifies with its public key, its subject is the CN
    d = ss_ec.generate_private_key()
    pub = ss_ec.public_key(d)
    cn = "btn-" + "x" * 60
    der = ss_der.csr_der(d, ss_ec.encode_point(*pub), cn)
    info, (r, s) = _csr_parts(der)
    assert ss_ec.verify(pub, hashlib.sha256(info).digest(), r, s)
    assert ss_der.name_der(cn) in info and ss_der.spki_der(pub) in info
    eq(ss_der.name_cn(ss_der.name_der(cn)), cn, "CN")
    raises(ValueError, ss_der.csr_der, d, pub, "")
    raises(ValueError, ss_der.csr_der, d, pub, "y" * 65)


@test
def test_cert_info():
    info = ss_der.cert_info(CERT_DER)
    eq(info["cn"], "esp32-check", "cn")
    eq(info["issuer"], ISSUER, "issuer")
    eq(ss_der.name_cn(info["issuer"]), "Acme Tenant CA", "issuer CN")
    eq(info["subject"], ss_der.name_der("esp32-check"), "subject")
    eq(info["pub"], ss_ec.encode_point(UX, UY), "pub")
    eq(info["not_before"], "2025-01-02T03:04:05Z", "not_before (UTCTime)")
    eq(info["not_after"], "2060-06-07T08:09:10Z", "not_after (GeneralizedTime)")
    eq(info["serial"], "4a3f00112233445566778899aabbccddeeff0011", "serial")
    eq(info["sig_alg"], "1.2.840.10045.4.3.2", "sig_alg")
    eq(hashlib.sha256(info["tbs"]).digest(), bytes.fromhex(
        "7d9b845b821eabc3ce4eb1c5af0a885218b411ef76945571f096b23b22c4bbff"), "tbs")
    assert ss_der.cert_signed_by(info, CA_PUB)
    assert not ss_der.cert_signed_by(info, ss_ec.encode_point(UX, UY))
    i = CERT_DER.find(b"esp32-check")
    forged = CERT_DER[:i] + b"esp32-chEck" + CERT_DER[i + 11:]
    f_info = ss_der.cert_info(forged)
    eq(f_info["cn"], "esp32-chEck", "forged cn")
    assert not ss_der.cert_signed_by(f_info, CA_PUB)


@test
def test_cert_info_malformed():
    body = CERT_DER[4:]
    cases = (
        b"", b"\x30", CERT_DER[:-1], CERT_DER + b"\x00",
        b"\x30\x80" + body + b"\x00\x00",  # indefinite length
        b"\x30\x84\x00\x00\x01\x68" + body,  # 4-byte length
        b"\x30\x82\x00\x10" + bytes(16),  # non-minimal
        b"\x30\x82\xff\xff" + body,  # longer than the buffer
        b"\x3f\x01\x00",  # high tag number
        b"\x31" + CERT_DER[1:],  # wrong tag
    )
    for c in cases:
        raises(ValueError, ss_der.cert_info, c)


@test
def test_cert_info_mutations_raise_only_value_error():
    # A small deterministic fuzz (the large one is in tests/test_ec.py): every single-byte
    # change and every truncation of the certificate parses or raises ValueError.
    seed = 12345
    parsed = 0
    for i in range(len(CERT_DER)):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        for v in (seed & 0xFF, CERT_DER[i] ^ 0x80, 0x80, 0x84):
            b = CERT_DER[:i] + bytes([v]) + CERT_DER[i + 1:]
            try:
                ss_der.cert_info(b)
                parsed += 1
            except ValueError:
                pass
        raises(ValueError, ss_der.cert_info, CERT_DER[:i])
    assert parsed > 0  # some changes (in names, dates, signature bytes) still parse


@test
def test_wnaf_digits():
    # ssproto.p256._wnaf: one byte per digit (the digit mod 32), least significant first;
    # the digits give k back, each is 0 or odd with |d| < 16, and a non-zero digit is
    # followed by at least 4 zeros (width-5 NAF).  At most 257 bytes for k < 2^256.
    big = ss_ec.N * (1 << 40) + 12345  # over 256 bits: the buffer grows
    for k in (0, 1, 31, 0x1F0F, ss_ec.N - 1, (1 << 256) - 1, X, big):
        digits = ss_ec._wnaf(k)
        assert isinstance(digits, bytearray)
        if k < 1 << 256:
            eq(len(digits), 257, "digits for k < 2^256")
        total = 0
        last = -5
        for i in range(len(digits)):
            d = digits[i]
            if d:
                assert d & 1 and d != 16, "digit byte %d" % d
                assert i - last >= 5, "NAF spacing"
                last = i
                if d > 16:
                    d -= 32
            total += d << i
        eq(total, k, "digits give k back")
    # the multiplication by a scalar over 256 bits (k + N*2^40 is k times a point of order N)
    g = (ss_ec.GX, ss_ec.GY)
    eq(ss_ec._affine(*ss_ec._mul(big, g[0], g[1])), ss_ec.mul_g(12345), "k over 256 bits")


def _fragment(hole):
    # MicroPython: cut all free heap into holes of at most `hole` bytes (kept blocks of the
    # same size between them).  Returns what keeps them, to drop afterwards.
    import gc

    gc.collect()
    keep = [None] * (gc.mem_free() // hole + 64)
    n = 0
    try:
        while n < len(keep):
            keep[n] = bytearray(hole - 16)
            drop = bytearray(hole - 16)  # freed at the next allocation's collection
            n += 1
    except MemoryError:
        pass
    drop = None  # noqa: F841
    gc.collect()
    return keep


HOLE = 512


@test
def test_verify_and_ecdh_in_a_fragmented_heap():
    # The device checks the certificate's signature (ss_identity.check, at provision_complete)
    # in a heap that is often cut into small pieces: tens of kB free, no piece of 1 kB.  No
    # step of the verification (nor of ECDH, the same variable-base multiplication) may
    # need a large piece: the wNAF digits took one 4 kB block here (a list grown by
    # doubling; 2 kB on the chip) and failed so on the virtual device in 192 kB.
    # MicroPython only (CPython has no fixed heap): there the results alone are checked.
    import gc

    info = ss_der.cert_info(CERT_DER)
    want = ss_ec.ecdh(X, CA_PUB)
    keep = _fragment(HOLE) if hasattr(gc, "mem_free") else None
    try:
        ok = ss_der.cert_signed_by(info, CA_PUB)
        shared = ss_ec.ecdh(X, CA_PUB)
    finally:
        keep = None  # noqa: F841
        gc.collect()
    assert ok
    eq(shared, want, "ECDH in a fragmented heap")


run()
