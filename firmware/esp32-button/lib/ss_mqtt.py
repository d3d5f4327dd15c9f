# A small MQTT 3.1.1 client over asyncio streams.
#
# Why not umqtt: umqtt.simple/robust are blocking; while they wait for a broker the console
# and the button would freeze.  asyncio streams behave the same on MicroPython and CPython.
# Packet formats: OASIS MQTT Version 3.1.1, sections 2 (fixed header) and 3 (control packets).

import asyncio
import struct

import ssproto
from ss_compat import backoff_ms, const, rand16, sleep_ms, wait_for_ms

CONNECT = const(0x10)
CONNACK = const(0x20)
PUBLISH = const(0x30)
PUBACK = const(0x40)
SUBACK = const(0x90)
PINGREQ = const(0xC0)
PINGRESP = const(0xD0)
DISCONNECT = const(0xE0)

KEEPALIVE_S = const(60)
CONNECT_TIMEOUT_MS = const(10000)

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


def encode_length(n):
    if n < 0 or n > 268435455:  # 4 bytes of 7 bits: MQTT 3.1.1 section 2.2.3
        raise ValueError("remaining length out of range")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _str(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def encode_connect(client_id, keepalive=KEEPALIVE_S, clean=True):
    var = _str("MQTT") + bytes([4, 0x02 if clean else 0x00]) + struct.pack("!H", keepalive)
    body = var + _str(client_id)
    return bytes([CONNECT]) + encode_length(len(body)) + body


def encode_pingreq():
    return bytes([PINGREQ, 0])


async def read_packet(reader):
    """Read one packet; returns (first byte, body bytes).  Raises EOFError (CPython:
    IncompleteReadError) when the connection ends, OSError on a malformed length."""
    h = await reader.readexactly(1)
    n = 0
    shift = 0
    while True:
        b = (await reader.readexactly(1))[0]
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 21:
            raise OSError("bad remaining length")
    body = await reader.readexactly(n) if n else b""
    return h[0], body


DNS_RETRY_MIN_MS = const(30000)


def _is_ipv4(host):
    parts = host.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p or len(p) > 3 or not ("0" <= p[0] <= "9") or not p.isdigit() or int(p) > 255:
            return False
    return True


class Mqtt:
    def __init__(self, client_id, uri):
        self.client_id = client_id
        self.uri = uri
        self.state = "idle"
        self.attempts = 0
        self._addr = None  # resolved broker address, kept until connecting to it fails

    def _resolve(self, host, port):
        # getaddrinfo blocks the whole event loop (on the ESP32 an mDNS query for a .local
        # name waits up to 5 s): resolve once and keep the answer while connections to it
        # succeed (a dropped session reconnects without a lookup); forget it when connecting
        # fails; after a failed lookup wait at least DNS_RETRY_MIN_MS before the next one.
        if self._addr is None:
            if _is_ipv4(host):
                self._addr = host
            else:
                import socket

                try:
                    ai = socket.getaddrinfo(host, port)
                except OSError:
                    raise _DnsError("cannot resolve broker host name")
                if not ai:
                    raise _DnsError("cannot resolve broker host name")
                self._addr = ai[0][-1][0] if isinstance(ai[0][-1], tuple) else host
        return self._addr

    async def _session(self, host, port):
        print("[MQTT] Connecting to broker...")
        self.state = "connecting"
        addr = self._resolve(host, port)
        reader, writer = await wait_for_ms(asyncio.open_connection(addr, port), CONNECT_TIMEOUT_MS)
        try:
            writer.write(encode_connect(self.client_id))
            await writer.drain()
            kind, body = await wait_for_ms(read_packet(reader), CONNECT_TIMEOUT_MS)
            if kind & 0xF0 != CONNACK or len(body) < 2:
                raise OSError("broker did not answer CONNACK")
            rc = body[1]
            if rc != 0:
                self.state = "refused"
                raise OSError("broker refused: %s" % CONNACK_REASONS.get(rc, "code %d" % rc))
            self.state = "connected"
            self.attempts = 0
            print("[MQTT] Connected to broker")
            await self._serve(reader, writer)
        finally:
            try:
                writer.close()
                await writer.wait_closed()
            except Exception:
                pass

    async def _serve(self, reader, writer):
        # Keep the connection alive: PINGREQ every keepalive/2, any packet counts as life.
        ping_ms = KEEPALIVE_S * 500
        while True:
            try:
                kind, _ = await wait_for_ms(read_packet(reader), ping_ms)
            except asyncio.TimeoutError:
                writer.write(encode_pingreq())
                await writer.drain()
                kind, _ = await wait_for_ms(read_packet(reader), ping_ms)
            if kind & 0xF0 == DISCONNECT:
                raise OSError("broker closed the session")

    async def run(self, wifi):
        try:
            scheme, host, port = ssproto.parse_mqtt_uri(self.uri)
        except ssproto.ProtocolError as e:
            self.state = "bad_uri"
            print("[MQTT] Broker URI unusable: %s" % e.message)
            return
        while True:
            await wifi.connected.wait()
            dns_failed = False
            try:
                await self._session(host, port)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # OSError, EOFError, TimeoutError: all mean "try again"
                dns_failed = isinstance(e, _DnsError)
                if self.state != "connected":
                    self._addr = None  # could not connect: look the name up again (it may have moved)
                if self.state == "connected":
                    print("[MQTT] Connection lost: %s" % _describe(e))
                    self.state = "disconnected"
                elif self.state != "refused":
                    print("[MQTT] Connection failed: %s" % _describe(e))
                    self.state = "disconnected"
                else:
                    print("[MQTT] Connection refused: %s" % _describe(e))
            delay = backoff_ms(self.attempts, rand16())
            if dns_failed and delay < DNS_RETRY_MIN_MS:
                delay = DNS_RETRY_MIN_MS  # each lookup may freeze the console: not too often
            self.attempts += 1
            print("[MQTT] Retrying in %d ms" % delay)
            await sleep_ms(delay)


class _DnsError(OSError):
    pass


def _describe(e):
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    s = str(e)
    return s if s else e.__class__.__name__
