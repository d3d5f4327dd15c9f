# Virtual-device stub of MicroPython's esp32 module: esp32.NVS and esp32.Partition, forwarded to
# the supervisor, which keeps the NVS partition in ESP-IDF's NVS format and reports the board's
# partition table (firmware/boards/SAFESIGNAL_S3/partitions-safesignal.csv, read by
# safesignal/sim/partitions.py).

import binascii
import errno
import json

import _hw


class NVS:
    def __init__(self, namespace):
        self._ns = namespace
        _hw.call("nvs_open", ns=namespace)

    def set_i32(self, key, value):
        _hw.call("nvs_set", ns=self._ns, key=key, type="i32", value=value)

    def get_i32(self, key):
        return _hw.call("nvs_get", ns=self._ns, key=key, type="i32")

    # The chip's esp32.NVS is C: its calls take nothing from the Python heap.  These two
    # forward a blob with less of the heap (its hex and one request line, no JSON copies of
    # it), so that the stub does not run the firmware out of memory where a chip would not (a
    # 128 kB run failed in provision_save_config in the old set_blob, which made five copies).
    def set_blob(self, key, value):
        head = ('{"op": "nvs_set", "ns": %s, "key": %s, "type": "blob", "value": "'
                % (json.dumps(self._ns), json.dumps(key))).encode()
        _hw.result(_hw.exchange(head + binascii.hexlify(value) + b'"}\n'))

    def get_blob(self, key, buffer):
        line = _hw.exchange(('{"op": "nvs_get", "ns": %s, "key": %s, "type": "blob", "size": %d}\n'
                             % (json.dumps(self._ns), json.dumps(key), len(buffer))).encode())
        if not line.startswith(b'{"result": "'):
            _hw.result(line)  # an errno reply raises OSError
            raise OSError(errno.EIO)
        end = line.index(b'"', 12)
        v = binascii.unhexlify(memoryview(line)[12:end])
        buffer[: len(v)] = v
        return len(v)

    def erase_key(self, key):
        _hw.call("nvs_erase", ns=self._ns, key=key)

    def commit(self):
        _hw.call("nvs_commit", ns=self._ns)


class Partition:
    # esp32.Partition as MicroPython v1.28.0's ports/esp32/esp32_partition.c has it, over the
    # board's partition table.  Modelled: the table (find, info, the BOOT/RUNNING app,
    # get_next_update) and reading the NVS partition.  Not modelled (absent, so a call fails
    # loudly): writeblocks, set_boot, mark_app_valid_cancel_rollback, and the contents of every
    # partition but NVS (reading one raises OSError EIO).
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1
    _BLOCK = 4096
    _info = None  # the hw op part_info, asked once per boot: the table does not change

    @classmethod
    def _table(cls):
        if cls._info is None:
            cls._info = _hw.call("part_info")
        return cls._info

    @classmethod
    def _make(cls, entry, block_size):
        return cls(None, block_size, entry)

    def __init__(self, id, block_size=4096, _entry=None):
        self._bs = block_size
        if _entry is not None:  # made by find / get_next_update
            self._entry = tuple(_entry)
            return
        info = self._table()
        parts = info["parts"]
        if isinstance(id, int):
            # BOOT: esp_ota_get_boot_partition; RUNNING: esp_ota_get_running_partition.  The
            # virtual device never updates, so both are the app a blank otadata boots.
            if id not in (self.BOOT, self.RUNNING):
                raise ValueError
            found = [e for e in parts if e[0] == info["running"]]
        else:
            # a label: the first app partition with it, else the first data partition
            found = [e for e in parts if e[1] == self.TYPE_APP and e[0] == id]
            found = found or [e for e in parts if e[1] == self.TYPE_DATA and e[0] == id]
        if not found:
            raise OSError(errno.ENOENT)
        self._entry = tuple(found[0])

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        # esp_partition_find: table order; subtype 0xFF (ESP_PARTITION_SUBTYPE_ANY) matches any
        return [cls._make(e, block_size) for e in cls._table()["parts"]
                if e[1] == type and subtype in (0xFF, e[2]) and label in (None, e[0])]

    def info(self):
        # (type, subtype, addr, size, label, encrypted); "encrypted" is flash encryption, as
        # ESP-IDF reports it (never for NVS, which has its own encryption)
        label, ptype, subtype, addr, size, enc = self._entry
        return (ptype, subtype, addr, size, label, enc)

    def __repr__(self):
        label, ptype, subtype, addr, size, enc = self._entry
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=%u>" % (
            ptype, subtype, addr, size, label, enc)

    def __eq__(self, other):
        return isinstance(other, Partition) and self._entry == other._entry

    def get_next_update(self):
        # esp_ota_get_next_update_partition(self): the OTA app slot after this one in ota_N
        # order, wrapping round; from a non-OTA app, the first slot.  ENOENT without OTA slots.
        ota = sorted([e for e in self._table()["parts"] if e[1] == self.TYPE_APP and 0x10 <= e[2] < 0x20],
                     key=lambda e: e[2])
        if not ota:
            raise OSError(errno.ENOENT)
        after = [e for e in ota if e[2] > self._entry[2]] if self._entry[1] == self.TYPE_APP else []
        return self._make((after or ota)[0], 4096)

    def readblocks(self, block_num, buf, offset=0):
        label, ptype, subtype, addr, size, enc = self._entry
        start = block_num * self._bs + offset
        if start < 0 or start + len(buf) > size:
            raise OSError(errno.EINVAL)  # esp_partition_read: ESP_ERR_INVALID_SIZE
        if label != "nvs":
            raise OSError(errno.EIO)  # only the NVS partition's contents exist in the virtual device
        buf[:] = binascii.unhexlify(_hw.call("part_read", offset=start, length=len(buf)))

    def ioctl(self, cmd, arg):
        if cmd in (1, 2, 3):  # MP_BLOCKDEV_IOCTL_INIT, _DEINIT, _SYNC
            return 0
        if cmd == 4:  # MP_BLOCKDEV_IOCTL_BLOCK_COUNT
            return self._entry[4] // self._bs
        if cmd == 5:  # MP_BLOCKDEV_IOCTL_BLOCK_SIZE
            return self._bs
        return None
