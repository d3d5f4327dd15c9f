# A small MQTT 3.1.1 client over asyncio streams.
#
# Why not umqtt: umqtt.simple/robust are blocking; while they wait for a broker the console
# and the button would freeze.  asyncio streams behave the same on MicroPython and CPython.
# Packet formats: OASIS MQTT Version 3.1.1, sections 2 (fixed header) and 3 (control packets).

import asyncio
import struct

import ssproto
import ssproto.msg as msg
from ss_compat import backoff_ms, const, rand16, sleep_ms, ticks_diff, ticks_ms, wait_for_ms

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


def encode_connect(client_id, keepalive=KEEPALIVE_S, clean=True, will=None):
    """CONNECT (section 3.1); ``will`` = (topic, payload bytes, qos, retain) or None."""
    flags = 0x02 if clean else 0x00
    payload = _str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(message)
    var = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = var + payload
    return bytes([CONNECT]) + encode_length(len(body)) + body


def encode_publish(topic, payload, pid=0, qos=0, retain=False, dup=False):
    """PUBLISH (section 3.3); a packet identifier only for QoS > 0."""
    h = PUBLISH | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _str(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return bytes([h]) + encode_length(len(body)) + body


def encode_disconnect():
    return bytes([DISCONNECT, 0])


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


WINDOW = const(8)  # alerts in flight (sent, PUBACK outstanding) at once
PUBACK_TIMEOUT_MS = const(30000)  # an alert unacknowledged this long: the session is broken
_STATUS_PID = const(0xFFFF)  # packet id of the retained "online" status; alerts use 1..0xFFFE


class ProbeError(Exception):
    """The connect test failed; ``code`` is the console's status code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Mqtt:
    def __init__(self, client_id, uri, pfx=None, outbox=None, firmware="", boot_id="", tls=None, chip_id=""):
        self.client_id = client_id
        self.uri = uri
        self.tls = tls  # mqtts://: the device identity {"key", "cert", "ca"} (ss_identity)
        self.pfx = pfx  # topic prefix (ssproto.msg.prefix); None: connect only
        self.outbox = outbox
        self.firmware = firmware
        self.boot_id = boot_id
        self.chip_id = chip_id  # machine.unique_id() as "aa:bb:..": in the status and every alert
        self.state = "idle"
        self.attempts = 0
        self._addr = None  # resolved broker address, kept until connecting to it fails
        self._kick = asyncio.Event()
        self._down = None
        self._error = None
        self._inflight = {}  # packet id -> alert seq (-1: the status message)
        self._sent_at = {}  # packet id -> ticks_ms when it was sent
        self._tried = {}  # seq -> True once sent in an earlier session (PUBLISH DUP flag)
        self._last_tx = 0

    def kick(self):
        """Something new is in the outbox: send it now if connected."""
        self._kick.set()

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

    def _context(self):
        # Verification on: the broker's certificate must chain to the tenant CA and name the
        # host we asked for (PROTOCOL_TLS_CLIENT verifies by default and then needs
        # server_hostname).  Our certificate and key are the client identity.  DER throughout:
        # the MicroPython builds do not all parse PEM.
        import tls

        import ss_identity

        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = tls.CERT_REQUIRED
        ctx.load_verify_locations(self.tls["ca"])
        ctx.load_cert_chain(self.tls["cert"], ss_identity.key_der(self.tls["key"]))
        return ctx

    async def _open(self, host, port, will):
        addr = self._resolve(host, port)
        if self.tls is not None:
            try:
                ctx = self._context()
            except (ValueError, OSError) as e:  # mbedTLS refused a certificate or the key
                raise _TlsError("TLS set-up failed: %s" % _describe(e))
            conn = asyncio.open_connection(addr, port, ssl=ctx, server_hostname=host)
        else:
            conn = asyncio.open_connection(addr, port)
        reader, writer = await wait_for_ms(conn, CONNECT_TIMEOUT_MS)
        try:
            try:
                # With TLS the handshake runs here, at the first write and read.
                writer.write(encode_connect(self.client_id, will=will))
                await writer.drain()
                kind, body = await wait_for_ms(read_packet(reader), CONNECT_TIMEOUT_MS)
            except (OSError, EOFError, ValueError) as e:
                if self.tls is None:
                    raise
                raise _TlsError("TLS with the broker failed: %s" % _describe(e))
            if kind & 0xF0 != CONNACK or len(body) < 2:
                raise OSError("broker did not answer CONNACK")
            rc = body[1]
            if rc != 0:
                raise _Refused("broker refused: %s" % CONNACK_REASONS.get(rc, "code %d" % rc))
        except BaseException:
            await _close(writer)
            raise
        return reader, writer

    async def probe(self):
        """Connect test for provision_complete: CONNECT, CONNACK, DISCONNECT.  Raises ProbeError."""
        try:
            _, host, port = ssproto.parse_mqtt_uri(self.uri)
        except ssproto.ProtocolError as e:
            raise ProbeError("BROKER_UNREACHABLE", "broker URI unusable: " + e.message)
        where = "%s:%d" % (host, port)
        try:
            reader, writer = await self._open(host, port, None)
        except _Refused as e:
            raise ProbeError("BROKER_REFUSED", "%s (%s)" % (_describe(e), where))
        except _TlsError as e:
            raise ProbeError("BROKER_TLS", "%s (%s): check that the broker's certificate is from the tenant CA "
                             "and names %s, and that the broker trusts that CA" % (_describe(e), where, host))
        except _DnsError:
            raise ProbeError("BROKER_UNREACHABLE", "cannot resolve the broker host name " + host)
        except asyncio.TimeoutError:
            raise ProbeError("BROKER_UNREACHABLE", "no answer from the broker at %s within %d s"
                             % (where, CONNECT_TIMEOUT_MS // 1000))
        except (OSError, EOFError) as e:
            raise ProbeError("BROKER_UNREACHABLE", "cannot connect to the broker at %s: %s" % (where, _describe(e)))
        try:
            writer.write(encode_disconnect())
            await writer.drain()
        except OSError:
            pass
        await _close(writer)

    def _fail(self, e):
        if self._error is None:
            self._error = e
        if self._down is not None:
            self._down.set()

    async def _guard(self, coro):
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:  # OSError, EOFError, TimeoutError: the session is over
            self._fail(e)

    async def _session(self, host, port, wifi):
        print("[MQTT] Connecting to broker...")
        self.state = "connecting"
        will = None
        if self.pfx is not None:
            will = (self.pfx + "/" + msg.STATUS, msg.status_payload(self.pfx, False, chip_id=self.chip_id), 1, True)
        reader, writer = await self._open(host, port, will)
        self.state = "connected"
        print("[MQTT] Connected to broker")
        self._inflight = {}
        self._sent_at = {}
        self._error = None
        self._down = asyncio.Event()
        tasks = [
            asyncio.create_task(self._guard(self._reader(reader))),
            asyncio.create_task(self._guard(self._sender(writer))),
        ]
        if wifi is not None:
            tasks.append(asyncio.create_task(self._guard(self._watch(wifi))))
        try:
            await self._down.wait()
        finally:
            for t in tasks:
                t.cancel()
            await _close(writer)
            self._down = None
        raise self._error or OSError("session ended")

    async def _reader(self, reader):
        # Any packet counts as life; the sender pings when idle, so silence means a dead link.
        while True:
            kind, body = await wait_for_ms(read_packet(reader), KEEPALIVE_S * 1500)
            t = kind & 0xF0
            if t == PUBACK or t == PINGRESP:
                # The broker works with us (not just accepts and drops us): back to short
                # retry delays.  Reset here, not at CONNACK, so a broker that keeps closing
                # the session right after CONNACK gets backoff.
                self.attempts = 0
            if t == PUBACK and len(body) >= 2:
                pid = body[0] << 8 | body[1]
                seq = self._inflight.pop(pid, None)
                self._sent_at.pop(pid, None)
                if seq is not None and seq >= 0:
                    self.outbox.ack(seq)
                    if seq in self._tried:
                        del self._tried[seq]
                    print("[ALERT] Alert %d delivered" % seq)
                self.kick()
            elif t == DISCONNECT:
                raise OSError("broker closed the session")

    async def _sender(self, writer):
        # The only task that writes to the connection (MicroPython streams allow one drain).
        if self.pfx is not None:
            online = msg.status_payload(self.pfx, True, self.firmware, self.boot_id, self.chip_id)
            writer.write(encode_publish(self.pfx + "/" + msg.STATUS, online, _STATUS_PID, 1, True))
            self._inflight[_STATUS_PID] = -1
            self._sent_at[_STATUS_PID] = ticks_ms()
        sent = {}
        self._last_tx = ticks_ms()
        while True:
            self._kick.clear()
            ob = self.outbox
            gone = []
            wrote = False
            if ob is not None:
                for seq in ob.pending:
                    if len(self._inflight) >= WINDOW:
                        break
                    if seq in sent:
                        continue
                    e = ob.entry(seq, self.chip_id)
                    if e is None:
                        gone.append(seq)
                        continue
                    pid = seq % 0xFFFE + 1
                    writer.write(encode_publish(e[0], e[1], pid, 1, False, seq in self._tried))
                    self._inflight[pid] = seq
                    self._sent_at[pid] = ticks_ms()
                    sent[seq] = True
                    self._tried[seq] = True
                    wrote = True
                for seq in gone:
                    print("[ALERT] Alert %d unreadable in flash; dropped" % seq)
                    ob.ack(seq)
            now = ticks_ms()
            for pid in self._sent_at:
                if ticks_diff(now, self._sent_at[pid]) > PUBACK_TIMEOUT_MS:
                    # TCP delivered it, yet no PUBACK: reconnect and send it again (DUP)
                    raise OSError("no PUBACK within %d s" % (PUBACK_TIMEOUT_MS // 1000))
            if ticks_diff(ticks_ms(), self._last_tx) >= KEEPALIVE_S * 500:
                writer.write(encode_pingreq())
                wrote = True
            if wrote or self._inflight:
                await writer.drain()
                self._last_tx = ticks_ms()
            try:
                await wait_for_ms(self._kick.wait(), KEEPALIVE_S * 500)
            except asyncio.TimeoutError:
                pass

    async def _watch(self, wifi):
        while wifi.connected.is_set():
            await sleep_ms(200)
        raise OSError("WiFi connection lost")

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
                await self._session(host, port, wifi)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # OSError, EOFError, TimeoutError: all mean "try again"
                dns_failed = isinstance(e, _DnsError)
                if isinstance(e, _Refused):
                    self.state = "refused"
                    print("[MQTT] Connection refused: %s" % _describe(e))
                elif self.state == "connected":
                    print("[MQTT] Connection lost: %s" % _describe(e))
                    self.state = "disconnected"
                else:
                    self._addr = None  # could not connect: look the name up again (it may have moved)
                    print("[MQTT] Connection failed: %s" % _describe(e))
                    self.state = "disconnected"
            import gc

            gc.collect()  # a timed-out open_connection leaves its socket to the finaliser: free it now
            if not wifi.connected.is_set():
                continue  # wait for WiFi, then try at once
            delay = backoff_ms(self.attempts, rand16())
            if dns_failed and delay < DNS_RETRY_MIN_MS:
                delay = DNS_RETRY_MIN_MS  # each lookup may freeze the console: not too often
            self.attempts += 1
            print("[MQTT] Retrying in %d ms" % delay)
            await sleep_ms(delay)


async def _close(writer):
    try:
        writer.close()
        await writer.wait_closed()
    except Exception:
        pass


class _Refused(OSError):
    pass


class _DnsError(OSError):
    pass


class _TlsError(OSError):
    pass


def _describe(e):
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    if isinstance(e, EOFError):
        return "connection closed"
    if e.args and isinstance(e.args[0], str):
        return e.args[0]
    if e.args and isinstance(e.args[0], int) and e.args[0] < -0x1000:
        return "mbedTLS error -0x%04x" % -e.args[0]  # mbedtls/include/mbedtls/*.h error codes
    s = str(e)
    return s if s else e.__class__.__name__
