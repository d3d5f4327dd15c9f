# The encrypted BLE channel after the SPAKE2+ exchange (ssproto/spake2p.py): AES-128-CCM
# (RFC 3610 / NIST SP 800-38C), one key per direction, a counter nonce per direction, replays
# and reordering refused.  One copy for both sides: the device (MicroPython, AES from
# cryptolib) and the host (CPython, AES from `cryptography`); the caller injects the AES-ECB
# block primitive, or default_ecb picks the one the interpreter has.
#
# Why CCM and not GCM: CCM needs only the block cipher's forward direction, two AES calls per
# 16 bytes, all in C (cryptolib); GCM's GHASH is a GF(2^128) multiplication per block that
# MicroPython has no primitive for, so it would be pure-Python big-int work.  CCM is also what
# BLE's own link layer uses.  AES-128: the 128-bit security level of P-256.
#
# Keys: HKDF-SHA256(K_shared, info) for each direction (INFO_TO_DEVICE, INFO_TO_HOST), 16 bytes.
#
# Frame (one message, before any BLE fragmentation):
#   counter (4 bytes, big-endian) || ciphertext (same length as the plaintext) || tag (16)
# so OVERHEAD = 20 bytes.  Counters start at 0 in each direction and go up by one per frame.
# Nonce (13 bytes, so CCM's length field is 2 bytes: MAX_PLAINTEXT = 65535):
#   direction (1: host->device, 2: device->host) || 8 zero bytes || counter (4, big-endian)
# The receiver accepts only the counter it expects next: a replayed, dropped or reordered
# frame is refused, and so is one whose tag does not verify.  After ANY refusal the channel is
# dead (every later seal/open raises ChannelError): the session must start over with a new
# exchange, so an attacker gets one try per SPAKE2+ run.

from ssproto.spake2p import ct_eq, hkdf

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


KEY_LEN = const(16)
NONCE_LEN = const(13)
TAG_LEN = const(16)
CTR_LEN = const(4)
OVERHEAD = const(20)  # CTR_LEN + TAG_LEN
MAX_PLAINTEXT = const(65535)
TO_DEVICE = const(1)
TO_HOST = const(2)
INFO_TO_DEVICE = b"SafeSignal BLE v1 channel host->device"
INFO_TO_HOST = b"SafeSignal BLE v1 channel device->host"


class ChannelError(ValueError):
    """A frame was refused (tampered, replayed, reordered, truncated) or the channel is dead."""


def ecb_cryptolib(key):
    """MicroPython: the AES-ECB encryptor of cryptolib (mode 1), as a function of bytes."""
    import cryptolib

    return cryptolib.aes(key, 1).encrypt


def ecb_cryptography(key):
    """CPython: AES-ECB from `cryptography`, as a function of bytes (a multiple of 16)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor().update


def default_ecb(key):
    try:
        import cryptolib  # noqa: F401
    except ImportError:
        return ecb_cryptography(key)
    return ecb_cryptolib(key)


def _xor(a, b, n):
    # the first n bytes of a XOR b (n > 0)
    return (int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")).to_bytes(n, "big")


def _mac(ecb, nonce, data, aad, tag_len):
    # CBC-MAC over B0 || encoded aad || data (RFC 3610 section 2.2), both zero-padded
    q = 15 - len(nonce)
    flags = (0x40 if aad else 0) | ((tag_len - 2) // 2) << 3 | (q - 1)
    b = bytearray([flags])
    b.extend(nonce)
    b.extend(len(data).to_bytes(q, "big"))
    if aad:
        if len(aad) >= 0xFF00:
            raise ValueError("associated data too long")
        b.extend(len(aad).to_bytes(2, "big"))
        b.extend(aad)
        b.extend(bytes(-len(b) % 16))
    b.extend(data)
    b.extend(bytes(-len(b) % 16))
    x = 0
    for i in range(0, len(b), 16):
        x = int.from_bytes(ecb((x ^ int.from_bytes(b[i:i + 16], "big")).to_bytes(16, "big")), "big")
    return x.to_bytes(16, "big")


def _keystream(ecb, nonce, n):
    # S_0 || S_1 || ... enough for n bytes after S_0: counter blocks A_i = flags || nonce || i
    q = 15 - len(nonce)
    pre = bytes([q - 1]) + bytes(nonce)
    blocks = (n + 15) // 16 + 1
    a = bytearray()
    for i in range(blocks):
        a.extend(pre)
        a.extend(i.to_bytes(q, "big"))
    return ecb(bytes(a))


def ccm_encrypt(ecb, nonce, data, aad=b"", tag_len=TAG_LEN):
    """AES-CCM: ciphertext || tag, as cryptography's AESCCM(key, tag_len).encrypt(nonce, data,
    aad).  ecb: the AES-ECB encryption function of the key; nonce: 7-13 bytes."""
    n = len(data)
    if not 7 <= len(nonce) <= 13 or tag_len not in (4, 6, 8, 10, 12, 14, 16) or n >> (8 * (15 - len(nonce))):
        raise ValueError("bad CCM parameters")
    s = _keystream(ecb, nonce, n)
    tag = _xor(_mac(ecb, nonce, data, aad, tag_len), s, tag_len)
    if not n:
        return tag
    return _xor(data, s[16:], n) + tag


def ccm_decrypt(ecb, nonce, blob, aad=b"", tag_len=TAG_LEN):
    """The plaintext of ciphertext || tag, or None if the tag does not verify."""
    n = len(blob) - tag_len
    if n < 0 or not 7 <= len(nonce) <= 13 or n >> (8 * (15 - len(nonce))):
        return None
    s = _keystream(ecb, nonce, n)
    data = _xor(blob, s[16:], n) if n else b""
    tag = _xor(_mac(ecb, nonce, data, aad, tag_len), s, tag_len)
    if not ct_eq(tag, blob[n:]):
        return None
    return data


def _nonce(direction, ctr):
    return bytes([direction]) + bytes(8) + ctr.to_bytes(CTR_LEN, "big")


class Channel:
    """Channel(k_shared, device, ecb=None): device True on the device (the Verifier), False on
    the host (the Prover).  ecb: a function key -> AES-ECB encrypt function (default_ecb).
    seal(plaintext) -> frame; open(frame) -> plaintext or ChannelError (and the channel is
    dead from then on)."""

    def __init__(self, k_shared, device, ecb=None):
        ecb = ecb or default_ecb
        to_dev = ecb(hkdf(k_shared, INFO_TO_DEVICE, KEY_LEN))
        to_host = ecb(hkdf(k_shared, INFO_TO_HOST, KEY_LEN))
        if device:
            self._tx, self._rx, self._txd, self._rxd = to_host, to_dev, TO_HOST, TO_DEVICE
        else:
            self._tx, self._rx, self._txd, self._rxd = to_dev, to_host, TO_DEVICE, TO_HOST
        self.sent = 0  # frames sealed: the next counter to send
        self.received = 0  # frames accepted: the next counter expected
        self.dead = False

    def _fail(self, why):
        self.dead = True
        self._tx = self._rx = None
        raise ChannelError(why)

    def seal(self, plaintext):
        if self.dead:
            raise ChannelError("channel closed after an error")
        if len(plaintext) > MAX_PLAINTEXT:
            raise ValueError("message too long")
        ctr = self.sent
        if ctr >> 32:
            self._fail("counter exhausted")
        head = ctr.to_bytes(CTR_LEN, "big")
        frame = head + ccm_encrypt(self._tx, _nonce(self._txd, ctr), bytes(plaintext))
        # Counted once the frame exists: a MemoryError while encrypting (a device's fragmented
        # heap) sent nothing, and the next frame must carry the counter the peer expects.
        self.sent = ctr + 1
        return frame

    def open(self, frame):
        if self.dead:
            raise ChannelError("channel closed after an error")
        if len(frame) < OVERHEAD:
            self._fail("frame too short")
        ctr = int.from_bytes(frame[:CTR_LEN], "big")
        if ctr != self.received:
            self._fail("frame %d refused: expected %d (replayed, lost or reordered)" % (ctr, self.received))
        data = ccm_decrypt(self._rx, _nonce(self._rxd, ctr), bytes(frame[CTR_LEN:]))
        if data is None:
            self._fail("frame %d refused: authentication failed" % ctr)
        self.received = ctr + 1
        return data
