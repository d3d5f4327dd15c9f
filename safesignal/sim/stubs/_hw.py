# Virtual-device stub transport (MicroPython side).  Holds no hardware logic: every call is
# forwarded over a loopback socket to the CPython supervisor (safesignal/sim/supervisor.py),
# one JSON object per line each way.

import json
import os
import socket

_sock = None


def call(op, **args):
    global _sock
    if _sock is None:
        port = int(os.getenv("SAFESIGNAL_HW_PORT"))
        s = socket.socket()
        s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        _sock = s
    args["op"] = op
    _sock.write(json.dumps(args).encode() + b"\n")
    line = _sock.readline()
    if not line:
        # The supervisor is gone or is resetting us: wait to be killed, like a chip in reset.
        while True:
            _sock.readline()
    reply = json.loads(line)
    if "errno" in reply:
        raise OSError(reply["errno"])
    return reply.get("result")
