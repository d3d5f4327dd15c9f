# ss_mqtt packet encoding/decoding and ss_compat.backoff_ms under MicroPython.
import asyncio

from mpyunit import eq, raises, run, test

import ss_mqtt
from ss_compat import backoff_ms

# MQTT 3.1.1 section 2.2.3, Table 2.4: the bounds of each remaining-length size.
LENGTHS = [
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16383, b"\xff\x7f"),
    (16384, b"\x80\x80\x01"),
    (2097151, b"\xff\xff\x7f"),
    (2097152, b"\x80\x80\x80\x01"),
    (268435455, b"\xff\xff\xff\x7f"),
    (321, b"\xc1\x02"),  # the spec's worked example
]


@test
def test_encode_length():
    for n, want in LENGTHS:
        eq(ss_mqtt.encode_length(n), want, str(n))


def connect_bytes(cid, keepalive=60, flags=0x02):
    # Section 3.1: fixed header 0x10 + remaining length; variable header = protocol name
    # (00 04 'MQTT'), level 4, connect flags, keep alive (2 bytes); payload = client id.
    var = b"\x00\x04MQTT" + bytes([4, flags, keepalive >> 8, keepalive & 0xFF])
    payload = bytes([len(cid) >> 8, len(cid) & 0xFF]) + cid
    body = var + payload
    return bytes([0x10]) + ss_mqtt.encode_length(len(body)) + body


@test
def test_encode_connect():
    eq(ss_mqtt.encode_connect("btn-01"),
       b"\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06btn-01")
    eq(ss_mqtt.encode_connect("btn-01", keepalive=300, clean=False), connect_bytes(b"btn-01", 300, 0))
    long_id = "d" * 200
    eq(ss_mqtt.encode_connect(long_id), connect_bytes(long_id.encode()))
    eq(ss_mqtt.encode_connect(long_id)[1:3], b"\xd4\x01")


class Feed:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    async def readexactly(self, n):
        if self.pos + n > len(self.data):
            raise EOFError
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b


def packets(data):
    async def go():
        f = Feed(data)
        out = []
        while f.pos < len(data):
            out.append(await ss_mqtt.read_packet(f))
        return out
    return asyncio.run(go())


@test
def test_read_packet():
    eq(packets(b"\x20\x02\x00\x00\xd0\x00"), [(0x20, b"\x00\x00"), (0xD0, b"")])
    body = bytes(range(200))
    eq(packets(b"\x30\xc8\x01" + body), [(0x30, body)])
    raises(OSError, packets, b"\x30\xff\xff\xff\xff\x7f")
    raises(EOFError, packets, b"\x20\x02\x00")


@test
def test_backoff_bounds_defaults():
    for attempt in range(40):
        base = min(1000 << attempt, 60000)
        for rnd in (0, 1, 2, 499, 500, 501, 1000, 29999, 30000, 65535):
            d = backoff_ms(attempt, rnd)
            assert base // 2 <= d <= base, (attempt, rnd, d)
        eq(backoff_ms(attempt, 0), base // 2)
        eq(backoff_ms(attempt, base // 2), base)


run()
