"""Decoding what SafeSignal stores, for the dump: records through the firmware's codec
(``ssproto.records``, the one ss_store and ss_outbox write with) and X.509 certificates."""

from __future__ import annotations

import hashlib
from typing import Any

from ssproto import records as codec

MAX_RECORD_DEPTH = 16  # SafeSignal records are flat; a deeper one is not ours (and could exhaust the stack)
CONFIG = "config_record"
OUTBOX = "outbox_record"
_FORMATS = {CONFIG: codec.CFG, OUTBOX: codec.ALERT}


def decode_record(raw: bytes, kind: str) -> tuple[int | None, dict[str, Any] | None, str]:
    """(layout version, JSON object, check) of a record of ``kind`` (:data:`CONFIG` or
    :data:`OUTBOX`); check is ``"ok"`` or what is wrong (then the object is None).  Any layout
    version is shown; the firmware's own version checks are not applied."""
    try:
        version, doc = codec.unpack(_FORMATS[kind], raw)
    except ValueError as e:
        return None, None, str(e)
    if json_depth(doc) > MAX_RECORD_DEPTH:
        return None, None, "JSON nested too deeply"
    return int(version), dict(doc), "ok"


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (0 for a scalar), counted without recursion, and
    only up to just past :data:`MAX_RECORD_DEPTH`."""
    depth, level = 0, [value]
    while level:
        depth += 1
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list):
                nxt.extend(v)
        if depth > MAX_RECORD_DEPTH:
            break
        level = nxt
    return depth - 1 if not level else depth


def certificate_info(raw: bytes) -> dict[str, Any]:
    """``sha256`` and ``x509`` (subject, issuer, not_after; None if it does not parse as DER or PEM)."""
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
