"""The virtual device's flash: its NVS partition, kept in ESP-IDF's NVS format in a file.

Two write models, switchable while the device runs (``write_through``):

* **commit** (default): writes are held per boot until ``commit``, and uncommitted writes are
  lost at a reset or power cut.  This is all MicroPython's ``esp32.NVS`` documentation
  promises ("changes are only guaranteed to be written to flash after ``commit``").
* **write-through**: every ``set``/``erase`` reaches the file at once and ``commit`` has
  nothing left to do.  This is what ESP-IDF actually does (``nvs_set_*``/``nvs_erase_key``
  write the flash; ``nvs_commit`` is a no-op in the current implementation).

With ``keys`` the partition is encrypted as ESP-IDF's NVS encryption does it (XTS-AES per
entry, keys derived from the chip's eFuse HMAC key; safesignal/nvs.py).  At power-up, entries
the chip cannot decrypt (an image written by another chip) are marked erased, as ESP-IDF's
``nvs_flash_init`` does with entries whose CRC fails; their bytes stay in the flash.

Firmware that is correct under the commit model is correct under both.  Every write rewrites
the whole image to a new temporary file (mode 0600: it holds the WiFi password), fsyncs it and
renames it over the old one, so the file is always a complete, readable NVS image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import UsageError
from ..nvs import (
    NvsEntry,
    NvsFormatError,
    NvsFullError,
    NvsKeys,
    build_partition,
    erase_unreadable,
    parse_partition,
)

log = logging.getLogger(__name__)

# The hardened board's partition table (firmware/boards/SAFESIGNAL_S3/partitions-safesignal.csv):
# nvs at 0x11000, 0x6000 bytes (MicroPython's own tables, ports/esp32/partitions-*.csv, put the
# same 0x6000 bytes at 0x9000; the table moved to make room for the secure-boot bootloader).
# Only esp32.Partition.info() shows the offset: NVS addresses (and XTS tweaks) are relative.
NVS_OFFSET = 0x11000
NVS_SIZE = 0x6000

# esp-idf components/nvs_flash/include/nvs.h (ESP_ERR_NVS_BASE 0x1100); MicroPython raises OSError(-code).
ESP_ERR_NVS_NOT_FOUND = 0x1102
ESP_ERR_NVS_NOT_ENOUGH_SPACE = 0x1105
ESP_ERR_NVS_KEY_TOO_LONG = 0x1109
ESP_ERR_NVS_INVALID_LENGTH = 0x110C
ESP_ERR_NVS_VALUE_TOO_LONG = 0x110E

FILE_MODE = 0o600  # the image holds the WiFi password

_MISSING = object()


class NvsOpError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def check_flash_path(path: Path) -> None:
    """Raise UsageError unless ``path`` is an existing regular file or can be created."""
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise UsageError(f"--flash {path}: not a regular file")
        if not os.access(path, os.R_OK):
            raise UsageError(f"--flash {path}: not readable")
        parent = path.parent
    else:
        parent = path.parent
        if not parent.is_dir():
            raise UsageError(f"--flash {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        # every write makes a temporary file next to the image and renames it
        raise UsageError(f"--flash {path}: directory {parent} is not writable")


class FlashNvs:
    """The NVS partition.  The constructor reads an existing image (or starts blank) but
    creates no file; :meth:`create` writes the blank image when the device first powers up."""

    def __init__(self, path: Path, size: int = NVS_SIZE, *, write_through: bool = False,
                 keys: NvsKeys | None = None) -> None:
        self.path = path
        self.size = size
        self.write_through = write_through
        self.keys = keys
        self.unreadable = 0  # entries found at power-up that this chip could not decrypt
        self.committed: dict[tuple[str, str], NvsEntry] = {}
        self.pending: dict[tuple[str, str], NvsEntry | None] = {}
        self.namespaces: list[str] = []
        self._exists = path.exists()
        if self._exists:
            try:
                image = path.read_bytes()
                if keys is not None:
                    image, self.unreadable = erase_unreadable(image, keys)
                part = parse_partition(image, keys=keys)
            except OSError as err:
                raise UsageError(f"--flash {path}: {err.strerror or err}") from None
            except NvsFormatError as err:
                raise UsageError(f"--flash {path}: not an NVS partition image: {err}") from None
            if self.unreadable:
                log.warning("flash %s: %d entries cannot be decrypted with this chip's key: marked erased",
                            path, self.unreadable)
                self._write(image)  # what nvs_flash_init leaves behind
            for issue in part.issues:
                log.warning("flash %s: %s", path, issue)
            for e in part.entries:
                self.committed[(e.namespace, e.key)] = e
            self.namespaces = sorted(part.namespaces, key=lambda n: part.namespaces[n])
            self.size = len(image)

    def create(self) -> None:
        """Write the blank image if there is no file yet (a fresh chip's erased flash)."""
        if not self._exists:
            self._write(b"\xff" * self.size)
            self._exists = True

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
        self._change({(ns, key): NvsEntry(ns, key, type_, value)})

    def erase(self, ns: str, key: str) -> None:
        if self._lookup(ns, key) is None:
            raise NvsOpError(ESP_ERR_NVS_NOT_FOUND)
        self._change({(ns, key): None})

    def commit(self) -> None:
        """Write what is pending.  In write-through mode nothing is pending (except writes
        held before a switch from commit mode), so this is normally a no-op."""
        if not self.pending:
            return
        self._apply(self.pending)
        self.pending = {}

    def set_write_through(self, on: bool) -> None:
        """Switch the write model.  Writes still pending from commit mode stay pending until
        the next commit (or are lost at a reset), whatever the new mode."""
        self.write_through = on

    def drop_pending(self) -> None:
        """A reset or power cut: what was not committed is gone."""
        self.pending = {}

    def read_raw(self, offset: int, length: int) -> bytes:
        """Raw partition bytes, as esp32.Partition.readblocks sees them (ciphertext when encrypted)."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise NvsOpError(0x102)  # ESP_ERR_INVALID_ARG (esp_err.h)
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except FileNotFoundError:
            data = b""
        return data + b"\xff" * (length - len(data))

    # --- the image -----------------------------------------------------------------------
    def _change(self, changes: dict[tuple[str, str], NvsEntry | None]) -> None:
        if not self.write_through:
            self.pending.update(changes)
            return
        # On top of the file's content; older writes still held from commit mode stay held.
        self._apply(changes)
        for k in changes:
            self.pending.pop(k, None)

    def _apply(self, changes: dict[tuple[str, str], NvsEntry | None]) -> None:
        merged = dict(self.committed)
        for k, v in changes.items():
            merged.pop(k, None)  # a rewritten key goes to the end, as ESP-IDF appends
            if v is not None:
                merged[k] = v
        # Entries of one namespace together, namespaces in the order they were first opened.
        order = {ns: i for i, ns in enumerate(self.namespaces)}
        entries = sorted(merged.values(), key=lambda e: order.get(e.namespace, len(order)))
        try:
            image = build_partition(entries, self.size, keys=self.keys)
        except NvsFullError:
            raise NvsOpError(ESP_ERR_NVS_NOT_ENOUGH_SPACE) from None
        except NvsFormatError:
            raise NvsOpError(ESP_ERR_NVS_VALUE_TOO_LONG) from None
        self._write(image)
        self._exists = True
        self.committed = merged

    def _write(self, image: bytes) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.unlink()  # a leftover could carry another owner or mode; O_EXCL below
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the umask
            with os.fdopen(fd, "wb") as f:
                fd = -1
                f.write(image)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        os.replace(tmp, self.path)
