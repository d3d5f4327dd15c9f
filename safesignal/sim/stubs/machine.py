# Virtual-device stub of MicroPython's machine module (the parts the firmware uses).

import binascii

import _hw


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
        return 240000000
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
        if self._irq is None:
            return _hw.call("pin_value", pin=self._id)
        level, edges = _hw.call("pin_read", pin=self._id)
        if edges:
            # A falling-edge interrupt latched while the firmware was busy; delivered here, at
            # the next look at the pin (a soft IRQ runs between bytecodes, this is later).
            self._irq(self)
        return level

    def irq(self, handler=None, trigger=3, hard=False):  # 3: IRQ_FALLING | IRQ_RISING
        if trigger != Pin.IRQ_FALLING:
            raise ValueError("the virtual board models falling-edge interrupts only")
        self._irq = handler
        _hw.call("pin_read", pin=self._id)  # edges count from now

    def __call__(self, x=None):
        return self.value(x)


class RTC:
    # The virtual board's clock is the host's (already set); a datetime() the firmware sets is
    # recorded by the supervisor (state "rtc_set") rather than applied.
    def datetime(self, dt=None):
        if dt is None:
            import time

            tm = time.gmtime()
            return (tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0)
        _hw.call("rtc_set", datetime=list(dt))
        return None
