"""The virtual chip's eFuses: its base MAC and the 256-bit HMAC key NVS encryption uses.

On an ESP32-S3 both are burnt once and never change; the HMAC key sits in a key block with
purpose HMAC_UP, read-protected, so software can use it through the HMAC peripheral but never
read it.  ESP-IDF's HMAC-based NVS encryption (components/nvs_sec_provider) derives the two
XTS-AES keys from it at every boot; the flash holds only ciphertext, so an image copied onto
another chip is unreadable there.

The virtual chip keeps its eFuses in a small JSON file (mode 0600), next to the flash image by
default.  The file *is* the silicon: a chip is its eFuse file, the flash image is replaceable.
It is created, with a key from ``secrets``, when the chip first powers up.

    {"version": 1, "mac": "aa:bb:cc:dd:ee:ff", "hmac_key": "<64 hex digits>"}
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from safesignal.errors import UsageError

VERSION = 1
FILE_MODE = 0o600  # the HMAC key is the chip's secret
HMAC_KEY_LEN = 32


@dataclass(frozen=True)
class Efuse:
    mac: bytes
    hmac_key: bytes = field(repr=False)  # the chip's secret

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, "mac": self.mac.hex(":"), "hmac_key": self.hmac_key.hex()})


def default_path(flash: Path) -> Path:
    return flash.with_name(flash.name + ".efuse")


def load(path: Path) -> Efuse:
    try:
        d = json.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"--efuse {path}: {e.strerror or e}") from None
    except ValueError:
        raise UsageError(f"--efuse {path}: not a virtual eFuse file (JSON)") from None
    try:
        if d["version"] != VERSION:
            raise UsageError(f"--efuse {path}: version {d['version']} is not supported")
        mac = bytes.fromhex(str(d["mac"]).replace(":", ""))
        key = bytes.fromhex(str(d["hmac_key"]))
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"--efuse {path}: needs version, mac and hmac_key") from None
    if len(mac) != 6 or len(key) != HMAC_KEY_LEN:
        raise UsageError(f"--efuse {path}: mac must be 6 bytes and hmac_key 32 bytes")
    return Efuse(mac, key)


def plan(path: Path, mac: bytes | None, default_mac: bytes) -> tuple[Efuse, bool]:
    """The chip's eFuses, and whether they still have to be burnt (a new chip: ``mac`` or
    ``default_mac`` and a fresh random HMAC key; :func:`burn` writes them when the chip first
    powers up).  A ``mac`` that contradicts burnt eFuses is a usage error."""
    if path.exists():
        fuse = load(path)
        if mac is not None and mac != fuse.mac:
            raise UsageError(f"--mac {mac.hex(':')}: this chip's eFuses ({path}) hold {fuse.mac.hex(':')}")
        return fuse, False
    return Efuse(mac if mac is not None else default_mac, secrets.token_bytes(HMAC_KEY_LEN)), True


def burn(path: Path, fuse: Efuse) -> None:
    """Write a new chip's eFuse file (never replaces one)."""
    parent = path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--efuse {path}: directory {parent} is not writable")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    except FileExistsError:
        raise UsageError(f"--efuse {path}: appeared while this chip was starting") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), FILE_MODE)
        f.write(fuse.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())
