"""The dump as one JSON-able document: pages, namespaces, entries (masked), integrity findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safesignal.errors import UsageError
from safesignal.nvs.dump.masking import MASK, classify, mask_json
from safesignal.nvs.dump.partition_table import locate
from safesignal.nvs.dump.records import CONFIG, OUTBOX, certificate_info, decode_record
from safesignal.nvs.format import (
    FINDING_KINDS,
    PAGE_SIZE,
    NvsEntry,
    NvsFormatError,
    NvsKeys,
    NvsPartition,
    parse_partition,
)
from ssproto import records as codec

EXIT_CLEAN = 0
EXIT_PROBLEMS = 6  # as MismatchError: what was read does not check out
EXIT_UNUSABLE = 2  # as UsageError
JSON_HEX_BYTES = 512

EXTRA_KINDS = {
    "record_check": "SafeSignal records (configuration, outbox) that do not check out",
    "provision_record": "provision/active naming a record that is missing or does not check out",
}
FLAGS = {
    "looks_encrypted": "entries unreadable: the image looks encrypted and no key was given",
    "not_encrypted": "keys given but the image is not encrypted",
}


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
        if kind in ("secret", CONFIG) and not show_secrets:
            out.update(value=MASK, masked=True)
        else:
            out["value"] = value
        return out
    out["length"] = len(value)
    if kind in (CONFIG, OUTBOX):
        version, doc, check = decode_record(value, kind)
        out["record"] = {"check": check}
        if doc is None:
            findings.add("record_check", f"{where}: record {check}")
        else:
            out["record"].update(version=version, fields=doc if show_secrets else mask_json(doc))
            return out
        if kind == CONFIG and not show_secrets:
            out.update(value=MASK, masked=True)  # undecodable: it may still hold the password
            return out
    elif kind == "certificate":
        out.update(certificate_info(value))
    elif kind == "secret" and not show_secrets:
        out.update(value=MASK, masked=True)
        return out
    if entry.type == "string":
        try:
            out["value"] = value.decode("utf-8")
            return out
        except UnicodeDecodeError:
            out["encoding"] = "hex"
    out["value"] = value[:JSON_HEX_BYTES].hex()
    if entry.type != "string":
        out["encoding"] = "hex"
    if len(value) > JSON_HEX_BYTES:
        out["truncated"] = True
    return out


def _check_provision(part: NvsPartition, findings: _Findings) -> None:
    """``provision/active`` must name a configuration record that checks out (firmware ss_store)."""
    active = part.get(codec.PROVISION, codec.ACTIVE)
    if active is None or not isinstance(active.value, int):
        return
    slot = str(codec.slot_keys(active.value)[0])
    names = f"'{codec.PROVISION}'/'{codec.ACTIVE}' names generation {active.value}"
    record = part.get(codec.PROVISION, slot)
    if record is None or not isinstance(record.value, bytes):
        findings.add("provision_record", f"{names} but {slot!r} is missing")
        return
    _, doc, check = decode_record(record.value, CONFIG)
    if doc is None:
        findings.add("provision_record", f"{names} in {slot!r}: {check}")
    elif doc.get("gen") != active.value:
        findings.add("provision_record", f"{names} but {slot!r} holds another one")


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
    image, source = locate(data, label)
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
    counts.update({kind: findings.counts.get(kind, 0) for kind in EXTRA_KINDS})
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
