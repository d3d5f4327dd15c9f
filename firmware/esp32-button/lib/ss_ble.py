# Provisioning over Bluetooth LE: a GATT service, the PIN (SPAKE2+) and an encrypted channel
# that carries the very console the serial port has (ss_console.Console), so staging, the
# connect test, the atomic save, the test alert and the read-back are the same code.
#
# Protocol, framing and lockout policy: ssproto/ble.py; PROVISIONING.md "Provisioning over
# BLE".  The radio is on only in a window (ssproto.ble.WINDOW_S) after power-on of a device
# that is not provisioned, after a provisioning over BLE (for the host's read-back), or after a
# long press at power-on; it takes one connection at a time.
#
# MicroPython's bluetooth module (ESP32 port: NimBLE).  IRQ handlers run from the scheduler;
# this one only copies what it gets (its buffers are valid during the call only) and leaves
# the work to the run() task.

import ssproto.ble as P
from ss_compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_ADV_US = const(100000)  # advertising interval: 100 ms
_READV_MS = const(10000)  # advertising data (the window time left) is refreshed this often
_MTU = const(247)  # the largest ATT MTU this device offers


def _since(t):
    return ticks_diff(ticks_ms(), t)


def _after(ms):
    """The ticks ``ms`` from now (ticks_ms wraps at 2^30 on the chip: never add to it directly)."""
    return ticks_add(ticks_ms(), ms)


class Session:
    """One connection: the PIN exchange, then the console over the encrypted channel."""

    def __init__(self, conn):
        self.conn = conn
        self.stage = "hello"
        self.deframer = P.Deframer()
        self.pake = None  # ssproto.spake2p verifier state between SHARE_P and CONFIRM_P
        self.chan = None
        self.console = None
        self.line = bytearray()
        self.counted = 0  # the attempt number counted for this session's SHARE_P (0: none)
        self.last = ticks_ms()


class Ble:
    def __init__(self, state, make_console):
        self.st = state  # ss_bleauth.BleState
        self._make_console = make_console  # () -> a Console for one session
        self.name = ""  # P.name_for(the radio's address), once it is on
        self._addr = b""
        self._ble = None
        self._rx = self._tx = None
        self._events = []  # (event, data) copied by the IRQ handler
        self._rxq = bytearray()  # bytes written to RX, in order
        self._s = None  # the Session, if connected
        self._mtu = 23
        self._window_end = None  # ticks_ms when the window closes; None: closed
        self._adv_at = 0
        self._locked_until = None  # ticks_ms before which no PIN attempt is taken
        self._finish = False
        self._prepared = False  # spake2p.prepare() made the key (at a HELLO)
        w = P.lock_wait_s(state.fails())
        if w:  # a reboot does not clear the wait: it starts again at boot
            self._locked_until = _after(w * 1000)

    # --- state for ble_status and scans ------------------------------------------------------
    def window_left(self):
        if self._window_end is None:
            return 0
        left = ticks_diff(self._window_end, ticks_ms())
        return left // 1000 if left > 0 else 0

    def wait_left(self):
        if self._locked_until is None:
            return 0
        left = ticks_diff(self._locked_until, ticks_ms())
        return (left + 999) // 1000 if left > 0 else 0

    def state(self):
        if self._s is not None:
            return "connected"
        return "advertising" if self._window_end is not None else "off"

    # --- radio -----------------------------------------------------------------------------
    def open_window(self, provisioned):
        """Turn the radio on and advertise for WINDOW_S seconds."""
        import bluetooth

        if self._ble is None:
            self._ble = bluetooth.BLE()
        ble = self._ble
        ble.active(True)
        self._addr = bytes(ble.config("mac")[1])
        self.name = P.name_for(self._addr)
        ble.config(gap_name=self.name, mtu=_MTU)
        svc = (bluetooth.UUID(P.SERVICE_UUID),
               ((bluetooth.UUID(P.TX_UUID), _FLAG_NOTIFY), (bluetooth.UUID(P.RX_UUID), _FLAG_WRITE)))
        ((self._tx, self._rx),) = ble.gatts_register_services((svc,))
        ble.gatts_set_buffer(self._rx, P.RX_BUF, True)  # the default 20 bytes would cut every write
        ble.irq(self._irq)
        self._provisioned = provisioned
        self._window_end = _after(P.WINDOW_S * 1000)
        self._advertise()
        print("[BLE] Advertising as %s for %d s (PIN required)" % (self.name, P.WINDOW_S))

    def _advertise(self):
        flags = (P.ADV_PROVISIONED if self._provisioned else 0) | (P.ADV_LOCKED if self.wait_left() else 0)
        self._ble.gap_advertise(_ADV_US, adv_data=P.adv_data(self.name, flags, self.window_left()),
                                resp_data=b"", connectable=True)
        self._adv_at = ticks_ms()

    def off(self):
        self._window_end = None
        if self._prepared:  # the cached VerifierKey (~1.9 kB) goes with the radio
            from ssproto import spake2p

            spake2p.forget()
            self._prepared = False
        if self._ble is not None:
            try:
                self._ble.gap_advertise(None)
            except OSError:
                pass
            self._ble.active(False)
        self._s = None

    def finish(self):
        """After ble_done: off once the reply has gone out."""
        self._finish = True

    def _irq(self, event, data):
        if event == _IRQ_GATTS_WRITE:
            if data[1] == self._rx:
                self._rxq.extend(self._ble.gatts_read(self._rx))
        elif event == _IRQ_CENTRAL_CONNECT:
            self._events.append((event, (data[0], data[1], bytes(data[2]))))
        else:
            self._events.append((event, tuple(data)))

    # --- the task -----------------------------------------------------------------------------
    async def run(self):
        while True:
            await sleep_ms(20)
            if self._events:
                ev, self._events = self._events, []
                for e in ev:
                    self._event(e[0], e[1])
            s = self._s
            if s is not None and self._rxq:
                q, self._rxq = self._rxq, bytearray()  # swap first: the IRQ may append meanwhile
                data = bytes(q)
                s.last = ticks_ms()
                try:
                    msgs = s.deframer.feed(data)
                except P.BleError:
                    self._fail(s, P.ERR_PROTOCOL, "bad frame")
                    continue
                for mtype, payload in msgs:
                    if self._s is not s:
                        break
                    try:
                        await self._message(s, mtype, payload)
                    except MemoryError:
                        # The task must outlive one message that did not fit (a fragmented
                        # heap): free what it left and end this session, not Bluetooth.
                        import gc

                        gc.collect()
                        self._fail(s, P.ERR_PROTOCOL, "out of memory on the device; try again")
            if self._finish:
                await sleep_ms(300)  # let the last notification leave
                self._finish = False
                print("[BLE] Off until a long press at power-on")
                self.off()
                continue
            if self._window_end is None:
                continue
            if s is None:
                if self.window_left() <= 0:
                    print("[BLE] Window closed: Bluetooth off")
                    self.off()
                elif _since(self._adv_at) >= _READV_MS:
                    self._advertise()
            elif _since(s.last) > P.IDLE_S * 1000:
                print("[BLE] Connection idle for %d s: disconnecting" % P.IDLE_S)
                self._disconnect(s)

    def _event(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            conn = data[0]
            if self._s is not None:  # one connection at a time
                self._ble.gap_disconnect(conn)
                return
            self._s = Session(conn)
            self._mtu = 23
            self._rxq = bytearray()
            print("[BLE] Connected: %s" % ":".join(["%02x" % b for b in data[2]]))
        elif event == _IRQ_CENTRAL_DISCONNECT:
            s = self._s
            if s is None or s.conn != data[0]:
                return
            self._end(s)
            print("[BLE] Disconnected")
            if self._window_end is not None and self.window_left() > 0:
                self._advertise()
        elif event == _IRQ_MTU_EXCHANGED:
            if self._s is not None and self._s.conn == data[0]:
                self._mtu = data[1]

    def _end(self, s):
        if s.stage == "confirm" and s.counted:
            fails = s.counted
            w = P.lock_wait_s(fails)
            print("[BLE] PIN not confirmed: %d attempts left, %s" % (
                P.attempts_left(fails), "locked" if w is None else "next attempt in %d s" % w))
        # The session's console goes with it: nothing it staged survives (RAM only).
        self._s = None

    def _send(self, s, mtype, payload=b""):
        f = P.frame(mtype, payload)
        for c in P.chunks(f, self._mtu):
            self._ble.gatts_notify(s.conn, self._tx, c)

    def _disconnect(self, s):
        try:
            self._ble.gap_disconnect(s.conn)
        except OSError:
            pass
        self._end(s)

    def _fail(self, s, code, text, wait_s=0, left=0):
        self._send(s, P.M_ERROR, P.error_payload(code, wait_s, left, text))
        print("[BLE] Session refused: %s" % text)
        self._disconnect(s)

    # --- messages -----------------------------------------------------------------------------
    async def _message(self, s, mtype, p):
        if mtype == P.M_DATA and s.stage == "open":
            await self._data(s, p)
        elif mtype == P.M_HELLO and s.stage == "hello":
            v = self.st.verifier()
            if v is None:
                self._fail(s, P.ERR_NO_PIN, "no PIN set on this device (factory step: safesignal pin)")
                return
            s.stage = "share"
            self._send(s, P.M_PARAMS, P.params_payload(v[2], v[3], self.st.fails(), self.wait_left(), self._addr,
                                                       self.name))
            self._prepare(v)
        elif mtype == P.M_SHARE_P and s.stage == "share":
            self._share(s, p)
        elif mtype == P.M_CONFIRM_P and s.stage == "confirm":
            self._confirm(s, p)
        else:
            self._fail(s, P.ERR_PROTOCOL, "unexpected message")

    def _prepare(self, v):
        # The PIN exchange's fixed part, now that the parameters are out: the VerifierKey of the
        # record (spake2p.prepare: w0*M, w0*N, the comb table for L, about one respond's work)
        # and the channel's module.  The host derives w0, w1 (PBKDF2, 0.2-1.3 s) before its
        # share arrives, so this overlaps it instead of delaying the first attempt's answer.
        if P.lock_wait_s(self.st.fails()) is None:
            return  # hard-locked: no attempt will be taken
        import ssproto.channel  # noqa: F401  (used at CONFIRM_P)
        from ssproto import spake2p

        spake2p.prepare(v[0], v[1])
        self._prepared = True
        print("[BLE] PIN key ready")

    def _share(self, s, share_p):
        from ssproto import spake2p

        fails = self.st.fails()
        w = P.lock_wait_s(fails)
        if w is None:
            self._fail(s, P.ERR_HARD_LOCKED, "locked after %d wrong PINs: hold the button at power-on" % fails)
            return
        if self.wait_left():
            self._fail(s, P.ERR_LOCKED, "too many wrong PINs: wait", self.wait_left(), P.attempts_left(fails))
            return
        w0, L, salt, iterations = self.st.verifier()
        pake = spake2p.Verifier(w0, L, spake2p.context(self.name, self._addr, salt, iterations))
        try:
            response = pake.respond(share_p)  # shareV || confirmV
        except ValueError:
            self._fail(s, P.ERR_PROTOCOL, "invalid share")
            return
        # Counted (committed, read back) before the answer leaves: pulling the power after
        # seeing the answer cannot undo the attempt.
        n = self.st.count_attempt()
        s.counted = n
        w = P.lock_wait_s(n)
        self._locked_until = _after(w * 1000) if w else None
        s.pake = pake
        s.stage = "confirm"
        self._send(s, P.M_SHARE_V, response)
        print("[BLE] PIN attempt counted (%d of %d)" % (n, P.HARD_LOCK))

    def _confirm(self, s, confirm_p):
        from ssproto.channel import Channel

        try:
            key = s.pake.finish(confirm_p)
        except ValueError:
            key = None
        s.pake = None
        if key is None:
            n = s.counted
            w = P.lock_wait_s(n)
            s.counted = 0
            print("[BLE] Wrong PIN: %d attempts left" % P.attempts_left(n))
            self._fail(s, P.ERR_WRONG_PIN, "wrong PIN", w or 0, P.attempts_left(n))
            return
        self.st.clear_fails()
        self._locked_until = None
        s.counted = 0
        s.chan = Channel(key, True)
        con = self._make_console()
        con.remote = True
        con.out = lambda text: self._emit(s, text)
        s.console = con
        s.stage = "open"
        self._send(s, P.M_READY)
        print("[BLE] PIN confirmed: session encrypted")

    def _emit(self, s, text):
        if self._s is s:
            self._send(s, P.M_DATA, s.chan.seal((text + "\r\n").encode()))

    async def _data(self, s, sealed):
        try:
            data = s.chan.open(sealed)
        except ValueError:
            self._fail(s, P.ERR_PROTOCOL, "message failed authentication")
            return
        for c in data:
            if c == 0x0D or c == 0x0A:
                if s.line:
                    raw, s.line = bytes(s.line), bytearray()
                    await s.console.handle_line(raw)
                    if self._s is not s:
                        return
            elif len(s.line) >= 1100:
                s.line = bytearray()
                s.console.err("TOOLONG", "line too long")
            else:
                s.line.append(c)
