"""`safesignal monitor` flags anomalies (issue 12): a real virtual device on a real mosquitto, a
clone publishing under its device id from another chip, and a publisher using its id (and chip
id) under another room.  Every alert is still shown; only the flags differ.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import ssproto.msg as msg
from conftest import Mosquitto, SecretGuard, Sim
from safesignal.alerts.monitor import AnomalyWatch, format_event, json_event, summary_lines
from safesignal.alerts.receiver import event_from_message
from support.cli import run_cli
from support.lines import Lines

SSID = "Anomaly-Net"
CHIP = "02:aa:bb:cc:dd:01"
CLONE = "02:aa:bb:cc:dd:99"
DEV = "btn-01"


def publish(uri_host: str, port: int, topic: str, payload: bytes) -> None:
    """One QoS 1 alert from a client that is not the device (what an impostor on the wire does)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="impostor", protocol=mqtt.MQTTv311)
    c.connect(uri_host, port)
    c.loop_start()
    try:
        c.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def test_monitor_flags_a_cloned_device_id(make_sim: Callable[..., Sim], guard: SecretGuard,
        mosquitto: Mosquitto) -> None:
    pw = guard.secret("anomaly-pw-1234")
    sim: Sim = make_sim(aps=[(SSID, pw)], hosts=mosquitto.hosts, mac=CHIP)
    base = [sys.executable, "-m", "safesignal", "monitor", "--broker", mosquitto.uri, "--tenant", "acme",
            "--duration", "90"]
    mon = subprocess.Popen([*base, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    table = subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jl, tl = Lines(mon), Lines(table)

    def alerts() -> list[dict[str, Any]]:
        return [e for e in map(json.loads, list(jl.lines)) if e["event"] == "alert"]

    try:
        deadline = time.monotonic() + 15
        while mosquitto.log().count("Received SUBSCRIBE") < 2:  # both monitors are listening
            assert time.monotonic() < deadline, mosquitto.log()[-2000:]
            time.sleep(0.05)
        r = run_cli(guard, "provision", "--port", sim.port, "--wifi-ssid", SSID, "--wifi-pass", pw, "--device-id", DEV,
                    "--tenant", "acme", "--building", "hq", "--room", "r101")
        assert r.returncode == 0, r.stderr
        assert jl.wait(lambda ls: len(alerts()) >= 1), jl.lines
        genuine = alerts()[0]
        assert (genuine["type"], genuine["chip_id"], genuine["anomalies"]) == ("test", CHIP, [])
        # The clone: the same device id, in the same room, from another chip (its own outbox: its
        # own epoch).
        pfx = msg.prefix("acme", "hq", "r101", DEV)
        publish(mosquitto.host, mosquitto.port, pfx + "/alert",
                msg.alert_payload(pfx, 1, "panic", int(time.time()), 5, genuine["epoch"] ^ 1, CLONE))
        assert jl.wait(lambda ls: len(alerts()) >= 2), jl.lines
        # A stolen certificate's holder (or anyone on plain MQTT) under another room, with the
        # genuine chip id and epoch copied from the wire.
        other = msg.prefix("acme", "hq", "r102", DEV)
        publish(mosquitto.host, mosquitto.port, other + "/alert",
                msg.alert_payload(other, genuine["seq"] + 1, "panic", int(time.time()), 5, genuine["epoch"], CHIP))
        assert jl.wait(lambda ls: len(alerts()) >= 3), jl.lines
        assert tl.wait(lambda ls: sum(" PANIC " in x for x in ls) >= 2), tl.lines
    finally:
        mon.terminate()
        table.send_signal(signal.SIGINT)  # Ctrl-C: the table ends with its summary
    out, errs = jl.finish()
    table_text, terrs = tl.finish()
    guard.output("monitor json", out + errs)
    guard.output("monitor table", table_text + terrs)
    evs = alerts()
    assert [(e["chip_id"], e["room"]) for e in evs] == [(CHIP, "r101"), (CLONE, "r101"), (CHIP, "r102")]
    kinds = [[f.split(":")[0] for f in e["anomalies"]] for e in evs]
    assert kinds == [[], ["chip-mismatch", "epoch-change"], ["chip-mismatch", "location-mismatch", "epoch-change"]]
    assert CLONE in evs[1]["anomalies"][0] and CHIP in evs[1]["anomalies"][0]
    assert all(not e["duplicate"] for e in evs)  # nothing dropped, nothing taken for a repeat
    clone_line = next(x for x in table_text.splitlines() if " PANIC " in x and "chip-mismatch" in x)
    assert DEV in clone_line and "!! chip-mismatch" in clone_line
    assert any("flagged: chip-mismatch ×2" in x for x in table_text.splitlines()), table_text


def test_watch_places_a_device_where_it_is_first_seen_live() -> None:
    """A retained status may be stale (a moved device's old room keeps its retained status):
    only live messages place a device."""
    def ev(room: str, payload: bytes, kind: str, retained: bool = False) -> Any:
        return event_from_message(msg.prefix("acme", "hq", room, DEV) + "/" + kind, payload, received_at=1.0,
                                  retained=retained)

    old, new = msg.prefix("acme", "hq", "r101", DEV), msg.prefix("acme", "hq", "r202", DEV)
    w = AnomalyWatch()
    assert w.check(ev("r101", msg.status_payload(old, False, chip_id=CHIP), "status", retained=True)) is None
    assert w.check(ev("r202", msg.status_payload(new, True, chip_id=CHIP), "status")) is None
    a = ev("r202", msg.alert_payload(new, 4, "panic", None, 1, 7, CHIP), "alert")
    assert w.check(a) == []  # never "unprovisioned": the monitor cannot know
    moved = ev("r101", msg.alert_payload(old, 5, "panic", None, 1, 7, CHIP), "alert")
    flags = w.check(moved)
    assert flags is not None and [f.split(":")[0] for f in flags] == ["location-mismatch"]
    assert format_event(moved, False, flags).endswith("!! " + flags[0])
    assert json.loads(json_event(moved, False, flags))["anomalies"] == flags
    assert "anomalies" not in json.loads(json_event(moved))
    assert "flagged: location-mismatch ×1" in summary_lines([a, moved], {}, 0, w.flagged)[1]
