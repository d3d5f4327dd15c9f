# Virtual-device stub of MicroPython's bluetooth module as the ESP32 port builds it (NimBLE,
# extmod/modbluetooth.c + extmod/nimble/modbluetooth_nimble.c, ports/esp32/mpconfigport.h:
# MICROPY_PY_BLUETOOTH_USE_SYNC_EVENTS_WITH_INTERLOCK, central mode, pairing/bonding built in).
# The radio is the supervisor's (safesignal/sim/ble.py, a bumble peripheral on a virtual air);
# the GATT value database lives here, in the firmware's heap, as NimBLE's gatts_db does.
#
# Events: on the ESP32 the NimBLE host task calls the IRQ handler itself, holding the GIL and
# with the scheduler locked (modbluetooth.c invoke_irq_handler, SYNC_EVENTS_WITH_INTERLOCK):
# the handler runs between two bytecodes of the main program (or while it blocks), no
# micropython.schedule callback runs during it, and a remote write or read is answered only
# after the handler returned (modbluetooth_nimble.c characteristic_access_cb).  The unix
# interpreter here has no GIL (sys.implementation._thread == 'unsafe'), so running the handler
# on another thread would race the firmware in ways the chip cannot.  A thread with its own
# hardware-channel connection plays the NimBLE task instead: it long-polls the supervisor for
# events, hands each to the main thread with micropython.schedule (which runs it between
# bytecodes, with the scheduler locked, as on the chip), waits until the handler has returned,
# and only then lets the supervisor answer the central.  The addr in a connect/disconnect tuple
# is a memoryview into a buffer that is wiped when the handler returns: on the chip it points
# at NimBLE's event memory, valid only during the call (docs/library/bluetooth.rst, BLE.irq).

import errno
import sys

import _hw

# modbluetooth.c mp_module_bluetooth_globals_table
FLAG_READ = 0x0002
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020
FLAG_WRITE_NO_RESPONSE = 0x0004

_DEFAULT_ATTR_LEN = 20  # extmod/modbluetooth.h MP_BLUETOOTH_DEFAULT_ATTR_LEN
_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_IRQ_GATTS_READ_REQUEST = 4
_IRQ_GATTS_INDICATE_DONE = 20
_IRQ_MTU_EXCHANGED = 21
# config keys the ESP32 build accepts for setting only (modbluetooth.c bluetooth_ble_config);
# 'rxbuf' is absent on a SYNC_EVENTS build: ValueError, as on the chip
_SET_ONLY = ("bond", "mitm", "io", "le_secure")


def _hex(b):
    return "".join("%02x" % x for x in b)


def _rev(b):
    return bytes(b[i] for i in range(len(b) - 1, -1, -1))


def _unhex(s):
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


class UUID:
    # modbluetooth.c bluetooth_uuid_make_new: a 16-bit int, a 2/4/16-byte buffer, or a
    # 128-bit string; stored little-endian.
    def __init__(self, value):
        if isinstance(value, UUID):
            self._b = value._b
            return
        if isinstance(value, int):
            if value < 0 or value > 65535:
                raise ValueError("invalid UUID")
            self._b = bytes((value & 0xFF, value >> 8))
            return
        if isinstance(value, str):
            h = value.replace("-", "")
            if len(h) != 32:
                raise ValueError("invalid UUID")
            for ch in h:
                if ch not in "0123456789abcdefABCDEF":
                    raise ValueError("invalid UUID")
            self._b = _rev(_unhex(h))
            return
        b = bytes(value)
        if len(b) not in (2, 4, 16):
            raise ValueError("invalid UUID")
        self._b = b

    def _spec(self):
        # the form the supervisor (bumble) takes: 4 hex digits or the dashed 128-bit string
        h = _hex(_rev(self._b))
        if len(h) == 32:
            return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])
        return h

    def __eq__(self, other):
        return isinstance(other, UUID) and other._b == self._b

    def __hash__(self):
        return hash(self._b)

    def __str__(self):
        if len(self._b) == 16:
            return self._spec()
        return "0x" + _hex(_rev(self._b))

    def __repr__(self):
        if len(self._b) == 16:
            return "UUID('%s')" % self._spec()
        return "UUID(0x%s)" % _hex(_rev(self._b))


class _Entry:
    # mp_bluetooth_gatts_db_entry_t: a buffer of `alloc` bytes, `n` of them valid
    def __init__(self, alloc):
        self.data = bytearray(alloc)
        self.n = 0
        self.append = False


_ble = None


class BLE:
    def __new__(cls):
        # modbluetooth.c bluetooth_ble_make_new: the singleton
        global _ble
        if _ble is None:
            _ble = object.__new__(cls)
            _ble._irq = None
            _ble._db = None  # None while inactive
            _ble._thread = False
        return _ble

    def __init__(self):
        pass

    def _check(self):
        if self._db is None:
            raise OSError(errno.ENODEV)  # ERRNO_BLUETOOTH_NOT_ACTIVE

    # --- configuration -----------------------------------------------------------------
    def active(self, *args):
        if args:
            on = bool(args[0])
            # mp_bluetooth_init starts with mp_bluetooth_deinit: True on an active radio restarts it
            self._db = None
            if _hw.call("ble_active", on=on):
                self._db = {}
                if not self._thread:
                    import _thread

                    self._thread = True
                    _thread.start_new_thread(_events, (self, _hw._connect()))
        return self._db is not None

    def config(self, *args, **kwargs):
        if not kwargs:
            if len(args) != 1:
                raise TypeError("must query one param")
            name = args[0]
            if name == "gap_name":
                return _unhex(_hw.call("ble_config", name="gap_name"))
            if name == "mac":
                self._check()
                at, addr = _hw.call("ble_config", name="mac")
                return (at, _unhex(addr))
            if name == "mtu":
                self._check()
                return _hw.call("ble_config", name="mtu")
            raise ValueError("unknown config param")
        if args:
            raise TypeError("can't specify pos and kw args")
        for name, value in kwargs.items():
            if name == "gap_name":
                if isinstance(value, str):
                    value = value.encode()
                _hw.call("ble_config", name="gap_name", value=_hex(bytes(value)))
            elif name == "mtu":
                _hw.call("ble_config", name="mtu", value=int(value))
            elif name == "addr_mode":
                self._check()
                if int(value) != 0:
                    # RANDOM / RPA / NRPA are not modelled; the chip has a public address
                    raise OSError(errno.EOPNOTSUPP)
            elif name in _SET_ONLY:
                pass  # pairing is not modelled: stored nowhere, as it changes nothing here
            else:
                raise ValueError("unknown config param")
        return None

    def irq(self, handler):
        if handler is not None and not callable(handler):
            raise ValueError("invalid handler")
        self._irq = handler
        return None

    # --- GAP -------------------------------------------------------------------------------
    def gap_advertise(self, interval_us=500000, adv_data=None, *, resp_data=None, connectable=True):
        if interval_us is None:
            _hw.call("ble_adv", interval_us=None)
            return None
        adv = None if adv_data is None else _hex(bytes(adv_data))
        resp = None if resp_data is None else _hex(bytes(resp_data))
        _hw.call("ble_adv", interval_us=int(interval_us), adv=adv, resp=resp, connectable=bool(connectable))
        return None

    def gap_disconnect(self, conn_handle):
        return _hw.call("ble_disconnect", conn=int(conn_handle))

    # --- GATT server -------------------------------------------------------------------------
    def gatts_register_services(self, services_definition):
        # modbluetooth.c bluetooth_gatts_register_service: the checks, in its order
        spec = []
        for service in services_definition:
            if len(service) != 2:
                raise ValueError("tuple/list has wrong length")
            uuid, chars = service
            if not isinstance(uuid, UUID):
                raise ValueError("invalid service UUID")
            cs = []
            for c in chars:
                if len(c) < 2 or len(c) > 3:
                    raise ValueError("invalid characteristic tuple")
                if not isinstance(c[0], UUID):
                    raise ValueError("invalid characteristic UUID")
                ds = []
                for d in (c[2] if len(c) == 3 else ()):
                    if len(d) != 2:
                        raise ValueError("tuple/list has wrong length")
                    if not isinstance(d[0], UUID):
                        raise ValueError("invalid descriptor UUID")
                    ds.append([d[0]._spec(), int(d[1])])
                cs.append([c[0]._spec(), int(c[1]), ds])
            spec.append([uuid._spec(), cs])
        handles = _hw.call("ble_register", services=spec)
        # gatts_register_cb: every characteristic and descriptor value gets a 20-byte buffer
        db = {}
        for hs in handles:
            for h in hs:
                db[h] = _Entry(_DEFAULT_ATTR_LEN)
        self._db = db
        return tuple(tuple(hs) for hs in handles)

    def _entry(self, value_handle):
        self._check()
        e = self._db.get(value_handle)
        if e is None:
            raise OSError(errno.EINVAL)
        return e

    def gatts_read(self, value_handle):
        # mp_bluetooth_gatts_db_read: in append mode reading empties the buffer
        e = self._entry(value_handle)
        v = bytes(e.data[:e.n])
        if e.append:
            e.n = 0
        return v

    def gatts_write(self, value_handle, data, send_update=False):
        # mp_bluetooth_gatts_db_write: a local write grows the buffer to fit
        e = self._entry(value_handle)
        data = bytes(data)
        if len(data) > len(e.data):
            e.data = bytearray(len(data))
        e.data[:len(data)] = data
        e.n = len(data)
        if send_update:
            _hw.call("ble_notify", conn=None, handle=value_handle, data=_hex(data))
        return len(data)

    def gatts_notify(self, conn_handle, value_handle, data=None):
        self._check()
        if data is None:
            data = self.gatts_read(value_handle) if value_handle in self._db else b""
        _hw.call("ble_notify", conn=int(conn_handle), handle=value_handle, data=_hex(bytes(data)))

    def gatts_indicate(self, conn_handle, value_handle, data=None):
        self._check()
        if data is None:
            data = self.gatts_read(value_handle) if value_handle in self._db else b""
        _hw.call("ble_notify", conn=int(conn_handle), handle=value_handle, data=_hex(bytes(data)), indicate=True)

    def gatts_set_buffer(self, value_handle, len, append=False):
        # mp_bluetooth_gatts_db_resize: a new buffer of len bytes, emptied
        e = self._entry(value_handle)
        e.data = bytearray(len)
        e.n = 0
        e.append = bool(append)


def _remote_write(ble, h, data):
    # characteristic_access_cb, BLE_GATT_ACCESS_OP_WRITE_CHR: what does not fit the buffer is
    # dropped without an error (data_len = MIN(data_alloc, len + offset))
    e = ble._db.get(h) if ble._db is not None else None
    if e is None:
        return False
    off = e.n if e.append else 0
    n = min(len(e.data), len(data) + off)
    e.data[off:n] = data[:n - off]
    e.n = n
    return True


def _call(ble, ev, args):
    # invoke_irq_handler_run_protected: an exception is printed and disables the handler
    handler = ble._irq
    if handler is None:
        return None
    try:
        return handler(ev, args)
    except Exception as e:
        print("Unhandled exception in IRQ callback handler")
        sys.print_exception(e)
        ble._irq = None
    return None


def _events(ble, sock):
    """The NimBLE host task: one event at a time from the supervisor; the handler runs in the
    main thread (scheduled) and the next request tells the supervisor it has returned."""
    import json
    import time

    import micropython

    addr = bytearray(6)
    box = [None, None, True]  # (event, args), the handler's result, finished

    def run(_):
        try:
            box[1] = _call(ble, box[0][0], box[0][1])
        finally:
            for i in range(6):
                addr[i] = 0  # NimBLE's event memory is reused once the handler returns
            box[2] = True

    def deliver(code, args):
        box[0] = (code, args)
        box[1] = None
        box[2] = False
        while True:
            try:
                micropython.schedule(run, None)
                break
            except RuntimeError:  # queue full: the NimBLE task waits for the GIL, it drops nothing
                time.sleep_ms(1)
        while not box[2]:
            time.sleep_ms(1)
        return box[1]

    mv = memoryview(addr)
    done = None
    result = None
    while True:
        req = {"op": "ble_event"}
        if done is not None:
            req["done"] = done
            req["result"] = result
        sock.write(json.dumps(req).encode() + b"\n")
        line = sock.readline()
        if not line:
            return  # the supervisor is gone or resetting us
        ev = json.loads(line).get("result")
        if not ev:
            done = None
            continue
        done = ev["id"]
        result = None
        code = ev["ev"]
        if code in (_IRQ_CENTRAL_CONNECT, _IRQ_CENTRAL_DISCONNECT):
            addr[:] = _unhex(ev["addr"])
            deliver(code, (ev["conn"], ev["at"], mv))
        elif code == _IRQ_GATTS_WRITE:
            if _remote_write(ble, ev["handle"], _unhex(ev["data"])):
                deliver(code, (ev["conn"], ev["handle"]))
        elif code == _IRQ_GATTS_READ_REQUEST:
            r = deliver(code, (ev["conn"], ev["handle"]))
            if isinstance(r, int) and r:
                result = {"err": r}
            else:
                e = ble._db.get(ev["handle"]) if ble._db is not None else None
                result = {"value": _hex(e.data[:e.n])} if e is not None else {"err": 1}
        elif code == _IRQ_MTU_EXCHANGED:
            deliver(code, (ev["conn"], ev["mtu"]))
        elif code == _IRQ_GATTS_INDICATE_DONE:
            deliver(code, (ev["conn"], ev["handle"], ev["status"]))
