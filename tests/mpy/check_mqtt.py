# ss_mqtt packet encoding/decoding and ss_compat.backoff_ms.
# Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython and under CPython.
import asyncio

from mpyunit import eq, run, test

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
    eq(ss_mqtt.encode_connect("c", keepalive=300, clean=False), b"\x10\x0d\x00\x04MQTT\x04\x00\x01\x2c\x00\x01c")
    eq(ss_mqtt.encode_connect("btn-01", keepalive=300, clean=False), connect_bytes(b"btn-01", 300, 0))
    long_id = "d" * 200
    pkt = ss_mqtt.encode_connect(long_id)
    eq(pkt, connect_bytes(long_id.encode()))
    eq(pkt[:3], b"\x10\xd4\x01", "remaining length 212")
    eq(pkt[3:15], b"\x00\x04MQTT\x04\x02\x00\x3c\x00\xc8")
    eq(ss_mqtt.encode_connect("\u00e9")[-4:], b"\x00\x02\xc3\xa9", "client id as UTF-8")
    eq(ss_mqtt.encode_pingreq(), b"\xc0\x00")


@test
def test_encode_connect_with_will():
    # Section 3.1.2.5-3.1.2.7: will flag 0x04, will QoS in bits 3-4, will retain 0x20; the
    # payload is client id, will topic, will message, each with a 2-byte length.
    pkt = ss_mqtt.encode_connect("c", will=("t/s", b"off", 1, True))
    body = b"\x00\x04MQTT\x04" + bytes([0x02 | 0x04 | 0x08 | 0x20]) + b"\x00\x3c"
    body += b"\x00\x01c" + b"\x00\x03t/s" + b"\x00\x03off"
    eq(pkt, b"\x10" + ss_mqtt.encode_length(len(body)) + body)


@test
def test_encode_publish():
    # Section 3.3: QoS 1 in bits 1-2, retain bit 0, DUP bit 3; packet id only when QoS > 0.
    eq(ss_mqtt.encode_publish("a/b", b"hi", 0, 0), b"\x30\x07\x00\x03a/bhi")
    eq(ss_mqtt.encode_publish("a/b", b"hi", 0x1234, 1), b"\x32\x09\x00\x03a/b\x12\x34hi")
    eq(ss_mqtt.encode_publish("a/b", b"", 1, 1, True, True)[0], 0x3B)
    eq(ss_mqtt.encode_disconnect(), b"\xe0\x00")


class Feed:
    # The part of an asyncio stream that read_packet uses; a short read raises EOFError, as
    # MicroPython's does (CPython's IncompleteReadError is a subclass of EOFError).
    def __init__(self, data):
        self.data = data
        self.pos = 0

    async def readexactly(self, n):
        if self.pos + n > len(self.data):
            self.pos = len(self.data)
            raise EOFError
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b


def packets(data):
    """Every packet read_packet returns from data, then the exception that ended the reading."""
    async def go():
        f = Feed(data)
        out = []
        while True:
            try:
                out.append(await ss_mqtt.read_packet(f))
            except (EOFError, OSError) as e:
                out.append(e)
                return out
    return asyncio.run(go())


@test
def test_read_packet_sequence():
    body = bytes(range(200))
    got = packets(b"\x20\x02\x00\x00" + b"\xd0\x00" + b"\x30\xc8\x01" + body)
    eq(got[:3], [(0x20, b"\x00\x00"), (0xD0, b""), (0x30, body)])
    eq(len(got), 4)
    assert isinstance(got[3], EOFError), "no clean EOF at a packet boundary: %r" % got[3]


@test
def test_read_packet_round_trip_connect():
    pkt = ss_mqtt.encode_connect("btn-01")
    eq(packets(pkt)[0], (0x10, pkt[2:]))


@test
def test_read_packet_bad_length():
    got = packets(b"\x30\xff\xff\xff\xff\x7f")
    eq(len(got), 1)
    assert isinstance(got[0], OSError), got


@test
def test_read_packet_truncated():
    for data in (b"\x20", b"\x20\x02\x00", b"\x30\x80"):
        got = packets(data)
        eq(len(got), 1, repr(data))
        assert isinstance(got[0], EOFError), (data, got)


@test
def test_backoff_bounds_defaults():
    for attempt in list(range(40)) + [100, 200]:
        base = min(1000 << attempt, 60000)
        for rnd in (0, 1, 2, 499, 500, 501, 1000, 29999, 30000, 65535):
            d = backoff_ms(attempt, rnd)
            assert base // 2 <= d <= base, (attempt, rnd, d)
        eq(backoff_ms(attempt, 0), base // 2)
        eq(backoff_ms(attempt, base // 2), base)
    eq(backoff_ms(0, 0), 500)


@test
def test_backoff_bounds_other_limits():
    # Exponential from lo, capped at hi, then 50%..100% jitter (the property test in
    # tests/test_firmware_units.py tries many more limits on CPython).
    for lo, hi in ((2, 2), (2, 5), (100, 100000), (3000, 10**7)):
        for attempt in (0, 1, 5, 40):
            base = min(lo << attempt, hi)
            for rnd in (0, 1, base // 2, 65535):
                d = backoff_ms(attempt, rnd, lo, hi)
                assert base // 2 <= d <= base, (lo, hi, attempt, rnd, d)
            eq(backoff_ms(attempt, 0, lo, hi), base // 2)


# --- a whole session against a scripted broker (in-memory streams) ----------------------------
class Pipe:
    """The reader side of a connection: the test pushes bytes, the client reads them."""

    def __init__(self):
        self.buf = b""
        self.closed = False

    async def readexactly(self, n):
        while len(self.buf) < n:
            if self.closed:
                raise EOFError
            await asyncio.sleep(0)
        b, self.buf = self.buf[:n], self.buf[n:]
        return b


class Sink:
    """The writer side: everything the client writes."""

    def __init__(self):
        self.data = b""
        self.closed = False

    def write(self, b):
        self.data += b

    async def drain(self):
        pass

    def close(self):
        self.closed = True

    async def wait_closed(self):
        pass


def split_packets(data):
    """(first byte, body) of each whole packet in data (no asyncio: callable inside a loop)."""
    out = []
    i = 0
    while i < len(data):
        h = data[i]
        n = 0
        shift = 0
        j = i + 1
        while True:
            b = data[j]
            j += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out.append((h, data[j:j + n]))
        i = j + n
    return out


def publishes(data):
    """(packet id, dup, payload) of every QoS 1 PUBLISH in data, in order."""
    out = []
    for p in split_packets(data):
        if p[0] & 0xF0 == 0x30:
            body = p[1]
            tl = body[0] << 8 | body[1]
            pid = body[2 + tl] << 8 | body[3 + tl]
            out.append((pid, bool(p[0] & 0x08), body[4 + tl:]))
    return out


def session_rig(n_alerts):
    from fakenvs import FakeNVS

    import ssproto.msg as msg
    from ss_outbox import Outbox

    nvs = FakeNVS()
    ob = Outbox(nvs)
    ob.load()
    pfx = msg.prefix("acme", "hq", "101", "btn-01")
    for i in range(n_alerts):
        ob.add(pfx, "panic", None, i)
    m = ss_mqtt.Mqtt("btn-01", "mqtt://broker.local", pfx, ob, "fw", "b00t")
    ss_mqtt.print = lambda *a: None
    return m, ob, nvs


def run_session(m, steps):
    """Run one session; ``steps(reader, sink)`` scripts the broker.  Returns the session's error."""
    reader, sink = Pipe(), Sink()

    async def fake_open(host, port, will):
        return reader, sink

    m._open = fake_open

    async def go():
        t = asyncio.create_task(m._session("broker.local", 1883, None))
        try:
            await steps(reader, sink)
        finally:
            reader.closed = True
        try:
            await t
        except Exception as e:
            return e
        return None

    return asyncio.run(go()), sink


async def settle():
    for _ in range(50):
        await asyncio.sleep(0)


def puback(pid):
    return bytes([0x40, 2, pid >> 8, pid & 0xFF])


@test
def test_session_window_acks_and_resend_with_dup():
    m, ob, nvs = session_rig(12)
    seen = {}

    async def first(reader, sink):
        await settle()
        pubs = publishes(sink.data)
        seen["first"] = pubs
        # the retained status first, then at most 8 alerts in flight
        reader.buf += puback(0xFFFF) + puback(pubs[1][0]) + puback(pubs[2][0])  # ack seq 0 and 1
        await settle()
        seen["after_acks"] = publishes(sink.data)

    err, sink = run_session(m, first)
    assert err is not None  # the connection ended: the session reports why
    pubs = seen["first"]
    eq(len(pubs), ss_mqtt.WINDOW, "a full window: the status and 7 alerts")
    eq(pubs[0][0], 0xFFFF)
    eq([p[0] for p in pubs[1:]], [s % 0xFFFE + 1 for s in range(7)], "packet id from seq")
    eq([p[1] for p in pubs], [False] * 8, "first sends are not DUP")
    eq(len(seen["after_acks"]), 11, "three acks free three slots")
    eq(ob.pending, list(range(2, 12)), "acked alerts leave the outbox")
    eq(sorted(k for k in nvs.view if k.startswith("q")), ["q%02d" % i for i in range(2, 12)])

    # Reconnect: everything unacknowledged is sent again, the ones sent before with DUP.
    async def second(reader, sink):
        await settle()
        seen["second"] = publishes(sink.data)

    run_session(m, second)
    again = seen["second"][1:]
    eq([p[0] for p in again], [s % 0xFFFE + 1 for s in range(2, 9)])
    eq([p[1] for p in again], [True] * 7, "re-sends carry DUP")
    import ssproto.msg as msg

    d = msg.parse_message("safesignal/acme/hq/101/btn-01/alert", again[0][2])
    eq((d["seq"], d["type"]), (2, "panic"))


@test
def test_session_ends_on_broker_disconnect():
    m, ob, nvs = session_rig(1)

    async def steps(reader, sink):
        await settle()
        reader.buf += bytes([0xE0, 0])

    err, _ = run_session(m, steps)
    assert isinstance(err, OSError), err
    eq(ob.pending, [0], "nothing acknowledged: still in the outbox")


run()
