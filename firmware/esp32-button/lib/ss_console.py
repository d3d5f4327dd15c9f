# The serial console: reads command lines, answers each with info lines and one status line.
#
# The device never echoes what is typed (the password would be echoed).  Line endings CR, LF
# and CRLF all end a line; backspace/DEL edit; Ctrl-C discards the line; Ctrl-L (form feed,
# "redraw" in terminals) is ignored.  Tools send checked lines (ssproto.Checked).
# Grammar and status codes: ssproto and PROVISIONING.md ("Console protocol").

import binascii
import hashlib

import ssproto
from ss_compat import const
from ss_store import StoreError

_BS = const(0x08)
_DEL = const(0x7F)
_CTRL_C = const(0x03)
_FF = const(0x0C)
_CR = const(0x0D)
_LF = const(0x0A)



class LineReader:
    """Turns a byte stream into lines; over-long lines are reported, not truncated.

    Each round takes every byte already waiting, not one: the board's receive buffer is a
    259-byte ring that a UART overruns while the firmware does not read it."""

    def __init__(self, reader):
        self._reader = reader
        self._buf = bytearray()
        self._last_cr = False
        self._overflow = False
        self._in = b""  # bytes taken from the stream, not yet looked at
        self._pos = 0
        self._poll = None
        s = getattr(reader, "s", None)  # an asyncio stream's underlying stream (sys.stdin.buffer)
        if s is not None:
            try:
                import select

                self._poll = select.poll()
                self._poll.register(s, select.POLLIN)
            except (ImportError, OSError, AttributeError, TypeError):
                self._poll = None

    async def _next(self):
        if self._pos >= len(self._in):
            b = await self._reader.read(1)
            if not b:
                raise EOFError
            self._in = b + self._waiting()
            self._pos = 0
        c = self._in[self._pos]
        self._pos += 1
        return c

    def _waiting(self):
        # What is in the receive buffer now, read without yielding.  One byte per read: a
        # larger read on a board's stdin blocks until it has them all.
        p = self._poll
        if p is None:
            return b""
        s = self._reader.s
        got = bytearray()
        while len(got) < 4096:
            ready = p.poll(0)
            if not ready or not ready[0][1] & 1:  # POLLIN
                break
            b = s.read(1)
            if not b:
                break
            got.extend(b)
        return bytes(got)

    async def readline(self):
        """Returns bytes of one line, None for an over-long line; raises EOFError at end."""
        while True:
            c = await self._next()
            if c == _FF:
                continue
            if c == _LF and self._last_cr:
                self._last_cr = False
                continue
            self._last_cr = c == _CR
            if c == _CR or c == _LF:
                line = bytes(self._buf)
                over = self._overflow
                self._buf = bytearray()
                self._overflow = False
                return None if over else line
            if c == _BS or c == _DEL:
                # Remove one character, not one byte: step back over UTF-8 continuation bytes.
                i = len(self._buf) - 1
                while i > 0 and self._buf[i] & 0xC0 == 0x80:
                    i -= 1
                if i >= 0:
                    self._buf = self._buf[:i]
                continue
            if c == _CTRL_C:
                self._buf = bytearray()
                self._overflow = False
                continue
            if len(self._buf) >= ssproto.MAX_LINE:
                self._overflow = True
                continue
            self._buf.append(c)


class Console:
    def __init__(self, store, chip_id, firmware, reset, wifi=None, mqtt=None, boot_id="", app=None):
        self.store = store
        self.chip_id = chip_id
        self.boot_id = boot_id  # random per boot: tools tell a reboot from a port hiccup
        self.firmware = firmware
        self._reset = reset  # coroutine function: flush output, then machine.reset()
        self.wifi = wifi
        self.mqtt = mqtt
        self.staged = {}  # fields accepted but not yet committed (RAM only)
        self.ident = {}  # staged identity: "key" (made here, never printed), "cert", "ca" (RAM only)
        self.app = app  # ss_app.App: connect test, alerts; None only in unit tests
        self._checked = ssproto.Checked()  # a checked line being received (tools)
        self.remote = False  # True for a BLE session: factory-only commands are refused

    def _links(self):
        if self.app is not None and self.wifi is None:
            return self.app.wifi, self.app.mqtt
        return self.wifi, self.mqtt

    # --- output ---------------------------------------------------------------------
    def out(self, text):
        # Every line goes out here: the serial console (print), or, for a BLE session, the
        # encrypted channel (ss_ble sets the instance's own ``out``).
        print(text)

    def ok(self, text=""):
        self.out(ssproto.ok_line(text))

    def err(self, code, message):
        self.out(ssproto.err_line(code, message))

    def info(self, text):
        self.out(text)

    # --- loop -----------------------------------------------------------------------
    async def run(self, stream):
        lines = LineReader(stream)
        while True:
            raw = await lines.readline()
            if raw is None:
                self._checked.reset()
                self.err(ssproto.E_TOOLONG, "line longer than %d bytes discarded" % ssproto.MAX_LINE)
                continue
            await self.handle_line(raw)

    async def handle_line(self, raw):
        """One received line: a piece of a checked line (tools) or a plain one (people)."""
        if not ssproto.is_checked(raw):
            if self._checked.got() and raw:
                # A plain line inside a checked one is a piece that lost its mark: run nothing.
                self._checked.reset()
                self.err(ssproto.E_CHECKSUM, "checked line interrupted; nothing was run")
                return
            self._checked.reset()  # an empty line abandons a checked line quietly
            await self.handle_bytes(raw)
            return
        try:
            whole = self._checked.feed(raw, binascii.crc32)
        except ssproto.ProtocolError as e:
            self.err(e.code, e.message)
            return
        if whole is None:
            self.ok("+%d" % self._checked.got())
            return
        await self.handle_bytes(whole)

    async def handle_bytes(self, raw):
        try:
            line = ssproto.decode_utf8(raw)  # strict: MicroPython's own decoder is not
        except (ssproto.ProtocolError, UnicodeError):
            self.err(ssproto.E_ENCODING, "line is not valid UTF-8")
            return
        await self.handle(line)

    async def handle(self, line):
        try:
            await self._handle(line)
        except MemoryError:
            # One command that did not fit must not take the device down (a reboot loses
            # everything staged): free what it left behind and say so.
            import gc

            gc.collect()
            self.err(ssproto.E_MEMORY, "out of memory: the command did not finish; try again")
        except Exception as e:
            # A bug must not reboot the device either.  Only the exception's type is shown: its
            # text could quote an argument (a password).
            self.err(ssproto.E_INTERNAL, "the command failed (%s); nothing was saved unless it said so"
                     % e.__class__.__name__)

    async def _handle(self, line):
        try:
            args = ssproto.split_args(line)
        except ssproto.ProtocolError as e:
            self.err(e.code, e.message)
            return
        if not args:
            return  # empty line: nothing, like a shell
        cmd = args[0]
        fn = getattr(self, "cmd_" + cmd, None) if _is_name(cmd) else None
        if fn is None:
            # Never repeat the line: it may be a password typed in the wrong place.
            self.err(ssproto.E_UNKNOWN, "unknown command (type help)")
            return
        try:
            await fn(args[1:])
        except ssproto.ProtocolError as e:
            self.err(e.code, e.message)
        except StoreError as e:
            self.err(ssproto.E_NVS, e.message)
        except OSError as e:
            self.err(ssproto.E_NVS, "flash error (%s)" % (e.args[0] if e.args else "?"))

    # --- commands -------------------------------------------------------------------
    async def cmd_help(self, a):
        from ss_help import HELP  # loaded when asked for: its text would cost heap all the time

        for line in HELP:
            self.out(line)
        self.ok()

    async def cmd_ping(self, a):
        if len(a) > 1:
            raise ssproto.ProtocolError(ssproto.E_USAGE, "usage: ping [token]")
        self.ok("pong " + ssproto.quote(a[0]) if a else "pong")

    async def cmd_provision_set_wifi(self, a):
        _expect(a, 2, "usage: provision_set_wifi <ssid> <password>")
        ssid = ssproto.check_ssid(a[0])
        password = ssproto.check_passphrase(a[1])
        self.staged["wifi_ssid"] = ssid
        self.staged["wifi_pass"] = password
        self.out("WiFi credentials saved: SSID='%s'" % ssid)
        self._hint()
        self.ok()

    async def cmd_provision_set_device(self, a):
        _expect(a, 4, "usage: provision_set_device <device-id> <tenant> <building> <room>")
        vals = (
            ssproto.check_ident("device id", a[0]),
            ssproto.check_ident("tenant", a[1]),
            ssproto.check_ident("building", a[2]),
            ssproto.check_ident("room", a[3]),
        )
        self.staged["device_id"], self.staged["tenant"], self.staged["building"], self.staged["room"] = vals
        self.out("Device configuration saved")
        self._hint()
        self.ok()

    async def cmd_provision_set_mqtt(self, a):
        _expect(a, 1, "usage: provision_set_mqtt <mqtt[s]://host[:port]>")
        self.staged["mqtt_uri"] = ssproto.check_mqtt_uri(a[0])
        self.out("MQTT broker saved: %s" % a[0])
        self._hint()
        self.ok()

    # The identity commands live in ss_identity, loaded only when used (heap: see ss_app).
    async def cmd_provision_identity_csr(self, a):
        import ss_identity

        await ss_identity.cmd_csr(self, a)

    async def cmd_provision_set_cert(self, a):
        import ss_identity

        await ss_identity.cmd_set_cert(self, a)

    async def cmd_provision_set_ca(self, a):
        import ss_identity

        await ss_identity.cmd_set_ca(self, a)

    # The BLE PIN (ss_bleauth, loaded when used).
    async def cmd_ble_set_pin(self, a):
        import ss_bleauth

        await ss_bleauth.cmd_set_pin(self, a)

    async def cmd_ble_status(self, a):
        import ss_bleauth

        await ss_bleauth.cmd_status(self, a)

    async def cmd_ble_done(self, a):
        import ss_bleauth

        await ss_bleauth.cmd_done(self, a)

    def _identity_for(self, cfg):
        """The identity provision_complete saves: the staged one (checked), else the stored
        one if it still names this device, else None."""
        if not self.ident and self.store.identity() is None:
            return None
        import ss_identity

        return ss_identity.identity_for(self, cfg)

    def _hint(self):
        self.out("(held in RAM until provision_complete writes it to NVS)")

    def merged(self):
        cfg = {}
        if self.store.provision_is_provisioned():
            cfg = self.store.provision_load_config()
        for k in self.staged:
            cfg[k] = self.staged[k]
        if "mqtt_uri" not in cfg:
            cfg["mqtt_uri"] = ssproto.DEFAULT_MQTT_URI
        return cfg

    async def cmd_provision_complete(self, a):
        if a not in ([], ["--offline"]):
            raise ssproto.ProtocolError(ssproto.E_USAGE, "usage: provision_complete [--offline]")
        offline = bool(a)
        cfg = self.merged()
        if "wifi_ssid" not in cfg:
            raise ssproto.ProtocolError(ssproto.E_INCOMPLETE, "WiFi not set: run provision_set_wifi first")
        if "device_id" not in cfg:
            raise ssproto.ProtocolError(ssproto.E_INCOMPLETE, "device not set: run provision_set_device first")
        ident = self._identity_for(cfg)
        if ssproto.parse_mqtt_uri(cfg["mqtt_uri"])[0] == "mqtts" and ident is None:
            raise ssproto.ProtocolError(
                ssproto.E_INCOMPLETE, "mqtts:// needs a device certificate: run provision_identity_csr, "
                "then provision_set_cert and provision_set_ca")
        if self.app is None:
            raise ssproto.ProtocolError(ssproto.E_STATE, "no network on this device")
        if offline:
            self.out("[PROVISION] Offline: saving without a connect test")
            await self.app.stop()  # nothing may go out through the old settings any more
        else:
            try:
                await self.app.connect_test(cfg, ident)
            except Exception as e:
                code = getattr(e, "code", None)
                if code not in ssproto.CONNECT_TEST_CODES:
                    raise
                self.out("[PROVISION] Connect test failed: nothing was saved; the previous settings stay")
                raise ssproto.ProtocolError(code, e.message)
        try:
            self.store.provision_save_config(cfg, ident)  # atomic, read back and compared
        except BaseException:
            self.app.resume()
            raise
        self.staged = {}
        self.ident = {}
        try:
            # Stored only; sent after the reboot, through the new settings.
            seq = self.app.alert("test", cfg)
            self.out("[ALERT] Test alert %d stored; it is sent after the reboot" % seq)
        except Exception as e:  # the configuration is saved: report, do not fail the command
            self.out("[ALERT] Test alert not stored: %s" % getattr(e, "message", e))
        self.out("Device Provisioning Complete!")
        self.out("Rebooting...")
        self.ok()
        await self._reset()

    async def cmd_alert_test(self, a):
        _expect(a, 0, "usage: alert_test")
        if self.app is None or not self.store.provision_is_provisioned():
            raise ssproto.ProtocolError(ssproto.E_STATE, "device is not provisioned")
        try:
            seq = self.app.alert("test")
        except Exception as e:
            raise ssproto.ProtocolError(ssproto.E_OUTBOX, getattr(e, "message", "alert not stored"))
        self.out("[ALERT] Test alert %d stored; sending" % seq)
        self.ok("seq %d" % seq)

    async def cmd_provision_discard(self, a):
        _expect(a, 0, "usage: provision_discard")
        self.staged = {}
        self.ident = {}
        self.out("Staged changes discarded")
        self.ok()

    async def cmd_provision_status(self, a):
        _expect(a, 0, "usage: provision_status")
        st = self.store
        prov = st.provision_is_provisioned()
        cfg = st.provision_load_config() if prov else {}
        wifi, mqtt = self._links()
        outbox = self.app.outbox if self.app is not None else None
        vals = {
            "provisioned": "yes" if prov else "no",
            "wifi_password": "not set" if not prov else ("set" if cfg["wifi_pass"] else "open network"),
            "pending": ",".join(sorted(self.staged)) or "none",
            "wifi_state": wifi.state if (prov and wifi) else "off",
            "ip_address": wifi.ip if (prov and wifi) else "",
            "mqtt_state": mqtt.state if (prov and mqtt) else "off",
            "alerts_pending": str(len(outbox.pending)) if outbox else "0",
            "next_alert_seq": str(outbox.next_seq) if outbox else "0",
            "free_heap": _free_heap(),
            "chip_id": self.chip_id,
            "boot_id": self.boot_id,
            "firmware": self.firmware,
        }
        for k in ("wifi_ssid", "device_id", "tenant", "building", "room", "mqtt_uri"):
            vals[k] = cfg.get(k, "")
        ident = st.identity() if prov else None
        vals["certificate"], vals["certificate_expires"], vals["certificate_sha256"] = "none", "", ""
        if ident is not None:
            import ss_identity

            vals["certificate"], vals["certificate_expires"], vals["certificate_sha256"] = ss_identity.describe(ident)
        if self.ident:
            vals["pending"] = ",".join(sorted(list(self.staged) + ["identity"]))
        for label, name in ssproto.STATUS_FIELDS:
            self.out(ssproto.status_line(label, vals[name]))
        self.ok()

    async def cmd_provision_verify(self, a):
        _expect(a, 1, "usage: provision_verify <nonce>")
        nonce = ssproto.check_nonce(a[0])
        if not self.store.provision_is_provisioned():
            raise ssproto.ProtocolError(ssproto.E_STATE, "device is not provisioned")
        cfg = self.store.provision_load_config()
        psk = ssproto.wpa_psk(hashlib.sha1, cfg["wifi_pass"], cfg["wifi_ssid"])
        check = ssproto.secret_check(hashlib.sha256, nonce, cfg["wifi_ssid"], psk)
        self.out(ssproto.CHECK_LABEL + ": " + check)
        self.ok()

    async def cmd_provision_reset(self, a):
        if a != ["--confirm"]:
            raise ssproto.ProtocolError(
                ssproto.E_CONFIRM, "this erases all credentials; type: provision_reset --confirm"
            )
        await self._factory_reset()

    async def cmd_provision(self, a):
        if a != ["clear"]:
            raise ssproto.ProtocolError(ssproto.E_USAGE, "usage: provision clear")
        await self._factory_reset()

    async def _factory_reset(self):
        self.store.provision_clear()  # verified erase (the device key and certificates too)
        if self.app is not None:
            self.app.outbox.clear()  # undelivered alerts name the old identity
            if getattr(self.app, "ble_state", None) is not None:
                self.app.ble_state.factory_reset()  # the PIN's verifier stays (it is on the label)
        self.staged = {}
        self.ident = {}
        self.out("Provisioning data erased")
        self.out("Rebooting into provisioning mode...")
        self.ok()
        await self._reset()

    async def cmd_reboot(self, a):
        _expect(a, 0, "usage: reboot")
        self.out("Rebooting...")
        self.ok()
        await self._reset()


def _free_heap():
    try:
        import gc

        gc.collect()
        return str(gc.mem_free())
    except (ImportError, AttributeError):  # CPython (unit tests)
        return ""


def _expect(args, n, usage):
    if len(args) != n:
        raise ssproto.ProtocolError(ssproto.E_USAGE, usage)


def _is_name(s):
    if len(s) > 32:  # the longest command has 22 characters; MicroPython's getattr refuses > 255
        return False
    for c in s:
        if not ("a" <= c <= "z" or c == "_"):
            return False
    return bool(s)
