# Virtual-device stub of MicroPython's machine module (the parts the firmware uses), answering
# as the ESP32 port does (ports/esp32/modmachine.c, machine_pin.c, machine_rtc.c).

import binascii

import _hw

_IRQ_POLL_MS = 10  # how often the interrupt watcher asks the supervisor for new edges
_FREQS_MHZ = (20, 40, 80, 160, 240)  # ESP32-S3: modmachine.c mp_machine_set_freq
_freq = [160000000]  # stock ESP32_GENERIC_S3: CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ=160 (ESP-IDF default)


def reset():
    _hw.call("reset")  # the supervisor restarts the device process; this never returns
    while True:
        pass


def soft_reset():
    reset()


def unique_id():
    return binascii.unhexlify(_hw.call("unique_id"))


def freq(hz=None):
    if hz is None:
        return _freq[0]
    if hz // 1000000 not in _FREQS_MHZ:
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq[0] = hz // 1000000 * 1000000
    return None


def idle():
    pass


class Pin:
    # Mode and pull names as MicroPython's machine.Pin; the numbers are this stub's own.
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self._id = id
        self._irq = None
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        _hw.call("pin_init", pin=self._id, mode=mode, pull=pull)

    def value(self, x=None):
        if x is not None:
            raise OSError(95)  # EOPNOTSUPP: the virtual board drives no outputs
        return _hw.call("pin_value", pin=self._id)

    def irq(self, handler=None, trigger=3, wake=None):  # 3: IRQ_FALLING | IRQ_RISING
        # The ESP32 port's Pin.irq has no "hard" argument: its handlers are always soft.  The
        # GPIO ISR schedules the handler (machine_pin_isr_handler: mp_sched_schedule(handler,
        # pin)) and the VM runs it between bytecodes of whatever code runs then, or as soon as
        # the VM gets control back from a blocking call.  Here a watcher thread plays the GPIO
        # peripheral: it learns of each falling edge from the supervisor and schedules the
        # handler with micropython.schedule, which runs it in the main thread the same way.
        if trigger != Pin.IRQ_FALLING:
            raise ValueError("the virtual board models falling-edge interrupts only")
        if wake is not None:
            raise ValueError("the virtual board does not sleep")
        was = self._irq
        self._irq = handler
        _hw.call("pin_read", pin=self._id)  # edges count from now
        if handler is not None and was is None:
            import _thread

            _thread.start_new_thread(_watch_edges, (self, _hw._connect()))

    def __call__(self, x=None):
        return self.value(x)


def _watch_edges(pin, sock):
    """The interrupt watcher (its own thread and hw connection): one scheduled handler call per
    falling edge, until the handler is removed.  A full scheduler queue drops the call, as
    mp_sched_schedule does on the chip.  It allocates little per poll (the reply line, no JSON
    objects), so it does not churn the firmware's heap."""
    import time

    import micropython

    req = ('{"op": "pin_read", "pin": %d}\n' % pin._id).encode()
    while pin._irq is not None:
        sock.write(req)
        line = sock.readline()  # {"result": [LEVEL, EDGES]}
        if not line:
            return  # the supervisor is gone or resetting us
        edges = 0
        for c in line[line.rfind(b",") + 1:]:
            if 48 <= c <= 57:
                edges = edges * 10 + c - 48
        handler = pin._irq
        while edges and handler is not None:
            edges -= 1
            try:
                micropython.schedule(handler, pin)
            except RuntimeError:  # "schedule queue full"
                break
        time.sleep_ms(_IRQ_POLL_MS)


class RTC:
    # The virtual board's clock is the host's (already set); a datetime() the firmware sets is
    # recorded by the supervisor (state "rtc_set") rather than applied.  Checked as the port
    # checks it (machine_rtc.c machine_rtc_datetime_helper): 8 items, each an int
    # (mp_obj_get_int: a float is TypeError), so a float clock cannot slip through here.
    def datetime(self, dt=None):
        if dt is None:
            import time

            tm = time.gmtime()
            return (tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0)
        if len(dt) != 8:
            raise ValueError("requested length 8 but object has length %d" % len(dt))
        for x in dt:
            if isinstance(x, float):
                raise TypeError("can't convert float to int")
            if not isinstance(x, int):
                raise TypeError("can't convert %s to int" % type(x).__name__)
        _hw.call("rtc_set", datetime=list(dt))
        return None
