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
