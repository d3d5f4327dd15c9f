"""A fleet of lightweight virtual devices against a real mosquitto and the real dashboard.

Method (also in bench/README.md, "fleet.py"): N devices in one asyncio process, each a small
MQTT 3.1.1 client of its own (asyncio.Protocol, one TCP or TLS connection per device) that
speaks as the firmware does (firmware/esp32-button/lib/ss_mqtt.py): client id = device id,
clean session, keep-alive S in CONNECT, PINGREQ after S/2 without sending, the link counted
dead after 1.5 S without a packet, a last will (status offline, QoS 1, retained), a birth
(status online, QoS 1, retained) after CONNACK, alerts QoS 1 with at most 8 in flight, every
alert not yet PUBACKed sent again (DUP) after a reconnect, reconnect backoff 1 s doubling to
60 s (backoff_ms in ss_compat.py), each delay 50-100 % of it (--jitter on) or all of it (off).
Payloads are ssproto.msg's (alert_payload, status_payload) with an epoch and a chip id.
Buttons are pressed at random: a Poisson process of --rate presses/s over the fleet, each press
on a device drawn uniformly.

The dashboard is the real `safesignal dashboard` subprocess (SQLite file by default, --db URL,
or --pg for a throw-away PostgreSQL from tests/support/postgres.py); an admin account is made
with `safesignal dashboard user add` (password from SAFESIGNAL_USER_PASS, made here, kept in
memory).  A separate process reads GET /api/events with the admin's token and timestamps each
alert; latency = that time - the time the device wrote the alert's first PUBLISH (same clock).

Prints one JSON object; asserts no time.

    .venv/bin/python bench/fleet.py --devices 2000 --interval 5 --json [--tls] [--restart-at 20]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import math
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # support.postgres for --pg

import ssproto.msg as msg  # noqa: E402
from safesignal.alerts.mosquitto import Mosquitto, find_mosquitto, site_address  # noqa: E402
from safesignal.tools import die_with_parent, stop_process  # noqa: E402

TENANT = "bench"
BUILDINGS = 10  # devices are spread over BUILDINGS x ROOMS
ROOMS = 20
WINDOW = 8  # alerts in flight per device (ss_mqtt.WINDOW)
STATUS_PID = 0xFFFF  # the birth's packet id (ss_mqtt._STATUS_PID)
BACKOFF_LO, BACKOFF_HI = 1.0, 60.0  # ss_compat.backoff_ms
CONNECT_TIMEOUT = 10.0
STARTUP_CONCURRENCY = 200  # connects in flight while the fleet first comes up (not during a storm)
ADMIN = "bench-admin"

# --- MQTT 3.1.1 packets (what the devices send) -------------------------------------------------
CONNECT, CONNACK, PUBLISH, PUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x10, 0x20, 0x30, 0x40, 0xC0, 0xD0, 0xE0


def _rl(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id: str, keepalive: int, will_topic: str, will: bytes) -> bytes:
    flags = 0x02 | 0x04 | (1 << 3) | 0x20  # clean session, will QoS 1 retained
    body = _s(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body += _s(client_id.encode()) + _s(will_topic.encode()) + _s(will)
    return bytes([CONNECT]) + _rl(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, pid: int, retain: bool = False, dup: bool = False) -> bytes:
    body = _s(topic) + struct.pack("!H", pid) + payload
    return bytes([PUBLISH | (0x08 if dup else 0) | 0x02 | (1 if retain else 0)]) + _rl(len(body)) + body


PINGREQ_PACKET = bytes([PINGREQ, 0])
DISCONNECT_PACKET = bytes([DISCONNECT, 0])


def backoff(attempt: int, jitter: bool, rnd: random.Random) -> float:
    base = min(BACKOFF_LO * (1 << min(attempt, 16)), BACKOFF_HI)
    return base / 2 + rnd.random() * base / 2 if jitter else base


# --- one device ------------------------------------------------------------------------------------
class Stats:
    def __init__(self) -> None:
        self.pressed: dict[tuple[str, int], float] = {}  # (device, seq) -> press time
        self.first_sent: dict[tuple[str, int], float] = {}
        self.acked: dict[tuple[str, int], float] = {}
        self.connects = 0
        self.connect_failures = 0
        self.connected: set[str] = set()
        self.lost_links = 0


class Conn(asyncio.Protocol):
    def __init__(self, dev: Device) -> None:
        self.dev = dev
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 2:
            n, mult, i = 0, 1, 1
            while True:
                if i >= len(self.buf):
                    return
                b = self.buf[i]
                n += (b & 0x7F) * mult
                mult <<= 7
                i += 1
                if not b & 0x80:
                    break
            if len(self.buf) < i + n:
                return
            kind, body = self.buf[0] & 0xF0, self.buf[i:i + n]
            self.buf = self.buf[i + n:]
            self.dev.packet(kind, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.dev.lost(self)


class Device:
    def __init__(self, fleet: Fleet, i: int) -> None:
        self.fleet = fleet
        self.id = f"btn-{i:05d}"
        self.building = f"b{i % BUILDINGS:02d}"
        self.room = f"r{(i // BUILDINGS) % ROOMS:02d}"
        self.pfx = msg.prefix(TENANT, self.building, self.room, self.id)
        self.alert_topic = (self.pfx + "/" + msg.ALERT).encode()
        self.chip_id = ":".join(f"{b:02x}" for b in fleet.rnd.randbytes(6))
        self.epoch = fleet.rnd.randrange(1, 2**31)
        self.seq = 0
        self.booted = time.monotonic()
        self.outbox: dict[int, bytes] = {}  # seq -> payload, until PUBACKed
        self.tried: set[int] = set()
        self.inflight: dict[int, int] = {}  # pid -> seq
        self.conn: Conn | None = None
        self.up = False  # CONNACK received on the current connection
        self.attempts = 0
        self.last_tx = self.last_rx = 0.0
        self.connack: asyncio.Future[int] | None = None
        self.down: asyncio.Future[None] | None = None
        self.ctx: ssl.SSLContext | None = None

    # network events
    def packet(self, kind: int, body: bytes) -> None:
        self.last_rx = time.monotonic()
        if kind == CONNACK:
            if self.connack is not None and not self.connack.done():
                self.connack.set_result(body[1] if len(body) >= 2 else 255)
        elif kind == PUBACK and len(body) >= 2:
            self.attempts = 0  # as ss_mqtt: the broker works with us
            pid = body[0] << 8 | body[1]
            seq = self.inflight.pop(pid, None)
            if seq is not None and seq >= 0:
                self.outbox.pop(seq, None)
                self.tried.discard(seq)
                self.fleet.stats.acked.setdefault((self.id, seq), time.time())
            self.send_pending()
        elif kind == PINGRESP:
            self.attempts = 0

    def lost(self, conn: Conn) -> None:
        if conn is self.conn:
            if self.up and not self.fleet.stopping:
                self.fleet.stats.lost_links += 1
                self.fleet.stats.connected.discard(self.id)
            self.up = False
            self.conn = None
            if self.down is not None and not self.down.done():
                self.down.set_result(None)
            if self.connack is not None and not self.connack.done():
                self.connack.set_exception(ConnectionError("closed before CONNACK"))

    def write(self, data: bytes) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.write(data)
            self.last_tx = time.monotonic()

    # the device's work
    def press(self) -> None:
        self.seq += 1
        uptime = int((time.monotonic() - self.booted) * 1000)
        self.outbox[self.seq] = msg.alert_payload(self.pfx, self.seq, "panic", int(time.time()), uptime, self.epoch,
                                                  self.chip_id)
        self.fleet.stats.pressed[(self.id, self.seq)] = time.time()
        self.send_pending()

    def send_pending(self) -> None:
        if not self.up:
            return
        busy = set(self.inflight.values())
        for seq in sorted(self.outbox):
            if len(self.inflight) >= WINDOW:
                break
            if seq in busy:
                continue
            pid = seq % 0xFFFE + 1
            self.write(publish_packet(self.alert_topic, self.outbox[seq], pid, dup=seq in self.tried))
            self.fleet.stats.first_sent.setdefault((self.id, seq), time.time())
            self.inflight[pid] = seq
            self.tried.add(seq)

    async def session(self, startup: asyncio.Semaphore | None) -> None:
        loop = asyncio.get_running_loop()
        f = self.fleet
        self.connack = loop.create_future()
        self.down = loop.create_future()

        async def open_() -> None:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: Conn(self), f.host, f.port, ssl=self.ctx,
                                       server_hostname=f.host if self.ctx else None), CONNECT_TIMEOUT)
            assert isinstance(proto, Conn)
            self.conn = proto
            will = msg.status_payload(self.pfx, False, chip_id=self.chip_id)
            self.write(connect_packet(self.id, f.interval, self.pfx + "/" + msg.STATUS, will))
            rc = await asyncio.wait_for(self.connack, CONNECT_TIMEOUT) if self.connack else 255
            if rc != 0:
                raise ConnectionError(f"CONNACK {rc}")

        try:
            if startup is not None:
                async with startup:
                    await open_()
            else:
                await open_()
        except BaseException:
            if self.conn is not None and self.conn.transport is not None:
                self.conn.transport.abort()
            self.conn = None
            raise
        self.up = True
        f.stats.connects += 1
        f.stats.connected.add(self.id)
        f.on_connected()
        self.inflight = {}
        birth = msg.status_payload(self.pfx, True, "bench", f"{self.epoch:08x}", self.chip_id)
        self.write(publish_packet((self.pfx + "/" + msg.STATUS).encode(), birth, STATUS_PID, retain=True))
        self.inflight[STATUS_PID] = -1
        self.send_pending()
        await self.down

    async def run(self, startup: asyncio.Semaphore | None) -> None:
        f = self.fleet
        while not f.stopping:
            try:
                await self.session(startup)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, ConnectionError, ssl.SSLError):
                f.stats.connect_failures += 1
            startup = None
            if f.stopping:
                return
            await asyncio.sleep(backoff(self.attempts, f.jitter, f.rnd))
            self.attempts += 1

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.write(DISCONNECT_PACKET)
            self.conn.transport.close()


# --- the fleet ----------------------------------------------------------------------------------------
class Fleet:
    def __init__(self, n: int, host: str, port: int, interval: int, jitter: bool, seed: int,
                 contexts: list[ssl.SSLContext] | None) -> None:
        self.rnd = random.Random(seed)
        self.host, self.port, self.interval, self.jitter = host, port, interval, jitter
        self.stats = Stats()
        self.stopping = False
        self.devices = [Device(self, i) for i in range(n)]
        if contexts is not None:
            for d, c in zip(self.devices, contexts, strict=True):
                d.ctx = c
        self.all_up = asyncio.Event()
        self.first_down_at: float | None = None
        self.storm_mark: float | None = None  # when the broker accepted connections again
        self.all_back_at: float | None = None

    def on_connected(self) -> None:
        if len(self.stats.connected) == len(self.devices):
            self.all_up.set()
            if self.storm_mark is not None and self.all_back_at is None:
                self.all_back_at = time.time()

    async def keepalive(self) -> None:
        """PINGREQ after interval/2 without sending; a link silent for 1.5 x interval is dead."""
        half, dead = self.interval / 2, self.interval * 1.5
        while not self.stopping:
            now = time.monotonic()
            for d in self.devices:
                if d.up:
                    if now - d.last_rx > dead and d.conn is not None and d.conn.transport is not None:
                        d.conn.transport.abort()
                    elif now - d.last_tx >= half:
                        d.write(PINGREQ_PACKET)
            await asyncio.sleep(min(0.25, half / 4))

    async def presses(self, rate: float, seconds: float) -> None:
        """Press times drawn ahead (exponential gaps on an absolute schedule, so the loop's own
        delays do not lower the rate); every press that is due is made at each wake-up."""
        now = time.monotonic()
        end, due = now + seconds, now + self.rnd.expovariate(rate)
        while due < end:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            while due < end and due <= time.monotonic():
                self.rnd.choice(self.devices).press()
                due += self.rnd.expovariate(rate)


# --- processes ----------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(p.name))
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class Dashboard:
    def __init__(self, db: str, broker: str, workdir: Path, extra: list[str], env: dict[str, str],
                 whatif: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.err = open(workdir / "dashboard.err", "wb")  # noqa: SIM115 - the child writes it
        self.proc = subprocess.Popen(
            [sys.executable, *(["-m", "safesignal"] if not whatif else [__file__, "--whatif-dashboard", whatif]),
             "dashboard", "--broker", broker, "--db", db,
             "--listen", f"127.0.0.1:{self.port}", *extra], stdout=subprocess.PIPE, stderr=self.err,
            stdin=subprocess.DEVNULL, cwd=workdir, env={**os.environ, **env},
            preexec_fn=die_with_parent(signal.SIGTERM))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode(errors="replace")
        if "Dashboard on" not in line:
            self.stop()
            raise SystemExit(f"the dashboard did not start: {line}{(workdir / 'dashboard.err').read_text()[-2000:]}")

    def stop(self) -> None:
        stop_process(self.proc, 30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.err.close()


def add_admin(db: str, workdir: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "safesignal", "dashboard", "user", "add", ADMIN, "--role", "admin",
                        "--db", db], capture_output=True, text=True, cwd=workdir, timeout=120,
                       env={**os.environ, "SAFESIGNAL_USER_PASS": secrets.token_urlsafe(24)})
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode != 0 or not last.startswith("token: "):
        raise SystemExit(f"dashboard user add failed: {r.stderr[-2000:]}")
    return last.removeprefix("token: ")


class StreamReader:
    """The live stream, read by a separate process (``--sse-reader``): a line per alert,
    ``<unix time> <device> <epoch> <seq>``, collected here in a thread."""

    def __init__(self, url: str, token: str) -> None:
        self.seen: dict[tuple[str, int], float] = {}
        self.other = 0  # alerts on the stream from no device of this fleet (or another epoch)
        self.dup = 0
        self.connected = threading.Event()
        self.proc = subprocess.Popen([sys.executable, __file__, "--sse-reader", url], stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env={**os.environ, "FLEET_TOKEN": token},
                                     preexec_fn=die_with_parent(signal.SIGTERM))
        self.epochs: dict[str, int] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        if not self.connected.wait(30):
            raise SystemExit("the live stream did not answer")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            parts = raw.decode().split()
            if parts[0] == "connected":
                self.connected.set()
                continue
            t, dev, epoch, seq = float(parts[0]), parts[1], int(parts[2]), int(parts[3])
            if self.epochs.get(dev) != epoch:
                self.other += 1
                continue
            key = (dev, seq)
            if key in self.seen:
                self.dup += 1
            else:
                self.seen[key] = t

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.thread.join(5)


def sse_reader(url: str) -> None:
    """The --sse-reader process: GET /api/events, one line per alert on stdout."""
    token = os.environ.pop("FLEET_TOKEN")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    u = url.removeprefix("http://")
    host, port = u.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=None)
    conn.request("GET", "/api/events", headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"/api/events: {resp.status}")
    out = sys.stdout
    print("connected", file=out, flush=True)
    data = ""
    while True:
        line = resp.readline()
        if not line:
            return
        now = time.time()
        text = line.decode().rstrip("\r\n")
        if text.startswith("data: "):
            data = text[6:]
        elif text == "" and data:
            a = json.loads(data)
            data = ""
            print(f"{now:.6f} {a['device_id']} {a['epoch'] if a['epoch'] is not None else -1} {a['seq']}",
                  file=out, flush=True)


# --- TLS: the tenant CA, the broker, device certificates -------------------------------------------------
def make_tls(workdir: Path, n: int, host: str, ca_pass: str, extra: list[str]
             ) -> tuple[Mosquitto, list[ssl.SSLContext], list[str], dict[str, Any]]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from safesignal.pki import ca as tenant_ca

    t0 = time.monotonic()
    ca = tenant_ca.init(workdir / "ca", TENANT, ca_pass)
    ca.unlock(ca_pass)
    ca.issue_operator_cert("dashboard")
    files = tenant_ca.write_broker_config(ca, workdir / "broker", host, tenant_ca.MTLS_PORT,
                                          ["localhost", host], autosave_interval=0,
                                          extra=["log_type error", "log_type warning", "log_type notice"]
                                          + (["user root"] if os.geteuid() == 0 else []) + extra)
    broker = Mosquitto(workdir / "broker", host, tenant_ca.MTLS_PORT, config=files.config, log_path=files.log,
                       tls=True)
    ca_pem = ca.cert_pem().decode()
    t1 = time.monotonic()
    contexts = []
    for i in range(n):
        dev_id = f"btn-{i:05d}"
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dev_id)])).sign(key, hashes.SHA256()))
        cert = x509.load_der_x509_certificate(ca.sign_device_csr(csr.public_bytes(serialization.Encoding.DER), dev_id))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cadata=ca_pem)
        # The device key never touches the disk: an anonymous in-memory file (memfd) for OpenSSL.
        fd = os.memfd_create("device-identity")
        try:
            os.write(fd, cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        contexts.append(ctx)
    ca.lock()
    info = {"ca_and_broker_s": round(t1 - t0, 2), "device_certs_s": round(time.monotonic() - t1, 2)}
    return broker, contexts, ["--ca", str(workdir / "ca"), "--operator", "dashboard"], info


def shipped_queue_limits() -> list[str]:
    """The shipped broker configuration's queue limit lines (max_queued_messages, _bytes)."""
    template = Path(__file__).resolve().parent.parent / "broker" / "mosquitto" / "mosquitto-mtls.conf.in"
    lines = [ln.strip() for ln in template.read_text().splitlines() if ln.startswith("max_queued_")]
    if not lines:
        raise SystemExit(f"{template}: no max_queued_* lines")
    return lines


def plain_broker(workdir: Path, extra: list[str]) -> Mosquitto:
    d = workdir / "broker"
    d.mkdir(parents=True)
    host = site_address()
    conf = d / "mosquitto.conf"
    # As Mosquitto's own test config (persistence on, saved at exit) but without `log_type all`,
    # which would log every PUBLISH and PINGREQ of the fleet.
    conf.write_text(f"listener 1883 {host}\nallow_anonymous true\npersistence true\npersistence_location {d}/\n"
                    f"autosave_interval 0\nlog_dest file {d}/mosquitto.log\nlog_type error\nlog_type warning\n"
                    f"log_type notice\n" + ("user root\n" if os.geteuid() == 0 else "")
                    + "".join(x + "\n" for x in extra))
    return Mosquitto(d, host, 1883, config=conf, log_path=d / "mosquitto.log")


# --- what-ifs: the dashboard with a patch, run by this file (never the shipped behaviour) ---------------
WHATIFS = ("batch",)


def patch_batch(max_batch: int = 500) -> None:
    """WHAT-IF, not the shipped ingest: the paho thread only parses and queues; a writer thread
    stores everything queued (up to ``max_batch`` messages, in arrival order) in one transaction,
    then acknowledges those messages and wakes the live streams.  The registry functions are the
    shipped ones; their per-message commit becomes a flush inside the batch."""
    import queue

    from sqlalchemy.exc import SQLAlchemyError

    from safesignal.alerts.receiver import Alert, event_from_message
    from safesignal.dashboard import ingest as ing
    from safesignal.dashboard import registry

    orig_init = ing.Ingest.__init__

    def __init__(self: Any, *args: Any, **kw: Any) -> None:
        orig_init(self, *args, **kw)
        self._q = queue.Queue()
        threading.Thread(target=writer, args=(self,), daemon=True).start()

    def _handle(self: Any, client: Any, message: Any) -> None:
        try:
            ev = event_from_message(message.topic, message.payload, received_at=time.time(),
                                    retained=bool(message.retain))
        except (ValueError, UnicodeError):
            self.invalid += 1
            client.ack(message.mid, message.qos)
            return
        if isinstance(ev, Alert) and ev.retained:
            client.ack(message.mid, message.qos)
            return
        self._q.put((client, message, ev))

    def writer(self: Any) -> None:
        while not self._stopping.is_set():
            try:
                batch = [self._q.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < max_batch:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            delay = 0.1
            while not self._stopping.is_set():
                try:
                    stored = []
                    with self.db() as s:
                        real_commit = s.commit
                        s.commit = s.flush  # one transaction for the batch
                        for _, _, ev in batch:
                            if isinstance(ev, Alert):
                                stored.append(registry.ingest_alert(s, ev))
                            else:
                                registry.ingest_status(s, ev)
                        real_commit()
                    break
                except SQLAlchemyError:
                    self._stopping.wait(delay)
                    delay = min(delay * 2, ing.DB_RETRY_MAX)
            else:
                return
            for client, message, _ in batch:
                client.ack(message.mid, message.qos)
            for a in stored:
                if a is None:
                    self.duplicates += 1
                else:
                    self.stored += 1
                    if self.on_alert is not None:
                        self.on_alert(a)

    ing.Ingest.__init__ = __init__  # type: ignore[method-assign]
    ing.Ingest._handle = _handle  # type: ignore[method-assign]


def whatif_dashboard(names: str, argv: list[str]) -> None:
    """``fleet.py --whatif-dashboard NAMES dashboard ...``: `safesignal dashboard` with patches."""
    for name in names.split(","):
        {"batch": patch_batch}[name]()
    from safesignal.cli.entry import entry

    sys.argv = ["safesignal", *argv]
    entry()


# --- figures -----------------------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def latency(keys: list[tuple[str, int]], start: dict[tuple[str, int], float],
            seen: dict[tuple[str, int], float]) -> dict[str, Any]:
    lat = [seen[k] - start[k] for k in keys if k in seen and k in start]
    return {"n": len(lat), "p50": ms(pct(lat, 50)), "p90": ms(pct(lat, 90)), "p99": ms(pct(lat, 99)),
            "max": ms(max(lat) if lat else None)}


def query(db: str, workdir: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the registry (read directly, beside the dashboard)."""
    if db.startswith("sqlite:///"):
        path = Path(db.removeprefix("sqlite:///"))
        with sqlite3.connect(path if path.is_absolute() else workdir / path, timeout=30) as c:
            return list(c.execute(sql))
    import psycopg

    with psycopg.connect(db) as c:
        return list(c.execute(sql))  # type: ignore[arg-type]


def db_figures(db: str, workdir: Path) -> dict[str, Any]:
    if db.startswith("sqlite:///"):
        path = Path(db.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else workdir / path
        size = sum(p.stat().st_size for p in [path, Path(f"{path}-wal")] if p.exists())
        with sqlite3.connect(path) as c:
            rows = [r[0] for r in c.execute("SELECT received_at FROM alerts")]
            n_dev = c.execute("SELECT count(*) FROM devices").fetchone()[0]
        times = [dt.datetime.fromisoformat(r).replace(tzinfo=dt.UTC).timestamp() for r in rows]
    else:
        import psycopg

        with psycopg.connect(db) as c:
            size = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
            times = [r[0].timestamp() for r in c.execute("SELECT received_at FROM alerts")]
            n_dev = c.execute("SELECT count(*) FROM devices").fetchone()[0]  # type: ignore[index]
    times.sort()
    peak, j = 0, 0
    for i, t in enumerate(times):  # most alerts stored in any one second
        while times[j] < t - 1.0:
            j += 1
        peak = max(peak, i - j + 1)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {"db_bytes": size, "alerts_stored": len(times), "devices_in_registry": n_dev,
            "ingest_rate_alerts_per_s": round(len(times) / span, 1) if span > 0 else None,
            "ingest_peak_alerts_in_1s": peak}


# --- the run -------------------------------------------------------------------------------------------------
async def run_fleet(a: argparse.Namespace, broker: Mosquitto, contexts: list[ssl.SSLContext] | None,
                    stream: StreamReader, procs: Callable[[], dict[str, list[int]]],
                    count_online: Callable[[], int]) -> dict[str, Any]:
    fleet = Fleet(a.devices, broker.host, broker.port, a.interval, a.jitter == "on", a.seed, contexts)
    for d in fleet.devices:
        stream.epochs[d.id] = d.epoch
    out: dict[str, Any] = {}

    def sample() -> dict[str, float]:
        s = {k: sum(cpu_seconds(p) for p in v) for k, v in procs().items()}
        ru = resource.getrusage(resource.RUSAGE_SELF)
        s["bench_devices"] = ru.ru_utime + ru.ru_stime
        s["_busy"], s["_total"] = machine_busy()
        s["_wall"] = time.monotonic()
        return s

    def cpu(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        wall = after["_wall"] - before["_wall"]
        return {k: round(100 * (after[k] - before[k]) / wall, 1) for k in after if not k.startswith("_")}

    t0 = time.monotonic()
    connect_before = sample()
    startup = asyncio.Semaphore(STARTUP_CONCURRENCY)
    tasks = [asyncio.create_task(d.run(startup)) for d in fleet.devices]
    ka = asyncio.create_task(fleet.keepalive())
    try:
        await asyncio.wait_for(fleet.all_up.wait(), a.connect_timeout)
    except TimeoutError:
        pass
    out["connect"] = {"all_connected_s": round(time.monotonic() - t0, 2) if fleet.all_up.is_set() else None,
                      "connected": len(fleet.stats.connected), "failed_attempts": fleet.stats.connect_failures,
                      "cpu_percent_of_one_core": cpu(connect_before, sample())}
    # The births (one retained status per device) reach the registry before the presses start:
    # wait until it shows every device online, or until that count has not moved for 5 s.
    t1 = time.monotonic()
    online, moved = -1, t1
    while time.monotonic() - t1 < a.settle_max:
        n = await asyncio.to_thread(count_online)
        if n != online:
            online, moved = n, time.monotonic()
        if n >= a.devices or time.monotonic() - moved > 5.0:
            break
        await asyncio.sleep(0.5)
    out["births"] = {"online_in_registry": online, "settle_s": round(time.monotonic() - t1, 2)}
    await asyncio.sleep(a.settle)

    before = sample()
    presses = asyncio.create_task(fleet.presses(a.rate, a.duration))
    storm: dict[str, Any] | None = None
    if a.restart_at > 0:
        await asyncio.sleep(min(a.restart_at, a.duration))
        acked_before = len(fleet.stats.acked)
        down_at = time.time()
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(a.down)
        await asyncio.to_thread(broker.start)
        fleet.storm_mark = broker.up_since
        fleet.all_back_at = None
        storm = {"jitter": a.jitter, "broker_down_s": round(broker.up_since - down_at, 2),
                 "acked_before_restart": acked_before}
    await presses
    after = sample()
    if storm is not None:
        deadline = time.monotonic() + a.storm_timeout
        while fleet.all_back_at is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        mark = fleet.storm_mark or 0.0
        storm["all_back_s"] = round(fleet.all_back_at - mark, 2) if fleet.all_back_at else None
        storm["connected_at_end"] = len(fleet.stats.connected)
    # Drain: every pressed alert PUBACKed and on the stream, or the drain time is up.
    deadline = time.monotonic() + a.drain
    while time.monotonic() < deadline:
        if all(k in stream.seen for k in fleet.stats.pressed):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    fleet.stopping = True
    ka.cancel()
    for t in tasks:
        t.cancel()
    for d in fleet.devices:
        d.close()
    await asyncio.gather(*tasks, ka, return_exceptions=True)
    await asyncio.sleep(0.2)

    st = fleet.stats
    out["cpu_percent_of_one_core"] = cpu(before, after)
    out["machine_busy_percent"] = round(100 * (after["_busy"] - before["_busy"]) / (after["_total"] - before["_total"]),
                                        1)
    pressed = list(st.pressed)
    lost = [k for k in st.acked if k not in stream.seen]
    out["press_rate_achieved_per_s"] = round(len(pressed) / a.duration, 1)
    out["alerts"] = {"pressed": len(pressed), "published": len(st.first_sent), "acked": len(st.acked),
                     "on_stream": sum(1 for k in pressed if k in stream.seen),
                     "lost": len(lost), "never_acked": len(pressed) - len(st.acked),
                     "stream_duplicates": stream.dup, "stream_foreign": stream.other}
    out["lost_examples"] = [f"{d}/{s}" for d, s in lost[:10]]
    out["_lost_keys"] = lost
    out["latency_ms"] = latency(pressed, st.first_sent, stream.seen)
    out["press_to_stream_ms"] = latency(pressed, st.pressed, stream.seen)
    out["ack_ms"] = latency(pressed, st.first_sent, st.acked)
    if storm is not None:
        out["storm"] = storm
    out["links_lost"] = st.lost_links
    out["connects_total"] = st.connects
    return out


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--whatif-dashboard":
        whatif_dashboard(sys.argv[2], sys.argv[3:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--interval", type=int, default=5, help="MQTT keep-alive in seconds (default 5)")
    p.add_argument("--rate", type=float, default=20.0, help="button presses per second over the whole fleet "
                   "(a Poisson process; default 20)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of presses (default 30)")
    p.add_argument("--drain", type=float, default=30.0, help="at most this long for the last alerts (default 30)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds between the births in the registry and the "
                   "first press")
    p.add_argument("--settle-max", type=float, default=120.0, help="at most this long for the births to be in the "
                   "registry")
    p.add_argument("--max-queued", type=int, default=None, help="mosquitto's max_queued_messages (default: the "
                   "shipped configuration's queue limits, broker/mosquitto/mosquitto-mtls.conf.in, for the plain "
                   "broker too)")
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument("--tls", action="store_true", help="mutual TLS: the tenant CA, the shipped broker config, "
                   "a certificate per device")
    p.add_argument("--db", default="sqlite:///safesignal.db", help="the dashboard's --db (default: an SQLite file "
                   "in the run's temporary directory)")
    p.add_argument("--pg", action="store_true", help="start a throw-away PostgreSQL (tests/support/postgres.py)")
    p.add_argument("--restart-at", type=float, default=0.0, help="reconnect storm: restart the broker this many "
                   "seconds into the presses (0: no storm)")
    p.add_argument("--down", type=float, default=2.0, help="seconds the broker stays down in a storm")
    p.add_argument("--jitter", choices=("on", "off"), default="on", help="the devices' reconnect backoff jitter")
    p.add_argument("--storm-timeout", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the run's directory (logs)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout (the only output format)")
    p.add_argument("--group", help="the dashboard's --group: alerts through the shared subscription $share/G/… "
                   "(as several instances would take them) instead of the default durable one")
    p.add_argument("--whatif", default="", help="WHAT-IF (not the shipped dashboard): run it with patches, "
                   f"comma-separated: {', '.join(WHATIFS)} (see the functions patch_*)")
    p.add_argument("--sse-reader", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.sse_reader:
        sse_reader(a.sse_reader)
        return 0
    if find_mosquitto() is None:
        raise SystemExit("mosquitto not found: apt-get install mosquitto")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.devices + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.devices + 1000), hard))
    workdir = Path(tempfile.mkdtemp(prefix="ss-fleet-"))
    pg: Any = None
    broker: Mosquitto | None = None
    dash: Dashboard | None = None
    stream: StreamReader | None = None
    result: dict[str, Any] = {"devices": a.devices, "interval_s": a.interval, "rate_per_s": a.rate,
                              "duration_s": a.duration, "tls": a.tls, "jitter": a.jitter,
                              "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              "machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()}}
    try:
        db = a.db
        if a.pg:
            from support.postgres import Postgres

            pg = Postgres()
            db = pg.database()
        if a.whatif:
            for name in a.whatif.split(","):
                if name not in WHATIFS:
                    raise SystemExit(f"--whatif: {name}? ({', '.join(WHATIFS)})")
            result["WHATIF_not_the_shipped_dashboard"] = a.whatif
        result["db"] = "postgresql" if db.startswith("postgres") else "sqlite"
        env: dict[str, str] = {}
        extra: list[str] = []
        result["group"] = a.group
        conf = [] if a.max_queued is None else [f"max_queued_messages {a.max_queued}"]
        if a.max_queued is None and not a.tls:  # the TLS broker runs the shipped configuration itself
            conf = shipped_queue_limits()
        result["broker_extra_config"] = conf
        contexts = None
        if a.tls:
            ca_pass = secrets.token_urlsafe(24)
            broker, contexts, extra, info = make_tls(workdir, a.devices, site_address(8883), ca_pass, conf)
            env["SAFESIGNAL_CA_PASS"] = ca_pass
            result["tls_setup"] = info
        else:
            broker = plain_broker(workdir, conf)
        broker.start()
        token = add_admin(db, workdir)
        if a.group:
            extra += ["--group", a.group]
        dash = Dashboard(db, broker.uri, workdir, extra, env, a.whatif)
        stream = StreamReader(dash.url, token)

        def procs() -> dict[str, list[int]]:
            d: dict[str, list[int]] = {"broker": [broker.proc.pid] if broker and broker.proc else [],
                                       "dashboard": [dash.proc.pid] if dash else [],
                                       "stream_reader": [stream.proc.pid] if stream else []}
            if pg is not None and pg.proc is not None:
                d["postgres"] = [pg.proc.pid, *children(pg.proc.pid)]
            return d

        def count_online() -> int:
            return int(query(db, workdir, "SELECT count(*) FROM devices WHERE online")[0][0])

        result.update(asyncio.run(run_fleet(a, broker, contexts, stream, procs, count_online)))
        result["broker_drop_warnings"] = broker.log().count("Outgoing messages are being dropped")
        dash.stop()
        result["dashboard_exit"] = dash.proc.returncode
        dash = None
        result.update(db_figures(db, workdir))
        # A lost alert that is in the registry after all came later than the drain (or was stored
        # but never streamed); one that is not was dropped on the way (at the broker).
        lost = set(result.pop("_lost_keys"))
        in_db = {(d, int(s)) for d, s in query(db, workdir, "SELECT device_id, seq FROM alerts")}
        result["alerts"]["lost_but_in_registry_at_end"] = len(lost & in_db)
        result["machine"]["loadavg_at_end"] = os.getloadavg()
    finally:
        if stream is not None:
            stream.stop()
        if dash is not None:
            dash.stop()
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()
        if a.keep:
            result["workdir"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
