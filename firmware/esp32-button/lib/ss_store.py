# Provisioning store: the device's configuration in NVS, saved atomically.
#
# Layout (namespace "provision"; key names and record format in ssproto/records.py):
#   i32  "active"  generation g of the committed configuration; absent = not provisioned
#   blob "cfg0"/"cfg1"  records; generation g lives in slot g % 2
#   blob "key0"/"key1", "cert0"/"cert1", "ca0"/"ca1"  the device identity of generation g (if
#        any): its private key, its certificate and the tenant CA certificate (DER).  The
#        record names them by their SHA-256 ("id").
# A record is  b"SSC" + version(1) + JSON + SHA-256(everything before it).  Saving writes the
# new identity and record into the slot that is NOT active, commits and reads them back, and
# only then advances "active" (committed last).  A power cut at any instant leaves "active"
# pointing at a complete, checksummed record: the old one or the new one.  Clearing erases
# "active" first.  NVS encryption (the hardened board) keeps all of it unreadable off the chip.
#
# The seed guide's C API names are kept: provision_init, provision_is_provisioned,
# provision_save_config, provision_load_config, provision_clear.

import ss_nvs
import ssproto
import ssproto.records as records
from ss_compat import const

NAMESPACE = records.PROVISION
_BUF = const(2048)
KEY_MAGIC = records.KEY_MAGIC
KEY_LEN = records.KEY_LEN
FIELDS = records.FIELDS


class StoreError(Exception):
    # reason: "ESP_ERR_NVS_NOT_FOUND" (nothing stored), "CORRUPT", "VERIFY", "IO"
    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
        self.message = message


identity_digest = records.identity_digest
encode_record = records.encode_record


def check_identity(ident):
    key = ident.get("key")
    if not isinstance(key, bytes) or len(key) != KEY_LEN or key[:4] != KEY_MAGIC:
        raise StoreError("CORRUPT", "device key has the wrong format")
    for p in ("cert", "ca"):
        v = ident.get(p)
        if not isinstance(v, bytes) or not v or len(v) > _BUF:
            raise StoreError("CORRUPT", "identity lacks its " + p + " certificate")


def decode_record(raw):
    """(gen, cfg, id_digest or None) of a record; StoreError CORRUPT unless it checks out."""
    try:
        gen, cfg, id_digest = records.decode_record(raw)
    except ValueError as e:
        raise StoreError("CORRUPT", "stored record: " + e.args[0])
    validate(cfg)
    if id_digest is None and cfg["mqtt_uri"].startswith("mqtts://"):
        # never fall back to plain MQTT on the TLS port (a factory image could hold this)
        raise StoreError("CORRUPT", "record uses mqtts:// but holds no device identity")
    return gen, cfg, id_digest


def validate(cfg):
    """Every field must pass the same checks the console applies (a factory image may not)."""
    try:
        ssproto.check_ssid(cfg["wifi_ssid"])
        ssproto.check_passphrase(cfg["wifi_pass"])
        ssproto.check_ident("device id", cfg["device_id"])
        ssproto.check_ident("tenant", cfg["tenant"])
        ssproto.check_ident("building", cfg["building"])
        ssproto.check_ident("room", cfg["room"])
        ssproto.check_mqtt_uri(cfg["mqtt_uri"])
    except ssproto.ProtocolError as e:
        raise StoreError("CORRUPT", "record holds an invalid value: " + e.message)


class Store:
    def __init__(self, nvs):
        self._nvs = nvs  # one esp32.NVS(NAMESPACE), created by the composition root
        self._gen = 0
        self._cfg = None
        self._ident = None  # {"key", "cert", "ca"} of the committed configuration, or None
        self.load_error = None  # StoreError from the last load, for the boot log
        self.notices = []  # what provision_init did on its own, for the boot log

    # --- low level ------------------------------------------------------------------
    def _get_i32(self, key):
        return ss_nvs.get_i32(self._nvs, key)

    def _get_blob(self, key):
        try:
            return ss_nvs.get_blob(self._nvs, key, _BUF)
        except OSError as e:
            if ss_nvs.errno(e) == ss_nvs.ESP_ERR_NVS_INVALID_LENGTH:
                raise StoreError("CORRUPT", "record " + key + " is too large")
            raise

    def _reads_back(self, key, value):
        # A buffer of the value's own size, not a 2 kB one: after a connect test the heap is
        # fragmented, and a longer blob answers INVALID_LENGTH, which is a difference too.
        try:
            return ss_nvs.get_blob(self._nvs, key, len(value)) == value
        except OSError as e:
            if ss_nvs.errno(e) == ss_nvs.ESP_ERR_NVS_INVALID_LENGTH:
                return False
            raise

    def _exists(self, key):
        # A 1-byte buffer, not a 2 kB one: a longer blob answers INVALID_LENGTH (nvs_get_blob)
        try:
            return ss_nvs.get_blob(self._nvs, key, 1) is not None
        except OSError as e:
            if ss_nvs.errno(e) == ss_nvs.ESP_ERR_NVS_INVALID_LENGTH:
                return True
            raise

    def _erase(self, key):
        ss_nvs.erase(self._nvs, key)

    # --- seed API ----------------------------------------------------------------------
    def provision_init(self):
        """Read the committed configuration (if any).  Never erases a valid one."""
        self._cfg = None
        self._ident = None
        self._gen = 0
        self.load_error = None
        try:
            gen = self._get_i32(records.ACTIVE)
            if gen is None:
                self.load_error = StoreError("ESP_ERR_NVS_NOT_FOUND", "ESP_ERR_NVS_NOT_FOUND")
                self._finish_interrupted_clear()
                return
            # Known from here on, even if the record turns out bad: the next save must go to
            # the other slot, never over the one the marker points at.
            self._gen = gen
            keys = records.slot_keys(gen)
            raw = self._get_blob(keys[0])
            if raw is None:
                raise StoreError("CORRUPT", "active record is missing")
            rgen, cfg, id_digest = decode_record(raw)
            if rgen != gen:
                raise StoreError("CORRUPT", "active record has the wrong generation")
            ident = None
            if id_digest is not None:
                ident = {}
                for i in range(len(records.ID_PARTS)):
                    p = records.ID_PARTS[i]
                    ident[p] = self._get_blob(keys[i + 1])
                    if ident[p] is None:
                        raise StoreError("CORRUPT", "device identity is missing its " + p)
                if identity_digest(ident) != id_digest:
                    raise StoreError("CORRUPT", "device identity does not match its record")
                check_identity(ident)
            self._cfg = cfg
            self._ident = ident
        except StoreError as e:
            self.load_error = e
        except OSError as e:
            self.load_error = StoreError("IO", "NVS read failed (%d)" % ss_nvs.errno(e))

    def _finish_interrupted_clear(self):
        # Not provisioned: no record may linger (a power cut during provision_clear).  Say so
        # loudly: on a factory image this also catches an "active" key of the wrong type.
        left = [k for k in records.slot_keys(0) + records.slot_keys(1) if self._exists(k)]
        if not left:
            return
        self.notices.append("Erased configuration records left without the provisioned marker "
                            "(interrupted factory reset, or an 'active' key that is not an i32)")
        for k in left:
            self._erase(k)
        self._nvs.commit()

    def provision_is_provisioned(self):
        return self._cfg is not None

    def provision_load_config(self):
        """A copy of the committed configuration; raises StoreError if there is none."""
        if self._cfg is None:
            raise self.load_error or StoreError("ESP_ERR_NVS_NOT_FOUND", "ESP_ERR_NVS_NOT_FOUND")
        return dict(self._cfg)

    def identity(self):
        """The committed device identity {"key", "cert", "ca"} (bytes), or None."""
        return dict(self._ident) if self._ident is not None else None

    @property
    def generation(self):
        return self._gen

    def provision_save_config(self, cfg, ident=None):
        """Atomically replace the configuration (and the device identity: ``ident`` is
        {"key", "cert", "ca"} or None for none); verified by reading it back."""
        for k in FIELDS:
            if not isinstance(cfg.get(k), str):
                raise StoreError("INCOMPLETE", "configuration lacks " + k)
        if ident is not None:
            check_identity(ident)
        gen = self._gen + 1
        keys = records.slot_keys(gen)
        record = encode_record(gen, cfg, identity_digest(ident) if ident is not None else None)
        try:
            writes = []
            if ident is not None:
                for i in range(len(records.ID_PARTS)):
                    writes.append((keys[i + 1], ident[records.ID_PARTS[i]]))
            else:
                for k in keys[1:]:
                    self._erase(k)  # leftovers of an older generation in this slot
            writes.append((keys[0], record))
            for k, v in writes:
                self._nvs.set_blob(k, v)
            self._nvs.commit()
            for k, v in writes:
                if not self._reads_back(k, v):
                    raise StoreError("VERIFY", "record read back differs from what was written")
            self._nvs.set_i32(records.ACTIVE, gen)  # the commit point
            self._nvs.commit()
            if self._get_i32(records.ACTIVE) != gen:
                raise StoreError("VERIFY", "marker read back differs from what was written")
        except OSError as e:
            raise StoreError("IO", "NVS write failed (%d)" % ss_nvs.errno(e))
        try:
            # The previous record and key are no longer referenced: do not keep old secrets around.
            for k in records.slot_keys(gen + 1):
                self._erase(k)
            self._nvs.commit()
        except OSError:
            pass
        self._gen = gen
        self._cfg = {}
        for k in FIELDS:
            self._cfg[k] = cfg[k]
        self._ident = dict(ident) if ident is not None else None

    def provision_clear(self):
        """Factory reset: forget the configuration (marker first, then the records)."""
        try:
            self._erase(records.ACTIVE)
            self._nvs.commit()
            keys = records.slot_keys(0) + records.slot_keys(1)
            for k in keys:
                self._erase(k)
            self._nvs.commit()
            if self._get_i32(records.ACTIVE) is not None:
                raise StoreError("VERIFY", "marker still present after erase")
            for k in keys:
                if self._exists(k):
                    raise StoreError("VERIFY", "record still present after erase")
        except OSError as e:
            raise StoreError("IO", "NVS erase failed (%d)" % ss_nvs.errno(e))
        self._cfg = None
        self._ident = None
        self._gen = 0
        self.load_error = StoreError("ESP_ERR_NVS_NOT_FOUND", "ESP_ERR_NVS_NOT_FOUND")


# Module-level functions with the seed guide's names, over one Store made by provision_init.
_store = None


def provision_init(nvs=None):
    global _store
    if nvs is None:
        import esp32

        nvs = esp32.NVS(NAMESPACE)
    _store = Store(nvs)
    _store.provision_init()
    return _store


def provision_is_provisioned():
    return _store is not None and _store.provision_is_provisioned()


def provision_save_config(cfg, ident=None):
    _store.provision_save_config(cfg, ident)


def provision_load_config():
    return _store.provision_load_config()


def provision_clear():
    _store.provision_clear()
