"""What ``nvs dump`` shows of a value, decided in one place: :func:`classify`.

The SafeSignal key names come from the firmware's codec (``ssproto.records``): configuration
records ``provision/cfg0|1``, the device's private key ``provision/key0|1``, its certificate and
the tenant CA certificate ``provision/cert0|1``, ``provision/ca0|1``, outbox entries ``outbox/qNN``.
Anywhere else, a value whose namespace or key name contains ``pass``, ``pswd``, ``psk``, ``pmk``,
``secret``, ``key`` or ``token`` (case-insensitive) is a secret: this covers ESP-IDF's own WiFi
credentials (``nvs.net80211``: ``sta.pswd``, ``sta.pmk``, ``ap.passwd``, ``ap.pmk``).  The same name
rule masks fields of decoded JSON records, and the password of a URI's ``user:password@``.
"""

from __future__ import annotations

import re
from typing import Any

from ssproto import records as codec

MASK = "********"
SECRET_NAME_PARTS = ("pass", "pswd", "psk", "pmk", "secret", "key", "token")


def _provision_roles() -> dict[str, str]:
    """provision/<key> -> class, for the keys of both slots (ss_store's layout)."""
    roles: dict[str, str] = {}
    for gen in (0, 1):
        cfg, *ident = codec.slot_keys(gen)
        roles[cfg] = "config_record"
        for part, key in zip(codec.ID_PARTS, ident, strict=True):
            roles[key] = "secret" if part == "key" else "certificate"  # the private key; public certificates
    return roles


_PROVISION_ROLES = _provision_roles()


def is_outbox_key(key: str) -> bool:
    """``q00`` .. ``q99``: the names :func:`ssproto.records.q_key` gives outbox slots."""
    digits = key[1:]
    return len(digits) == 2 and digits.isascii() and digits.isdigit() and codec.q_key(int(digits)) == key


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in SECRET_NAME_PARTS)


def classify(namespace: str, key: str) -> str:
    """How the value stored at ``namespace``/``key`` is shown.

    ``"config_record"``: decoded, secret fields masked (masked entirely if it does not decode: it
    may hold the WiFi password); ``"outbox_record"``: decoded, not secret; ``"certificate"``:
    length, SHA-256 and X.509 summary; ``"secret"``: masked entirely; ``"plain"``: shown.
    """
    if namespace == codec.PROVISION and key in _PROVISION_ROLES:
        return _PROVISION_ROLES[key]
    if namespace == codec.OUTBOX and is_outbox_key(key):
        return "outbox_record"
    if is_secret_name(namespace) or is_secret_name(key):
        return "secret"
    return "plain"


def mask_uri(value: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:********@host``."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*:)[^/@]*@", lambda m: m.group(1) + MASK + "@", value)


def mask_json(value: Any) -> Any:
    """A decoded record with its secret fields masked (same name rule as for NVS keys)."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret_name(str(k)) else mask_json(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_json(v) for v in value]
    if isinstance(value, str):
        return mask_uri(value)
    return value
