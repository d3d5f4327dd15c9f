"""The keys of an encrypted NVS partition, from one of three files.

``--key FILE``: an ``nvs_keys`` partition (as ``nvs_partition_gen.py generate-key`` writes it);
``--hmac-key FILE``: the 32-byte eFuse HMAC key, raw or as 64 hex digits, from which ESP-IDF's HMAC
scheme derives the keys; ``--efuse FILE``: a virtual chip's eFuse file
``{"version": 1, "mac": "aa:bb:cc:dd:ee:ff", "hmac_key": "<64 hex digits>"}``.  Every problem is a
:class:`UsageError` that names the file, never a key byte.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from safesignal.errors import UsageError
from safesignal.nvs.format import NvsFormatError, NvsKeys, derive_hmac_keys, read_keys_partition


def read_file(path: Path, what: str) -> bytes:
    """The bytes of ``path``; :class:`UsageError` naming ``what`` and the path if it cannot be read."""
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
    raw = read_file(path, what)
    label = f"{what} {path}"
    try:
        if key is not None:
            return read_keys_partition(raw), f"nvs_keys partition {path}"
        if hmac_key is not None:
            return derive_hmac_keys(_hmac_key_bytes(raw, label)), f"derived from the eFuse HMAC key {path}"
        return derive_hmac_keys(_efuse_hmac_key(raw, label)), f"derived from the virtual eFuse file {path}"
    except NvsFormatError as e:
        raise UsageError(f"{label}: {e}") from None
