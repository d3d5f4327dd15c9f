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
    s = _Socket(_real.socket(*args))
    _open.append(s)
    if len(_open) > 16:
        _open.pop(0)  # long closed by now: only the newest can still be open
    return s


def _numeric(host):
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def _sockaddr(addr):
    # The ESP32 port's sockets take ('host', port) (modsocket.c _socket_getaddrinfo looks the
    # host up); the unix port's take the binary sockaddr its own getaddrinfo makes.
    if isinstance(addr, tuple):
        ip, port = getaddrinfo(addr[0], addr[1])[0][-1]
        return _real.getaddrinfo(ip, port)[0][-1]
    return addr


import io as _io  # noqa: E402


class _Socket(_io.IOBase):
    # A wrapper, not a subclass: select.poll asks a subclass of a native type for its fd with
    # the instance instead of the native object (extmod/modselect.c poll_set_add_obj), and gets
    # a wrong one.  The stream protocol (readinto, write, ioctl) serves poll, asyncio and tls;
    # everything else is the real socket's.
    def __init__(self, s):
        self._s = s
        self._p = None

    def __getattr__(self, name):
        return getattr(self._s, name)

    def readinto(self, buf):
        return self._s.readinto(buf)

    def write(self, buf):
        return self._s.write(buf)

    def ioctl(self, req, arg):
        if req == 10:  # MP_STREAM_GET_FILENO (py/stream.h)
            return self._s.fileno()
        if req == 3:  # MP_STREAM_POLL (tls asks this way): the asked events that are ready now
            if self._p is None:
                import select

                self._p = select.poll()
                self._p.register(self._s, arg)
            else:
                self._p.modify(self._s, arg)
            r = self._p.poll(0)
            return r[0][1] if r else 0
        if req == 4:  # MP_STREAM_CLOSE
            self._s.close()
        return 0

    def connect(self, addr):
        return self._s.connect(_sockaddr(addr))

    def bind(self, addr):
        return self._s.bind(_sockaddr(addr))

    def sendto(self, data, addr):
        return self._s.sendto(data, _sockaddr(addr))


def getaddrinfo(host, port, *args):
    # Names come from the virtual site's name service (the air file's "hosts"), not from
    # this machine's resolver.  The answer has the ESP32 port's form (modsocket.c
    # esp_socket_getaddrinfo): one IPv4 entry (family, type, proto, canonname, ('a.b.c.d', port)),
    # type 0 answered as SOCK_STREAM, canonname the host as asked ("" means 0.0.0.0).
    _gate()
    host = host or "0.0.0.0"
    ip = host
    if not _numeric(host):
        import _hw

        ip = _hw.call("dns_lookup", host=host)
        if not ip:
            raise OSError(-202)  # lwIP EAI_FAIL, what the ESP32 port raises for a failed lookup
    socktype = (args[1] if len(args) > 1 else 0) or _real.SOCK_STREAM
    return [(_real.AF_INET, socktype, args[2] if len(args) > 2 else 0, host, (ip, int(port)))]
