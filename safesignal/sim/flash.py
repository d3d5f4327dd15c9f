"""The virtual device's flash: its NVS partition, kept in ESP-IDF's NVS format in a file.

Writes are held per boot until ``commit`` (uncommitted writes are lost at a reset or power
cut, as on a board).  A commit rewrites the whole image to a temporary file, fsyncs it and
renames it over the old one, so the file is always a complete, readable NVS image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..nvs import NvsEntry, NvsFormatError, NvsFullError, build_partition, parse_partition

log = logging.getLogger(__name__)

# MicroPython's ESP32 partition tables (ports/esp32/partitions-*.csv): nvs at 0x9000, 0x6000 bytes.
NVS_OFFSET = 0x9000
NVS_SIZE = 0x6000

# esp-idf components/nvs_flash/include/nvs.h (ESP_ERR_NVS_BASE 0x1100); MicroPython raises OSError(-code).
ESP_ERR_NVS_NOT_FOUND = 0x1102
ESP_ERR_NVS_NOT_ENOUGH_SPACE = 0x1105
ESP_ERR_NVS_KEY_TOO_LONG = 0x1109
ESP_ERR_NVS_INVALID_LENGTH = 0x110C
ESP_ERR_NVS_VALUE_TOO_LONG = 0x110E

_MISSING = object()


class NvsOpError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class FlashNvs:
    def __init__(self, path: Path, size: int = NVS_SIZE) -> None:
        self.path = path
        self.size = size
        self.committed: dict[tuple[str, str], NvsEntry] = {}
        self.pending: dict[tuple[str, str], NvsEntry | object] = {}
        self.namespaces: list[str] = []
        if path.exists():
            image = path.read_bytes()
            part = parse_partition(image)
            for issue in part.issues:
                log.warning("flash %s: %s", path, issue)
            for e in part.entries:
                self.committed[(e.namespace, e.key)] = e
            self.namespaces = sorted(part.namespaces, key=lambda n: part.namespaces[n])
            self.size = len(image)
        else:
            self._write(b"\xff" * size)

    # --- the esp32.NVS operations ------------------------------------------------------
    def open(self, ns: str) -> None:
        if not ns or len(ns.encode()) > 15:
            raise NvsOpError(ESP_ERR_NVS_KEY_TOO_LONG)
        if ns not in self.namespaces:
            self.namespaces.append(ns)

    def _lookup(self, ns: str, key: str) -> NvsEntry | None:
        v = self.pending.get((ns, key), _MISSING)
        if v is _MISSING:
            return self.committed.get((ns, key))
        return v if isinstance(v, NvsEntry) else None

    def get(self, ns: str, key: str, type_: str) -> int | bytes:
        e = self._lookup(ns, key)
        if e is None or e.type != type_:
            raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)  # nvs_get_* looks up by key and type
        return e.value

    def set(self, ns: str, key: str, type_: str, value: int | bytes) -> None:
        if not key or len(key.encode()) > 15:
            raise NvsOpError(ESP_ERR_NVS_KEY_TOO_LONG)
        self.open(ns)
        self.pending[(ns, key)] = NvsEntry(ns, key, type_, value)

    def erase(self, ns: str, key: str) -> None:
        if self._lookup(ns, key) is None:
            raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
        self.pending[(ns, key)] = None

    def commit(self) -> None:
        if not self.pending:
            return
        merged = dict(self.committed)
        for k, v in self.pending.items():
            if isinstance(v, NvsEntry):
                merged.pop(k, None)  # a rewritten key goes to the end, as ESP-IDF appends
                merged[k] = v
            else:
                merged.pop(k, None)
        # Entries of one namespace together, namespaces in the order they were first opened.
        order = {ns: i for i, ns in enumerate(self.namespaces)}
        entries = sorted(merged.values(), key=lambda e: order.get(e.namespace, len(order)))
        try:
            image = build_partition(entries, self.size)
        except NvsFullError:
            raise NvsOpError(ESP_ERR_NVS_NOT_ENOUGH_SPACE) from None
        except NvsFormatError:
            raise NvsOpError(ESP_ERR_NVS_VALUE_TOO_LONG) from None
        self._write(image)
        self.committed = merged
        self.pending = {}

    def drop_pending(self) -> None:
        """A reset or power cut: what was not committed is gone."""
        self.pending = {}

    def _write(self, image: bytes) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(image)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
