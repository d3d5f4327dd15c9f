"""The dump as text for a terminal (every value escaped, no control sequences) or as JSON."""

from __future__ import annotations

import json
from typing import Any

from safesignal.nvs.dump.masking import MASK
from safesignal.nvs.dump.report import EXTRA_KINDS, FLAGS, DumpReport
from safesignal.nvs.format import FINDING_KINDS

TEXT_HEX_BYTES = 32
TEXT_STRING_CHARS = 200


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
    descriptions = {**FINDING_KINDS, **EXTRA_KINDS, **FLAGS}
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
