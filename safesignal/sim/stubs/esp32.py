# Virtual-device stub of MicroPython's esp32 module: esp32.NVS and esp32.Partition (the NVS
# partition only), forwarded to the supervisor, which keeps the flash image in ESP-IDF's NVS format.

import binascii

import _hw


class NVS:
    def __init__(self, namespace):
        self._ns = namespace
        _hw.call("nvs_open", ns=namespace)

    def set_i32(self, key, value):
        _hw.call("nvs_set", ns=self._ns, key=key, type="i32", value=value)

    def get_i32(self, key):
        return _hw.call("nvs_get", ns=self._ns, key=key, type="i32")

    def set_blob(self, key, value):
        v = binascii.hexlify(bytes(value)).decode()
        _hw.call("nvs_set", ns=self._ns, key=key, type="blob", value=v)

    def get_blob(self, key, buffer):
        v = binascii.unhexlify(_hw.call("nvs_get", ns=self._ns, key=key, type="blob", size=len(buffer)))
        buffer[: len(v)] = v
        return len(v)

    def erase_key(self, key):
        _hw.call("nvs_erase", ns=self._ns, key=key)

    def commit(self):
        _hw.call("nvs_commit", ns=self._ns)


class Partition:
    # esp32.Partition over the virtual flash: only the NVS data partition exists here.
    # Constants as MicroPython's ports/esp32/esp32_partition.c exposes them.
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1
    _BLOCK = 4096
    _NVS_SUBTYPE = 0x02  # esp_partition.h ESP_PARTITION_SUBTYPE_DATA_NVS

    def __init__(self, id, block_size=4096):
        if id != "nvs":
            raise ValueError("partition not found")
        self._addr, self._size, self._enc = _hw.call("part_info")["nvs"]

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        if type != cls.TYPE_DATA or subtype not in (0xFF, cls._NVS_SUBTYPE) or label not in (None, "nvs"):
            return []
        return [cls("nvs")]

    def info(self):
        # (type, subtype, addr, size, label, encrypted): "encrypted" is flash encryption, which
        # never applies to NVS partitions (NVS encryption is separate).
        return (self.TYPE_DATA, self._NVS_SUBTYPE, self._addr, self._size, "nvs", False)

    def readblocks(self, block_num, buf, offset=0):
        start = block_num * self._BLOCK + offset
        data = binascii.unhexlify(_hw.call("part_read", offset=start, length=len(buf)))
        buf[:] = data

    def ioctl(self, cmd, arg):
        if cmd == 4:  # MP_BLOCKDEV_IOCTL_BLOCK_COUNT
            return self._size // self._BLOCK
        if cmd == 5:  # MP_BLOCKDEV_IOCTL_BLOCK_SIZE
            return self._BLOCK
        return None
