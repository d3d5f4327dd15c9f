# The BLE PIN's verifier and its lockout count, in NVS namespace "ble", and the console
# commands that manage them (ss_console.Console delegates here; loaded when used).
#
#   blob "pin"    the SPAKE2+ verifier record (ssproto.spake2p.make_record): w0 (32) || L = w1*G
#                 (65) || salt (16) || PBKDF2 iterations (4).  The PIN itself never reaches the
#                 device (RFC 9383 section 3.2: the Verifier stores w0 and L).  Written at the
#                 factory (`safesignal pin`), checked when read (parse_record).
#   i32  "fails"  wrong PIN attempts in a row.  A PIN attempt is counted here, committed and
#                 read back before the device answers it; a confirmed PIN sets it to 0.
#   i32  "open"   1: open the BLE window at the next boot although the device is provisioned
#                 (set by provision_complete over BLE, so the host can read back after the
#                 reboot; cleared at that boot).
# A factory reset clears "fails" and "open" and keeps "pin": the PIN on the label stays valid.

import ss_nvs
import ssproto
import ssproto.ble as P

NAMESPACE = "ble"
_RECORD_LEN = 117  # ssproto.spake2p.RECORD_LEN: spake2p (and p256's tables) load only when a PIN is used


def _spake2p():
    from ssproto import spake2p

    return spake2p


class BleState:
    def __init__(self, nvs):
        self._nvs = nvs  # esp32.NVS(NAMESPACE)

    def _record(self):
        return ss_nvs.get_blob(self._nvs, "pin", _RECORD_LEN)

    def verifier(self):
        """(w0, L, salt, iterations) of the stored record, or None if there is none (or it does
        not check out)."""
        raw = self._record()
        if raw is None:
            return None
        try:
            return _spake2p().parse_record(raw)
        except ValueError:
            return None

    def fingerprint(self):
        """ssproto.ble.fingerprint of the stored record; "none" without a valid one."""
        if self.verifier() is None:
            return "none"
        import hashlib

        return P.fingerprint(hashlib.sha256, self._record())

    def set_verifier(self, record):
        _spake2p().parse_record(record)  # ValueError unless well formed
        self._nvs.set_blob("pin", record)
        self._nvs.set_i32("fails", 0)
        self._nvs.commit()
        if self._record() != record or self.fails() != 0:
            raise ssproto.ProtocolError(ssproto.E_NVS, "PIN verifier did not read back")

    def fails(self):
        v = ss_nvs.get_i32(self._nvs, "fails")
        return 0 if v is None or v < 0 else v

    def _set(self, key, v):
        self._nvs.set_i32(key, v)
        self._nvs.commit()
        if ss_nvs.get_i32(self._nvs, key) != v:
            raise OSError(-1)

    def count_attempt(self):
        """Count one PIN attempt (committed and read back); returns the new count."""
        n = self.fails() + 1
        self._set("fails", n)
        return n

    def clear_fails(self):
        if self.fails():
            self._set("fails", 0)

    def open_next_boot(self):
        return ss_nvs.get_i32(self._nvs, "open") == 1

    def set_open_next_boot(self, on):
        if on:
            self._set("open", 1)
        else:
            ss_nvs.erase(self._nvs, "open")
            self._nvs.commit()

    def factory_reset(self):
        ss_nvs.erase(self._nvs, "fails")
        ss_nvs.erase(self._nvs, "open")
        self._nvs.commit()


# --- console commands -------------------------------------------------------------------------
async def cmd_set_pin(con, a):
    """ble_set_pin <verifier-record-hex> [--force]"""
    force = a[1:] == ["--force"]
    if len(a) != 1 and not (len(a) == 2 and force):
        raise ssproto.ProtocolError(ssproto.E_USAGE, "usage: ble_set_pin <verifier-record> [--force]")
    if con.remote:
        raise ssproto.ProtocolError(ssproto.E_STATE, "the PIN can only be set over the serial console")
    if con.store.provision_is_provisioned() and not force:
        raise ssproto.ProtocolError(ssproto.E_STATE, "device is provisioned: a new PIN needs --force")
    h = a[0]
    if len(h) != 2 * _RECORD_LEN or not ssproto._is_hex(h):
        raise ssproto.ProtocolError(ssproto.E_INVALID, "the verifier record must be %d hex digits" % (2 * _RECORD_LEN))
    try:
        import binascii

        record = binascii.unhexlify(h)
        _spake2p().parse_record(record)
    except ValueError as e:
        raise ssproto.ProtocolError(ssproto.E_INVALID, "verifier record: %s" % e.args[0])
    st = con.app.ble_state
    st.set_verifier(record)
    con.info("PIN verifier saved: %s" % st.fingerprint())
    con.ok()


def status_lines(con):
    app = con.app
    st = app.ble_state
    fails = st.fails()
    ble = app.ble
    wait = P.lock_wait_s(fails)
    return [
        ("BLE", ble.state() if ble is not None else "off"),
        ("PIN verifier", st.fingerprint()),
        ("PIN failures", "%d" % fails),
        ("PIN attempts left", "%d" % P.attempts_left(fails)),
        ("PIN wait", "locked" if wait is None else "%d" % (ble.wait_left() if ble is not None else wait)),
        ("BLE window", "%d" % (ble.window_left() if ble is not None else 0)),
    ]


async def cmd_status(con, a):
    if a:
        raise ssproto.ProtocolError(ssproto.E_USAGE, "usage: ble_status")
    for label, value in status_lines(con):
        con.info(ssproto.status_line(label, value))
    con.ok()


async def cmd_done(con, a):
    """ble_done: the host verified the provisioning; BLE goes off until a long press."""
    if a:
        raise ssproto.ProtocolError(ssproto.E_USAGE, "usage: ble_done")
    if not con.store.provision_is_provisioned():
        raise ssproto.ProtocolError(ssproto.E_STATE, "device is not provisioned")
    con.app.ble_state.set_open_next_boot(False)
    con.info("[BLE] Provisioning verified: Bluetooth turns off")
    con.ok()
    if con.app.ble is not None:
        con.app.ble.finish()
