"""The fuzz rig for the serial console (firmware/esp32-button/lib/ss_console.py): the argument
grammar (ssproto.split_args / quote / join_args), the line reader and the command handling.
tests/test_fuzz_console.py draws its inputs with hypothesis; bench/fuzz_console.py runs many more
(:func:`example`) and prints JSON.

Method (also in bench/README.md): everything runs under CPython against the real firmware
modules - ss_console.Console over a real ss_store.Store on tests/mpy/fakenvs.FakeNVS (with a
wrapper that can make one chosen NVS write fail with OSError), a real ss_outbox.Outbox, and a
minimal fake app (connect test that passes or fails with a chosen code, stop/resume, radio_on,
alert into the real outbox).  Nothing inside the firmware modules is replaced except the
module-global ``print`` of ss_console, which the rig captures.  The reset coroutine raises an
exception that ends the command (as machine.reset() would); the rig then "reboots": a new
Store, Outbox and Console over the durable NVS state, whose content is checked against the
model.

An example is a random sequence of operations:

* command lines built from a grammar: every console command with valid and invalid values
  (SSIDs incl. UTF-8, control characters and over-long ones; WiFi passwords valid, too short,
  too long, non-ASCII; identifiers; mqtt[s]:// URIs with bad hosts and ports; nonces), wrong
  argument counts, the WiFi passwords put where they do not belong, command names mixed with
  random arguments ("soup"), and random text; each rendered with join_args or with random
  quoting/escaping and separators, and handed to ``Console.handle`` (str) or
  ``Console.handle_bytes`` (UTF-8, sometimes with invalid bytes spliced in, or random bytes);
* byte streams through ``Console.run`` (the LineReader): several such lines with CR, LF or CRLF,
  backspace/DEL (also inside multi-byte characters), Ctrl-C, lines of exactly and more than
  MAX_LINE bytes, random bytes, a last line without terminator;
* the identity flow: ``provision_identity_csr`` (real key generation), then a certificate the
  host issues with `cryptography` for the CSR's key, CN = device id and O = tenant (or for
  another key, another or no CN, another or no O),
  ``provision_set_ca`` with one of several CA certificates; both optionally mutated (bit flips,
  byte writes, truncation, junk, duplication) and base64-encoded in several ways;
* "flows" that provision the device (plain or mqtts:// with identity), so later commands
  meet a provisioned device; changes of the fake connect test's result; and an armed NVS fault
  (the k-th next NVS write or commit raises OSError).

A reference model, written from the documented grammar and rules (PROVISIONING.md, "Console
protocol", and the command help) and independent of the firmware's code, predicts every reply
and the device state.  Properties checked after every operation:

1. nothing escapes ``handle``/``handle_bytes``/``run`` but the reset (and EOFError at the end
   of a stream), and no reply is ``ERR INTERNAL`` (Console.handle's catch-all for an exception
   in a command); no operation waits (the coroutine never suspends) or takes longer than
   ``--deadline`` seconds (SIGALRM);
2. every line that is not blank gets exactly one status line, the last one (``OK``/``ERR``),
   and no printed string holds a line break (a host would read the rest as a line of its
   own); lines other than ``ping``'s echo hold no control characters (C0 but TAB, DEL, C1);
3. the reply matches the model: status code (and ``pong``, ``csr``, ``seq``, ``Check`` texts;
   the CSR is parsed and its signature and CN checked with `cryptography`; every
   ``provision_status`` field), staged values, reset or not;
4. no partial save: unless the command was an OK ``provision_complete`` or factory reset,
   the provisioning NVS is unchanged (durable state, no write or commit made, nothing
   uncommitted); after a reset, a new Store over the durable state loads exactly the model's
   configuration and identity, and the outbox its alerts.  After an injected NVS fault the
   reply is ``ERR NVS`` and the durable state loads as the old or the new configuration (never
   anything else); the rig then power-cycles;
5. no secret in any output: every WiFi password the generator made (valid or not, wherever it
   was typed) and the device's private key (hex, base64) never appear in any printed line,
   unless the same text was also given as a value the device shows by design (an SSID, a ping
   token, ...); and no ERR line repeats an argument of its own command line (8+ characters,
   not a word of the firmware's own messages);
6. the parser pieces agree with independent reference implementations: ``split_args`` with a
   character-level tokenizer of the documented grammar (same arguments, or both refuse with
   QUOTE); ``split_args(join_args(args)) == args`` for arguments without CR/LF (``quote``
   refuses those); ``LineReader`` with a reference line splitter.

Certificates whose names hold line breaks or terminal escapes are among the inputs; the device
refuses them (ERR IDENTITY).

Limits: CPython only - what differs under MicroPython (its 255-byte limit on attribute names,
its lax UTF-8 decoder) is reached by the device-level test in tests/test_fuzz_console.py, which
sends random lines to a virtual device.  The device's keys and the ECDSA signatures are random,
so ``--only`` replays the same operations with other key and signature bytes.  Streams run
without an armed NVS fault (after ERR NVS the rig power-cycles, which would cut a stream short).
"""

from __future__ import annotations

import ast
import base64
import binascii
import contextlib
import datetime
import hashlib
import io
import random
import re
import signal
import string
import sys
import threading
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "firmware" / "esp32-button" / "lib"
MPY_TESTS = REPO / "tests" / "mpy"
for _p in (MPY_TESTS, LIB):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from fakenvs import FakeNVS  # noqa: E402

import ss_console  # noqa: E402
import ss_help  # noqa: E402
import ss_store  # noqa: E402
import ssproto  # noqa: E402
import ssproto.msg as msg  # noqa: E402
from ss_mqtt import ProbeError  # noqa: E402
from ss_outbox import TEST_MAX, Outbox  # noqa: E402

MAX_LINE = ssproto.MAX_LINE
CHIP = "fz:c0:ns:01"
FIRMWARE = "safesignal-button fuzz"
PROBE_MESSAGE = "the fuzz rig's connect test failed"
DEFAULT_URI = "mqtt://safesignal-edge.local:1883"  # PROVISIONING.md: the device's default broker
KNOWN = (
    "help", "ping", "provision_set_wifi", "provision_set_device", "provision_set_mqtt", "provision_identity_csr",
    "provision_set_cert", "provision_set_ca", "provision_complete", "provision_discard", "provision_status",
    "provision_verify", "provision_reset", "provision", "alert_test", "reboot",
)
NEAR = ("PING", "Help", "provision_set", "provision_set_wifi_", "provision_set_wif", "cmd_help", "_hint", "merged",
        "run", "handle", "ok", "err", "provision_resetx", "help!", "ping;", "provision-status", "reboot\x00", "cmd_")
STATUS_LABELS = (
    ("Provisioned", "provisioned"), ("WiFi SSID", "wifi_ssid"), ("WiFi password", "wifi_password"),
    ("Device ID", "device_id"), ("Tenant", "tenant"), ("Building", "building"), ("Room", "room"),
    ("MQTT URI", "mqtt_uri"), ("Pending", "pending"), ("WiFi", "wifi_state"), ("IP address", "ip_address"),
    ("MQTT", "mqtt_state"), ("Chip ID", "chip_id"), ("Boot ID", "boot_id"), ("Firmware", "firmware"),
    ("Alerts pending", "alerts_pending"), ("Next alert seq", "next_alert_seq"), ("Free heap", "free_heap"),
    ("Certificate", "certificate"), ("Certificate expires", "certificate_expires"),
    ("Certificate SHA-256", "certificate_sha256"),
)
CA_CNS = ["SafeSignal fuzz CA", "Other fuzz CA", None, "Caf\u00e9 \u2615 CA", "x" * 64, "ERR NVS not a status",
          "tab\there"]
# Names with line breaks and terminal escapes: the device refuses such certificates (it prints names).
NASTY_CNS = ["CA\r\nOK spoofed status", "\x1b[2J\x1b[31mred", "nel\x85csi\x9bx", "lf\nERR NVS spoofed"]
NOT_BEFORE = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2036, 1, 1, tzinfo=datetime.UTC)


class Failure(AssertionError):
    pass


class SystemReset(BaseException):
    """Raised by the rig's reset coroutine: machine.reset() does not return."""


class Hang(BaseException):
    pass


# =========================================================================================
# Reference implementations (from the documented grammar; independent of the firmware code)
# =========================================================================================

class RefQuote(Exception):
    pass


def ref_split(line: str) -> list[str]:
    """PROVISIONING.md "Arguments", character by character."""
    args: list[str] = []
    cur: list[str] | None = None
    quoted = False
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if quoted:
            if c == '"':
                quoted = False
            elif c == "\\":
                if i + 1 >= n or line[i + 1] not in '\\"':
                    raise RefQuote
                cur.append(line[i + 1])  # type: ignore[union-attr]
                i += 1
            else:
                cur.append(c)  # type: ignore[union-attr]
        elif c in " \t":
            if cur is not None:
                args.append("".join(cur))
                cur = None
        else:
            if cur is None:
                cur = []
            if c == '"':
                quoted = True
            elif c == "\\":
                if i + 1 >= n:
                    raise RefQuote
                cur.append(line[i + 1])
                i += 1
            else:
                cur.append(c)
        i += 1
    if quoted:
        raise RefQuote
    if cur is not None:
        args.append("".join(cur))
    return args


def ref_lines(data: bytes) -> list[bytes | None]:
    """Complete lines of a byte stream as the console documents them (None: over-long)."""
    out: list[bytes | None] = []
    buf = bytearray()
    over = False
    prev_cr = False
    for c in data:
        if c == 0x0C:  # Ctrl-L (form feed, a terminal's "redraw") is ignored, even between CR and LF
            continue
        if c == 0x0A and prev_cr:
            prev_cr = False
            continue
        prev_cr = c == 0x0D
        if c in (0x0D, 0x0A):
            out.append(None if over else bytes(buf))
            buf, over = bytearray(), False
        elif c in (0x08, 0x7F):  # one character back: trailing continuation bytes and their lead byte
            j = len(buf)
            while j > 0 and buf[j - 1] & 0xC0 == 0x80:
                j -= 1
            del buf[max(j - 1, 0):]
        elif c == 0x03:
            buf, over = bytearray(), False
        elif len(buf) >= MAX_LINE:
            over = True
        else:
            buf.append(c)
    return out


HEX = set("0123456789abcdefABCDEF")
IDENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
URI_RE = re.compile(r"(mqtts?)://([A-Za-z0-9.-]*)(?::([0-9]*))?/?")
LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_control(c: str) -> bool:
    o = ord(c)
    return o < 0x20 or 0x7F <= o <= 0x9F


def ssid_ok(s: str) -> bool:
    return 1 <= len(s.encode()) <= 32 and not any(is_control(c) for c in s)


def password_ok(s: str) -> bool:
    if s == "" or (len(s) == 64 and set(s) <= HEX):
        return True
    return 8 <= len(s) <= 63 and all(0x20 <= ord(c) <= 0x7E for c in s)


def ident_ok(s: str) -> bool:
    return IDENT_RE.fullmatch(s) is not None


def uri_scheme(uri: str) -> str | None:
    """"mqtt"/"mqtts" for a valid broker URI, else None."""
    m = URI_RE.fullmatch(uri)
    if len(uri) > 200 or m is None:
        return None
    host, port = m.group(2), m.group(3)
    if not host or len(host) > 253 or not all(LABEL_RE.fullmatch(lb) for lb in host.split(".")):
        return None
    if port is not None and not (1 <= len(port) <= 5 and 1 <= int(port) <= 65535):
        return None
    return m.group(1)


def nonce_ok(s: str) -> bool:
    return 16 <= len(s) <= 64 and set(s) <= HEX


def check_value(nonce: str, ssid: str, password: str) -> str:
    """PROVISIONING.md / ssproto: 8 bytes of SHA-256("safesignal-psk-check" 0 nonce 0 ssid 0 PSK)."""
    if password == "":
        psk = b""
    elif len(password) == 64 and set(password) <= HEX:
        psk = bytes.fromhex(password)
    else:
        psk = hashlib.pbkdf2_hmac("sha1", password.encode(), ssid.encode(), 4096, 32)
    h = hashlib.sha256(b"safesignal-psk-check\x00" + nonce.encode() + b"\x00" + ssid.encode() + b"\x00" + psk)
    return h.digest()[:8].hex()


def b64_value(text: str) -> bytes | None:
    """What the device decodes from a base64 argument (None: refused as not base64 / empty)."""
    try:
        der = binascii.a2b_base64(text)
    except (ValueError, TypeError):
        return None
    return der or None


def parse_reply(line: str) -> tuple[bool, str, str] | None:
    if line == "OK":
        return True, "", ""
    if line.startswith("OK "):
        return True, "", line[3:]
    if line.startswith("ERR "):
        code, _, text = line[4:].partition(" ")
        return False, code, text
    return None


def _literals() -> str:
    """Every string literal of the firmware: words the device may print on its own."""
    out = []
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.append(node.value)
    return "\n".join(out)


FIXED_TEXT = "\n".join([_literals(), *ss_help.HELP, *[lb for lb, _ in STATUS_LABELS], CHIP, FIRMWARE,
                        PROBE_MESSAGE, DEFAULT_URI, "2036-01-01T00:00:00Z", *[c for c in CA_CNS if c]])


def checkable(secret: str) -> bool:
    """A value the device must never print: long enough not to occur by chance, not a word of its own."""
    return len(secret) >= 8 and secret not in FIXED_TEXT


# =========================================================================================
# Host-side PKI (`cryptography`): CA certificates and device certificates for a CSR's key
# =========================================================================================

@dataclass(frozen=True)
class CertInfo:
    pub: bytes
    cn: str | None
    org: str | None  # O: the tenant, in a device certificate
    issuer: bytes  # DER of the issuer Name
    subject: bytes


def _name(cn: str | None, org: str | None = "fuzz") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn is not None else []
    if org is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


class Pki:
    def __init__(self) -> None:
        # Fixed keys (ECDSA signatures still vary from run to run; the device does not check them).
        self.key = ec.derive_private_key(0x5AFE51C7A1 << 128 | 0xF022, ec.SECP256R1())
        self.other_pub = _point(ec.derive_private_key(0x07E12 << 100 | 0xBEEF, ec.SECP256R1()).public_key())
        self.cas: list[tuple[bytes, CertInfo]] = [self._ca(cn) for cn in CA_CNS + NASTY_CNS]
        self.ca_info = dict(self.cas)

    def _build(self, subject: x509.Name, issuer: x509.Name, pub: ec.EllipticCurvePublicKey, serial: int,
               ca: bool) -> bytes:
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
             .serial_number(serial).not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER))
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        return b.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def _ca(self, cn: str | None) -> tuple[bytes, CertInfo]:
        name = _name(cn)
        der = self._build(name, name, self.key.public_key(), 1000 + len(cn or ""), True)
        return der, CertInfo(_point(self.key.public_key()), cn, "fuzz", name.public_bytes(), name.public_bytes())

    def issue(self, pub: bytes, cn: str | None, org: str | None, ca_index: int) -> tuple[bytes, CertInfo]:
        """A device certificate (CN = device id, O = tenant) signed by CA ``ca_index`` (all CAs
        share one key: the issuer's name is what tells them apart)."""
        ca_name = _name(self.cas[ca_index][1].cn)
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
        der = self._build(_name(cn, org), ca_name, key, 0x1234 + ca_index, False)
        return der, CertInfo(pub, cn, org, ca_name.public_bytes(), _name(cn, org).public_bytes())


_PKI: Pki | None = None


def pki() -> Pki:
    global _PKI
    if _PKI is None:
        _PKI = Pki()
    return _PKI


def mutate(der: bytes, muts: list[tuple[Any, ...]]) -> bytes:
    b = bytearray(der)
    for m in muts:
        if not b:
            break
        pos = m[1] % len(b)
        if m[0] == "flip":
            b[pos] ^= 1 << m[2]
        elif m[0] == "set":
            b[pos] = m[2]
        elif m[0] == "cut":
            del b[pos:]
        elif m[0] == "junk":
            b[pos:pos] = m[2]
        elif m[0] == "dup":
            b[pos:pos] = b[pos:pos + m[2]]
    return bytes(b)


def names_with_control(der: bytes) -> bool:
    """True if a name attribute of this certificate's subject or issuer holds a control
    character other than TAB (read with `cryptography`): the device refuses such certificates
    (ERR IDENTITY), since it prints names on the console."""
    try:
        cert = x509.load_der_x509_certificate(der)
        values = [str(a.value) for n in (cert.subject, cert.issuer) for a in n]
    except Exception:
        return False
    return any(any(is_control(c) and c != "\t" for c in v) for v in values)


def encode_b64(der: bytes, mode: str) -> str:
    text = binascii.b2a_base64(der).decode().strip()
    if mode == "nopad":
        return text.rstrip("=")
    if mode == "junk":  # non-alphabet characters: CPython's decoder skips them
        return text[:5] + "!" + text[5:] + "*"
    if mode == "split":
        return text[:10] + " " + text[10:]
    if mode == "url":
        return base64.urlsafe_b64encode(der).decode()
    if mode == "empty":
        return '""'
    return text


# =========================================================================================
# The rig: real Console, Store, Outbox over fake NVS; a fake app
# =========================================================================================

class FaultyNVS(FakeNVS):
    """FakeNVS whose mutating call number ``fail_at`` raises OSError(-1) (ESP_FAIL), without effect."""

    def __init__(self, durable: dict[str, Any] | None = None, autocommit: bool = False) -> None:
        super().__init__(durable, autocommit=autocommit)
        self.fail_at: int | None = None
        self.tripped = False

    def _mutating(self, what: str) -> None:
        if self.fail_at is not None and self.calls >= self.fail_at:
            self.fail_at = None
            self.tripped = True
            self.calls += 1
            raise OSError(-1)
        super()._mutating(what)


class FakeApp:
    def __init__(self, store: ss_store.Store, outbox: Outbox) -> None:
        self.store = store
        self.outbox = outbox
        self.wifi = None
        self.mqtt = None
        self.probe: str | None = None
        self.tests: list[tuple[dict[str, str], Any]] = []
        self.stops = 0
        self.resumes = 0
        self.radio = 0

    async def connect_test(self, cfg: dict[str, str], ident: Any = None) -> None:
        self.tests.append((dict(cfg), ident))
        if self.probe is not None:
            raise ProbeError(self.probe, PROBE_MESSAGE)

    async def stop(self) -> None:
        self.stops += 1

    def resume(self) -> None:
        self.resumes += 1

    def radio_on(self) -> None:
        self.radio += 1

    def alert(self, kind: str, cfg: dict[str, str] | None = None) -> int:
        if cfg is None:
            cfg = self.store.provision_load_config()
        seq: int = self.outbox.add(msg.cfg_prefix(cfg), kind, None, 0)
        return seq


class Stream:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    async def read(self, n: int) -> bytes:
        b = self.data[self.pos:self.pos + n]
        self.pos += len(b)
        return b


def _key_forms(d: bytes) -> list[str]:
    h = d.hex()
    return [h, h.upper(), *[binascii.b2a_base64(p + d).decode().strip()[:40] for p in (b"", b"\x00", b"\x00\x00")]]


class Rig:
    """One virtual console and the model of what it must do.  ``run(op)`` for each operation;
    raises Failure (with the recent trace) when a property does not hold."""

    def __init__(self, secrets: list[str], autocommit: bool = False, deadline: float = 5.0,
) -> None:
        self.pki = pki()
        self.autocommit = autocommit
        self.deadline = deadline
        self.secrets = [s for s in dict.fromkeys(secrets) if checkable(s)]
        self.public: set[str] = set()  # values the device shows by design (SSIDs, ping tokens, ...)
        self.out: list[str] = []  # every line printed, split at line breaks as a host reads them
        self.bad_prints: list[str] = []
        self.trace: list[tuple[str, list[str]]] = []
        self.stats: Counter[str] = Counter()
        self.lines = 0
        self.issued: dict[bytes, CertInfo] = {}
        # the model
        self.stored: dict[str, str] | None = None
        self.stored_ident: dict[str, Any] | None = None  # pub, cert, ca, cn
        self.staged: dict[str, str] = {}
        self.ident: dict[str, Any] = {}  # pub (the last CSR's key), cert, cert_info, ca, ca_info
        self.csr: tuple[bytes, str] | None = None  # (pub, CN) of the last CSR answered
        self.pending = 0
        self.next_seq = 0
        self.probe: str | None = None
        self.boots = 0
        self.key_forms: list[str] = []
        self.prov_durable: dict[str, Any] = {}
        self.obx_durable: dict[str, Any] = {}
        self._fault_new: tuple[dict[str, str] | None, dict[str, Any] | None] | None = None
        self._boot()

    # --- device life ----------------------------------------------------------------------
    def _boot(self, after_fault: bool = False) -> None:
        self.boots += 1
        self.prov = FaultyNVS(self.prov_durable, autocommit=self.autocommit)
        self.store = ss_store.Store(self.prov)
        self.store.provision_init()
        self.obx = FakeNVS(self.obx_durable, autocommit=self.autocommit)
        self.outbox = Outbox(self.obx)
        self.outbox.load()
        self.app = FakeApp(self.store, self.outbox)
        self.app.probe = self.probe
        self.console = ss_console.Console(self.store, CHIP, FIRMWARE, self._reset, boot_id=f"boot-{self.boots}",
                                          app=self.app)
        self.checked: RefChecked | None = None  # a checked line (tools) being received, as the model sees it
        self.staged, self.ident = {}, {}
        self.expect_app = {"tests": 0, "stops": 0, "resumes": 0, "radio": 0}
        st = self.store
        if self.stored is None:
            self._ensure(not st.provision_is_provisioned(), "after the reboot the device is provisioned")
            self._ensure(st.load_error is not None and st.load_error.reason == "ESP_ERR_NVS_NOT_FOUND",
                         "not provisioned, but the load error is %r" % (st.load_error and st.load_error.message))
        else:
            self._ensure(st.provision_is_provisioned(), "after the reboot the configuration does not load: %s"
                         % (st.load_error and st.load_error.message))
            self._ensure(st.provision_load_config() == self.stored, "the stored configuration is not what was "
                         f"completed: {st.provision_load_config()!r} != {self.stored!r}")
            ident = st.identity()
            if self.stored_ident is None:
                self._ensure(ident is None, "an identity was stored, none expected")
            else:
                self._ensure(ident is not None, "no identity stored")
                assert ident is not None
                want = self.stored_ident
                self._ensure((ident["key"][36:], ident["cert"], ident["ca"]) == (want["pub"], want["cert"], want["ca"]),
                             "the stored identity is not the one staged")
                forms = _key_forms(ident["key"][4:36])
                if forms[0] not in self.key_forms:
                    self.key_forms += forms
                    self._no_secret(self.out, forms, "the device's private key")
        if not after_fault:
            self._ensure(not st.notices, f"boot notices {st.notices!r}")
        self._ensure((len(self.outbox.pending), self.outbox.next_seq) == (self.pending, self.next_seq),
                     f"outbox after the reboot: {len(self.outbox.pending)} pending, next {self.outbox.next_seq}; "
                     f"want {self.pending}, {self.next_seq}")
        self._snapshot()

    def _reboot(self, after_fault: bool = False) -> None:
        self.prov_durable = dict(self.prov.durable)
        self.obx_durable = dict(self.obx.durable)
        self._boot(after_fault)

    def _snapshot(self) -> None:
        self.durable = dict(self.prov.durable)
        self.calls = self.prov.calls

    async def _reset(self) -> None:
        raise SystemReset()

    def _print(self, *a: object, **kw: object) -> None:
        if kw or len(a) != 1 or not isinstance(a[0], str):
            self.bad_prints.append(f"print{a!r} {kw!r}")
        text = " ".join(str(x) for x in a)
        if "\r" in text or "\n" in text:
            self.bad_prints.append(f"a printed line holds a line break: {text!r}")
        self.out.extend(re.split(r"\r\n|\r|\n", text))

    # --- checks ---------------------------------------------------------------------------
    def _ensure(self, cond: object, what: str) -> None:
        if not cond:
            raise Failure(what)

    def _no_secret(self, lines: list[str], secrets: list[str], what: str) -> None:
        for s in secrets:
            for ln in lines:
                if s in ln and not any(s in p for p in self.public):
                    raise Failure(f"{what} appears in the output: {ln!r}")

    def _no_control(self, lines: list[str]) -> None:
        for ln in lines:
            if any(is_control(c) and c != "\t" for c in ln):
                raise Failure(f"a control character in a printed line: {ln!r}")

    def _no_echo(self, args: list[str], err: str) -> None:
        for a in args:
            if len(a) >= 8 and a not in FIXED_TEXT and a in err:
                raise Failure(f"the ERR line repeats an argument: {err!r}")

    @staticmethod
    def _status(lines: list[str]) -> tuple[bool, str, str]:
        if not lines:
            raise Failure("no reply")
        for ln in lines[:-1]:
            if parse_reply(ln) is not None:
                raise Failure(f"a status line before the last line of the reply: {ln!r}")
        st = parse_reply(lines[-1])
        if st is None:
            raise Failure(f"the reply does not end with a status line: {lines[-1]!r}")
        return st

    @staticmethod
    def _want(st: tuple[bool, str, str], code: str | None = None) -> None:
        """code None: OK; else ERR code."""
        if code is None and not st[0]:
            raise Failure(f"want OK, got ERR {st[1]} {st[2]}")
        if code is not None and (st[0] or st[1] != code):
            raise Failure("want ERR {}, got {}".format(code, "OK " + st[2] if st[0] else f"ERR {st[1]} {st[2]}"))

    # --- operations -----------------------------------------------------------------------
    def run(self, op: tuple[Any, ...]) -> None:
        start = len(self.out)
        try:
            self._run(op)
        except Failure as e:
            recent = "\n".join("  > {}\n{}".format(o, "".join(f"      {ln!r}\n" for ln in lines[-6:]))
                               for o, lines in self.trace[-8:])
            raise Failure(f"{e}\n  op: {_short(op)}\n  printed: {self.out[start:][-8:]!r}\n"
                          f"  recent operations:\n{recent}") from None
        self.trace.append((_short(op), self.out[start:]))
        del self.trace[:-10]

    def _run(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "probe":
            self.probe = self.app.probe = op[1]
            return
        if kind == "fault":
            self.prov.fail_at = self.prov.calls + op[1]
            return
        if kind == "cert":
            _, variant, ca_index, muts, mode = op
            pub, cn = self.csr if self.csr is not None else (self.pki.other_pub, "btn-none")
            if variant == "other_key":
                pub = self.pki.other_pub
            cn = {"other_cn": "btn-other", "no_cn": None, "nasty_cn": "btn\r\nOK"}.get(variant, cn)
            org = {"other_org": "other-tenant", "no_org": None}.get(variant, self._merged().get("tenant", "fuzz"))
            der, info = self.pki.issue(pub, cn, org, ca_index)
            self.issued[der] = info
            return self._line("provision_set_cert " + encode_b64(self._mutate(der, muts), mode))
        if kind == "ca":
            _, ca_index, muts, mode = op
            return self._line("provision_set_ca " + encode_b64(self._mutate(self.pki.cas[ca_index][0], muts), mode))
        if kind == "line":
            return self._line(op[1])
        if kind == "bytes":
            return self._bytes(op[1])
        if kind == "stream":
            return self._stream(op[1])
        raise ValueError(kind)

    def _mutate(self, der: bytes, muts: list[tuple[Any, ...]]) -> bytes:
        return mutate(der, muts)

    def _drive(self, coro: Any, eof_ok: bool = False) -> bool:
        """Run a console coroutine to its end; True if it reset the device."""
        self.prov.tripped = False
        with self._alarm():
            try:
                coro.send(None)
            except StopIteration:
                if eof_ok:
                    raise Failure("Console.run returned") from None
                return False
            except SystemReset:
                return True
            except EOFError:
                if eof_ok:
                    return False
                raise Failure("EOFError escaped:\n" + traceback.format_exc()) from None
            except Hang:
                raise Failure(f"no answer within {self.deadline:g} s") from None
            except BaseException:
                raise Failure("an exception escaped the console:\n" + traceback.format_exc()) from None
        coro.close()
        raise Failure("the console waited for something that never comes (the coroutine suspended)")

    @contextlib.contextmanager
    def _alarm(self) -> Any:
        if not self.deadline or threading.current_thread() is not threading.main_thread():
            yield
            return

        def ring(signum: int, frame: Any) -> None:
            raise Hang()

        old = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, self.deadline)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    def _line(self, text: str) -> None:
        start = len(self.out)
        reset = self._drive(self.console.handle(text))
        self._finish(start, self._apply(text, self.out[start:]), reset)

    def _bytes(self, raw: bytes) -> None:
        start = len(self.out)
        reset = self._drive(self.console.handle_bytes(raw))
        lines = self.out[start:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._want(self._status(lines), "ENCODING")
            self._ensure(len(lines) == 1, "more than the status line")
            self.stats["ERR ENCODING"] += 1
            self.lines += 1
            predicted: bool | str = False
        else:
            predicted = self._apply(text, lines)
        self._finish(start, predicted, reset)

    def _stream(self, data: bytes) -> None:
        self.prov.fail_at = None  # faults are for single commands (the rig power-cycles after one)
        start = len(self.out)
        reset = self._drive(self.console.run(Stream(data)), eof_ok=True)
        lines = self.out[start:]
        pos = 0
        predicted: bool | str = False
        for raw in ref_lines(data):
            text: str | None = None
            checked_reply: tuple[str | None, str] | None = None
            if raw is None:
                self.checked = None
            else:
                raw, checked_reply = self._ref_checked(raw)
                if raw is None and checked_reply is None:
                    continue  # an empty line: abandons a checked line quietly, no reply
            if checked_reply is not None:
                seg_end = pos
                while seg_end < len(lines) and parse_reply(lines[seg_end]) is None:
                    seg_end += 1
                if seg_end >= len(lines):
                    raise Failure("no status line for the stream's checked line")
                seg, pos = lines[pos:seg_end + 1], seg_end + 1
                code, text_ok = checked_reply
                st = self._status(seg)
                self._want(st, code)
                self._ensure(len(seg) == 1, "more than the status line")
                if code is None:
                    self._ensure(st[2] == text_ok, f"checked piece answered {st[2]!r}, want {text_ok!r}")
                self.stats["OK piece" if code is None else "ERR " + code] += 1
                self.lines += 1
                continue
            if raw is not None:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    pass
                else:
                    try:
                        if not ref_split(text):
                            continue  # blank: no reply
                    except RefQuote:
                        pass
            seg_end = pos
            while seg_end < len(lines) and parse_reply(lines[seg_end]) is None:
                seg_end += 1
            if seg_end >= len(lines):
                raise Failure("no status line for the stream's line %r" % (raw[:80] if raw is not None else "(long)"))
            seg, pos = lines[pos:seg_end + 1], seg_end + 1
            if text is None:
                self._want(self._status(seg), "TOOLONG" if raw is None else "ENCODING")
                self._ensure(len(seg) == 1, "more than the status line")
                self.stats["ERR TOOLONG" if raw is None else "ERR ENCODING"] += 1
                self.lines += 1
                continue
            predicted = self._apply(text, seg)
            if predicted:
                break  # the device reset: the rest of the stream is lost
        if pos != len(lines):
            raise Failure(f"output that belongs to no line of the stream: {lines[pos:][:5]!r}")
        self._finish(start, predicted, reset)

    def _ref_checked(self, raw: bytes) -> tuple[bytes | None, tuple[str | None, str] | None]:
        """The checked-line layer (ssproto.Checked, PROVISIONING.md) for one complete line of a
        stream: (the command line's bytes to run, or None; the reply of the layer itself, or
        None).  A line starting with @ opens a checked line ``@<length>:<crc32 hex> <text>``, one
        starting with + continues it; each piece is answered ``OK +<bytes so far>`` until the
        text is complete, which then runs if its length and CRC-32 match (else ERR CHECKSUM).  A
        plain line in the middle of one is ERR CHECKSUM; an empty one abandons it quietly."""
        if raw[:1] not in (b"@", b"+"):
            # (as ss_console does it: only a checked line with bytes received so far is "interrupted")
            if self.checked is not None and self.checked.buf and raw:
                self.checked = None
                return None, ("CHECKSUM", "")
            self.checked = None
            return (raw if raw else None), None
        if raw[:1] == b"@":
            self.checked = None
            sp = raw.find(b" ")
            head = raw[1:sp] if sp > 0 else b""
            n, colon, c = head.partition(b":")
            if not (colon and 0 < len(n) <= 5 and len(c) == 8 and re.fullmatch(rb"[0-9]+", n)
                    and re.fullmatch(rb"[0-9a-fA-F]{8}", c)):
                return None, ("CHECKSUM", "")
            if int(n) > MAX_LINE:
                return None, ("TOOLONG", "")
            self.checked = RefChecked(int(n), int(c, 16), bytearray(raw[sp + 1:]))
        else:
            if self.checked is None:
                return None, ("CHECKSUM", "")
            self.checked.buf += raw[1:]
        cur = self.checked
        if len(cur.buf) < cur.want:
            return None, (None, f"+{len(cur.buf)}")
        self.checked = None
        if len(cur.buf) > cur.want or binascii.crc32(bytes(cur.buf)) != cur.crc:
            return None, ("CHECKSUM", "")
        if not cur.buf:
            return None, None  # an empty command line: nothing to answer
        return bytes(cur.buf), None

    def _finish(self, start: int, predicted: bool | str, reset: bool) -> None:
        lines = self.out[start:]
        if self.bad_prints:
            raise Failure(self.bad_prints[0])
        self._no_secret(lines, self.secrets, "a WiFi password")
        self._no_secret(lines, self.key_forms, "the device's private key")
        got_app = {"tests": len(self.app.tests), "stops": self.app.stops, "resumes": self.app.resumes,
                   "radio": self.app.radio}
        self._ensure(got_app == self.expect_app, f"calls into the app {got_app}, want {self.expect_app}")
        if predicted == "fault":
            self._after_fault()
            return
        if reset != bool(predicted):
            raise Failure("the device reset" if reset else "the device did not reset")
        if reset:
            self._reboot()
            return
        p = self.prov
        self._ensure(p.durable == self.durable, "partial save: the durable NVS state changed")
        self._ensure(p.calls == self.calls, f"NVS writes without a save ({p.calls - self.calls} calls)")
        self._ensure(p.view == p.durable, "uncommitted NVS changes left behind")

    def _after_fault(self) -> None:
        """ERR NVS after an injected fault: the durable state holds the old or the new configuration."""
        assert self._fault_new is not None
        new_cfg, new_ident = self._fault_new
        fresh = ss_store.Store(FakeNVS(self.prov.durable))
        fresh.provision_init()
        got = fresh.provision_load_config() if fresh.provision_is_provisioned() else None
        got_ident = fresh.identity()
        def idt(i):
            return (None if i is None else (i["pub"], i["cert"], i["ca"]))
        got_idt = None if got_ident is None else (got_ident["key"][36:], got_ident["cert"], got_ident["ca"])
        if got == self.stored and got_idt == idt(self.stored_ident):
            pass
        elif got == new_cfg and got_idt == idt(new_ident):
            self.stored, self.stored_ident = new_cfg, new_ident  # (a failed clear leaves the outbox alone)
        else:
            raise Failure("partial save: after ERR NVS the flash holds neither the old nor the new configuration "
                          f"({got!r})")
        self._fault_new = None
        self._reboot(after_fault=True)  # power cycle: the model follows what the flash holds

    # --- the model: one line -> expected reply and state ---------------------------------------
    def _apply(self, text: str, lines: list[str]) -> bool | str:
        """Check the reply to one line; update the model.  True: the device must reset."""
        self.lines += 1
        try:
            args = ref_split(text)
        except RefQuote:
            st = self._status(lines)
            self._want(st, "QUOTE")
            self._ensure(len(lines) == 1, "more than the status line")
            self.stats["ERR QUOTE"] += 1
            return False
        if not args:
            self._ensure(not lines, "a reply to a blank line")
            self.stats["blank"] += 1
            return False
        st = self._status(lines)
        self.stats["OK" if st[0] else "ERR " + st[1]] += 1
        if not st[0] and st[1] == "INTERNAL":
            raise Failure("an exception inside the firmware (caught by Console.handle): " + lines[-1])
        cmd, a = args[0], args[1:]
        if cmd not in KNOWN:
            self._want(st, "UNKNOWN")
            self._ensure(len(lines) == 1, "more than the status line")
            self._no_echo(args, lines[-1])
            return False
        self.stats["cmd " + cmd] += 1
        result: bool | str = getattr(self, "_c_" + cmd)(a, st, lines)
        if cmd != "ping":
            self._no_control(lines)
        if not st[0]:
            self._no_echo(a, lines[-1])
        return result

    def _merged(self) -> dict[str, str]:
        cfg = dict(self.stored) if self.stored is not None else {}
        cfg.update(self.staged)
        cfg.setdefault("mqtt_uri", DEFAULT_URI)
        return cfg

    def _c_help(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        self._want(st)
        self._ensure(lines[0] == "Commands:", "help does not start with Commands:")
        return False

    def _c_ping(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        if len(a) > 1:
            self._want(st, "USAGE")
        elif a and ("\r" in a[0] or "\n" in a[0]):
            self._want(st, "INVALID")
        else:
            self._want(st)
            want = ["pong"] + a
            try:
                got = ref_split(st[2])
            except RefQuote:
                got = None
            self._ensure(got == want, f"ping answered {st[2]!r}, not {want!r}")
            self.public.update(a)
        return False

    def _c_provision_set_wifi(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        if len(a) != 2:
            self._want(st, "USAGE")
        elif not ssid_ok(a[0]) or not password_ok(a[1]):
            self._want(st, "INVALID")
        else:
            self._want(st)
            self.staged.update(wifi_ssid=a[0], wifi_pass=a[1])
            self.public.add(a[0])
            self._ensure(lines[0] == f"WiFi credentials saved: SSID='{a[0]}'", f"set_wifi said {lines[0]!r}")
        return False

    def _c_provision_set_device(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        if len(a) != 4:
            self._want(st, "USAGE")
        elif not all(ident_ok(x) for x in a):
            self._want(st, "INVALID")
        else:
            self._want(st)
            self.staged.update(zip(("device_id", "tenant", "building", "room"), a, strict=True))
            self.public.update(a)
        return False

    def _c_provision_set_mqtt(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        if len(a) != 1:
            self._want(st, "USAGE")
        elif uri_scheme(a[0]) is None:
            self._want(st, "INVALID")
        else:
            self._want(st)
            self.staged["mqtt_uri"] = a[0]
            self.public.add(a[0])
        return False

    def _c_provision_identity_csr(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        cfg = self._merged()
        if a:
            self._want(st, "USAGE")
        elif "device_id" not in cfg:
            self._want(st, "INCOMPLETE")
        else:
            self._want(st)
            self._ensure(st[2].startswith("csr "), f"no CSR in {st[2]!r}")
            self.expect_app["radio"] += 1  # switched on before the key is drawn
            csr = x509.load_der_x509_csr(base64.b64decode(st[2][4:], validate=True))
            self._ensure(csr.is_signature_valid, "the CSR's signature does not verify")
            cns = [x.value for x in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
            self._ensure(cns == [cfg["device_id"]], f"CSR for {cns!r}, not the device id")
            pub = csr.public_key()
            self._ensure(isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1", "not P-256")
            assert isinstance(pub, ec.EllipticCurvePublicKey)
            self.csr = (_point(pub), cfg["device_id"])
            self.ident = {"pub": self.csr[0]}
        return False

    def _c_provision_set_cert(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        der = b64_value(a[0]) if len(a) == 1 else None
        if len(a) != 1:
            self._want(st, "USAGE")
        elif "pub" not in self.ident:
            self._want(st, "STATE")
        elif der is None:
            self._want(st, "INVALID")
        else:
            info = self.issued.get(der)
            if info is not None:
                ok = info.pub == self.ident["pub"] and not names_with_control(der)
                self._want(st, None if ok else "IDENTITY")
            elif not st[0]:
                self._want(st, "IDENTITY")
            if st[0]:
                self._ensure(self.ident["pub"] in der, "a certificate for another key was accepted")
                self.ident["cert"], self.ident["cert_info"] = der, info
        return False

    def _c_provision_set_ca(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        der = b64_value(a[0]) if len(a) == 1 else None
        if len(a) != 1:
            self._want(st, "USAGE")
        elif der is None:
            self._want(st, "INVALID")
        else:
            info = self.pki.ca_info.get(der)
            if info is not None and names_with_control(der):
                info = None  # refused: names with control characters
            if info is not None or not st[0]:
                self._want(st, None if info is not None else "IDENTITY")
            if st[0]:
                self.ident["ca"], self.ident["ca_info"] = der, info
        return False

    def _c_provision_complete(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool | str:
        if a not in ([], ["--offline"]):
            self._want(st, "USAGE")
            return False
        cfg = self._merged()
        if "wifi_ssid" not in cfg or "device_id" not in cfg:
            self._want(st, "INCOMPLETE")
            return False
        ambiguous = False
        new_ident: dict[str, Any] | None
        if self.ident:
            if any(p not in self.ident for p in ("pub", "cert", "ca")):
                self._want(st, "INCOMPLETE")
                return False
            ci, ai = self.ident.get("cert_info"), self.ident.get("ca_info")
            if ci is not None and ai is not None:
                if ci.cn != cfg["device_id"] or ci.org != cfg["tenant"] or ci.issuer != ai.subject:
                    self._want(st, "IDENTITY")
                    return False
            else:
                ambiguous = True  # a mutated certificate the device accepted: its content is unknown here
            new_ident = {"pub": self.ident["pub"], "cert": self.ident["cert"], "ca": self.ident["ca"],
                         "cn": cfg["device_id"], "org": cfg["tenant"]}
        else:  # the stored identity goes on while it names this device and tenant
            si = self.stored_ident
            keep = si is not None and (si["cn"], si["org"]) == (cfg["device_id"], cfg["tenant"])
            new_ident = si if keep else None
        if ambiguous and not st[0] and st[1] == "IDENTITY":
            return False
        if uri_scheme(cfg["mqtt_uri"]) == "mqtts" and new_ident is None:
            self._want(st, "INCOMPLETE")
            return False
        offline = bool(a)
        exp = self.expect_app
        if offline:
            exp["stops"] += 1
        else:
            exp["tests"] += 1
            self._ensure(len(self.app.tests) >= exp["tests"], "no connect test")
            tcfg, tident = self.app.tests[exp["tests"] - 1]
            self._ensure(tcfg == cfg, f"the connect test got {tcfg!r}, not {cfg!r}")
            self._ensure((tident is None) == (new_ident is None), "the connect test got the wrong identity")
        if not offline and self.probe is not None:
            self._want(st, self.probe)
            self._ensure(st[2] == PROBE_MESSAGE, f"connect test message {st[2]!r}")
            return False
        if self.prov.tripped and not st[0]:
            self._want(st, "NVS")
            exp["resumes"] += 1  # services resumed after the failed save
            self._fault_new = (cfg, new_ident)
            return "fault"
        self._want(st)
        want = f"[ALERT] Test alert {self.next_seq} stored"
        self._ensure(any(ln.startswith(want) for ln in lines), f"no {want!r} line")
        self._test_alert()
        self.stored, self.stored_ident = cfg, new_ident
        return True

    def _c_provision_discard(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        if a:
            self._want(st, "USAGE")
        else:
            self._want(st)
            self.staged, self.ident = {}, {}
        return False

    def _c_provision_status(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        if a:
            self._want(st, "USAGE")
            return False
        self._want(st)
        got: dict[str, str] = {}
        for ln, (label, name) in zip(lines[:-1], STATUS_LABELS, strict=False):
            self._ensure(ln.startswith(label + ": "), f"status line {ln!r}, want label {label!r}")
            try:
                vals = ref_split(ln[len(label) + 2:])
            except RefQuote:
                vals = []
            self._ensure(len(vals) == 1, f"status value of {ln!r} is not one argument")
            got[name] = vals[0]
        self._ensure(len(lines) == len(STATUS_LABELS) + 1, f"{len(lines) - 1} status lines")
        s = self.stored or {}
        pending = sorted(list(self.staged) + (["identity"] if self.ident else []))  # wifi_pass by name only
        want = {
            "provisioned": "yes" if self.stored else "no",
            "wifi_password": "not set" if not self.stored else ("set" if s["wifi_pass"] else "open network"),
            "pending": ",".join(pending) or "none",
            "wifi_state": "off", "ip_address": "", "mqtt_state": "off",
            "chip_id": CHIP, "boot_id": f"boot-{self.boots}", "firmware": FIRMWARE, "free_heap": "",
            "alerts_pending": str(self.pending), "next_alert_seq": str(self.next_seq),
            "certificate_sha256": hashlib.sha256(self.stored_ident["cert"]).hexdigest() if self.stored_ident else "",
        }
        for k in ("wifi_ssid", "device_id", "tenant", "building", "room", "mqtt_uri"):
            want[k] = s.get(k, "")
        for k, v in want.items():
            self._ensure(got.get(k) == v, f"status {k} = {got.get(k)!r}, want {v!r}")
        if self.stored_ident is None:
            self._ensure(got["certificate"] == "none", "certificate {!r}".format(got["certificate"]))
        else:
            self._ensure(got["certificate"].startswith("CN={} issued by ".format(self.stored_ident["cn"])),
                         "certificate {!r}".format(got["certificate"]))
        return False

    def _c_provision_verify(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        if len(a) != 1:
            self._want(st, "USAGE")
        elif not nonce_ok(a[0]):
            self._want(st, "INVALID")
        elif self.stored is None:
            self._want(st, "STATE")
        else:
            self._want(st)
            want = "Check: " + check_value(a[0], self.stored["wifi_ssid"], self.stored["wifi_pass"])
            self._ensure(lines[:-1] == [want], f"verify said {lines[:-1]!r}, want {want!r}")
        return False

    def _factory_reset(self, st: tuple[bool, str, str]) -> bool | str:
        if self.prov.tripped and not st[0]:
            self._want(st, "NVS")
            self._fault_new = (None, None)
            return "fault"
        self._want(st)
        self.stored, self.stored_ident, self.pending = None, None, 0
        return True

    def _c_provision_reset(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool | str:
        if a != ["--confirm"]:
            self._want(st, "CONFIRM")
            return False
        return self._factory_reset(st)

    def _c_provision(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool | str:
        if a != ["clear"]:
            self._want(st, "USAGE")
            return False
        return self._factory_reset(st)

    def _c_alert_test(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        if a:
            self._want(st, "USAGE")
        elif self.stored is None:
            self._want(st, "STATE")
        else:
            self._want(st)
            self._ensure(st[2] == f"seq {self.next_seq}", f"alert_test answered {st[2]!r}")
            self._test_alert()
        return False

    def _test_alert(self) -> None:
        # Every alert here is a test alert; at most TEST_MAX of them wait in the outbox, a new one
        # takes the place of the oldest (ss_outbox), so a test alert is always stored.
        self.pending = min(self.pending + 1, TEST_MAX)
        self.next_seq += 1

    def _c_reboot(self, a: list[str], st: tuple[bool, str, str], lines: list[str]) -> bool:
        if a:
            self._want(st, "USAGE")
            return False
        self._want(st)
        return True


def _short(op: tuple[Any, ...]) -> str:
    r = repr(op)
    return r if len(r) <= 300 else r[:240] + f"... ({len(r)} chars)"


@contextlib.contextmanager
def captured(rig: Rig) -> Any:
    """ss_console's print goes to the rig; anything printed another way fails the example."""
    stray = io.StringIO()
    ss_console.print = rig._print  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(stray):
            yield
    finally:
        del ss_console.print  # type: ignore[attr-defined]
    if stray.getvalue():
        raise Failure(f"output that bypassed the console's print: {stray.getvalue()[:200]!r}")


@dataclass
class RefChecked:
    want: int
    crc: int
    buf: bytearray


@dataclass
class Case:
    secrets: list[str] = field(default_factory=list)
    autocommit: bool = False
    ops: list[tuple[Any, ...]] = field(default_factory=list)


def run_case(case: Case, deadline: float = 5.0) -> Rig:
    rig = Rig(case.secrets, case.autocommit, deadline)
    with captured(rig):
        for op in case.ops:
            rig.run(op)
    return rig


# =========================================================================================
# Generators: plain data from a Chooser, so random.Random and hypothesis can both drive them
# =========================================================================================

ALPHABETS = {
    "printable": "".join(chr(c) for c in range(0x20, 0x7F)),
    "ident": string.ascii_letters + string.digits + "._-",
    "alnum": string.ascii_letters + string.digits,
    "hex": "0123456789abcdefABCDEF",
    "b64": string.ascii_letters + string.digits + "+/=",
    "tricky": ' \t"\\aZ09-_.:/~=' + "\u00e9\u20ac\U0001f600\x00\x01\x08\x1b\x7f\x85\x9b\u00a0\u2028\ufeff\r\n",
}
TERMINATORS = (b"\r\n", b"\n", b"\r")
BAD_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82")
CONNECT_CODES = tuple(ssproto.CONNECT_TEST_CODES)


class Chooser:
    """What a generator may ask for.  Subclasses: RandomChooser here, one over hypothesis's data
    in the tests.  Everything else derives from integer(), so both shrink/replay the same way."""

    def integer(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def text(self, kind: str, lo: int, hi: int) -> str:
        raise NotImplementedError

    def binary(self, lo: int, hi: int) -> bytes:
        raise NotImplementedError

    def choice(self, seq: Any) -> Any:
        return seq[self.integer(0, len(seq) - 1)]

    def weighted(self, pairs: list[tuple[int, Any]]) -> Any:
        x = self.integer(0, sum(w for w, _ in pairs) - 1)
        for w, v in pairs:
            if x < w:
                return v
            x -= w
        raise AssertionError

    def chance(self, one_in: int) -> bool:
        return self.integer(0, one_in - 1) == 0


class RandomChooser(Chooser):
    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)

    def _char(self) -> str:
        k = self.r.random()
        if k < 0.5:
            return chr(self.r.randint(0x20, 0x7E))
        if k < 0.7:
            return self.r.choice(ALPHABETS["tricky"])
        while True:
            c = self.r.choice((self.r.randint(0x80, 0x7FF), self.r.randint(0x800, 0xFFFF),
                               self.r.randint(0x10000, 0x10FFFF), self.r.randint(0, 0x1F)))
            if not 0xD800 <= c <= 0xDFFF:
                return chr(c)

    def text(self, kind: str, lo: int, hi: int) -> str:
        n = self.r.randint(lo, hi)
        if kind == "any":
            return "".join(self._char() for _ in range(n))
        return "".join(self.r.choice(ALPHABETS[kind]) for _ in range(n))

    def binary(self, lo: int, hi: int) -> bytes:
        return self.r.randbytes(self.r.randint(lo, hi))


class Gen:
    def __init__(self, ch: Chooser) -> None:
        self.ch = ch
        self.secrets: list[str] = []
        self.pool = [self.secret() for _ in range(ch.integer(1, 3))]

    # --- values ------------------------------------------------------------------------------
    def secret(self) -> str:
        """A valid WiFi password (registered as a secret)."""
        ch = self.ch
        s = ch.weighted([(6, lambda: "~" + ch.text("printable", 7, 62)),
                         (2, lambda: ch.text("hex", 64, 64)),
                         (2, lambda: ch.text("printable", 8, 63))])()
        self.secrets.append(s)
        return s

    def password(self) -> str:
        """Whatever is typed where the password belongs (registered as a secret: valid or not)."""
        ch = self.ch
        s = self.pool[ch.integer(0, len(self.pool) - 1)]
        s = ch.weighted([
            (8, lambda: s),
            (1, lambda: ""),
            (1, lambda: s + "\u00e9"),
            (1, lambda: (s * 3)[:ch.integer(64, 70)] + "~"),
            (1, lambda: s[:ch.integer(1, 7)]),
            (1, lambda: s[:4] + "\x07" + s[4:]),
            (1, lambda: ch.text("any", 0, 70)),
        ])()
        self.secrets.append(s)
        return s

    def ssid(self) -> str:
        ch = self.ch
        return ch.weighted([
            (4, lambda: ch.text("printable", 1, 32)),
            (2, lambda: self._valid_unicode_ssid()),
            (1, lambda: ""),
            (1, lambda: ch.text("printable", 33, 40)),
            (1, lambda: ch.text("printable", 1, 10) + ch.choice(["\x00", "\t", "\x1b", "\x7f", "\x85", "\x9b"])),
            (1, lambda: ch.text("any", 0, 20)),
            (1, lambda: ch.text("tricky", 1, 12)),
            (1, lambda: "\u00e9" * ch.integer(15, 17)),  # 30..34 bytes
        ])()

    def _valid_unicode_ssid(self) -> str:
        s = "".join(c for c in self.ch.text("any", 1, 12) if not is_control(c))
        while len(s.encode()) > 32:
            s = s[:-1]
        return s or "net"

    def ident(self) -> str:
        ch = self.ch
        return ch.weighted([
            (6, lambda: ch.text("alnum", 1, 1) + ch.text("ident", 0, 15)),
            (1, lambda: ch.text("alnum", 1, 1) + ch.text("ident", 63, 63)),
            (1, lambda: ""),
            (1, lambda: ch.choice("-._") + ch.text("ident", 0, 8)),
            (1, lambda: ch.text("alnum", 1, 4) + ch.choice(["/", " ", "\u00e9", "+", "#", "\x00"]) + "x"),
            (1, lambda: ch.text("alnum", 65, 66)),
            (1, lambda: ch.text("any", 1, 10)),
        ])()

    def valid_ident(self) -> str:
        return self.ch.text("alnum", 1, 1) + self.ch.text("ident", 0, 12)

    def uri(self) -> str:
        ch = self.ch
        if ch.chance(8):
            return ch.text("any", 0, 40)
        scheme = ch.weighted([(6, "mqtt://"), (3, "mqtts://"), (1, "http://"), (1, "mqtt:/"), (1, "MQTT://"),
                              (1, "")])
        host = ch.weighted([
            (5, lambda: ".".join(ch.text("alnum", 1, 8) for _ in range(ch.integer(1, 3)))),
            (1, lambda: ".".join(str(ch.integer(0, 255)) for _ in range(4))),
            (1, lambda: ""), (1, lambda: "-a"), (1, lambda: "a-"), (1, lambda: "a..b"), (1, lambda: "a" * 64),
            (1, lambda: ("a" * 63 + ".") * 4), (1, lambda: "h\u00e9st"), (1, lambda: "h_st"),
        ])()
        port = ch.weighted([(4, ""), (2, ":1883"), (1, ":8883"), (1, ":0"), (1, ":65535"), (1, ":65536"), (1, ":"),
                            (1, ":abc"), (1, ":00080"), (1, ":123456"), (1, f":{ch.integer(1, 99999)}")])
        tail = ch.weighted([(6, ""), (1, "/"), (1, "//"), (1, "/x")])
        return scheme + host + port + tail

    def token(self) -> str:
        return self.ch.weighted([(3, lambda: self.ch.text("ident", 0, 12)), (2, lambda: self.ch.text("any", 0, 20)),
                                 (1, lambda: self.ch.text("tricky", 0, 12))])()

    def nonce(self) -> str:
        ch = self.ch
        return ch.weighted([(4, lambda: ch.text("hex", 16, 64)), (1, lambda: ch.text("hex", 1, 15)),
                            (1, lambda: ch.text("hex", 65, 70)), (1, lambda: ch.text("printable", 16, 20))])()

    def noise_arg(self) -> str:
        ch = self.ch
        return ch.weighted([
            (3, lambda: ch.text("any", 0, 12)), (2, lambda: ch.text("tricky", 0, 8)), (2, self.ident),
            (1, lambda: "--confirm"), (1, lambda: "--offline"), (1, lambda: "clear"), (1, self.password),
            (1, lambda: ch.text("b64", 0, 60)), (1, self.uri), (1, self.token),
        ])()

    # --- lines -------------------------------------------------------------------------------
    def render(self, args: list[str]) -> str:
        """A line for these arguments: join_args, or random quoting and separators."""
        ch = self.ch
        if not any("\r" in a or "\n" in a for a in args) and ch.weighted([(3, True), (1, False)]):
            return ssproto.join_args(args)
        parts = [self._render_arg(a) for a in args]
        seps = [ch.weighted([(6, " "), (1, "\t"), (1, "  "), (1, " \t ")]) for _ in parts]
        line = "".join(p + s for p, s in zip(parts, seps, strict=True)).rstrip(" \t")
        if ch.chance(6):
            line = ch.choice([" ", "\t", "  "]) + line + ch.choice(["", " ", "\t"])
        return line

    def _render_arg(self, a: str) -> str:
        ch = self.ch
        style = ch.integer(0, 3)
        if style == 0 or a == "":  # quoted
            return '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if style == 1:  # backslash before every special character
            return "".join("\\" + c if c in ' \t"\\' else c for c in a)
        if style == 2 and len(a) > 1:  # two parts, concatenated: quoted + escaped
            k = ch.integer(1, len(a) - 1)
            return '"' + a[:k].replace("\\", "\\\\").replace('"', '\\"') + '"' + \
                "".join("\\" + c if c in ' \t"\\' else c for c in a[k:])
        return ssproto.join_args([a]) if "\r" not in a and "\n" not in a else '"' + a.replace(
            "\\", "\\\\").replace('"', '\\"') + '"'

    def _arity(self, args: list[str]) -> list[str]:
        """Now and then one argument too many or too few."""
        ch = self.ch
        k = ch.integer(0, 11)
        if k == 0 and len(args) > 1:
            return args[:-1]
        if k == 1:
            return args + [self.noise_arg()]
        return args

    def command(self) -> list[str]:
        ch = self.ch
        kind = ch.weighted([
            (10, "wifi"), (8, "device"), (6, "mqtt"), (2, "csr"), (2, "discard"), (5, "status"), (4, "ping"),
            (1, "help"), (2, "alert"), (6, "complete"), (2, "reset"), (1, "reset_confirm"), (1, "clear"),
            (1, "reboot"), (1, "verify"), (5, "misplaced"), (6, "soup"), (5, "garbage"),
        ])
        if kind == "wifi":
            return self._arity(["provision_set_wifi", self.ssid(), self.password()])
        if kind == "device":
            return self._arity(["provision_set_device"] + [self.ident() for _ in range(4)])
        if kind == "mqtt":
            return self._arity(["provision_set_mqtt", self.uri()])
        if kind == "csr":
            return self._arity(["provision_identity_csr"])
        if kind == "discard":
            return self._arity(["provision_discard"])
        if kind == "status":
            return self._arity(["provision_status"])
        if kind == "ping":
            return ["ping"] + [self.token() for _ in range(ch.weighted([(1, 0), (4, 1), (1, 2)]))]
        if kind == "help":
            return ["help"]
        if kind == "alert":
            return self._arity(["alert_test"])
        if kind == "complete":
            return ["provision_complete"] + ch.weighted([(4, []), (3, ["--offline"]), (1, ["--now"]),
                                                          (1, ["--offline", "x"]), (1, ["--OFFLINE"])])
        if kind == "reset":
            return ["provision_reset"] + ch.choice([[], ["confirm"], ["--CONFIRM"], ["--confirm", "x"], ["-confirm"]])
        if kind == "reset_confirm":
            return ["provision_reset", "--confirm"]
        if kind == "clear":
            return ["provision"] + ch.choice([["clear"], [], ["clear", "now"], ["erase"]])
        if kind == "reboot":
            return self._arity(["reboot"])
        if kind == "verify":
            return self._arity(["provision_verify", self.nonce()])
        if kind == "misplaced":  # a password where it does not belong: never echoed
            s = self.password()
            return ch.choice([
                [s], [s, "more"], ["provision_set_wif", s], ["provision_set_wifi", s], ["provision_set_wifi", "net", s,
                                                                                       "extra"],
                ["provision_set_device", s, "b", "c"], ["provision_set_device", "a", "b", "c", "d", s],
                ["provision_set_mqtt", s], ["provision_set_mqtt", s, "x"], ["provision_complete", s],
                ["provision_reset", s], ["provision", s], ["provision_verify", s], ["provision_set_cert", s],
                ["provision_set_ca", s], ["provision_discard", s], ["provision_status", s], ["alert_test", s],
                ["reboot", s], ["help", s], ["provision_identity_csr", s],
            ])
        if kind == "soup":
            cmd = ch.weighted([(4, lambda: ch.choice(KNOWN)), (1, lambda: ch.choice(NEAR))])()
            return [cmd] + [self.noise_arg() for _ in range(ch.integer(0, 4))]
        return []  # garbage: see line()

    def line(self) -> str:
        args = self.command()
        if args:
            return self.render(args)
        return self.ch.weighted([(3, lambda: self.ch.text("any", 0, 60)), (2, lambda: self.ch.text("tricky", 0, 30)),
                                 (1, lambda: self.ch.text("printable", 0, 60))])()

    # --- operations ----------------------------------------------------------------------------
    def der_muts(self) -> list[tuple[Any, ...]]:
        ch = self.ch
        if ch.weighted([(3, True), (2, False)]):
            return []
        out: list[tuple[Any, ...]] = []
        for _ in range(ch.integer(1, 3)):
            out.append(ch.weighted([
                (3, lambda: ("flip", ch.integer(0, 600), ch.integer(0, 7))),
                (2, lambda: ("set", ch.integer(0, 600), ch.choice([0, 0x80, 0x81, 0x82, 0xFF, ch.integer(0, 255)]))),
                (1, lambda: ("cut", ch.integer(0, 600))),
                (1, lambda: ("junk", ch.integer(0, 600), ch.binary(1, 8))),
                (1, lambda: ("dup", ch.integer(0, 600), ch.integer(1, 40))),
            ])())
        return out

    def b64_mode(self) -> str:
        return self.ch.weighted([(8, "std"), (1, "nopad"), (1, "junk"), (1, "split"), (1, "url"), (1, "empty")])

    def ca_index(self) -> int:
        n = len(CA_CNS) + len(NASTY_CNS)
        return self.ch.weighted([(4, 0), (1, self.ch.integer(0, n - 1))])

    def stream(self) -> bytes:
        ch = self.ch
        out = b""
        for _ in range(ch.integer(1, 6)):
            seg = ch.weighted([
                (6, lambda: self.line().encode()),
                (1, lambda: b"x" * (MAX_LINE + ch.choice([-1, 0, 1, 2, 100]))),
                (1, lambda: "\u00e9".encode() * (MAX_LINE // 2) + ch.choice([b"", b"a", b"\xc3"])),
                (1, lambda: ch.binary(0, 30)),
                (1, lambda: b""),
                (2, lambda: self.checked()),
            ])()
            for _ in range(ch.weighted([(3, 0), (1, 1), (1, 3)])):  # editing keys, at random places
                p = ch.integer(0, len(seg))
                seg = seg[:p] + ch.choice([b"\x08", b"\x7f", b"\x03", b"\x7f\x7f"]) + seg[p:]
            out += seg + ch.choice(TERMINATORS)
        if ch.chance(4):
            out += self.line().encode()[:50]  # unfinished: dropped at EOF
        return out

    def checked(self) -> bytes:
        """A command line as a tool sends it (ssproto.checked_lines: @<length>:<crc32> and +
        pieces), in pieces of several sizes, sometimes damaged: a piece lost, a byte changed, a
        plain line in the middle, or a continuation on its own."""
        ch = self.ch
        pieces = ssproto.checked_lines(self.line(), binascii.crc32, ch.choice([ssproto.PIECE, 1, 7, 40]))
        damage = ch.integer(0, 9)
        if damage == 0 and len(pieces) > 1:
            del pieces[ch.integer(1, len(pieces) - 1)]
        elif damage == 1:
            k = ch.integer(0, len(pieces) - 1)
            if len(pieces[k]) > 1:
                i = ch.integer(1, len(pieces[k]) - 1)
                pieces[k] = pieces[k][:i] + bytes([pieces[k][i] ^ 0x20]) + pieces[k][i + 1:]
        elif damage == 2:
            pieces.insert(ch.integer(1, len(pieces)), self.line().encode())
        elif damage == 3:
            pieces = pieces[1:] or [b"+x"]
        return b"\r\n".join(pieces)

    def bytes_line(self) -> bytes:
        ch = self.ch
        return ch.weighted([
            (3, lambda: ch.binary(0, 40)),
            (2, lambda: self._splice(self.line().encode(), ch.choice(BAD_UTF8))),
            (2, lambda: self.line().encode()),
        ])()

    def _splice(self, b: bytes, junk: bytes) -> bytes:
        p = self.ch.integer(0, len(b))
        return b[:p] + junk + b[p:]

    def flow(self, kind: str) -> list[tuple[Any, ...]]:
        """Provision the device through the console (plain mqtt:// or mqtts:// with an identity)."""
        ch = self.ch
        ops: list[tuple[Any, ...]] = [
            ("line", ssproto.join_args(["provision_set_wifi", self._valid_unicode_ssid(),
                                        self.pool[ch.integer(0, len(self.pool) - 1)]])),
            ("line", ssproto.join_args(["provision_set_device"] + [self.valid_ident() for _ in range(4)])),
        ]
        if kind == "mqtts":
            ca = self.ca_index()
            ops += [("line", "provision_set_mqtt mqtts://broker.fuzz:8883"), ("line", "provision_identity_csr"),
                    ("cert", "good", ca, [], "std"), ("ca", ca, [], "std")]
        elif ch.chance(2):
            ops.append(("line", "provision_set_mqtt mqtt://broker.fuzz"))
        ops.append(("line", ch.choice(["provision_complete", "provision_complete --offline"])))
        return ops

    def ops(self) -> list[tuple[Any, ...]]:
        ch = self.ch
        kind = ch.weighted([
            (30, "line"), (6, "bytes"), (4, "stream"), (3, "cert"), (3, "ca"), (3, "probe"), (2, "fault"),
            (2, "flow"), (1, "long"),
        ])
        if kind == "line":
            return [("line", self.line())]
        if kind == "bytes":
            return [("bytes", self.bytes_line())]
        if kind == "stream":
            return [("stream", self.stream())]
        if kind == "cert":
            variants = [(6, "good"), (1, "other_cn"), (1, "no_cn"), (1, "other_org"), (1, "no_org"), (1, "other_key"),
                        (1, "nasty_cn")]
            return [("cert", ch.weighted(variants), self.ca_index(), self.der_muts(), self.b64_mode())]
        if kind == "ca":
            return [("ca", self.ca_index(), self.der_muts(), self.b64_mode())]
        if kind == "probe":
            return [("probe", ch.weighted([(2, None), (1, ch.choice(CONNECT_CODES))]))]
        if kind == "fault":
            return [("fault", ch.integer(0, 10))]
        if kind == "flow":
            return self.flow(ch.choice(["plain", "mqtts"]))
        return [("line", ch.choice(["ping ", "provision_set_cert ", "provision_set_ca ", "x"]) + "A" * 3000)]

    def case(self, max_ops: int = 30) -> Case:
        ch = self.ch
        autocommit = ch.chance(3)
        ops: list[tuple[Any, ...]] = []
        start = ch.weighted([(3, "blank"), (2, "plain"), (1, "mqtts")])
        if start != "blank":
            ops += self.flow(start)
        n = ch.integer(1, max_ops)
        while len(ops) < n:
            ops += self.ops()
        return Case(self.secrets, autocommit, ops)


# =========================================================================================
# Parser-level properties
# =========================================================================================

def check_split(text: str) -> None:
    """split_args agrees with the reference tokenizer (or both refuse, the firmware with QUOTE)."""
    try:
        want: list[str] | None = ref_split(text)
    except RefQuote:
        want = None
    try:
        got: list[str] | None = ssproto.split_args(text)
    except ssproto.ProtocolError as e:
        if e.code != ssproto.E_QUOTE:
            raise Failure(f"split_args({text!r}) refused with {e.code}") from None
        got = None
    if got != want:
        raise Failure(f"split_args({text!r}) = {got!r}, want {want!r}")
    if got is not None and not all(isinstance(a, str) for a in got):
        raise Failure(f"split_args({text!r}) gave a non-str")


def check_round_trip(args: list[str]) -> None:
    if any("\r" in a or "\n" in a for a in args):
        try:
            ssproto.join_args(args)
        except ssproto.ProtocolError as e:
            if e.code != ssproto.E_INVALID:
                raise Failure(f"quote refused a line break with {e.code}") from None
            return
        raise Failure(f"join_args({args!r}) accepted a line break")
    line = ssproto.join_args(args)
    if ssproto.split_args(line) != args:
        raise Failure(f"split_args(join_args({args!r})) = {ssproto.split_args(line)!r}")
    if "\r" in line or "\n" in line:
        raise Failure("join_args made a line break")


def check_line_reader(data: bytes) -> None:
    async def go() -> list[bytes | None]:
        r = ss_console.LineReader(Stream(data))
        out: list[bytes | None] = []
        while True:
            try:
                out.append(await r.readline())
            except EOFError:
                return out

    coro = go()
    try:
        coro.send(None)
    except StopIteration as stop:
        got = stop.value
    else:
        raise Failure("LineReader suspended")
    want = ref_lines(data)
    if got != want:
        raise Failure(f"LineReader({data[:200]!r}) = {got!r}, want {want!r}")


def stream_bytes(ch: Chooser) -> bytes:
    """Bytes for check_line_reader: terminators, editing keys, UTF-8, runs near MAX_LINE."""
    out = b""
    for _ in range(ch.integer(0, 8)):
        out += ch.weighted([
            (3, lambda: ch.binary(0, 12)),
            (3, lambda: ch.choice([b"\r", b"\n", b"\r\n", b"\n\r", b"\x08", b"\x7f", b"\x03", b"\r\x03\n"])),
            (2, lambda: ch.choice(["\u00e9", "\u20ac", "\U0001f600", "a"]).encode() * ch.integer(1, 3)),
            (1, lambda: b"y" * (MAX_LINE + ch.integer(-2, 2))),
        ])()
    return out


# =========================================================================================
# One random example (what bench/fuzz_console.py runs many of)
# =========================================================================================

def example(seed: int, index: int, max_ops: int, deadline: float) -> tuple[int, int, Counter[str]]:
    """One example: parser checks, a line-reader check and a console case.  (ops, lines, stats)."""
    rng = random.Random(f"{seed}:{index}")
    ch = RandomChooser(rng)
    for _ in range(4):
        check_split(ch.text(ch.choice(["any", "tricky"]), 0, 40))
    check_round_trip([ch.text(ch.choice(["any", "tricky", "printable"]), 0, 12) for _ in range(ch.integer(0, 5))])
    check_line_reader(stream_bytes(ch))
    case = Gen(ch).case(max_ops)
    rig = run_case(case, deadline)
    return len(case.ops), rig.lines, rig.stats
