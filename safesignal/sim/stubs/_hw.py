# Virtual-device stub transport (MicroPython side).  Holds no hardware logic: every call is
# forwarded over a loopback socket to the CPython supervisor (safesignal/sim/supervisor.py),
# one JSON object per line each way.  The first line of a connection is the per-boot token
# the supervisor put in our environment; without it the supervisor hangs up.

import json
import os
import socket

_sock = None


def _connect():
    port = os.getenv("SAFESIGNAL_HW_PORT")
    token = os.getenv("SAFESIGNAL_HW_TOKEN")
    if not port or not token:
        raise OSError(19)  # ENODEV: not started by the virtual device's supervisor
    real = socket._real  # our socket stub gates sockets by the virtual WiFi; this one is the board's wiring
    s = real.socket()
    s.connect(real.getaddrinfo("127.0.0.1", int(port))[0][-1])
    s.write(token.encode() + b"\n")
    return s


def _lost():
    # The supervisor hung up: it is resetting us (SIGKILL follows at once), refused us, or is
    # gone.  A board whose supply is gone runs nothing: once the console's other end is gone
    # too (our stdin pipe hangs up when the supervisor's process ends), power off.  Until
    # then wait to be killed, asleep: a chip in reset does not spin.
    import select
    import sys
    import time

    p = select.poll()
    p.register(sys.stdin, select.POLLIN)
    while True:
        time.sleep(0.2)
        for _, ev in p.poll(0):
            if ev & (select.POLLHUP | select.POLLERR):
                sys.exit(0)  # SystemExit: the firmware catches only Exception


def exchange(request):
    """Send one request line (bytes, ending in a newline) in one write and return the reply
    line, undecoded.  One write: a request split over several would meet Nagle's algorithm and
    the peer's delayed ACK on the loopback connection, 40 ms a call."""
    global _sock
    if _sock is None:
        _sock = _connect()
    _sock.write(request)
    line = _sock.readline()
    if not line:
        _lost()
    return line


def result(line):
    """The ``result`` of a reply line; OSError for an ``errno`` reply."""
    reply = json.loads(line)
    if "errno" in reply:
        raise OSError(reply["errno"])
    return reply.get("result")


def call(op, **args):
    args["op"] = op
    return result(exchange(json.dumps(args).encode() + b"\n"))


# The chip's bluetooth module is C in flash: importing it costs the heap nothing, at any time.
# Its stub is Python: imported lazily (ss_ble, when the BLE window opens mid-run) it is compiled
# from source then and needs ~55 kB free for a moment, 16 kB once loaded (which -X heapsize
# accounts for: safesignal/sim/launch.py STUB_MODULES).  So it is loaded here, with the first
# stub the firmware imports, at power-up (bluetooth imports _hw, which is complete by now).
import bluetooth  # noqa: E402, F401
