# SPAKE2+ (RFC 9383), ciphersuite P256-SHA256-HKDF-SHA256-HMAC-SHA256, for the BLE PIN pairing.
# One copy for both sides: the device (MicroPython) is the Verifier, the host tool (CPython, as
# the installed package ssproto) is the Prover.  Curve arithmetic: ssproto/p256.py.
#
# The exchange (RFC 9383 section 3.3), after the device has sent its public parameters (name,
# address, salt, iterations: see context()):
#
#   host   -> device   shareP                    65 bytes (SEC 1 uncompressed point)
#   device -> host     shareV || confirmV        65 + 32 = 97 bytes
#   host   -> device   confirmP                  32 bytes
#
# then both hold K_shared (32 bytes), the key of ssproto.channel.  Each side checks the
# other's confirmation (HMAC-SHA256, compared in constant time) before it uses the key; the
# host checks the device's first, so a fake device learns nothing it can test a PIN against.
#
# The device stores only the verifier record (make_record, written at the factory):
#   w0 (32, big-endian) || L = w1*G (65) || salt (16) || iterations (4, big-endian) = 117 bytes
# The PIN never exists on the device.  The host derives w0 and w1 from the PIN (derive_w).
# From the record the device makes a VerifierKey once (w0*M, w0*N and a comb table for L,
# ~6-7 ms on the unix port; prepare() caches the last one: ss_ble calls it at the host's
# HELLO, so the first PIN attempt after a boot does not pay for it), then one Verifier per
# session (~7 ms: y*G, y*L by comb, y*(X - w0*M) by wNAF); bench/ble.py measures both.
#
# PBKDF2 iterations: ITERATIONS = 600000 (PBKDF2-HMAC-SHA256; OWASP's 2023 figure for it).
# The host pays it once per session: 3 output blocks of 600000 rounds, about 0.2-0.5 s of
# OpenSSL on a laptop (0.46 s measured on the 2-core CI machine under load).  A six-digit PIN
# has only 10^6 values, so no count makes a DUMPED verifier safe: w0 alone confirms a guess,
# at 2 blocks = 1.2 million HMAC rounds per PIN, i.e. ~3 PINs/s per CPU core (all 10^6 in
# about 3.6 core-days) or, at the ~9e9 rounds/s a current GPU does, the whole space in ~2-3
# minutes.  The count turns an instant lookup into that, and the per-device random salt stops
# one precomputed table from serving every device; the real protection of the record is that
# it stays in the device's (encrypted) flash.  A CAPTURED session gives nothing to test
# offline at all (SPAKE2+), and online guessing is limited by the device's lockout.
# Counts outside ITER_MIN..ITER_MAX are refused (a device cannot make the host spin for
# minutes, and no weak record is made).
#
# Not constant time in the curve arithmetic (see p256.py); the confirmations are compared in
# constant time (ct_eq: MicroPython has no hmac.compare_digest).

import hashlib

from ssproto import p256

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


ITERATIONS = 600000
ITER_MIN = 100000
ITER_MAX = 10000000
SALT_LEN = const(16)
SHARE_LEN = const(65)  # shareP, shareV
CONFIRM_LEN = const(32)  # confirmP, confirmV
KEY_LEN = const(32)  # K_shared
RESPONSE_LEN = const(97)  # shareV || confirmV
RECORD_LEN = const(117)
PIN_LEN = const(6)
CONTEXT_TAG = b"SafeSignal BLE v1 SPAKE2+-P256-SHA256-HKDF-SHA256-HMAC-SHA256"

# M and N for P-256: RFC 9383 section 4 takes them from RFC 9382 section 6 (compressed there:
# M = 02886e2f..., N = 03d8bbd6...); the uncompressed forms appear in the TT of every P-256
# vector in RFC 9383 Appendix C.  The tests check both and the tables below.
MX = 0x886E2F97ACE46E55BA9DD7242579F2993B64E16EF3DCAB95AFD497333D8FA12F
MY = 0x5FF355163E43CE224E0B0E65FF02AC8E5C7BE09419C785E0CA547D55A12E2D20
NX = 0xD8BBD6C639C62937B04D997F38C3770719C629D7014D49A24B4F98BAA1292B49
NY = 0x07D60AA6BFADE45008A636337F5168C64D9BD36034808CD564490B1E656EDBE7
# w0*M and w0*N with fixed-base combs (p256._comb) of width 4, 64 columns: 15 entries, 960
# bytes each (bytes constants: in flash when frozen).  Measured on the unix port (k*M,
# median): W=3 3.1 ms, 4 1.4, 5 1.2, 6 1.1 (4 KB), wNAF 3.6: W=4 is most of the gain for a
# quarter of W=6's table.
_MN_W = const(4)
_MN_D = const(64)
_MN_NB = const(32)


class PakeError(ValueError):
    """The exchange failed: a malformed or invalid message, or a confirmation that does not
    match (a wrong PIN, or an attacker).  The message never contains secret values."""


def ct_eq(a, b):
    """Constant-time comparison of two byte strings (time depends on the length only)."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


def _lp(b):
    # RFC 9383 section 3.4: len(x) is an 8-byte little-endian byte count
    return len(b).to_bytes(8, "little") + b


def hkdf(ikm, info, length, salt=b""):
    """HKDF-SHA256 (RFC 5869), length <= 8160.  An empty salt is HashLen zeros (the same HMAC
    key after padding)."""
    prk = p256.hmac_sha256(salt, ikm)
    out = b""
    t = b""
    i = 1
    while len(out) < length:
        t = p256.hmac_sha256(prk, t + info + bytes([i]))
        out += t
        i += 1
    return out[:length]


def check_pin(pin):
    """The PIN as bytes: exactly six ASCII digits (str or bytes).  ValueError otherwise (the
    message never contains the value)."""
    if isinstance(pin, str):
        pin = pin.encode()
    if len(pin) != PIN_LEN:
        raise ValueError("PIN must be 6 digits")
    for c in pin:
        if not 0x30 <= c <= 0x39:
            raise ValueError("PIN must be 6 digits")
    return bytes(pin)


def check_params(salt, iterations):
    if len(salt) != SALT_LEN:
        raise ValueError("salt must be %d bytes" % SALT_LEN)
    if not ITER_MIN <= iterations <= ITER_MAX:
        raise ValueError("PBKDF2 iterations must be %d-%d" % (ITER_MIN, ITER_MAX))


def context(name, address, salt, iterations, extra=b""):
    """The SPAKE2+ Context (RFC 9383 section 3.4), which both sides hash into the transcript:

        CONTEXT_TAG || lp(name) || lp(address) || lp(salt) || lp(iterations, 4 bytes BE) || lp(extra)

    lp(x) = len(x) as 8 bytes little-endian || x (the RFC's own length prefix).  name: the
    device's BLE name (str or bytes, UTF-8); address: its 6-byte BD_ADDR (most significant
    byte first, as printed); salt, iterations: from its verifier record; extra: any further
    parameters the two sides agree on before the exchange (protocol version, features; not
    the MTU, which the link may renegotiate).  Use the values THE DEVICE ANNOUNCES (the host's
    OS may show another address, e.g. macOS): a man in the middle that changes any of them
    makes both confirmations fail."""
    check_params(salt, iterations)
    if isinstance(name, str):
        name = name.encode()
    if len(address) != 6:
        raise ValueError("address must be 6 bytes")
    return (CONTEXT_TAG + _lp(name) + _lp(bytes(address)) + _lp(bytes(salt)) + _lp(iterations.to_bytes(4, "big"))
            + _lp(extra))


def derive_w(pin, salt, iterations, id_prover=b"", id_verifier=b""):
    """(w0, w1) from the PIN, RFC 9383 section 3.2: w0s || w1s = PBKDF2-HMAC-SHA256(
    lp(pw) || lp(idProver) || lp(idVerifier), salt, iterations) of 2 * (32 + 8) bytes, each
    half reduced mod n.  Host only (needs hashlib.pbkdf2_hmac, which MicroPython lacks)."""
    pw = check_pin(pin)
    check_params(salt, iterations)
    kdf = getattr(hashlib, "pbkdf2_hmac", None)
    if kdf is None:
        raise ValueError("PBKDF2 is not available here (the device never derives w0, w1)")
    out = kdf("sha256", _lp(pw) + _lp(id_prover) + _lp(id_verifier), bytes(salt), iterations, 80)
    w0 = int.from_bytes(out[:40], "big") % p256.N
    w1 = int.from_bytes(out[40:], "big") % p256.N
    if not w0 or not w1:  # probability 2^-255
        raise ValueError("degenerate PIN derivation")
    return w0, w1


def make_record(pin, salt, iterations=ITERATIONS, id_prover=b"", id_verifier=b""):
    """The device's verifier record (RECORD_LEN bytes) for a PIN: w0 || L || salt ||
    iterations.  Host only (the factory step); salt: SALT_LEN random bytes per device."""
    w0, w1 = derive_w(pin, salt, iterations, id_prover, id_verifier)
    return (w0.to_bytes(32, "big") + p256.encode_point(*p256.mul_g(w1)) + bytes(salt)
            + iterations.to_bytes(4, "big"))


def parse_record(rec):
    """(w0, L, salt, iterations) from a verifier record; L is the 65-byte point.  ValueError if
    it is malformed (wrong length, w0 out of range, L not on the curve, bad parameters)."""
    if len(rec) != RECORD_LEN:
        raise ValueError("verifier record must be %d bytes" % RECORD_LEN)
    w0 = int.from_bytes(rec[:32], "big")
    if not 0 < w0 < p256.N:
        raise ValueError("verifier record: w0 out of range")
    L = bytes(rec[32:97])
    p256.decode_point(L)
    salt = bytes(rec[97:113])
    iterations = int.from_bytes(rec[113:117], "big")
    check_params(salt, iterations)
    return w0, L, salt, iterations


def _mul_m(k):
    return p256._comb(k, _M_TABLE, _MN_W, _MN_D, _MN_NB)


def _mul_n(k):
    return p256._comb(k, _N_TABLE, _MN_W, _MN_D, _MN_NB)


def _point(b):
    # a received share: 65 bytes, uncompressed, on the curve (so not the point at infinity,
    # which has no such encoding; P-256's cofactor is 1, so on the curve is in the group)
    try:
        return p256.decode_point(b)
    except (ValueError, TypeError):
        raise PakeError("invalid share (not a P-256 point)")


def _sub_affine(a, b):
    # affine a - Jacobian b, as an affine point (None: infinity)
    return p256._affine(*p256._add(a[0], a[1], 1, b[0], p256.P - b[1], b[2]))


def _enc(pt):
    return p256.encode_point(pt[0], pt[1])


def prover_share(w0, x):
    """shareP = x*G + w0*M, encoded."""
    g = p256._mul_g(x)
    m = _mul_m(w0)
    return _enc(p256._affine(*p256._add(g[0], g[1], g[2], m[0], m[1], m[2])))


class VerifierKey:
    """The device's fixed part, computed once per boot (or BLE window) from its record: w0,
    L, and what depends only on them: w0*M, w0*N (affine) and a comb table for L (960 bytes),
    so that a session costs one variable-base multiplication (Z) and three combs.
    VerifierKey(w0, L): L as 65 bytes or (x, y); ValueError if it is not on the curve."""

    def __init__(self, w0, L):
        if not 0 < w0 < p256.N:
            raise ValueError("w0 out of range")
        self.w0 = w0
        pt = p256.as_point(L)
        self.L = p256.encode_point(pt[0], pt[1])
        self.wm = p256._affine(*_mul_m(w0))
        self.wn = p256._affine(*_mul_n(w0))
        self.ltab = bytes(p256.comb_table(_MN_W, _MN_D, pt))


def verifier_key(rec):
    """(VerifierKey, salt, iterations) from a verifier record (see parse_record)."""
    w0, L, salt, iterations = parse_record(rec)
    return VerifierKey(w0, L), salt, iterations


def verifier_points(key, y, share_p):
    """The Verifier's work: (shareV, Z, V), encoded, for a VerifierKey, scalar y and the
    Prover's share: Y = y*G + w0*N, Z = y*(X - w0*M), V = y*L.  PakeError for an invalid
    share."""
    X = _point(share_p)
    g = p256._mul_g(y)
    wn = key.wn
    Y = p256._affine(*p256._madd(g[0], g[1], g[2], wn[0], wn[1]))
    wm = key.wm
    Xm = p256._affine(*p256._madd(X[0], X[1], 1, wm[0], p256.P - wm[1]))
    if Xm is None:
        raise PakeError("invalid share (X = w0*M)")
    Z = p256._affine(*p256._mul(y, Xm[0], Xm[1]))
    V = p256._affine(*p256._comb(y, key.ltab, _MN_W, _MN_D, _MN_NB))
    return _enc(Y), _enc(Z), _enc(V)


def prover_points(w0, w1, x, share_v):
    """The Prover's (Z, V), encoded: Y' = Y - w0*N, Z = x*Y', V = w1*Y' (cofactor 1)."""
    Y = _point(share_v)
    Yn = _sub_affine(Y, _mul_n(w0))
    if Yn is None:
        raise PakeError("invalid share (Y = w0*N)")
    Z = p256._affine(*p256._mul(x, Yn[0], Yn[1]))
    V = p256._affine(*p256._mul(w1, Yn[0], Yn[1]))
    return _enc(Z), _enc(V)


def transcript(ctx, id_prover, id_verifier, share_p, share_v, Z, V, w0):
    """TT, RFC 9383 section 3.3."""
    return b"".join([_lp(ctx), _lp(id_prover), _lp(id_verifier), _lp(_enc((MX, MY))), _lp(_enc((NX, NY))),
                     _lp(share_p), _lp(share_v), _lp(Z), _lp(V), _lp(w0.to_bytes(32, "big"))])


def key_schedule(tt):
    """(K_main, K_confirmP, K_confirmV, K_shared), RFC 9383 section 3.4."""
    k_main = hashlib.sha256(tt).digest()
    conf = hkdf(k_main, b"ConfirmationKeys", 64)
    return k_main, conf[:32], conf[32:], hkdf(k_main, b"SharedKey", 32)


class Prover:
    """The host's side.  p = Prover(w0, w1, ctx); send p.share; confirm_p = p.finish(response)
    (PakeError if the device's confirmation is wrong: a wrong PIN); send confirm_p; then p.key
    is K_shared.  x: the random scalar (tests only)."""

    def __init__(self, w0, w1, ctx, id_prover=b"", id_verifier=b"", x=None):
        self._w0 = w0
        self._w1 = w1
        self._ids = (ctx, id_prover, id_verifier)
        self._x = x or p256.generate_private_key()
        self.share = prover_share(w0, self._x)
        self.key = None

    def finish(self, response):
        if self._x is None:
            raise PakeError("exchange already finished")
        x = self._x
        self._x = None
        if len(response) != RESPONSE_LEN:
            raise PakeError("response must be %d bytes" % RESPONSE_LEN)
        share_v = bytes(response[:SHARE_LEN])
        Z, V = prover_points(self._w0, self._w1, x, share_v)
        ctx, idp, idv = self._ids
        _, kcp, kcv, ks = key_schedule(transcript(ctx, idp, idv, self.share, share_v, Z, V, self._w0))
        if not ct_eq(p256.hmac_sha256(kcv, self.share), response[SHARE_LEN:]):
            raise PakeError("device confirmation failed (wrong PIN, or not this device)")
        self.key = ks
        return p256.hmac_sha256(kcp, share_v)


_KEY = None  # the last VerifierKey made by prepare() (one device has one record)


def forget():
    """Drop the cached VerifierKey (when BLE is turned off: its ~1.9 kB go back to the heap)."""
    global _KEY
    _KEY = None


def prepare(w0, L):
    """The VerifierKey of (w0, L), made once and cached (module-level): about as long as one
    session's respond() (bench/ble.py: verifier_key).  The device calls it when a host says
    HELLO, right after its parameters went out, so the work overlaps the host's PBKDF2 instead
    of delaying the first answer; Verifier(w0, L, ...) calls it too (cached: no work)."""
    global _KEY
    if isinstance(w0, VerifierKey):
        return w0
    k = _KEY
    if k is None or k.w0 != w0 or k.L != p256.encode_point(*p256.as_point(L)):
        _KEY = None  # the old key's heap is free before the new one is made
        k = _KEY = VerifierKey(w0, L)
    return k


class Verifier:
    """The device's side, one per session: v = Verifier(w0, L, ctx) from the record's w0 and L
    (65 bytes), or Verifier(key, None, ctx) with a VerifierKey; response = v.respond(share_p)
    (PakeError for an invalid share); k_shared = v.finish(confirm_p) (PakeError if the host's
    confirmation is wrong: a wrong PIN).  One exchange per object.  The VerifierKey of the last
    (w0, L) is kept (module-level, see prepare) so that it is made once; forget() drops it.
    y: the random scalar (tests only)."""

    def __init__(self, w0, L, ctx, id_prover=b"", id_verifier=b"", y=None):
        self._vk = prepare(w0, L)
        self._ids = (ctx, id_prover, id_verifier)
        self._y = y
        self._expect = None
        self._key = None

    def respond(self, share_p):
        vk = self._vk
        if vk is None:
            raise PakeError("exchange already used")
        self._vk = None
        y = self._y or p256.generate_private_key()
        self._y = None
        share_p = bytes(share_p)
        share_v, Z, V = verifier_points(vk, y, share_p)
        ctx, idp, idv = self._ids
        _, kcp, kcv, ks = key_schedule(transcript(ctx, idp, idv, share_p, share_v, Z, V, vk.w0))
        self._expect = p256.hmac_sha256(kcp, share_v)
        self._key = ks
        return share_v + p256.hmac_sha256(kcv, share_p)

    def finish(self, confirm_p):
        expect = self._expect
        key = self._key
        self._expect = self._key = None
        if expect is None:
            raise PakeError("no exchange to confirm")
        if not ct_eq(expect, confirm_p):
            raise PakeError("host confirmation failed (wrong PIN)")
        return key


# The comb table for M, W = 4, D = 64 (generated by comb_table(4, 64, M); 15 entries of x || y).
_M_TABLE = (
    b"\x88\x6e\x2f\x97\xac\xe4\x6e\x55\xba\x9d\xd7\x24\x25\x79\xf2\x99\x3b\x64\xe1\x6e\xf3\xdc\xab\x95\xaf\xd4"
    b"\x97\x33\x3d\x8f\xa1\x2f\x5f\xf3\x55\x16\x3e\x43\xce\x22\x4e\x0b\x0e\x65\xff\x02\xac\x8e\x5c\x7b\xe0\x94"
    b"\x19\xc7\x85\xe0\xca\x54\x7d\x55\xa1\x2e\x2d\x20\x08\x4f\xed\x3b\xf0\x09\xb2\xe1\xad\x4f\xd8\xfc\xf8\x03"
    b"\x23\x00\x08\x8f\x00\x17\x55\xe8\x54\xbc\x2f\x96\x37\xab\xc5\xc0\x16\x38\xf5\x58\x8b\x20\x20\xae\x84\x48"
    b"\x9e\xf5\x22\xfa\xbf\xfd\xf2\xe0\xb1\x16\x61\x2f\x35\x27\x44\x08\x99\xab\x2f\x05\x1d\xe0\x15\x78\x29\xe3"
    b"\x0e\x61\x62\xde\x73\x6a\x31\x02\x38\x01\x64\x1e\xa8\xac\xd5\xb5\x6a\x62\x7a\x44\x0f\xda\x21\xfa\x5a\x4d"
    b"\x31\xf3\xca\x8d\x45\x77\xce\x20\xca\xef\x53\x75\xaf\x93\x02\xa0\x0b\xe4\x23\x95\x44\x3a\xb2\xf2\x09\xf6"
    b"\xc0\x32\xb4\x0b\xf4\x2b\xd2\x02\xb5\xa9\xc7\x5b\x96\xe8\xe0\x35\x98\x41\x57\x76\x1c\xd2\x0d\xb5\x48\x55"
    b"\x51\xdf\x39\x96\xac\x80\x74\xb1\x3b\xb0\xf9\xe6\xc3\x54\x4a\x3f\xa1\x03\x20\x9e\xf1\x64\x57\x66\xeb\x50"
    b"\x61\x48\xcd\x1d\xe4\x82\xfe\x96\x16\x94\xaf\x52\xc2\x4e\x2a\x61\x45\x8c\x7a\x3e\x18\x4b\x47\x40\x8d\x18"
    b"\x55\x5c\x4f\x3f\x46\x9c\x47\x3f\x6c\x57\x08\x77\xfb\x1e\xa3\xfb\xad\x69\x61\x33\x13\xd6\x65\xa8\xc7\x3a"
    b"\x81\x03\xff\xd1\xd8\x09\x7f\x7e\xa9\xd3\x65\x01\x8c\x8b\x13\x04\x5a\xd9\x42\x1e\x29\xe9\x57\x6a\xde\x2c"
    b"\x39\x7f\xa5\x1d\x23\x4c\x46\x8a\x90\xcd\x24\xb3\x92\x78\xcf\x65\xab\xf7\x85\x28\x76\x49\xa7\x64\xb6\x0a"
    b"\x5d\xc1\x6e\xfc\x02\x4d\xd5\xd3\x0f\xa3\x89\xd6\x72\xe9\xb2\x0f\x23\xd7\xee\xfd\x11\x40\x26\x35\x31\x51"
    b"\xde\x82\xf2\x07\x49\x64\x5c\x2b\xef\x73\xc4\x3c\xb3\x7c\xf6\x88\xcf\x95\x99\x78\x1b\x39\xfc\xf4\xfe\x30"
    b"\x40\x6e\x1e\x7b\xbf\x86\xe9\xf6\x8f\x32\xbf\x17\x4d\x02\x56\xf7\x68\xe5\xd3\x8f\x30\xef\x8a\xe9\x94\x06"
    b"\x8d\xc7\x60\xba\x4c\xbe\xa0\x36\x45\xb2\x3f\xa0\x82\x6f\xf9\x11\x18\x96\xb8\x46\xaf\x38\x0e\xa7\x67\x62"
    b"\x7d\x50\xdd\x89\xfc\x67\x73\x8f\xd8\x71\xa7\x64\x10\xdc\x75\x38\xd9\x8a\x70\xfe\x70\xd7\x4b\x9e\x7b\xd7"
    b"\x2c\xdf\xe2\xcc\xf1\xa0\x79\x31\xcd\x77\x6d\xeb\x70\x61\x49\xe2\x50\x73\xed\x6f\x6c\xce\x27\x50\xdd\xa1"
    b"\x5e\xc5\x25\x7b\xf0\xc1\x64\x3b\x73\xd4\xf3\x73\x0b\xb5\x0b\x32\xf2\x84\x79\x99\x6d\x03\x02\xeb\x26\xfb"
    b"\x18\x7f\x79\xc3\xc2\x9d\xbb\xc3\x78\xa2\x08\xc4\xb5\x3c\x39\x19\xce\x66\xa6\xc3\xeb\xee\x49\xda\x74\x47"
    b"\xd5\x61\x04\x00\xee\x70\x1a\xf0\x8c\x1d\xfd\x15\xfe\x8e\x0a\xe2\x0b\x03\xbe\xbc\x1f\xcc\x3f\x81\xd6\x7a"
    b"\xa9\x72\x13\xdb\x5e\x8b\xd5\x5e\xd9\x9c\xe0\x35\xb5\xf6\xd8\x36\x5d\x8a\x48\xfc\xed\xa3\x13\x55\xf1\x7d"
    b"\x00\x3e\x63\xfa\xc9\x2f\xad\xda\x2d\x96\x35\xfa\x2a\xe5\xa5\x5f\xf4\xbf\x4b\x5f\x09\x74\x2d\x3d\x33\xe8"
    b"\xc8\xb8\x2a\xa7\xa9\x5e\x44\xf6\x9e\x79\x1f\xcd\xfe\x98\x31\x0c\xdf\xe7\x06\x09\xbc\x62\xd9\x8e\x02\x11"
    b"\xb4\xc9\x3d\xc1\x4e\x9d\x22\x98\xdf\xcb\xca\xbb\x92\x09\x64\xa7\xd2\x4d\xb6\x0e\xf7\xd6\x90\xe3\x4f\x8c"
    b"\x26\xcb\xf4\x68\x19\xcd\xfa\x8c\x29\x82\xfd\x01\x99\x01\xc6\xfc\x25\xbb\xf4\x18\xe0\x47\x89\xba\x6f\x13"
    b"\x7a\xa7\xbe\x5d\x3f\x5a\xa4\xba\x10\x89\x2c\x33\x27\x86\x35\xac\xb8\x7a\xe9\x80\x89\x87\xb3\xb6\xc3\x49"
    b"\x74\xe2\x25\x42\xa3\x6a\x92\x33\xc5\x58\x0e\xaf\x40\x0b\x21\xe7\xf3\xc1\xb5\xea\x91\x7e\x33\x1a\xb9\xe5"
    b"\xec\xe1\x4b\x92\x13\xd6\x87\xfc\x8b\x48\x0c\x43\xf3\x98\x86\x2b\x55\xd3\x0c\xe5\x85\xb2\xa3\x08\xce\x64"
    b"\xd5\xa7\x94\x96\xf5\x98\x93\xfc\x46\xcd\x01\x93\x8c\x12\x40\x9e\x29\x7e\x71\x01\x4b\x8f\xb7\x30\xef\xbf"
    b"\x64\xb6\x00\x09\x90\xb9\xc4\x5c\xf2\x19\x9a\x23\xd3\x20\x6d\x79\x88\x96\x17\xa8\xd0\x02\x97\x35\x7b\x24"
    b"\x65\x0e\x0a\xee\x49\xe2\x67\x30\xe5\x8c\xf1\x3a\x3d\x11\x88\x3a\x94\x05\x0e\x80\x36\x2c\xd1\xd2\x3a\x7e"
    b"\xc9\xc4\x1b\xb1\x43\xf8\xe5\xa6\xb8\x7f\xf7\x62\x62\xc5\xc8\x77\x22\x0f\x7c\xe9\xf6\x10\xdf\x69\xc9\x44"
    b"\x1c\x6a\xcb\x19\x02\x64\x3c\xdb\xb2\x1b\x20\x9d\xa7\x9b\x1e\xfb\x48\x09\x6a\xf0\x6f\x4e\xfd\xb0\x1e\x56"
    b"\x14\x01\xd4\xd1\x58\xee\xd2\x10\x3b\xf6\x69\x67\x34\x57\xe7\x7b\xd7\x20\x37\xc2\x41\x58\x0c\x93\x09\xe9"
    b"\xf5\x5a\x28\x3f\xcc\xbe\x69\x72\xbf\x9b\x31\x77\x1c\xb4\xbe\xa3\x07\xdb\x3f\xdd\x5d\xe5\xbe\x45"
)
# The comb table for N, W = 4, D = 64 (generated by comb_table(4, 64, N); 15 entries of x || y).
_N_TABLE = (
    b"\xd8\xbb\xd6\xc6\x39\xc6\x29\x37\xb0\x4d\x99\x7f\x38\xc3\x77\x07\x19\xc6\x29\xd7\x01\x4d\x49\xa2\x4b\x4f"
    b"\x98\xba\xa1\x29\x2b\x49\x07\xd6\x0a\xa6\xbf\xad\xe4\x50\x08\xa6\x36\x33\x7f\x51\x68\xc6\x4d\x9b\xd3\x60"
    b"\x34\x80\x8c\xd5\x64\x49\x0b\x1e\x65\x6e\xdb\xe7\x06\xc2\x60\x95\xa7\x1c\xc3\xb8\x26\x0c\x3a\x2c\x07\x58"
    b"\x0d\x2d\xe2\xd7\x25\x72\x18\x86\x87\xbd\xa3\x69\x21\x42\x80\xf7\xd4\x91\x11\x32\x0d\x2e\xe3\x43\xe7\xc5"
    b"\xa1\x44\x53\x96\xdc\xf2\x54\x8a\xf9\xd8\x30\x4b\xb5\xc9\x52\x25\x46\x32\xa4\xd1\xaf\xb0\x5f\x9b\xe3\x3f"
    b"\xef\x87\xc9\x07\x96\x6e\x3d\xdb\x62\xe9\x14\xec\x8e\xdf\x32\x95\x20\x32\xda\x59\x04\x5c\x1f\x24\xe6\x85"
    b"\x3a\xdf\x24\x59\x29\xa2\xeb\x4e\xbf\x14\x25\xc9\x0d\xbb\x16\xf0\xee\x8a\x5a\x5c\xce\x3b\xe7\x37\xdb\xbe"
    b"\xb7\x72\xa5\x52\xf4\x0b\x15\x02\x3f\x0d\x55\x96\x86\x06\x86\xb9\x18\x2e\x2c\x16\x12\x85\x7d\xd8\x2e\x8e"
    b"\x38\x6c\x4c\x9e\xb7\x8d\x7d\x74\x85\x54\xe0\xa8\x96\x18\xdb\x28\x15\x72\x3d\x88\x53\x41\xa0\x6c\xc0\x5a"
    b"\x31\x7a\xff\xda\xe7\xe7\x12\xf5\x7c\xc3\x0c\x95\x40\x90\xba\x61\x75\x92\xb6\x71\x06\x0e\x62\xa9\x73\xd6"
    b"\xca\x1c\xf4\x33\x10\x9b\x99\x32\x56\x79\x02\xc9\x65\x71\x35\x6f\x78\x0c\x71\xce\xee\x43\x5c\x83\xf4\xa9"
    b"\x0c\x12\x3c\x34\x58\xfd\xb2\xc2\xa6\x69\x47\xb2\x57\xe7\xee\x52\x40\x19\x5b\x8b\xfe\xe2\xf6\x8c\xc3\x80"
    b"\xc9\x95\xe0\xd3\x95\xbb\x3b\x1a\x4b\x5e\xf1\x5d\x35\xcb\x14\xbd\x21\x4a\x1d\x84\x59\xab\x2a\xb5\xe4\xc0"
    b"\x35\x8d\xce\xa4\x1c\xec\x62\x05\x0e\xdc\x91\x11\x08\x3a\x06\xc4\x48\x72\xa8\xb6\xd2\x6c\xff\x30\x76\x21"
    b"\x2c\x6d\xff\xc2\xe9\x5d\x8c\x10\x77\xa2\x00\x15\x27\x2e\x08\x25\x51\x75\x45\xb4\x1f\x4b\x99\x09\x1c\x44"
    b"\x31\x13\xd4\xd7\x2e\xd0\x65\x34\x68\xfb\x24\xf2\x55\xf4\x3f\x80\xec\xca\x79\xfa\xf7\x22\x98\x36\xbb\x5c"
    b"\xf6\x13\x20\x0d\x9d\xde\x12\x81\xb5\xd4\xb6\x36\x70\x43\xf1\xd1\x4c\xb5\xf9\xe3\xaa\x47\xc0\xa3\xa8\x06"
    b"\xb5\xc1\xdc\x55\x3c\xab\x9f\x69\x33\xf9\xc2\x51\x46\xec\x57\x02\x8a\x59\xd6\xdd\xf0\x01\x9f\xbc\x72\x86"
    b"\xbc\xcf\xdd\xba\x23\x5b\xb5\xaf\x5a\x4d\x18\x5b\xce\x54\xf3\xde\xa7\x5d\xc6\xfc\x76\x81\x19\x95\xee\x7c"
    b"\x3f\x76\xb4\x0f\xc6\x66\x0c\xa7\x35\x22\x07\x73\xa7\x01\x07\xbb\xab\x00\x9a\x45\xb5\xda\xa3\x25\xa1\x61"
    b"\xab\x84\x15\x61\xeb\x98\x67\x8b\x2c\x01\x47\x36\xbf\xd1\xe3\xab\x8d\xc1\xa4\x53\x70\x76\x4e\xe6\xb8\x90"
    b"\xff\x9d\x27\xbc\x24\xc8\xc9\x21\x61\x64\xa7\x0b\xbf\x7a\xac\x25\x68\x57\x6c\xe1\xf4\x81\xd8\x7f\x53\x29"
    b"\x63\x7d\xe2\x05\x3e\x79\x7b\xeb\x07\x49\xb0\x9f\x13\xed\xc9\xcc\x61\x1a\xf4\x01\xe0\x5b\x04\xd7\xd6\xe9"
    b"\xc9\x38\xbc\x16\xee\x3d\xc6\xf4\x3c\x54\xc7\xbc\xb6\x70\xb4\x8a\x5a\x65\x24\xbe\xe8\x08\x50\x6d\xe7\x5a"
    b"\x97\xa4\xe1\xb4\xa4\xa2\x68\x0c\xb8\x34\x31\x7c\x30\xb9\xa0\x14\xcf\xcf\xc6\xaa\x04\x46\x52\x81\x5a\x43"
    b"\xa8\xcc\x17\x68\xd8\xb4\xdb\x9b\xbc\x8f\xca\xec\xf3\x06\x97\xfc\x33\xa9\x2a\x0e\x96\x3a\xac\x81\xc7\xeb"
    b"\xc0\xe4\xc3\x13\xeb\x9a\x26\x3b\x2d\xd4\x10\xc0\x74\xc9\x34\x76\xe0\x7a\x4f\x96\x04\x11\x8e\x46\xd2\x09"
    b"\x18\x45\x3a\x9a\x93\x8d\xa8\xa1\x3d\x42\x99\x35\xfd\x39\x50\xab\xcd\xcc\x8e\x02\x02\x1f\x44\xa0\xc1\xf0"
    b"\xc2\xd0\x1b\x55\x64\x6e\xdc\x0d\x4f\x66\x49\xec\xa0\xe6\xd1\x8f\x1d\x29\x11\x16\x76\xa5\xd5\x19\x38\x68"
    b"\x71\x9c\x1d\x53\x9f\x2d\x28\xa3\xbb\x38\x03\x4b\x12\x50\x23\x75\xd8\x5f\x55\x53\x30\xa8\x84\xfe\x06\xd6"
    b"\xad\xae\xce\x26\xef\xac\x62\xd2\x8b\x22\x4c\x22\x4f\x0d\x2d\xd0\xfe\x32\xd7\x26\x51\x24\x60\x01\x97\xa6"
    b"\x75\xaf\x8e\xfe\x8b\x65\x1f\xef\x38\x37\x61\x98\xad\x40\x77\xf1\x27\x7a\x2c\xc4\x73\xaf\xcf\x98\x33\x21"
    b"\xcc\x83\x52\x0f\x4f\x57\xd4\x21\x17\xd9\xf6\x2c\x53\xb8\x57\x9a\x19\xb6\x07\x66\x3a\xe6\x11\xa1\x4d\xa5"
    b"\x1f\xcf\x2f\x8a\xd1\xb5\x17\x76\x42\x3e\x18\x9d\xaa\x93\xda\x86\xe1\x51\x39\xe3\xbf\x6c\x3e\xe2\xa8\xbc"
    b"\xe7\xb0\x65\x63\x51\x34\x6d\x73\x3b\x74\x06\x10\x00\x6e\x94\x04\x16\xf2\x64\x16\x6c\xf3\x4e\x2e\x7b\x19"
    b"\x98\x99\xac\x3b\x9c\x7a\xe1\x47\xcd\x7a\x60\x09\x0c\x48\x37\x2d\x25\x06\xe9\x83\x95\xbe\x7d\xbf\xad\x97"
    b"\xb8\x3c\x42\x8a\xff\x5e\x64\x83\x3a\xfc\x99\x3b\x4b\xb6\x9c\x39\x28\x8d\x47\x6e\x95\x25\xee\x43"
)
