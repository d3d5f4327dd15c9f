# SafeSignal BLE provisioning: the GATT layout, the framing, the messages, the PIN lockout
# policy and the advertising data, shared by the firmware (ss_ble) and the host (link/ble).
#
# Runs unchanged on MicroPython and CPython; pure functions, no I/O.  Documented in
# firmware/esp32-button/PROVISIONING.md ("Provisioning over BLE").
#
# GATT: one primary service SERVICE_UUID with two characteristics:
#   RX_UUID  write (with response): host -> device, a byte stream of frames
#   TX_UUID  notify:               device -> host, a byte stream of frames
# Both are streams: a frame may span several ATT writes or notifications (each at most
# ATT_MTU - 3 bytes) and one write may hold the end of one frame and the start of the next.
# The device appends writes into its RX buffer (gatts_set_buffer(rx, RX_BUF, True)) and the
# protocol is request/reply (the host sends one message and waits for its answer), so no more
# than one message (MAX_MSG bytes) is ever waiting in that buffer.
#
# Frame: length (2 bytes, big-endian, counting type + payload) + type (1 byte) + payload.
#
# Messages (host -> device / device -> host):
#   HELLO     ()                          -> PARAMS   salt(16) iterations(u32) fails(u8) wait_s(u16)
#                                                     address(6) name
#   SHARE_P   shareP (65, uncompressed)   -> SHARE_V  shareV(65) confirmV(32)
#   CONFIRM_P confirmP (32)               -> READY    ()
#   DATA      sealed bytes of the console -> DATA     sealed bytes of the console's answers
#   any       ...                         -> ERROR    code(u8) wait_s(u16) left(u8) text
# SHARE_P is counted as a failed attempt in NVS before SHARE_V goes out; READY clears the
# count.  DATA before READY, or a second HELLO, is a protocol error: the device answers ERROR
# and disconnects.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


SERVICE_UUID = "a6a3f535-c5bd-43fc-9d87-f07113d84098"
RX_UUID = "fb48d693-8190-4307-877b-9c3b42cdd99c"
TX_UUID = "6e85434e-f1f1-4eae-afc0-b4b376248bf7"

NAME_PREFIX = "SafeSignal-"
# Company identifier 0xFFFF: "reserved for internal use / testing" in the Bluetooth SIG's
# Assigned Numbers (Company Identifiers); a product would use its own.
COMPANY_ID = const(0xFFFF)
ADV_MAGIC = b"SS"
ADV_PROVISIONED = const(1)
ADV_LOCKED = const(2)

MAX_MSG = const(1024)  # bytes of type + payload
RX_BUF = const(1100)  # the device's RX characteristic buffer: one whole frame and then some

M_HELLO = const(0x01)
M_SHARE_P = const(0x02)
M_CONFIRM_P = const(0x03)
M_DATA = const(0x10)
M_PARAMS = const(0x81)
M_SHARE_V = const(0x82)
M_READY = const(0x83)
M_ERROR = const(0xEE)

# ERROR codes
ERR_WRONG_PIN = const(1)  # the PIN did not match (the attempt is counted)
ERR_LOCKED = const(2)  # too many wrong PINs: wait wait_s seconds
ERR_HARD_LOCKED = const(3)  # HARD_LOCK wrong PINs: only a long press at power-on re-opens BLE
ERR_PROTOCOL = const(4)  # a message out of order or malformed
ERR_NO_PIN = const(5)  # no PIN verifier stored (factory step `safesignal pin` not done)

# The lockout (counted in NVS, kept across reboots):
FREE_ATTEMPTS = const(5)  # wrong PINs without any wait
FIRST_WAIT_S = const(30)  # the wait after the next wrong PIN; it doubles with each one after
MAX_WAIT_S = const(3600)
HARD_LOCK = const(20)  # wrong PINs after which only a long press at power-on re-opens BLE

# Timing on the device:
WINDOW_S = const(600)  # BLE advertises this long after power-on or a long press
HOLD_MS = const(10000)  # a long press: the button held from power-on for this long
IDLE_S = const(120)  # a connection that sends nothing for this long is dropped

SALT_LEN = const(16)
POINT_LEN = const(65)
MAC_LEN = const(32)


class BleError(ValueError):
    pass


def lock_wait_s(fails):
    """Seconds the device waits before it takes another PIN attempt after ``fails`` wrong
    ones in a row; None once HARD_LOCK is reached."""
    if fails >= HARD_LOCK:
        return None
    if fails < FREE_ATTEMPTS:
        return 0
    w = FIRST_WAIT_S << (fails - FREE_ATTEMPTS) if fails - FREE_ATTEMPTS < 8 else MAX_WAIT_S
    return w if w < MAX_WAIT_S else MAX_WAIT_S


def attempts_left(fails):
    """Wrong PINs still possible before the hard lock."""
    return HARD_LOCK - fails if fails < HARD_LOCK else 0


def frame(mtype, payload=b""):
    n = len(payload) + 1
    if n > MAX_MSG:
        raise BleError("message too long")
    return bytes([n >> 8, n & 0xFF, mtype]) + payload


class Deframer:
    """Cuts a received byte stream into (type, payload) messages."""

    def __init__(self):
        self._buf = bytearray()

    def pending(self):
        return len(self._buf)

    def feed(self, data):
        self._buf.extend(data)
        out = []
        while len(self._buf) >= 2:
            n = self._buf[0] << 8 | self._buf[1]
            if n == 0 or n > MAX_MSG:
                self._buf = bytearray()
                raise BleError("bad frame length")
            if len(self._buf) < 2 + n:
                break
            out.append((self._buf[2], bytes(self._buf[3:2 + n])))
            self._buf = self._buf[2 + n:]
        return out


def chunks(data, mtu):
    """``data`` cut into pieces that fit one ATT write or notification at ``mtu``."""
    step = mtu - 3
    return [data[i:i + step] for i in range(0, len(data), step)]


def _u16(b, i):
    return b[i] << 8 | b[i + 1]


def params_payload(salt, iterations, fails, wait_s, address, name):
    """The device's public parameters: its verifier's salt and PBKDF2 iterations, the lockout
    state, and its address and name (the SPAKE2+ context binds all but the lockout state)."""
    if len(salt) != SALT_LEN or len(address) != 6:
        raise BleError("salt or address length")
    return (bytes(salt) + iterations.to_bytes(4, "big") + bytes([min(fails, 255)])
            + min(wait_s, 0xFFFF).to_bytes(2, "big") + bytes(address) + name.encode())


def parse_params(p):
    """(salt, iterations, fails, wait_s, address, name)"""
    s = SALT_LEN
    if len(p) < s + 13:
        raise BleError("PARAMS too short")
    return (bytes(p[:s]), int.from_bytes(p[s:s + 4], "big"), p[s + 4], _u16(p, s + 5), bytes(p[s + 7:s + 13]),
            bytes(p[s + 13:]).decode())


def error_payload(code, wait_s=0, left=0, text=""):
    return bytes([code]) + min(wait_s, 0xFFFF).to_bytes(2, "big") + bytes([min(left, 255)]) + text.encode()


def parse_error(p):
    """(code, wait_s, left, text)"""
    if len(p) < 4:
        raise BleError("ERROR too short")
    return p[0], _u16(p, 1), p[3], bytes(p[4:]).decode()


def adv_data(name, flags, window_s):
    """The advertising payload: flags (LE general discoverable, no BR/EDR), the complete local
    name, and manufacturer data COMPANY_ID + ADV_MAGIC + flags + window seconds left (u16)."""
    nb = name.encode()
    mfr = COMPANY_ID.to_bytes(2, "little") + ADV_MAGIC + bytes([flags]) + min(window_s, 0xFFFF).to_bytes(2, "big")
    out = bytes([2, 0x01, 0x06]) + bytes([len(nb) + 1, 0x09]) + nb + bytes([len(mfr) + 1, 0xFF]) + mfr
    if len(out) > 31:
        raise BleError("advertising data longer than 31 bytes")
    return out


def parse_adv(data):
    """{"name", "provisioned", "locked", "window_s"} of our advertising data, else None."""
    name = None
    info = None
    i = 0
    while i < len(data):
        n = data[i]
        if n == 0 or i + 1 + n > len(data):
            break
        t = data[i + 1]
        v = bytes(data[i + 2:i + 1 + n])
        if t in (0x08, 0x09):
            try:
                name = v.decode()
            except UnicodeError:
                name = None
        elif t == 0xFF and len(v) == 7 and v[:2] == COMPANY_ID.to_bytes(2, "little") and v[2:4] == ADV_MAGIC:
            info = v
        i += 1 + n
    if info is None:
        return None
    return {"name": name or "", "provisioned": bool(info[4] & ADV_PROVISIONED), "locked": bool(info[4] & ADV_LOCKED),
            "window_s": _u16(info, 5)}


def fingerprint(sha256, record):
    """What `ble_status` shows of the stored verifier record (ssproto.spake2p.make_record), and
    the host computes from what it sent (its read-back): the first 8 bytes of its SHA-256, hex.
    The record holds w0, a function of the PIN: a short hash of it is shown, never w0."""
    return "".join(["%02x" % b for b in sha256(bytes(record)).digest()[:8]])


def name_for(mac):
    """The device's BLE name: NAME_PREFIX + the last two bytes of its MAC in hex."""
    return NAME_PREFIX + "%02X%02X" % (mac[-2], mac[-1])
