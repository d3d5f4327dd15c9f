"""``safesignal nvs dump``: what an ESP-IDF NVS partition image holds, and whether it is intact.

Input: an NVS partition image (the virtual device's flash file, or a real device's partition read
with ``esptool.py read_flash 0x9000 0x6000 nvs.bin``), or a whole-flash dump: when the file holds an
ESP partition table (32-byte entries starting with the bytes AA 50, at 0x8000 by default or at any
other 4 KiB boundary; format of esp-idf ``components/partition_table/gen_esp32part.py``), the data
partition labelled ``--partition`` (default ``nvs``) is dumped.

Keys for an encrypted partition (ESP-IDF NVS encryption, see :mod:`safesignal.nvs`), one of:
``--key FILE`` an ``nvs_keys`` partition (as ``nvs_partition_gen.py generate-key`` writes it);
``--hmac-key FILE`` the 32-byte eFuse HMAC key, raw or as 64 hex digits, from which ESP-IDF's HMAC
scheme derives the keys; ``--efuse FILE`` a virtual chip's eFuse file
``{"version": 1, "mac": "aa:bb:cc:dd:ee:ff", "hmac_key": "<64 hex digits>"}``.  Without keys an
encrypted image still shows its pages and entry states, and says that its entries cannot be read.

Checks: page-header CRCs, item CRCs (after decryption), entry-state bitmaps, spans, string/blob
data CRCs, blob indexes against their chunks, duplicate keys, namespace references (all from
:func:`safesignal.nvs.parse_partition`), and the SafeSignal records: the configuration records
``provision/cfg0|cfg1`` (SHA-256, and the one ``provision/active`` names) and the outbox entries
``outbox/qNN`` (truncated SHA-256).

Masking (decided in one place, :func:`classify`; ``--show-secrets`` shows everything):

* ``provision/cfg0``, ``provision/cfg1``: configuration records ``b"SSC" + version + JSON +
  SHA-256`` (firmware ``lib/ss_store.py``): decoded and shown with secret fields masked.  A record
  that does not decode is masked entirely (it may hold the WiFi password).
* ``provision/key0``, ``provision/key1``: the device's private key (``lib/ss_store.py``), masked
  entirely; ``provision/cert0|1`` and ``provision/ca0|1``: its certificate and the tenant CA
  certificate, public - shown as certificates (below).
* ``outbox/q00`` .. ``outbox/q99``: alert records ``b"SSQ" + version + JSON + SHA-256[:8]``
  (``lib/ss_outbox.py``): not secret, decoded and shown.
* namespace ``identity``: ``cert*`` and ``ca`` hold public certificates - shown as length and
  SHA-256, plus subject, issuer and expiry when they parse as X.509 (DER or PEM); every other key
  (the private key ``key`` among them) is masked entirely, blobs showing only their length.
* anywhere else, a value whose namespace or key name contains ``pass``, ``pswd``, ``psk``,
  ``pmk``, ``secret``, ``key`` or ``token`` (case-insensitive) is masked: this covers ESP-IDF's own
  WiFi credentials (``nvs.net80211``: ``sta.pswd``, ``sta.pmk``, ``ap.passwd``, ``ap.pmk``).  The same
  rule masks fields of decoded JSON records, and the password of a URI's ``user:password@``.
* everything else is shown: integers, strings (text), blobs as hex truncated to
  :data:`TEXT_HEX_BYTES` bytes in text output and :data:`JSON_HEX_BYTES` in JSON.

A masked value is shown as ``********``; neither its hash nor (except for blobs) its length is shown.
No issue text contains a stored value.

Exit codes: 0 the partition is intact and every entry was read; 6 integrity problems were found,
or the entries could not be read (encrypted without a key, wrong key); 2 unusable input (file not
readable, not a whole number of 4 KiB pages, partition not found, bad key file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SafeSignalError, UsageError
from .nvs import (
    FINDING_KINDS,
    PAGE_SIZE,
    NvsEntry,
    NvsFormatError,
    NvsKeys,
    NvsPartition,
    derive_hmac_keys,
    parse_partition,
    read_keys_partition,
)

__all__ = [
    "EXIT_CLEAN",
    "EXIT_PROBLEMS",
    "EXIT_UNUSABLE",
    "MASK",
    "DumpReport",
    "FlashPartition",
    "build_report",
    "classify",
    "cmd_nvs_dump",
    "find_partition_table",
    "load_keys",
    "main",
    "read_partition_table",
    "register",
    "render_json",
    "render_text",
]

EXIT_CLEAN = 0
EXIT_PROBLEMS = 6  # as VerifyError: what was read does not check out
EXIT_UNUSABLE = 2  # as UsageError

MASK = "********"
SECRET_NAME_PARTS = ("pass", "pswd", "psk", "pmk", "secret", "key", "token")
TEXT_HEX_BYTES = 32
JSON_HEX_BYTES = 512
TEXT_STRING_CHARS = 200

# -- ESP partition table (esp-idf components/partition_table/gen_esp32part.py) ---------------------
PARTITION_TABLE_OFFSET = 0x8000  # Kconfig PARTITION_TABLE_OFFSET default
_PT_MAX_LENGTH = 0xC00  # MAX_PARTITION_LENGTH
_PT_ENTRY = struct.Struct("<2sBBLL16sL")  # PartitionDefinition.STRUCT_FORMAT
_PT_MAGIC = b"\xaa\x50"  # PartitionDefinition.MAGIC_BYTES
_PT_MD5_MAGIC = b"\xeb\xeb"  # MD5_PARTITION_BEGIN[:2]; then 14 x 0xFF and the MD5 of the entries before
_PT_DATA = 0x01  # DATA_TYPE
_PT_SUBTYPE_NVS = 0x02  # SUBTYPES[DATA_TYPE]['nvs']
_PT_SUBTYPE_NVS_KEYS = 0x04  # SUBTYPES[DATA_TYPE]['nvs_keys']
_PT_FLAG_ENCRYPTED = 0x01  # PartitionDefinition.FLAGS['encrypted'] = bit 0

_CFG_MAGIC = b"SSC"  # firmware lib/ss_store.py
_OUTBOX_MAGIC = b"SSQ"  # firmware lib/ss_outbox.py
_OUTBOX_KEY = re.compile(r"q\d\d")


@dataclass(frozen=True)
class FlashPartition:
    """One row of an ESP partition table."""

    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & _PT_FLAG_ENCRYPTED)

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "type": self.type,
            "subtype": self.subtype,
            "offset": self.offset,
            "size": self.size,
            "encrypted_flag": self.encrypted,
        }


@dataclass(frozen=True)
class PartitionTable:
    offset: int
    partitions: list[FlashPartition]
    md5: str  # "ok", "bad" or "absent"


def read_partition_table(data: bytes, offset: int) -> PartitionTable | None:
    """The partition table at ``offset`` of a flash dump, or None if there is none."""
    if data[offset : offset + 2] != _PT_MAGIC:
        return None
    partitions: list[FlashPartition] = []
    md5 = hashlib.md5(usedforsecurity=False)
    md5_state = "absent"
    end = min(offset + _PT_MAX_LENGTH, len(data))
    for pos in range(offset, end - _PT_ENTRY.size + 1, _PT_ENTRY.size):
        raw = data[pos : pos + _PT_ENTRY.size]
        if raw == b"\xff" * _PT_ENTRY.size:
            break  # end marker
        if raw[:2] == _PT_MD5_MAGIC:
            md5_state = "ok" if raw[16:] == md5.digest() else "bad"
            continue
        magic, ptype, subtype, poff, psize, name, flags = _PT_ENTRY.unpack(raw)
        if magic != _PT_MAGIC:
            md5_state = "bad"  # damaged table: keep what was read
            break
        md5.update(raw)
        label = name.split(b"\x00", 1)[0].decode("utf-8", "replace")
        partitions.append(FlashPartition(label, ptype, subtype, poff, psize, flags))
    return PartitionTable(offset, partitions, md5_state)


def find_partition_table(data: bytes) -> PartitionTable | None:
    """The partition table of a flash dump: at 0x8000, else at the first 4 KiB boundary holding one.

    An NVS page never starts with AA 50 (its first word is a page state), so an NVS image alone is
    not taken for a flash dump; away from 0x8000 a table must also have a valid MD5 entry or an NVS
    partition inside the file, so that a damaged NVS page is not taken for one either.
    """
    offsets = [PARTITION_TABLE_OFFSET] + [o for o in range(0, len(data), PAGE_SIZE) if o != PARTITION_TABLE_OFFSET]
    for offset in offsets:
        table = read_partition_table(data, offset)
        if table is None or not table.partitions:
            continue
        if offset == PARTITION_TABLE_OFFSET or table.md5 == "ok" or any(
            (p.type, p.subtype) == (_PT_DATA, _PT_SUBTYPE_NVS) and p.offset + p.size <= len(data)
            for p in table.partitions
        ):
            return table
    return None


def _locate(data: bytes, label: str) -> tuple[bytes, dict[str, Any]]:
    """The NVS partition in ``data`` (a partition image or a whole-flash dump) and where it was."""
    table = find_partition_table(data)
    if table is None:
        return data, {"partition": None, "partition_table": None}
    source: dict[str, Any] = {
        "partition_table": {
            "offset": table.offset,
            "md5": table.md5,
            "partitions": [p.as_json() for p in table.partitions],
        }
    }
    matches = [p for p in table.partitions if p.label == label]
    if not matches:
        nvs = [p.label for p in table.partitions if (p.type, p.subtype) == (_PT_DATA, _PT_SUBTYPE_NVS)]
        hint = f"; NVS partitions: {', '.join(map(repr, nvs))}" if nvs else "; it has no NVS partition"
        raise UsageError(f"the flash dump's partition table (at {table.offset:#x}) has no partition {label!r}{hint}")
    part = matches[0]
    if (part.type, part.subtype) != (_PT_DATA, _PT_SUBTYPE_NVS):
        kind = "an nvs_keys partition" if part.subtype == _PT_SUBTYPE_NVS_KEYS else "not an NVS data partition"
        raise UsageError(f"partition {label!r} (type {part.type:#x}, subtype {part.subtype:#x}) is {kind}")
    if part.offset + part.size > len(data):
        raise UsageError(
            f"partition {label!r} spans {part.offset:#x}..{part.offset + part.size:#x} but the dump ends at "
            f"{len(data):#x}"
        )
    source["partition"] = part.as_json()
    return data[part.offset : part.offset + part.size], source


# -- keys ---------------------------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"{what} {path}: {e.strerror or e}") from None


def _hmac_key_bytes(raw: bytes, what: str) -> bytes:
    if len(raw) == 32:
        return raw
    try:
        text = raw.decode("ascii").strip()
        if text.lower().startswith("0x"):
            text = text[2:]
        key = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{what}: not a 32-byte key, raw or as 64 hex digits") from None
    if len(key) != 32:
        raise UsageError(f"{what}: not a 32-byte key, raw or as 64 hex digits")
    return key


def _efuse_hmac_key(raw: bytes, what: str) -> bytes:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise UsageError(f"{what}: not a virtual eFuse file (JSON)") from None
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise UsageError(f"{what}: not a version 1 virtual eFuse file")
    mac, key = doc.get("mac"), doc.get("hmac_key")
    if not isinstance(mac, str) or not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", mac):
        raise UsageError(f"{what}: mac must be six hex bytes separated by colons")
    if not isinstance(key, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", key):
        raise UsageError(f"{what}: hmac_key must be 64 hex digits")
    return bytes.fromhex(key)


def load_keys(
    key: Path | None = None, hmac_key: Path | None = None, efuse: Path | None = None
) -> tuple[NvsKeys, str] | None:
    """The NVS keys from at most one of the three sources, and a description of the source."""
    given = [(p, w) for p, w in ((key, "--key"), (hmac_key, "--hmac-key"), (efuse, "--efuse")) if p is not None]
    if not given:
        return None
    if len(given) > 1:
        raise UsageError("give only one of --key, --hmac-key and --efuse")
    path, what = given[0]
    raw = _read(path, what)
    label = f"{what} {path}"
    try:
        if key is not None:
            return read_keys_partition(raw), f"nvs_keys partition {path}"
        if hmac_key is not None:
            return derive_hmac_keys(_hmac_key_bytes(raw, label)), f"derived from the eFuse HMAC key {path}"
        return derive_hmac_keys(_efuse_hmac_key(raw, label)), f"derived from the virtual eFuse file {path}"
    except NvsFormatError as e:
        raise UsageError(f"{label}: {e}") from None


# -- masking: the one place -----------------------------------------------------------------------


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in SECRET_NAME_PARTS)


def _is_certificate_key(key: str) -> bool:
    return key == "ca" or key.startswith("cert") or bool(re.fullmatch(r"ca\d+", key))


def classify(namespace: str, key: str) -> str:
    """How the value stored at ``namespace``/``key`` is shown (the module docstring has the policy).

    ``"config_record"``: decoded, secret fields masked; ``"outbox_record"``: decoded;
    ``"certificate"``: length, SHA-256 and X.509 summary; ``"secret"``: masked entirely;
    ``"plain"``: shown.
    """
    if namespace == "provision" and key in ("cfg0", "cfg1"):
        return "config_record"
    if namespace == "provision" and key in ("cert0", "cert1", "ca0", "ca1"):
        return "certificate"  # the device identity (ss_store): public certificates ...
    if namespace == "provision" and key in ("key0", "key1"):
        return "secret"  # ... and the device's private key
    if namespace == "outbox" and _OUTBOX_KEY.fullmatch(key):
        return "outbox_record"
    if namespace == "identity":
        if _is_certificate_key(key) and not _is_secret_name(key):
            return "certificate"
        return "secret"
    if _is_secret_name(namespace) or _is_secret_name(key):
        return "secret"
    return "plain"


def _mask_uri(value: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:********@host``."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*:)[^/@]*@", lambda m: m.group(1) + MASK + "@", value)


def _mask_json(value: Any) -> Any:
    """A decoded record with its secret fields masked (same name rule as for NVS keys)."""
    if isinstance(value, dict):
        return {k: (MASK if _is_secret_name(str(k)) else _mask_json(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_json(v) for v in value]
    if isinstance(value, str):
        return _mask_uri(value)
    return value


# -- presenting entries ------------------------------------------------------------------------------


def _hex(value: bytes, limit: int) -> tuple[str, bool]:
    return value[:limit].hex(), len(value) > limit


def _decode_record(raw: bytes, magic: bytes, digest_len: int) -> tuple[dict[str, Any] | None, str]:
    """(decoded JSON object, check) of a SafeSignal record; check is "ok" or what is wrong."""
    if len(raw) < 4 + 2 + digest_len or raw[:3] != magic:
        return None, "not a record (bad header)"
    body, digest = raw[:-digest_len], raw[-digest_len:]
    if hashlib.sha256(body).digest()[:digest_len] != digest:
        return None, "checksum mismatch"
    try:
        doc = json.loads(body[4:].decode("utf-8"))
    except (ValueError, RecursionError):
        return None, "not valid JSON"
    if not isinstance(doc, dict):
        return None, "not a JSON object"
    if _json_depth(doc) > _MAX_RECORD_DEPTH:
        return None, "JSON nested too deeply"
    return doc, "ok"


_MAX_RECORD_DEPTH = 16  # SafeSignal records are flat; a deeper one is not ours (and could exhaust the stack)


def _json_depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list):
                nxt.extend(v)
        if depth > _MAX_RECORD_DEPTH:
            break
        level = nxt
    return depth - 1 if not level else depth


def _certificate_info(raw: bytes) -> dict[str, Any]:
    info: dict[str, Any] = {"sha256": hashlib.sha256(raw).hexdigest()}
    try:
        from cryptography import x509

        if raw.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(raw)
        else:
            cert = x509.load_der_x509_certificate(raw)
        info["x509"] = {
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.isoformat(),
        }
    except Exception:  # any failure to parse simply means "not a certificate we can read"
        info["x509"] = None
    return info


@dataclass
class _Findings:
    issues: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, text: str) -> None:
        self.issues.append(text)
        self.counts[kind] = self.counts.get(kind, 0) + 1


def _present(entry: NvsEntry, show_secrets: bool, findings: _Findings) -> dict[str, Any]:
    """The JSON form of one entry, masked per :func:`classify` unless ``show_secrets``."""
    out: dict[str, Any] = {"namespace": entry.namespace, "key": entry.key, "type": entry.type}
    value = entry.value
    where = f"{entry.namespace!r}/{entry.key!r}"
    kind = classify(entry.namespace, entry.key)
    out["class"] = kind
    if isinstance(value, int):
        if kind in ("secret", "config_record") and not show_secrets:
            out.update(value=MASK, masked=True)
        else:
            out["value"] = value
        return out
    out["length"] = len(value)
    if kind in ("config_record", "outbox_record"):
        magic, digest_len = (_CFG_MAGIC, 32) if kind == "config_record" else (_OUTBOX_MAGIC, 8)
        doc, check = _decode_record(value, magic, digest_len)
        out["record"] = {"check": check}
        if doc is None:
            findings.add("record_check", f"{where}: record {check}")
        else:
            out["record"].update(version=value[3], fields=doc if show_secrets else _mask_json(doc))
            return out
        if kind == "config_record" and not show_secrets:
            out.update(value=MASK, masked=True)  # undecodable: it may still hold the password
            return out
    elif kind == "certificate":
        out.update(_certificate_info(value))
    elif kind == "secret" and not show_secrets:
        out.update(value=MASK, masked=True)
        return out
    if entry.type == "string":
        try:
            out["value"] = value.decode("utf-8")
            return out
        except UnicodeDecodeError:
            out["encoding"] = "hex"
    text, cut = _hex(value, JSON_HEX_BYTES)
    out["value"] = text
    if entry.type != "string":
        out["encoding"] = "hex"
    if cut:
        out["truncated"] = True
    return out


def _check_provision(part: NvsPartition, findings: _Findings) -> None:
    """``provision/active`` must name a configuration record that checks out (lib/ss_store.py)."""
    active = part.get("provision", "active")
    if active is None or not isinstance(active.value, int):
        return
    slot = f"cfg{active.value % 2}"
    names = f"'provision'/'active' names generation {active.value}"
    record = part.get("provision", slot)
    if record is None or not isinstance(record.value, bytes):
        findings.add("provision_record", f"{names} but {slot!r} is missing")
        return
    doc, check = _decode_record(record.value, _CFG_MAGIC, 32)
    if doc is None:
        findings.add("provision_record", f"{names} in {slot!r}: {check}")
    elif doc.get("gen") != active.value:
        findings.add("provision_record", f"{names} but {slot!r} holds another one")


# -- the report ---------------------------------------------------------------------------------------


@dataclass
class DumpReport:
    """The dump as one JSON-able document, and the exit code it implies."""

    doc: dict[str, Any]

    @property
    def clean(self) -> bool:
        return bool(self.doc["integrity"]["clean"])

    @property
    def exit_code(self) -> int:
        return EXIT_CLEAN if self.clean else EXIT_PROBLEMS


_EXTRA_KINDS = {
    "record_check": "SafeSignal records (configuration, outbox) that do not check out",
    "provision_record": "provision/active naming a record that is missing or does not check out",
}
_FLAGS = {
    "looks_encrypted": "entries unreadable: the image looks encrypted and no key was given",
    "not_encrypted": "keys given but the image is not encrypted",
}


def build_report(
    data: bytes,
    *,
    keys: NvsKeys | None = None,
    key_source: str | None = None,
    label: str = "nvs",
    show_secrets: bool = False,
    file: str | None = None,
) -> DumpReport:
    """Dump ``data`` (an NVS partition image or a whole-flash dump).

    Raises only :class:`UsageError` (unusable input); everything wrong inside the partition is
    reported in the document.
    """
    data = bytes(data)
    image, source = _locate(data, label)
    source = {"file": file, "file_size": len(data), **source}
    if not image or len(image) % PAGE_SIZE:
        raise UsageError(
            f"{len(image)} bytes is not an NVS partition image (a whole number of {PAGE_SIZE}-byte pages), "
            "and the file holds no ESP partition table"
        )
    try:
        part = parse_partition(image, keys=keys)
    except NvsFormatError as e:  # pragma: no cover - the size was checked above
        raise UsageError(str(e)) from None
    findings = _Findings()
    written = sum(p.written for p in part.pages if p.state != "empty")
    crc_ok = part.counts.get("entry_crc_ok", 0)
    crc_bad = part.counts.get("entry_crc_bad", 0)
    looks_encrypted = keys is None and crc_ok == 0 and crc_bad > 0
    not_encrypted = False
    if keys is not None and crc_ok == 0 and crc_bad > 0:
        plain = parse_partition(image)
        if plain.counts.get("entry_crc_ok", 0):
            not_encrypted = True
            findings.issues.append(
                "the entries read without the key: this image is not encrypted (a chip using NVS "
                "encryption would erase them at nvs_flash_init); shown as read without the key",
            )
            part = plain
    if looks_encrypted:
        findings.issues.append(
            f"none of the {crc_bad} entries read as item headers has a valid CRC: the image looks "
            "encrypted; pass --key, --hmac-key or --efuse to read it",
        )
    entries = [_present(e, show_secrets, findings) for e in part.entries]
    _check_provision(part, findings)

    counts = {kind: part.counts.get(kind, 0) for kind in FINDING_KINDS}
    counts.update({kind: findings.counts.get(kind, 0) for kind in _EXTRA_KINDS})
    problems = sum(v for k, v in counts.items() if k not in ("header_crc_ok", "entry_crc_ok", "undecryptable"))
    problems += looks_encrypted + not_encrypted
    integrity: dict[str, Any] = {
        "clean": problems == 0,
        "problems": problems,
        "written_entries": written,
        **counts,
        "undecryptable": part.undecryptable,
        "looks_encrypted": looks_encrypted,
        "not_encrypted": not_encrypted,
    }
    doc: dict[str, Any] = {
        "source": source,
        "encryption": {
            "keys": key_source,
            "looks_encrypted": looks_encrypted,
            "not_encrypted": not_encrypted,
        },
        "size": len(image),
        "pages": [
            {
                "index": p.index,
                "state": p.state,
                "seq": p.seq,
                "version": p.version,
                "header_crc_ok": None if p.state == "empty" else p.header_ok,
                "written": p.written,
                "erased": p.erased,
                "empty": p.empty,
                "illegal": p.illegal,
                "item_crc_ok": p.crc_ok,
                "item_crc_bad": p.crc_bad,
            }
            for p in part.pages
        ],
        "namespaces": dict(part.namespaces),
        "entries": entries,
        "issues": part.issues + findings.issues,
        "integrity": integrity,
        "secrets_shown": show_secrets,
    }
    return DumpReport(doc)


# -- rendering ----------------------------------------------------------------------------------------


def _safe(text: str) -> str:
    """Text for a terminal: every non-printable character escaped (no control sequences)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def render_json(report: DumpReport) -> str:
    return json.dumps(report.doc, ensure_ascii=False, indent=2)


def _value_text(e: dict[str, Any]) -> str:
    if e.get("masked"):
        return f"({e['length']} bytes) {MASK}" if e["type"] == "blob" else MASK
    if "record" in e:
        rec = e["record"]
        if rec["check"] != "ok":
            head = f"record {rec['check']}: "
        else:
            digest = "SHA-256" if e["class"] == "config_record" else "SHA-256/64"
            fields = json.dumps(rec["fields"], ensure_ascii=False)
            return f"{e['length']}-byte record v{rec['version']}, {digest} ok: {fields}"
    else:
        head = ""
    if "sha256" in e:
        cert = e.get("x509")
        desc = (
            f"X.509 subject {cert['subject']}, issuer {cert['issuer']}, not after {cert['not_after']}"
            if cert
            else "not an X.509 certificate"
        )
        return f"{head}({e['length']} bytes) sha256 {e['sha256'][:16]}…; {desc}"
    value = e["value"]
    if isinstance(value, int):
        return f"{head}{value}"
    if e.get("encoding") == "hex":
        shown = value[: 2 * TEXT_HEX_BYTES]
        more = "…" if len(value) > len(shown) or e.get("truncated") else ""
        return f"{head}({e['length']} bytes) {shown}{more}"
    text = json.dumps(value[:TEXT_STRING_CHARS], ensure_ascii=False)
    return f"{head}{text}{'…' if len(value) > TEXT_STRING_CHARS else ''}"


def render_text(report: DumpReport) -> str:
    doc = report.doc
    lines: list[str] = []
    src = doc["source"]
    where = f"{src['file']}" if src["file"] else "image"
    part = src.get("partition")
    if part:
        where += f": partition {part['label']!r} at {part['offset']:#x} ({part['size']:#x} bytes) of a flash dump"
    lines.append(f"NVS partition: {_safe(where)}, {doc['size']:#x} bytes, {len(doc['pages'])} pages")
    enc = doc["encryption"]
    if enc["keys"]:
        lines.append(f"Keys: {_safe(enc['keys'])}")
    elif enc["looks_encrypted"]:
        lines.append("Keys: none given; the entries look encrypted and cannot be decrypted")
    else:
        lines.append("Keys: none given (plain image)")
    if doc["secrets_shown"]:
        lines.append("Secrets: SHOWN (--show-secrets)")
    lines.append("")
    lines.append("Pages")
    lines.append("  page  state    seq         ver   header  written erased  empty illegal  item CRC ok/bad")
    for p in doc["pages"]:
        seq = "-" if p["seq"] is None else str(p["seq"])
        ver = "-" if p["version"] is None else f"{p['version']:#04x}"
        header = "-" if p["state"] == "empty" else ("ok" if p["header_crc_ok"] else "BAD")
        crcs = f"{p['item_crc_ok']}/{p['item_crc_bad']}" if p["state"] != "empty" else "-"
        lines.append(
            f"  {p['index']:>4}  {p['state']:<8} {seq:>10}  {ver:<5} {header:<7} {p['written']:>7} "
            f"{p['erased']:>6} {p['empty']:>6} {p['illegal']:>7}  {crcs}"
        )
    lines.append("")
    lines.append(f"Namespaces ({len(doc['namespaces'])})")
    for name, index in doc["namespaces"].items():
        lines.append(f"  {_safe(name)} = {index}")
    lines.append("")
    lines.append(f"Entries ({len(doc['entries'])})")
    current = None
    for e in doc["entries"]:
        if e["namespace"] != current:
            current = e["namespace"]
            lines.append(f"  {_safe(current)}")
        lines.append(f"    {_safe(e['key']):<16} {e['type']:<6} {_safe(_value_text(e))}")
    lines.append("")
    integ = doc["integrity"]
    lines.append("Integrity")
    lines.append(f"  page headers: {integ['header_crc_ok']} CRC ok, {integ['header_crc_bad']} bad")
    lines.append(
        f"  item headers: {integ['entry_crc_ok']} CRC ok, {integ['entry_crc_bad']} bad"
        + (f" ({integ['undecryptable']} undecryptable)" if enc["keys"] else "")
    )
    descriptions = {**FINDING_KINDS, **_EXTRA_KINDS, **_FLAGS}
    for kind, description in descriptions.items():
        if kind in ("header_crc_ok", "header_crc_bad", "entry_crc_ok", "entry_crc_bad", "undecryptable"):
            continue
        if integ.get(kind) is True:
            lines.append(f"  {description}")
        elif integ.get(kind):
            lines.append(f"  {description}: {integ[kind]}")
    if doc["issues"]:
        lines.append("")
        lines.append(f"Issues ({len(doc['issues'])})")
        lines.extend(f"  - {_safe(issue)}" for issue in doc["issues"])
    lines.append("")
    if integ["clean"]:
        lines.append("Result: intact, every entry read")
    else:
        lines.append(f"Result: {integ['problems']} integrity problem(s) found")
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``nvs dump`` to a ``safesignal`` argparse subparsers object."""
    p = subparsers.add_parser(
        "nvs",
        help="inspect ESP-IDF NVS partition images",
        description="inspect ESP-IDF NVS partition images (plain or encrypted)",
    )
    sub = p.add_subparsers(dest="nvs_command", required=True)
    d = sub.add_parser(
        "dump",
        help="show an NVS partition image's pages and entries, and check its integrity",
        description="Show an NVS partition image (or the NVS partition of a whole-flash dump): pages, "
        "namespaces, entries, integrity.  Secrets are masked unless --show-secrets.  Exit codes: "
        "0 intact, 6 integrity problems or unreadable entries, 2 unusable input.",
    )
    d.add_argument("image", help="NVS partition image, or a whole-flash dump with a partition table")
    keys = d.add_mutually_exclusive_group()
    keys.add_argument("--key", metavar="FILE", help="nvs_keys partition file (as nvs_partition_gen.py writes it)")
    keys.add_argument("--hmac-key", metavar="FILE", help="the eFuse HMAC key (32 bytes raw, or 64 hex digits)")
    keys.add_argument("--efuse", metavar="FILE", help="a virtual chip's eFuse file (JSON)")
    d.add_argument("--partition", metavar="LABEL", default="nvs", help="partition label in a flash dump (default nvs)")
    d.add_argument("--json", action="store_true", help="one JSON document")
    d.add_argument("--show-secrets", action="store_true", help="show passwords and keys instead of ********")
    d.set_defaults(func=cmd_nvs_dump)


def cmd_nvs_dump(args: argparse.Namespace) -> int:
    path = Path(args.image)
    data = _read(path, "image")
    loaded = load_keys(
        Path(args.key) if args.key else None,
        Path(args.hmac_key) if args.hmac_key else None,
        Path(args.efuse) if args.efuse else None,
    )
    keys, key_source = loaded if loaded else (None, None)
    report = build_report(
        data, keys=keys, key_source=key_source, label=args.partition, show_secrets=args.show_secrets, file=str(path)
    )
    print(render_json(report) if args.json else render_text(report), flush=True)
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """``safesignal nvs ...`` on its own (tests; the CLI calls :func:`register`)."""
    parser = argparse.ArgumentParser(prog="safesignal")
    parser.add_argument("-v", "--verbose", action="store_true")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except SafeSignalError as e:
        print(f"✗ Error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
