"""AlertReceiver and `safesignal monitor` against a real mosquitto, fed by a plain paho client
playing the devices."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import ssproto
from conftest import Mosquitto, free_port, need
from safesignal.alerts.monitor import format_event, format_header, json_event, run_monitor, summary_lines
from safesignal.alerts.mosquitto import Mosquitto as RealMosquitto
from safesignal.alerts.mosquitto import find_mosquitto
from safesignal.alerts.receiver import Alert, AlertReceiver, BrokerError, Event, Status
from safesignal.errors import SafeSignalError, UsageError
from ssproto import msg

DEV1 = msg.prefix("acme", "hq", "r101", "btn-1")
DEV2 = msg.prefix("acme", "hq", "r102", "btn-2")
OTHER = msg.prefix("other", "hq", "r1", "btn-9")
ACME = msg.subscription("acme")


def topic(pfx: str, kind: str) -> str:
    return f"{pfx}/{kind}"


class Publisher:
    """Plays devices: publishes QoS 1 and waits for the broker's PUBACK."""

    def __init__(self, uri: str) -> None:
        _, host, port = ssproto.parse_mqtt_uri(uri)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        ready = threading.Event()
        self.client.on_connect = lambda *a: ready.set()
        self.client.connect(host, port)
        self.client.loop_start()
        assert ready.wait(5), "publisher could not connect"

    def send(self, t: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(t, payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published()

    def alert(self, pfx: str, seq: int, kind: str = "panic", ts: float | None = None, uptime_ms: int = 1234,
              epoch: int | None = 42) -> None:
        self.send(topic(pfx, msg.ALERT), msg.alert_payload(pfx, seq, kind, ts, uptime_ms, epoch))

    def status(self, pfx: str, online: bool, retain: bool = True, firmware: str = "", boot_id: str = "") -> None:
        self.send(topic(pfx, msg.STATUS), msg.status_payload(pfx, online, firmware, boot_id), retain=retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def pub(mosquitto: Mosquitto) -> Iterator[Publisher]:
    p = Publisher(mosquitto.uri)
    yield p
    p.close()


@pytest.fixture
def receiver(mosquitto: Mosquitto) -> Iterator[Callable[..., AlertReceiver]]:
    made: list[AlertReceiver] = []

    def make(topic_filter: str = ACME, **kw: object) -> AlertReceiver:
        r = AlertReceiver(mosquitto.uri, topic_filter, **kw)  # type: ignore[arg-type]
        made.append(r)
        r.start(timeout=5)
        return r

    yield make
    for r in made:
        r.stop()


# --- AlertReceiver --------------------------------------------------------------------------
def test_alerts_and_retained_status(pub: Publisher, receiver: Callable[..., AlertReceiver]) -> None:
    pub.status(DEV1, True, firmware="1.2.0", boot_id="0badcafe")  # retained, before we subscribe
    events: list[Event] = []
    rx = receiver(on_event=events.append)
    assert rx.connected
    assert rx.wait_for(lambda r: "btn-1" in r.status, 5)
    st = rx.status["btn-1"]
    assert (st.tenant, st.building, st.room, st.device) == ("acme", "hq", "r101", "btn-1")
    assert st.online and st.retained and st.firmware == "1.2.0" and st.boot_id == "0badcafe"

    sent = time.time()
    pub.alert(DEV1, 1, "panic", ts=sent, uptime_ms=5000)
    pub.alert(DEV1, 2, "test", ts=None)
    a = rx.wait_alert("btn-1", type="test", timeout=5)
    assert a is not None and a.seq == 2 and a.ts is None and a.latency is None and not a.dup and not a.retained
    first = rx.wait_alert("btn-1", timeout=0)
    assert first is not None
    assert (first.seq, first.type, first.uptime_ms, first.room) == (1, "panic", 5000, "r101")
    assert first.ts == pytest.approx(sent) and first.received_at >= sent
    assert first.raw["v"] == msg.MSG_VERSION
    assert rx.wait_alert("btn-1", min_seq=2, timeout=0) is a
    assert rx.wait_alert("btn-1", after=a.received_at + 1, timeout=0) is None
    assert rx.seqs("btn-1") == {1, 2}
    assert rx.missing("btn-1", range(1, 5)) == [3, 4]

    pub.status(DEV1, False)  # delivered live: not flagged retained
    assert rx.wait_for(lambda r: not r.status["btn-1"].online, 5)
    assert rx.status["btn-1"].retained is False
    assert [type(e).__name__ for e in events] == ["Status", "Alert", "Alert", "Status"]
    assert rx.invalid == 0 and rx.duplicates == 0


def test_last_will_reports_offline(mosquitto: Mosquitto, receiver: Callable[..., AlertReceiver]) -> None:
    rx = receiver()
    dev = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    dev.will_set(topic(DEV2, msg.STATUS), msg.status_payload(DEV2, False), qos=1, retain=True)
    up = threading.Event()
    dev.on_connect = lambda *a: up.set()
    dev.connect(mosquitto.host, mosquitto.port)
    dev.loop_start()
    assert up.wait(5)
    dev.publish(topic(DEV2, msg.STATUS), msg.status_payload(DEV2, True), qos=1, retain=True).wait_for_publish(5)
    assert rx.wait_for(lambda r: "btn-2" in r.status and r.status["btn-2"].online, 5)
    dev.loop_stop()
    sock = dev.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)  # the device vanishes without DISCONNECT: the broker sends its will
    sock.close()
    assert rx.wait_for(lambda r: not r.status["btn-2"].online, 5)


def test_duplicates(pub: Publisher, receiver: Callable[..., AlertReceiver]) -> None:
    rx = receiver()
    pub.alert(DEV1, 7)
    pub.alert(DEV1, 7)  # a QoS 1 redelivery / republish after a lost PUBACK
    pub.alert(DEV2, 7)  # same seq, other device: not a duplicate
    assert rx.wait_for(lambda r: len(r.alerts) == 3, 5)
    assert [a.dup for a in rx.alerts] == [False, True, False]
    assert rx.duplicates == 1
    assert [(a.device, a.seq) for a in rx.unique_alerts()] == [("btn-1", 7), ("btn-2", 7)]
    assert rx.seqs("btn-1") == {7} and rx.missing("btn-1", [7]) == []
    # The same device after its flash was erased: a new epoch, seq from 0 again: new alerts.
    pub.alert(DEV1, 7, epoch=43)
    assert rx.wait_for(lambda r: len(r.alerts) == 4, 5)
    assert rx.alerts[-1].dup is False and rx.duplicates == 1


def test_malformed_messages_are_counted(pub: Publisher, receiver: Callable[..., AlertReceiver],
                                        caplog: pytest.LogCaptureFixture) -> None:
    rx = receiver()
    secretish = b"not json: hunter2"
    pub.send(topic(DEV1, msg.ALERT), secretish)
    pub.send(topic(DEV1, msg.ALERT), msg.alert_payload(DEV2, 1, "panic", None, 0))  # identity != topic
    pub.send(topic(DEV1, msg.STATUS), b'{"tenant": "acme"}')
    pub.send(topic(DEV1, msg.ALERT), b"\xff\xfe")  # not UTF-8
    pub.alert(DEV1, 1)
    assert rx.wait_for(lambda r: len(r.alerts) == 1, 5)
    assert rx.invalid == 4
    pub.alert(DEV1, 2)  # the network thread is still alive
    assert rx.wait_alert("btn-1", min_seq=2, timeout=5) is not None
    assert rx.connected and len(rx.alerts) == 2 and rx.status == {}
    assert "malformed" in caplog.text and "hunter2" not in caplog.text


def test_wait_alert_times_out(receiver: Callable[..., AlertReceiver]) -> None:
    rx = receiver()
    t0 = time.monotonic()
    assert rx.wait_alert("btn-1", timeout=0.3) is None
    assert 0.25 <= time.monotonic() - t0 < 2
    assert rx.wait_for(lambda r: len(r.alerts) > 0, 0.1) is False


def test_unreachable_broker_is_a_clear_error() -> None:
    port = free_port()
    t0 = time.monotonic()
    rx = AlertReceiver(f"mqtt://127.0.0.1:{port}", ACME)
    with pytest.raises(BrokerError) as ei:
        rx.start(timeout=3)
    assert time.monotonic() - t0 < 3
    assert isinstance(ei.value, SafeSignalError) and isinstance(ei.value, OSError)
    assert f"127.0.0.1:{port}" in str(ei.value)
    assert ei.value.exit_code not in (0, 1, 2, 3, 4, 5, 6, 130)
    rx.stop()  # harmless after a failed start
    with pytest.raises(BrokerError):
        run_monitor(f"mqtt://127.0.0.1:{port}", tenant="acme", json_lines=True, out=io.StringIO())


def test_bad_arguments() -> None:
    with pytest.raises(UsageError):
        AlertReceiver("http://example.com", ACME)
    with pytest.raises(UsageError):
        AlertReceiver("mqtt://127.0.0.1:1883", ACME, persistent=True)
    with pytest.raises(UsageError):
        run_monitor("mqtt://127.0.0.1:1883", tenant="a/#", json_lines=True, out=io.StringIO())


def test_context_manager(mosquitto: Mosquitto, pub: Publisher) -> None:
    with AlertReceiver(mosquitto.uri, ACME) as rx:
        assert rx.connected
        pub.alert(DEV1, 3)
        assert rx.wait_alert("btn-1", timeout=5) is not None
    assert not rx.connected


class Broker(RealMosquitto):
    """A mosquitto with persistence on, stopped and started again by the test itself."""

    def __init__(self, tmp: Path) -> None:
        if find_mosquitto() is None:
            need("mosquitto", "apt-get install mosquitto")
        super().__init__(tmp / "persist-broker")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def test_persistent_receiver_survives_broker_restart(broker: Broker) -> None:
    cid = f"ss-test-{uuid.uuid4().hex[:8]}"
    rx = AlertReceiver(broker.uri, ACME, client_id=cid, persistent=True)
    rx.start(timeout=5)
    try:
        broker.stop()
        assert rx.wait_for(lambda r: not r.connected, 5)
        broker.start()
        pub = Publisher(broker.uri)
        try:
            pub.alert(DEV1, 1)
            a = rx.wait_alert("btn-1", timeout=5)
            assert a is not None and a.seq == 1
            assert rx.wait_for(lambda r: r.connected and r.connects >= 2, 5)

            # Offline receiver: the broker keeps its session (across a restart) and queues for it.
            rx.stop()
            broker.stop()
            broker.start()
            pub.close()
            pub = Publisher(broker.uri)
            pub.alert(DEV1, 2)
        finally:
            pub.close()
    finally:
        rx.stop()
    rx2 = AlertReceiver(broker.uri, ACME, client_id=cid, persistent=True)
    rx2.start(timeout=5)
    try:
        a2 = rx2.wait_alert("btn-1", min_seq=2, timeout=5)
        assert a2 is not None and a2.seq == 2
    finally:
        rx2.stop()


# --- monitor ------------------------------------------------------------------------------------
class Out(io.StringIO):
    """A StringIO that can be waited on while another thread writes to it."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()

    def write(self, s: str) -> int:
        with self.cond:
            n = super().write(s)
            self.cond.notify_all()
            return n

    def wait(self, pred: Callable[[str], bool], timeout: float = 5) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.getvalue()), timeout), self.getvalue()


def _monitor(uri: str, out: Out, json_lines: bool) -> tuple[threading.Thread, threading.Event, list[int]]:
    stop = threading.Event()
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(run_monitor(uri, tenant="acme", json_lines=json_lines, out=out,
                                                              stop_event=stop)))
    t.start()
    return t, stop, rc


def _feed(pub: Publisher) -> None:
    pub.alert(DEV1, 1, "panic", ts=time.time())
    pub.alert(DEV1, 2, "test")
    pub.alert(DEV1, 1, "panic")  # duplicate
    pub.alert(OTHER, 1)  # another tenant: not shown
    pub.status(DEV1, False)


def test_monitor_table(mosquitto: Mosquitto, pub: Publisher) -> None:
    pub.status(DEV1, True, firmware="1.0.0\x1b[2J", boot_id="00c0ffee")
    out = Out()
    t, stop, rc = _monitor(mosquitto.uri, out, json_lines=False)
    try:
        out.wait(lambda s: " online " in s)  # subscribed: the retained status came
        _feed(pub)
        out.wait(lambda s: "(duplicate)" in s and " offline" in s and "TEST" in s)
    finally:
        stop.set()
        t.join(5)
    assert rc == [0]
    lines = out.getvalue().splitlines()
    assert lines[0] == format_header() and lines[0].split() == ["TIME", "DEVICE", "TENANT/BUILDING/ROOM", "EVENT",
                                                                "SEQ", "DETAIL"]
    online, panic, test, dup, offline = lines[1:6]
    assert "btn-1" in online and "acme/hq/r101" in online and "firmware 1.0.0?[2J" in online
    assert "(last known)" in online and "\x1b" not in out.getvalue()
    assert panic.split()[3:5] == ["PANIC", "1"] and "delay" in panic and "(duplicate)" not in panic
    assert test.split()[3:5] == ["TEST", "2"] and "device clock not set" in test
    assert dup.split()[3:5] == ["PANIC", "1"] and dup.endswith("(duplicate)")
    assert offline.split()[3] == "offline" and "(last known)" not in offline
    # columns line up: EVENT starts at the same offset everywhere
    col = lines[0].index("EVENT")
    assert all(line[col:].split()[0] in ("PANIC", "TEST", "online", "offline") for line in lines[1:6])
    summary = lines[6:]
    assert summary[0] == "summary: 1 device"
    assert "btn-1" in summary[1] and "offline" in summary[1] and "2 alerts (+1 duplicate), last seq 2" in summary[1]
    assert "btn-9" not in out.getvalue() and "other/" not in out.getvalue()


def test_monitor_json(mosquitto: Mosquitto, pub: Publisher) -> None:
    pub.status(DEV1, True, firmware="1.0.0")
    out = Out()
    t, stop, rc = _monitor(mosquitto.uri, out, json_lines=True)
    try:
        out.wait(lambda s: s.count("\n") >= 1)
        _feed(pub)
        out.wait(lambda s: s.count("\n") >= 5)
    finally:
        stop.set()
        t.join(5)
    assert rc == [0]
    text = out.getvalue()
    assert text.endswith("\n")
    objs = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object: no header/summary
    assert [(o["event"], o.get("seq"), o.get("duplicate"), o.get("online")) for o in objs] == [
        ("status", None, None, True),
        ("alert", 1, False, None),
        ("alert", 2, False, None),
        ("alert", 1, True, None),
        ("status", None, None, False),
    ]
    assert objs[0]["retained"] is True and objs[4]["retained"] is False and objs[0]["firmware"] == "1.0.0"
    a = objs[1]
    assert {k: a[k] for k in ("tenant", "building", "room", "device", "v", "type", "uptime_ms")} == {
        "tenant": "acme", "building": "hq", "room": "r101", "device": "btn-1", "v": 1, "type": "panic",
        "uptime_ms": 1234}
    assert isinstance(a["received_at"], float) and isinstance(a["ts"], float) and objs[2]["ts"] is None
    assert "kind" not in a


def test_monitor_duration_ends_by_itself(mosquitto: Mosquitto) -> None:
    out = io.StringIO()
    t0 = time.monotonic()
    assert run_monitor(mosquitto.uri, tenant="acme", building="hq", json_lines=False, out=out, duration=0.3) == 0
    assert 0.25 <= time.monotonic() - t0 < 3
    assert out.getvalue().splitlines() == [format_header(), "summary: no devices seen"]


def _alert(**kw: object) -> Alert:
    base: dict[str, object] = dict(tenant="t", building="b", room="r", device="d1", seq=4, type="panic",
                                   ts=1000.0, uptime_ms=3_723_000, received_at=1000.25)
    base.update(kw)
    a = Alert(**base)  # type: ignore[arg-type]
    raw = {"tenant": a.tenant, "building": a.building, "room": a.room, "device": a.device, "v": 1, "seq": a.seq,
           "type": a.type, "ts": a.ts, "uptime_ms": a.uptime_ms}
    return Alert(**{**base, "raw": raw})  # type: ignore[arg-type]


def test_format_functions() -> None:
    a = _alert()
    line = format_event(a)
    assert line.split()[1:5] == ["d1", "t/b/r", "PANIC", "4"]
    assert "delay 0.250s" in line and "uptime 1h02m" in line and "(duplicate)" not in line
    assert format_event(a, True).endswith("(duplicate)")
    assert format_event(_alert(dup=True)).endswith("(duplicate)")
    assert "device clock not set" in format_event(_alert(ts=None, type="test"))
    assert json.loads(json_event(a, True)) == {"event": "alert", "received_at": 1000.25, "duplicate": True,
                                                **a.raw}
    st = Status("t", "b", "r", "d1", False, None, None, 5.0, True, {"tenant": "t", "building": "b", "room": "r",
                                                                      "device": "d1", "v": 1, "online": False})
    assert format_event(st).split()[1:4] == ["d1", "t/b/r", "offline"]
    assert json.loads(json_event(st)) == {"event": "status", "received_at": 5.0, "retained": True, **st.raw}
    lines = summary_lines([a, _alert(dup=True), _alert(device="d2", seq=9)], {"d1": st}, invalid=2)
    assert lines[0] == "summary: 2 devices"
    assert lines[1].split()[:3] == ["d1", "t/b/r", "offline"] and "1 alert (+1 duplicate), last seq 4" in lines[1]
    assert lines[2].split()[:3] == ["d2", "t/b/r", "unknown"] and "1 alert, last seq 9" in lines[2]
    assert lines[3].strip() == "2 malformed messages ignored"
