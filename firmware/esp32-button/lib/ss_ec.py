# P-256 keys, ECDSA with deterministic nonces (RFC 6979, SHA-256), verification, ECDH, for
# stock MicroPython.  The curve arithmetic itself (and point encoding, HMAC-SHA256) is in
# ssproto/p256.py, shared with the host tools; its names are re-exported here.
#
# Not constant time (see ssproto/p256.py).  Someone who can measure the device's timing or
# power closely while it signs may learn about the private key.  Side channels on the device
# are out of scope for SafeSignal (the key is used for one signature, on the CSR, during
# provisioning; TLS itself runs in mbedTLS); this note says so honestly.
#
# Randomness: see generate_private_key in ssproto/p256.py (draw keys with the WLAN interface active).


from ssproto.p256 import (  # noqa: F401  (re-exported: ss_der, ss_identity and the tests use them)
    _COMB_TABLE,
    GX,
    GY,
    B,
    N,
    P,
    _add,
    _affine,
    _batch_affine,
    _dbl,
    _madd,
    _mul,
    _mul_g,
    _wnaf,
    as_point,
    comb_table,
    decode_point,
    encode_point,
    generate_private_key,
    hmac_sha256,
    inv_mod,
    mul,
    mul_g,
    on_curve,
)

# ------------------------------------------------------------------------------------------
# Keys and encodings
# ------------------------------------------------------------------------------------------

def public_key(d):
    """The public point (x, y) of private key d."""
    if not 0 < d < N:
        raise ValueError("private key out of range")
    return _affine(*_mul_g(d))


def ecdh(d, pub):
    """Shared secret: the 32-byte x coordinate of d*pub (pub: (x, y) or 65 bytes)."""
    if not 0 < d < N:
        raise ValueError("private key out of range")
    x, y = as_point(pub)
    return _affine(*_mul(d, x, y))[0].to_bytes(32, "big")


# ------------------------------------------------------------------------------------------
# RFC 6979 nonces
# ------------------------------------------------------------------------------------------

def _bits2int(h):
    # RFC 6979 section 2.3.2 for qlen = 256: the leftmost 256 bits of h
    e = int.from_bytes(h, "big")
    if len(h) > 32:
        e >>= 8 * (len(h) - 32)
    return e


def nonces(d, digest):
    """RFC 6979 section 3.2 candidate nonces k for key d and a message digest (SHA-256 as
    the HMAC hash).  A generator: the next value is the retry after an unusable k."""
    x = d.to_bytes(32, "big")
    h1 = (_bits2int(digest) % N).to_bytes(32, "big")
    v = b"\x01" * 32
    k = b"\x00" * 32
    k = hmac_sha256(k, v + b"\x00" + x + h1)
    v = hmac_sha256(k, v)
    k = hmac_sha256(k, v + b"\x01" + x + h1)
    v = hmac_sha256(k, v)
    while True:
        v = hmac_sha256(k, v)
        t = int.from_bytes(v, "big")
        if 0 < t < N:
            yield t
        k = hmac_sha256(k, v + b"\x00")
        v = hmac_sha256(k, v)


# ------------------------------------------------------------------------------------------
# ECDSA (FIPS 186-4 section 6, SEC 1 section 4.1)
# ------------------------------------------------------------------------------------------

def sign(d, digest):
    """ECDSA signature (r, s) of a message digest (normally SHA-256, 32 bytes) with private
    key d; deterministic (RFC 6979).  s is not normalised to the low half."""
    if not 0 < d < N:
        raise ValueError("private key out of range")
    e = _bits2int(digest)
    for k in nonces(d, digest):
        r = _affine(*_mul_g(k))[0] % N
        if not r:
            continue
        s = inv_mod(k, N) * (e + r * d) % N
        if s:
            return r, s


def verify(pub, digest, r, s):
    """True if (r, s) is a valid signature of digest by pub ((x, y) or 65 bytes).  False for
    anything else, including a public key that is not on the curve."""
    if not (0 < r < N and 0 < s < N):
        return False
    try:
        x, y = as_point(pub)
    except ValueError:
        return False
    w = inv_mod(s, N)
    u1 = _bits2int(digest) * w % N
    u2 = r * w % N
    a = _mul_g(u1)
    b = _mul(u2, x, y)
    q = _affine(*_add(a[0], a[1], a[2], b[0], b[1], b[2]))
    return q is not None and q[0] % N == r


def _der_uint(v):
    b = v.to_bytes(33, "big")
    i = 0
    while i < 32 and b[i] == 0 and b[i + 1] < 0x80:
        i += 1
    return b"\x02" + bytes([33 - i]) + b[i:]


def sig_der(r, s):
    """DER Ecdsa-Sig-Value SEQUENCE { r INTEGER, s INTEGER } (RFC 5480 / RFC 3279)."""
    if not (0 < r < N and 0 < s < N):
        raise ValueError("signature out of range")
    body = _der_uint(r) + _der_uint(s)
    return b"\x30" + bytes([len(body)]) + body


def _der_uint_at(b, i):
    # strict DER INTEGER at b[i]: (value, next index); non-negative, minimal, <= 33 bytes
    if i + 2 > len(b) or b[i] != 2:
        raise ValueError("bad signature INTEGER")
    n = b[i + 1]
    i += 2
    if n == 0 or n > 33 or i + n > len(b):
        raise ValueError("bad signature INTEGER length")
    if b[i] & 0x80:
        raise ValueError("negative signature INTEGER")
    if n > 1 and b[i] == 0 and not b[i + 1] & 0x80:
        raise ValueError("non-minimal signature INTEGER")
    return int.from_bytes(b[i:i + n], "big"), i + n


def sig_from_der(b):
    """(r, s) from a DER Ecdsa-Sig-Value; ValueError if it is not strict DER.  Range is
    checked by verify()."""
    if not 2 <= len(b) < 130 or b[0] != 0x30 or b[1] != len(b) - 2:  # a P-256 signature is < 128 bytes
        raise ValueError("bad signature SEQUENCE")
    r, i = _der_uint_at(b, 2)
    s, i = _der_uint_at(b, i)
    if i != len(b):
        raise ValueError("trailing bytes in signature")
    return r, s
