# Virtual-device stub over MicroPython's socket module: the real sockets, gated by the
# virtual WiFi.  A socket can be made only while the station has an IP address (as on the
# chip, where lwIP has no route without it), and the sockets made through here are closed
# when the station loses its link, so a connection never outlives the WiFi it ran over.
# The stub's own hardware channel (_hw) uses the real module, which stays reachable as _real.

import sys

_path = sys.path[:]
_me = sys.modules.pop("socket", None)
sys.path.clear()
try:
    import socket as _real  # with an empty path only the built-in module can answer
finally:
    sys.path.extend(_path)
    if _me is not None:
        sys.modules["socket"] = _me

for _name in dir(_real):
    if not _name.startswith("__"):
        globals()[_name] = getattr(_real, _name)

EHOSTUNREACH = 113
_open = []
_up = False


def _gate():
    import _hw

    link(_hw.call("net_up"))
    if not _up:
        raise OSError(EHOSTUNREACH)


def link(up):
    """Told by the network stub whenever it learns the station's state."""
    global _up
    _up = bool(up)
    if not _up:
        while _open:
            s = _open.pop()
            try:
                s.close()
            except OSError:
                pass


def socket(*args):
    _gate()
    s = _real.socket(*args)
    _open.append(s)
    if len(_open) > 16:
        _open.pop(0)  # long closed by now: only the newest can still be open
    return s


def _numeric(host):
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def getaddrinfo(host, port, *args):
    # Names come from the virtual site's name service (the air file's "hosts"), not from
    # this machine's resolver.
    _gate()
    if not _numeric(host):
        import _hw

        addr = _hw.call("dns_lookup", host=host)
        if not addr:
            raise OSError(-202)  # lwIP EAI_FAIL, what the ESP32 port raises for a failed lookup
        host = addr
    return _real.getaddrinfo(host, port, *args)
