# SafeSignal console protocol: the wire grammar both the firmware and the host tools use.
#
# Runs unchanged on MicroPython (>= 1.24) and CPython (>= 3.11): no typing, no dataclasses,
# no I/O. Everything here is pure functions over str.  The grammar is documented in
# firmware/esp32-button/PROVISIONING.md ("Console protocol").

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


PROTOCOL_VERSION = const(1)

# Limits (bytes of UTF-8 unless said otherwise).
MAX_LINE = const(1024)
SSID_MAX = const(32)
PASS_MIN = const(8)
PASS_MAX = const(63)
IDENT_MAX = const(64)
URI_MAX = const(200)

DEFAULT_MQTT_URI = "mqtt://safesignal-edge.local:1883"

# Status line: every command's reply ends with exactly one line starting "OK" or "ERR ".
# No other line the device prints starts with either.
E_UNKNOWN = "UNKNOWN"  # unknown command
E_USAGE = "USAGE"  # wrong number of arguments / unknown option
E_QUOTE = "QUOTE"  # malformed quoting
E_ENCODING = "ENCODING"  # line is not valid UTF-8
E_TOOLONG = "TOOLONG"  # line longer than MAX_LINE
E_INVALID = "INVALID"  # an argument fails validation
E_INCOMPLETE = "INCOMPLETE"  # provision_complete with required fields missing
E_CONFIRM = "CONFIRM"  # destructive command without --confirm
E_NVS = "NVS"  # flash read/write/verify failed
E_STATE = "STATE"  # command not valid in the current state
E_OUTBOX = "OUTBOX"  # the alert could not be stored
E_INTERNAL = "INTERNAL"  # an unexpected error in the firmware (a bug); the device keeps running
E_MEMORY = "MEMORY"  # the command ran out of memory and did not finish (saves stay atomic)
# provision_complete's connect test (nothing is saved when one of these is answered):
E_WIFI_AUTH = "WIFI_AUTH"  # the access point rejected the password
E_WIFI_NO_AP = "WIFI_NO_AP"  # no access point with that SSID (and security mode) answers
E_WIFI_TIMEOUT = "WIFI_TIMEOUT"  # associated but no IP address in time (DHCP), or no answer
E_WIFI_FAILED = "WIFI_FAILED"  # any other WiFi failure
E_BROKER_UNREACHABLE = "BROKER_UNREACHABLE"  # name not resolved, connection refused or timed out
E_BROKER_REFUSED = "BROKER_REFUSED"  # the broker answered CONNACK with an error
E_BROKER_TLS = "BROKER_TLS"  # mqtts://: the broker's certificate failed verification, or it refused ours
CONNECT_TEST_CODES = (E_WIFI_AUTH, E_WIFI_NO_AP, E_WIFI_TIMEOUT, E_WIFI_FAILED, E_BROKER_UNREACHABLE, E_BROKER_REFUSED,
                      E_BROKER_TLS)
E_IDENTITY = "IDENTITY"  # a certificate does not fit the device's key, id or CA
E_CHECKSUM = "CHECKSUM"  # a checked line arrived damaged (a byte lost on the wire): not run


class ProtocolError(ValueError):
    # code is one of the E_* constants; the message never contains the offending value
    # (it may be a secret).
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def decode_utf8(raw):
    """Strict UTF-8 (RFC 3629) -> str, the same on MicroPython (whose decoder accepts encoded
    surrogates, overlong forms and code points above U+10FFFF) and CPython.  ProtocolError
    (E_ENCODING) otherwise."""
    if not raw or max(raw) < 0x80:
        return bytes(raw).decode()
    n = len(raw)
    i = 0
    while i < n:
        c = raw[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            k, lo = 1, 0x80
        elif 0xE0 <= c <= 0xEF:
            k, lo = 2, 0x800
        elif 0xF0 <= c <= 0xF4:
            k, lo = 3, 0x10000
        else:
            raise ProtocolError(E_ENCODING, "not valid UTF-8")
        if i + k >= n:
            raise ProtocolError(E_ENCODING, "not valid UTF-8 (truncated)")
        v = c & (0x3F >> k)
        for j in range(1, k + 1):
            t = raw[i + j]
            if t & 0xC0 != 0x80:
                raise ProtocolError(E_ENCODING, "not valid UTF-8")
            v = v << 6 | (t & 0x3F)
        if v < lo or v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
            raise ProtocolError(E_ENCODING, "not valid UTF-8")
        i += k + 1
    return bytes(raw).decode()


def split_args(line):
    """Split a console line into arguments.

    Tokens are separated by spaces or tabs.  Double quotes group; inside them ``\\\\`` is a
    backslash and ``\\"`` a quote, any other escape is an error.  Outside quotes a backslash
    takes the next character literally.  Quoted and bare parts of one token concatenate;
    ``""`` is an empty argument.
    """
    # Works on the UTF-8 bytes (indexing a MicroPython str is not O(1)) and keeps runs of
    # ordinary bytes as slices: a long line (a base64 certificate) costs a few allocations,
    # not one per character.  Every special character is ASCII, so a split never falls inside
    # a multi-byte character.
    b = line.encode("utf-8")
    n = len(b)
    args = []
    cur = None  # pieces of the current token; None: between tokens
    run = -1  # start of the current run of ordinary bytes
    quote = False
    i = 0
    while i < n:
        c = b[i]
        if quote:
            if c == 0x22 or c == 0x5C:  # " or backslash
                if run >= 0:
                    cur.append(b[run:i])
                    run = -1
                if c == 0x22:
                    quote = False
                else:
                    i += 1
                    if i >= n:
                        raise ProtocolError(E_QUOTE, "backslash at end of line")
                    if b[i] != 0x5C and b[i] != 0x22:
                        raise ProtocolError(E_QUOTE, "unknown escape inside quotes (use \\\\ or \\\")")
                    cur.append(b[i:i + 1])
            elif run < 0:
                run = i
        elif c == 0x20 or c == 0x09 or c == 0x22 or c == 0x5C:  # space, tab, ", backslash
            if run >= 0:
                cur.append(b[run:i])
                run = -1
            if c == 0x22:
                quote = True
                if cur is None:
                    cur = []
            elif c == 0x5C:
                i += 1
                if i >= n:
                    raise ProtocolError(E_QUOTE, "backslash at end of line")
                if cur is None:
                    cur = []
                cur.append(b[i:i + 1])  # the next byte; a character's other bytes follow as ordinary ones
            elif cur is not None:
                args.append(b"".join(cur).decode("utf-8"))
                cur = None
        else:
            if cur is None:
                cur = []
            if run < 0:
                run = i
        i += 1
    if quote:
        raise ProtocolError(E_QUOTE, "unterminated quote")
    if run >= 0:
        cur.append(b[run:])
    if cur is not None:
        args.append(b"".join(cur).decode("utf-8"))
    return args


def _bare_ok(s):
    if not s:
        return False
    for c in s:
        o = ord(c)
        if o <= 0x20 or o == 0x7F or c == '"' or c == "\\":
            return False
    return True


def quote(s):
    """Quote one argument so that split_args gives it back exactly."""
    for c in s:
        if c == "\r" or c == "\n":
            raise ProtocolError(E_INVALID, "line breaks cannot be sent in an argument")
    if _bare_ok(s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def join_args(args):
    return " ".join([quote(a) for a in args])


# --- status lines ---------------------------------------------------------------------

def ok_line(text=""):
    return "OK " + text if text else "OK"


def err_line(code, message):
    return "ERR " + code + " " + message


def parse_status(line):
    """Return (ok, code, text) if ``line`` is a status line, else None."""
    if line == "OK":
        return (True, "", "")
    if line.startswith("OK "):
        return (True, "", line[3:])
    if line.startswith("ERR "):
        rest = line[4:]
        sp = rest.find(" ")
        if sp < 0:
            return (False, rest, "")
        return (False, rest[:sp], rest[sp + 1:])
    return None


def is_log_line(line):
    # Log lines look like "[WIFI] ..." : a bracketed upper-case tag and a space.
    if not line.startswith("["):
        return False
    end = line.find("] ")
    if end < 2:
        return False
    tag = line[1:end]
    for c in tag:
        if not ("A" <= c <= "Z" or c == "_" or "0" <= c <= "9"):
            return False
    return True


# --- validation -------------------------------------------------------------------------

def _utf8_len(s):
    try:
        return len(s.encode("utf-8"))
    except UnicodeError:  # lone surrogates (CPython argv with undecodable bytes)
        raise ProtocolError(E_INVALID, "value must be valid UTF-8")


def _has_control(s):
    # C0, DEL and C1 (U+0080-U+009F: terminal escapes such as CSI U+009B, NEL U+0085)
    for c in s:
        o = ord(c)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            return True
    return False


def check_ssid(s):
    n = _utf8_len(s)
    if n < 1 or n > SSID_MAX:
        raise ProtocolError(E_INVALID, "SSID must be 1-32 bytes of UTF-8")
    if _has_control(s):
        raise ProtocolError(E_INVALID, "SSID must not contain control characters")
    return s


def _is_digits(s):
    # ASCII only: str.isdigit() also accepts superscripts and other scripts' digits.
    for c in s:
        if not ("0" <= c <= "9"):
            return False
    return True


def _is_hex(s):
    for c in s:
        if not ("0" <= c <= "9" or "a" <= c <= "f" or "A" <= c <= "F"):
            return False
    return True


def check_passphrase(s):
    # Empty = open network.  Never put the value in a message.
    if s == "":
        return s
    if len(s) == 64 and _is_hex(s):
        return s
    for c in s:
        o = ord(c)
        if o < 0x20 or o > 0x7E:
            raise ProtocolError(E_INVALID, "WiFi password must be printable ASCII (or 64 hex digits)")
    if len(s) < PASS_MIN or len(s) > PASS_MAX:
        raise ProtocolError(
            E_INVALID, "WiFi password must be 8-63 characters (or 64 hex digits, or empty for an open network)"
        )
    return s


def _ident_char(c, first):
    if "a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9":
        return True
    return (not first) and (c == "-" or c == "_" or c == ".")


def check_ident(what, s):
    """Device id, tenant, building, room: 1-64 of [A-Za-z0-9._-], starting with a letter or digit."""
    if len(s) < 1 or len(s) > IDENT_MAX:
        raise ProtocolError(E_INVALID, what + " must be 1-64 characters")
    first = True
    for c in s:
        if not _ident_char(c, first):
            raise ProtocolError(
                E_INVALID,
                what + " may contain only letters, digits, '.', '_' and '-' and must start with a letter or digit",
            )
        first = False
    return s


def _check_host(host):
    if not host or len(host) > 253:
        return False
    for label in host.split("."):
        if not label or len(label) > 63:
            return False
        if label[0] == "-" or label[-1] == "-":
            return False
        for c in label:
            if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c == "-"):
                return False
    return True


def parse_mqtt_uri(uri):
    """``mqtt://host[:port]`` (plain, port 1883) or ``mqtts://host[:port]`` (mutual TLS, port
    8883) -> (scheme, host, port)."""
    if len(uri) > URI_MAX:
        raise ProtocolError(E_INVALID, "MQTT URI is too long")
    if uri.startswith("mqtt://"):
        scheme = "mqtt"
        rest = uri[7:]
        port = 1883
    elif uri.startswith("mqtts://"):
        scheme = "mqtts"
        rest = uri[8:]
        port = 8883
    else:
        raise ProtocolError(E_INVALID, "MQTT URI must look like mqtt://host[:port] or mqtts://host[:port]")
    if rest.endswith("/"):
        rest = rest[:-1]
    host = rest
    colon = rest.rfind(":")
    if colon >= 0:
        host = rest[:colon]
        p = rest[colon + 1:]
        if not p or len(p) > 5 or not _is_digits(p):
            raise ProtocolError(E_INVALID, "MQTT URI port must be a number 1-65535")
        port = int(p)
        if port < 1 or port > 65535:
            raise ProtocolError(E_INVALID, "MQTT URI port must be a number 1-65535")
    if not _check_host(host):
        raise ProtocolError(E_INVALID, "MQTT URI host must be a host name or IPv4 address")
    return (scheme, host, port)


def check_mqtt_uri(uri):
    parse_mqtt_uri(uri)
    return uri


# --- provision_status ---------------------------------------------------------------------
# provision_status prints one "Label: value" line per field, then OK.  Values are quoted with
# quote() so a program can read them back exactly.  The labels and their JSON names:
STATUS_FIELDS = (
    ("Provisioned", "provisioned"),
    ("WiFi SSID", "wifi_ssid"),
    ("WiFi password", "wifi_password"),
    ("Device ID", "device_id"),
    ("Tenant", "tenant"),
    ("Building", "building"),
    ("Room", "room"),
    ("MQTT URI", "mqtt_uri"),
    ("Pending", "pending"),
    ("WiFi", "wifi_state"),
    ("IP address", "ip_address"),
    ("MQTT", "mqtt_state"),
    ("Chip ID", "chip_id"),
    ("Boot ID", "boot_id"),
    ("Firmware", "firmware"),
    ("Alerts pending", "alerts_pending"),
    ("Next alert seq", "next_alert_seq"),
    ("Free heap", "free_heap"),
    ("Certificate", "certificate"),
    ("Certificate expires", "certificate_expires"),
    ("Certificate SHA-256", "certificate_sha256"),
)


def status_line(label, value):
    return label + ": " + quote(value)


def parse_status_field(line):
    """``"Label: value"`` -> (json_name, value) for a known label, else None."""
    for label, name in STATUS_FIELDS:
        if line.startswith(label + ": "):
            args = split_args(line[len(label) + 2:])
            if len(args) != 1:
                return None
            return (name, args[0])
    return None


# --- secret check ----------------------------------------------------------------------------
# provision_verify <nonce> proves that the stored WiFi password equals the one the host sent,
# without the password crossing the wire again.  The device answers with 8 bytes of
# SHA-256("safesignal-psk-check" 0 nonce 0 ssid 0 PSK), where PSK is the WPA2 pre-shared key
# PBKDF2-HMAC-SHA1(password, ssid, 4096, 32) (IEEE 802.11i-2004, H.4; a 64-hex-digit password
# is the PSK itself; an open network has an empty PSK).  Confirming a guessed password from a
# check value therefore costs the same 4096-round PBKDF2 as cracking a captured WPA2
# handshake, which anyone in radio range can record: the check gives nothing away that the
# air does not.  About 20 ms under MicroPython on a PC, about 1 s on an ESP32-S3.

CHECK_LABEL = "Check"


def check_nonce(s):
    if len(s) < 16 or len(s) > 64 or not _is_hex(s):
        raise ProtocolError(E_INVALID, "nonce must be 16-64 hex digits")
    return s


def wpa_psk(sha1, password, ssid):
    """The WPA2 PSK for a passphrase (PBKDF2-HMAC-SHA1, 4096 rounds, 32 bytes), pure Python."""
    if password == "":
        return b""
    if len(password) == 64 and _is_hex(password):
        return bytes([int(password[i:i + 2], 16) for i in range(0, 64, 2)])
    key = password.encode("utf-8")
    k = key + b"\x00" * (64 - len(key))
    ipad = bytes([b ^ 0x36 for b in k])
    opad = bytes([b ^ 0x5C for b in k])
    salt = ssid.encode("utf-8")
    out = b""
    for block in (1, 2):
        u = sha1(opad + sha1(ipad + salt + block.to_bytes(4, "big")).digest()).digest()
        t = int.from_bytes(u, "big")
        for _ in range(4095):
            u = sha1(opad + sha1(ipad + u).digest()).digest()
            t ^= int.from_bytes(u, "big")
        out += t.to_bytes(20, "big")
    return out[:32]


def secret_check(sha256, nonce, ssid, psk):
    h = sha256()
    h.update(b"safesignal-psk-check\x00")
    h.update(nonce.encode("utf-8"))
    h.update(b"\x00")
    h.update(ssid.encode("utf-8"))
    h.update(b"\x00")
    h.update(psk)
    d = h.digest()[:8]
    return "".join(["%02x" % b for b in d])


# --- checked lines ---------------------------------------------------------------------------
# A board's console receive buffer is small and a UART drops what does not fit while the
# firmware is busy (ESP32: a 260-byte ring, ports/esp32/mphalport.c), so tools never send more
# than one acknowledged piece at a time, and the device runs a line only if it arrived whole.
#
#   @<length>:<crc32> <first piece>     starts a checked line: <length> bytes of UTF-8 whose
#                                       CRC-32 (zlib's, 8 lower-case hex digits) is <crc32>
#   +<next piece>                       continues it
#
# Each piece is at most PIECE bytes of the command line.  While the line is incomplete the
# device answers every piece with ``OK +<bytes so far>``; once it has <length> bytes it checks
# the CRC and runs the line (the command's own reply follows), or answers ``ERR CHECKSUM`` and
# runs nothing.  Any other line abandons a checked line in progress.  Humans type plain lines.

RX_BUFFER = const(259)  # bytes the ESP32's console ring holds (stdin_ringbuf, 260 slots, one kept free)
PIECE = const(192)  # bytes of the command per piece: with "@1024:xxxxxxxx " and CRLF < RX_BUFFER


def checked_lines(line, crc32, piece=PIECE):
    """The lines (bytes, no line ending) that carry command ``line`` (str) checked."""
    b = line.encode("utf-8")
    out = [("@%d:%08x " % (len(b), crc32(b) & 0xFFFFFFFF)).encode() + b[:piece]]
    for i in range(piece, len(b), piece):
        out.append(b"+" + b[i:i + piece])
    return out


def is_checked(raw):
    """True for a line of the checked form (bytes): it starts with @ or +."""
    return len(raw) > 0 and (raw[0] == 0x40 or raw[0] == 0x2B)


class Checked:
    """Puts a checked line back together from its pieces (device side)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.want = -1
        self.crc = 0
        self.buf = None

    def got(self):
        return len(self.buf) if self.buf is not None else 0

    def feed(self, raw, crc32):
        """``raw``: one received line of the checked form.  Returns the command line's bytes
        once it is complete and intact, None while pieces are missing; ProtocolError
        (E_CHECKSUM, E_TOOLONG) if it is damaged (nothing is kept then)."""
        if raw[0] == 0x40:  # @
            self.reset()
            sp = raw.find(b" ")
            head = raw[1:sp] if sp > 0 else b""
            colon = head.find(b":")
            n = head[:colon]
            c = head[colon + 1:]
            try:
                ok = colon > 0 and len(n) <= 5 and len(c) == 8 and _is_digits(n.decode()) and _is_hex(c.decode())
            except UnicodeError:
                ok = False
            if not ok:
                raise ProtocolError(E_CHECKSUM, "malformed checked line (expected @<length>:<crc32> <text>)")
            if int(n) > MAX_LINE:
                raise ProtocolError(E_TOOLONG, "line longer than %d bytes discarded" % MAX_LINE)
            self.want = int(n)
            self.crc = int(c, 16)
            self.buf = bytearray(raw[sp + 1:])
        else:  # +
            if self.buf is None:
                raise ProtocolError(E_CHECKSUM, "continuation without a checked line; nothing was run")
            self.buf.extend(raw[1:])
        got = len(self.buf)
        if got < self.want:
            return None
        want, crc, buf = self.want, self.crc, self.buf
        self.reset()
        if got > want or crc32(buf) & 0xFFFFFFFF != crc:
            raise ProtocolError(E_CHECKSUM, "line damaged in transit (%d of %d bytes, CRC mismatch); nothing was run"
                                % (got, want))
        return bytes(buf)
