"""The chip id on the wire (issue 12): the status (birth) message, the last will and every alert
carry the publishing chip's hardware identity (``machine.unique_id()``, the ESP32's eFuse base
MAC), the host parses it, and an outbox entry written by firmware from before the chip id still
publishes (with the chip id, added at publish).

Unit checks run the firmware modules under MicroPython and CPython; the end-to-end test runs two
virtual chips against a real mosquitto.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ssproto
import ssproto.msg as msg
from conftest import REPO, Mosquitto, SecretGuard, Sim
from safesignal.alerts.receiver import Alert, AlertReceiver, Status, event_from_message
from support.cli import run_cli

LIB = REPO / "firmware" / "esp32-button" / "lib"
MPY_TESTS = REPO / "tests" / "mpy"
MICROPYTHON = Path(sys.executable).parent / "micropython"
PFX = msg.prefix("acme", "hq", "r101", "btn-01")
CHIP = "02:11:22:33:44:55"


def test_payloads_carry_the_chip_id() -> None:
    a = msg.parse_message(PFX + "/alert", msg.alert_payload(PFX, 3, "panic", 1767225600, 5, 77, CHIP))
    assert (a["chip_id"], a["seq"], a["epoch"]) == (CHIP, 3, 77)
    s = msg.parse_message(PFX + "/status", msg.status_payload(PFX, True, "fw 1", "b00t", CHIP))
    assert (s["chip_id"], s["online"], s["firmware"]) == (CHIP, True, "fw 1")
    will = msg.parse_message(PFX + "/status", msg.status_payload(PFX, False, chip_id=CHIP))
    assert (will["chip_id"], will["online"]) == (CHIP, False)
    # Without one (firmware before the chip id): no field, still a valid message.
    assert "chip_id" not in msg.parse_message(PFX + "/alert", msg.alert_payload(PFX, 3, "panic", None, 5))
    assert "chip_id" not in msg.parse_message(PFX + "/status", msg.status_payload(PFX, True))


@pytest.mark.parametrize("bad", ["", "AA:BB:CC:DD:EE:FF", "02:11:22:33:44:5", "02-11-22-33-44-55", "0211223344556",
                                 "02:11:22:33:44:55:", "zz:11", "02:11\n", 12, None, ["02"], "0" + ":00" * 16])
def test_malformed_chip_id_is_refused(bad: object) -> None:
    d = json.loads(msg.alert_payload(PFX, 3, "panic", None, 5))
    d["chip_id"] = bad
    with pytest.raises(ssproto.ProtocolError, match="chip_id"):
        msg.parse_message(PFX + "/alert", json.dumps(d).encode())
    with pytest.raises(ssproto.ProtocolError):
        msg.alert_payload(PFX, 3, "panic", None, 5, None, bad) if bad else msg.check_chip_id(bad)


@given(st.binary(min_size=1, max_size=16))
def test_any_unique_id_round_trips(uid: bytes) -> None:
    chip = ":".join(f"{b:02x}" for b in uid)  # as ss_app._chip_id writes it
    ev = event_from_message(PFX + "/alert", msg.alert_payload(PFX, 1, "test", None, 0, 9, chip), received_at=1.0)
    assert isinstance(ev, Alert) and (ev.chip_id, ev.epoch) == (chip, 9)
    st_ = event_from_message(PFX + "/status", msg.status_payload(PFX, True, chip_id=chip), received_at=1.0)
    assert isinstance(st_, Status) and st_.chip_id == chip


def test_receiver_without_chip_id_says_none() -> None:
    ev = event_from_message(PFX + "/alert", msg.alert_payload(PFX, 1, "test", None, 0), received_at=1.0)
    assert isinstance(ev, Alert) and ev.chip_id is None and ev.epoch is None


# The outbox of firmware 0.1.0 before the chip id (commit 839a872: ss_outbox.Outbox.add of one
# panic into a blank outbox, FakeNVS.durable dumped): the firmware update must still publish it.
OLD_OUTBOX = {
    "epoch": ("i32", 11962033),
    "next": ("i32", 1),
    "q00": ("blob", "535351017b2273223a20302c202274223a202270616e6963222c20227473223a20313736373232353630302c202275"
                    "70223a2038313233342c202270223a2022736166657369676e616c2f61636d652f68712f723130312f62746e2d30"
                    "31227d55d4c506970c7ac2"),
}

FIRMWARE_CHECK = r'''
import asyncio
import binascii

from fakenvs import FakeNVS
from mpyunit import eq, run, test

import ss_mqtt
import ssproto.msg as msg
from ss_outbox import Outbox

CHIP = %(chip)r
PFX = %(pfx)r
OLD = %(old)r


def old_outbox():
    durable = {}
    for k in OLD:
        t, v = OLD[k]
        durable[k] = (t, binascii.unhexlify(v) if t == "blob" else v)
    ob = Outbox(FakeNVS(durable))
    ob.load()
    return ob


@test
def test_old_entry_publishes_with_the_chip_id():
    ob = old_outbox()
    eq(ob.pending, [0])
    topic, payload = ob.entry(0, CHIP)
    d = msg.parse_message(topic, payload)
    eq((d["chip_id"], d["seq"], d["epoch"], d["type"], d["uptime_ms"], d["room"]),
       (CHIP, 0, 11962033, "panic", 81234, "r101"))
    eq("chip_id" in msg.parse_message(*ob.entry(0)), False, "no chip id given: none sent")


class Pipe:
    def __init__(self):
        self.closed = False

    async def readexactly(self, n):
        while not self.closed:
            await asyncio.sleep(0)
        raise EOFError


class Sink:
    def __init__(self):
        self.data = b""

    def write(self, b):
        self.data += b

    async def drain(self):
        pass

    def close(self):
        pass

    async def wait_closed(self):
        pass


def publishes(data):
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
        body = data[j:j + n]
        if h & 0xF0 == 0x30:
            tl = body[0] << 8 | body[1]
            out.append((body[2:2 + tl].decode(), body[4 + tl:]))
        i = j + n
    return out


@test
def test_session_sends_the_chip_id_in_will_status_and_alerts():
    ob = old_outbox()
    ob.add(PFX, "test", None, 7)  # one written by this firmware
    m = ss_mqtt.Mqtt("btn-01", "mqtt://broker.local", PFX, ob, "fw", "b00t", None, CHIP)
    ss_mqtt.print = lambda *a: None
    seen = {}
    reader, sink = Pipe(), Sink()

    async def fake_open(host, port, will):
        seen["will"] = will
        return reader, sink

    m._open = fake_open

    async def go():
        t = asyncio.create_task(m._session("broker.local", 1883, None))
        for _ in range(50):
            await asyncio.sleep(0)
        reader.closed = True
        try:
            await t
        except Exception:
            pass

    asyncio.run(go())
    topic, payload, qos, retain = seen["will"]
    w = msg.parse_message(topic, payload)
    eq((w["online"], w["chip_id"]), (False, CHIP), "the last will")
    pubs = [msg.parse_message(t, p) for t, p in publishes(sink.data)]
    eq([(d["kind"], d.get("seq"), d["chip_id"]) for d in pubs],
       [("status", None, CHIP), ("alert", 0, CHIP), ("alert", 1, CHIP)])
    eq(pubs[0]["online"], True)


run()
'''


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_firmware_sends_the_chip_id_and_publishes_old_outbox_entries(runtime: str, tmp_path: Path) -> None:
    script = tmp_path / "check_chip_id.py"
    script.write_text(FIRMWARE_CHECK % {"chip": CHIP, "pfx": PFX, "old": OLD_OUTBOX})
    if runtime == "micropython":
        argv = [str(MICROPYTHON), "-X", "heapsize=256k", str(script)]
        env = {"MICROPYPATH": f"{LIB}:{MPY_TESTS}:.frozen"}
    else:
        argv = [sys.executable, str(script)]
        env = {"PYTHONPATH": f"{LIB}{os.pathsep}{MPY_TESTS}", "PYTHONDONTWRITEBYTECODE": "1"}
    p = subprocess.run(argv, env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert p.stdout.strip().splitlines()[-1] == "2 passed, 0 failed", out


SSID = "Chip-Net"


def _provision(guard: SecretGuard, sim: Sim, device: str, pw: str) -> None:
    r = run_cli(guard, "provision", "--port", sim.port, "--wifi-ssid", SSID, "--wifi-pass", pw, "--device-id", device,
                "--tenant", "acme", "--building", "hq", "--room", "r101")
    assert r.returncode == 0, r.stderr


def test_two_virtual_chips_send_their_own_chip_ids(make_sim: Callable[..., Sim], guard: SecretGuard,
        mosquitto: Mosquitto) -> None:
    pw = guard.secret("chip-id-pw-123")
    a: Sim = make_sim(name="a", aps=[(SSID, pw)], hosts=mosquitto.hosts, mac="02:11:22:33:44:55")
    b: Sim = make_sim(name="b", aps=[(SSID, pw)], hosts=mosquitto.hosts)  # the default: from its flash path
    chip_b = b.ready_line.split("mac=")[1].split()[0].lower()
    assert chip_b != CHIP
    with AlertReceiver(mosquitto.uri, msg.subscription("acme")) as rx:
        _provision(guard, a, "btn-a", pw)
        _provision(guard, b, "btn-b", pw)
        for dev in ("btn-a", "btn-b"):
            assert rx.wait_alert(dev, type="test", timeout=30) is not None, dev
        assert rx.wait_for(lambda r: {"btn-a", "btn-b"} <= set(r.status), 20)
        a.control.press(150)
        assert rx.wait_alert("btn-a", type="panic", timeout=30) is not None
        alerts, status, invalid = rx.snapshot()
        assert {(x.device, x.type, x.chip_id) for x in alerts} == {
            ("btn-a", "test", CHIP), ("btn-b", "test", chip_b), ("btn-a", "panic", CHIP)}
        assert (status["btn-a"].online, status["btn-a"].chip_id) == (True, CHIP)
        assert (status["btn-b"].online, status["btn-b"].chip_id) == (True, chip_b)
        assert invalid == 0
        # The host tools read the same id from the console (provision_status: chip_id).
        for sim, chip in ((a, CHIP), (b, chip_b)):
            st_ = json.loads(run_cli(guard, "status", "--port", sim.port, "--json").stdout)
            assert st_["chip_id"] == chip
        # The last will (offline) names the chip too.
        a.control.power_cut()
        deadline = time.monotonic() + 20
        assert rx.wait_for(lambda r: not r.status["btn-a"].online, max(0.0, deadline - time.monotonic()))
        assert rx.status["btn-a"].chip_id == CHIP
