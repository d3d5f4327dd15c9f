"""Issue 12: the dashboard's registry, API and ingest, through the CLI as a user runs it.

`safesignal dashboard user add` and `safesignal dashboard` run as subprocesses; the API is
called over HTTP; alerts and presence come from a real mosquitto; the database is SQLite and a
real PostgreSQL (tests/support/postgres.py, started in a temporary directory).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest

import ssproto.msg as msg
from conftest import REPO, Mosquitto, SecretGuard, need
from safesignal.alerts.anomaly import kind
from safesignal.alerts.mosquitto import Mosquitto as RealMosquitto
from safesignal.tools import stop_process
from support.cli import run_cli
from support.dashboard import Dashboard, add_user
from support.env import free_port
from support.postgres import Postgres, find_bindir, postgres_server  # noqa: F401 - the fixture

TENANT, BUILDING, ROOM = "acme", "hq", "r101"
CHIP = "aa:bb:cc:00:11:22"


def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    pg: Postgres = request.getfixturevalue("postgres_server")
    return pg.database()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def alert(broker: Mosquitto, device: str, seq: int, kind: str = "panic", *, epoch: int = 7, building: str = BUILDING,
          room: str = ROOM, chip: str | None = CHIP, copies: int = 1) -> None:
    """Publish one alert as the firmware does (QoS 1), ``copies`` times (a redelivery)."""
    pfx = msg.prefix(TENANT, building, room, device)
    d = json.loads(msg.alert_payload(pfx, seq, kind, time.time(), 1000 + seq, epoch))
    if chip is not None:
        d["chip_id"] = chip
    publish.multiple([{"topic": pfx + "/alert", "payload": json.dumps(d), "qos": 1}] * copies,
                     hostname=broker.host, port=broker.port)


def status(broker: Mosquitto, device: str, online: bool) -> None:
    pfx = msg.prefix(TENANT, BUILDING, ROOM, device)
    d = json.loads(msg.status_payload(pfx, online, "ss-fw-test", "boot1"))
    d["chip_id"] = CHIP
    publish.single(pfx + "/status", json.dumps(d), qos=1, retain=True, hostname=broker.host, port=broker.port)


def device(devices: list[dict[str, Any]], device_id: str) -> dict[str, Any] | None:
    return next((d for d in devices if d["device_id"] == device_id), None)


ROUTES = [("GET", "/api/devices"), ("GET", "/api/alerts"), ("GET", "/api/events"), ("GET", "/api/me"),
          ("POST", f"/api/devices/{TENANT}/btn-1/confirm"), ("POST", "/api/provisionings")]


# --- accounts ----------------------------------------------------------------------------------
def test_user_add_asks_for_a_password_and_stores_only_hashes(guard: SecretGuard, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'users.db'}"
    r = run_cli(guard, "dashboard", "user", "add", "nopass", "--role", "viewer", "--db", db)
    assert r.returncode == 2 and "SAFESIGNAL_USER_PASS" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(guard, "dashboard", "user", "add", "x", "--role", "superuser", "--db", db,
                env={"SAFESIGNAL_USER_PASS": "long enough pw"})
    assert r.returncode == 2 and "invalid choice" in r.stderr
    token = add_user(guard, db, "ada", "admin")
    assert token.startswith("ssd_") and len(token) > 40
    r = run_cli(guard, "dashboard", "user", "add", "ada", "--role", "viewer", "--db", db,
                env={"SAFESIGNAL_USER_PASS": "another long pw"})
    assert r.returncode == 2 and "exists already" in r.stderr
    # The default database is safesignal.db in the current directory.
    r = subprocess.run([sys.executable, "-m", "safesignal", "dashboard", "user", "add", "bob", "--role", "viewer"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL,
                       env={**os.environ, "SAFESIGNAL_USER_PASS": guard.secret("bobs-password-1")})
    assert r.returncode == 0 and (tmp_path / "safesignal.db").exists(), r.stderr
    guard.output("user add", r.stdout + r.stderr)
    import sqlite3

    with sqlite3.connect(tmp_path / "users.db") as c:
        (hashed,) = c.execute("SELECT password_hash FROM users WHERE name = 'ada'").fetchone()
        (stored,) = c.execute("SELECT token_sha256 FROM api_tokens").fetchone()
    assert hashed.startswith("$argon2id$")
    import hashlib

    assert stored == hashlib.sha256(token.encode()).hexdigest()
    # neither the passwords nor the token are anywhere in the database files (the WAL included)
    files = sorted(tmp_path.glob("*.db*"))
    assert len(files) >= 2
    guard.binaries += files
    assert all(token.encode() not in f.read_bytes() for f in files)


# --- the API over HTTP, on both databases ----------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_api_ingest_and_confirmation(backend: str, request: pytest.FixtureRequest, guard: SecretGuard,
                                     mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = database(backend, request, tmp_path)
    installer = add_user(guard, db, "ivan", "installer")
    viewer = add_user(guard, db, "vera", "viewer")
    status(mosquitto, "btn-1", True)  # retained before the dashboard starts: its last-known presence
    dash = Dashboard(guard, mosquitto.uri, db, tmp_path / "run")
    try:
        for method, path in ROUTES:
            for token in (None, "ssd_not-a-token"):
                code, body = dash.request(method, path, token, body={} if method == "POST" else None)
                assert code == 401, (method, path, token, code, body)
        assert dash.request("GET", "/", None)[0] == 401
        assert dash.get("/api/me", viewer) == {"name": "vera", "role": "viewer"}

        # presence from the retained status; a test alert delivered twice is stored once
        before = now_iso()
        alert(mosquitto, "btn-1", 0, "test", copies=2)
        # (presence is written on its own thread, ingest.PresenceWriter: it may trail the alert;
        # the firmware comes from the status message only)
        devs = dash.wait_for("/api/devices", viewer,
                             lambda ds: (d := device(ds, "btn-1")) is not None and d["last_test_alert"] is not None
                             and d["firmware"] is not None)
        d = device(devs, "btn-1")
        assert d is not None
        assert {"tenant", "building", "room", "device_id", "chip_id", "online", "last_seen", "last_test_alert",
                "confirmed", "confirmed_by", "anomalies"} <= set(d)
        assert (d["tenant"], d["building"], d["room"], d["chip_id"], d["online"], d["confirmed"], d["confirmed_by"],
                d["firmware"]) == (TENANT, BUILDING, ROOM, CHIP, True, False, None, "ss-fw-test")
        assert [kind(a) for a in d["anomalies"]] == ["unprovisioned"], d  # flagged, and still stored
        alerts = dash.get("/api/alerts?since=" + urllib.parse.quote(before), viewer)
        assert [(a["device_id"], a["epoch"], a["seq"], a["type"], a["chip_id"]) for a in alerts] == [
            ("btn-1", 7, 0, "test", CHIP)]
        assert dash.get("/api/alerts?since=" + urllib.parse.quote(
            (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()), viewer) == []
        assert dash.request("GET", "/api/alerts?since=yesterday", viewer)[0] == 400

        # confirmation: only after a test alert that arrived after the latest provisioning
        code, body = dash.request("POST", f"/api/devices/{TENANT}/btn-1/confirm", installer, {"installer": "ivan"})
        assert code == 409 and "no provisioning record" in body["reason"], body
        record = {"tenant": TENANT, "building": BUILDING, "room": ROOM, "device_id": "btn-1", "chip_id": CHIP,
                  "cert_sha256": "ab" * 32, "broker": mosquitto.uri, "time": now_iso(), "installer": "ivan"}
        assert dash.request("POST", "/api/provisionings", viewer, record)[0] == 403
        assert dash.request("POST", "/api/provisionings", installer, {**record, "tenant": "bad/tenant"})[0] == 400
        code, body = dash.request("POST", "/api/provisionings", installer, record)
        assert code == 201 and body["chip_id"] == CHIP and body["installer"] == "ivan", body
        d = device(dash.get("/api/devices", viewer), "btn-1")
        assert d is not None and d["anomalies"] == [] and d["provisioned_at"] is not None  # a new baseline
        code, body = dash.request("POST", f"/api/devices/{TENANT}/btn-1/confirm", installer, {"installer": "ivan"})
        assert code == 409 and "no test alert" in body["reason"], body  # the test alert came before it
        alert(mosquitto, "btn-1", 1, "test")
        dash.wait_for("/api/alerts?since=" + urllib.parse.quote(record["time"]), viewer, lambda a: len(a) == 1)
        code, body = dash.request("POST", f"/api/devices/{TENANT}/btn-1/confirm", viewer, {"installer": "vera"})
        assert code == 403, body
        assert dash.request("POST", f"/api/devices/{TENANT}/btn-1/confirm", installer, {})[0] == 400
        assert dash.request("POST", f"/api/devices/{TENANT}/no-such/confirm", installer, {"installer": "i"})[0] == 404
        code, body = dash.request("POST", f"/api/devices/{TENANT}/btn-1/confirm", installer, {"installer": "ivan"})
        assert code == 200 and body["confirmed_by"] == "ivan" and body["test_alert"]["seq"] == 1, body
        d = device(dash.get("/api/devices", viewer), "btn-1")
        assert d is not None and (d["confirmed"], d["confirmed_by"]) == (True, "ivan")

        # a new provisioning needs a new confirmation
        code, _ = dash.request("POST", "/api/provisionings", installer, {**record, "time": now_iso()})
        assert code == 201
        d = device(dash.get("/api/devices", viewer), "btn-1")
        assert d is not None and (d["confirmed"], d["confirmed_by"]) == (False, None)

        # anomalies: another chip under this device id, in another room; delivered all the same
        alert(mosquitto, "btn-1", 2, "panic", room="r999", chip="ee:ee:ee:ee:ee:ee")
        devs = dash.wait_for("/api/devices", viewer, lambda ds: device(ds, "btn-1")["anomalies"])  # type: ignore[index]
        d = device(devs, "btn-1")
        assert d is not None and [kind(a) for a in d["anomalies"]] == ["chip-mismatch", "location-mismatch"], d
        assert (d["building"], d["room"]) == (BUILDING, ROOM)  # the registered place stays
        stored = [a for a in dash.get("/api/alerts", viewer) if a["device_id"] == "btn-1" and a["seq"] == 2]
        assert len(stored) == 1 and stored[0]["room"] == "r999" and len(stored[0]["anomalies"]) == 2

        # presence follows the status messages (the last will says offline)
        status(mosquitto, "btn-1", False)
        dash.wait_for("/api/devices", viewer, lambda ds: device(ds, "btn-1")["online"] is False)  # type: ignore[index]

        # the live stream: a panic appears as an SSE event
        req = urllib.request.Request(dash.url + "/api/events", headers={"Authorization": f"Bearer {viewer}"})
        with urllib.request.urlopen(req, timeout=20) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.readline().startswith(b"retry:")
            alert(mosquitto, "btn-2", 5, "panic", room="r102")
            event = read_event(stream)
        assert event["event"] == "alert"
        data = json.loads(event["data"])
        assert (data["device_id"], data["room"], data["seq"], data["type"]) == ("btn-2", "r102", 5, "panic")
        assert int(event["id"]) == data["id"]
    finally:
        assert dash.stop() == 0, dash.stderr()
    assert "Traceback" not in dash.stderr(), dash.stderr()
    assert installer not in dash.stdout + dash.stderr() and viewer not in dash.stdout + dash.stderr()
    if backend == "sqlite":  # no password, no token in the database files
        files = sorted(tmp_path.glob("registry.db*"))
        guard.binaries += files
        assert all(t.encode() not in f.read_bytes() for f in files for t in (installer, viewer))


def test_live_stream_sends_each_alert_once_and_resumes_after_the_last_event_id(
        guard: SecretGuard, mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A burst on the live stream: every alert once, in id order (the stream looks again below its
    cursor for late commits and must not send what it sent); a reconnect with Last-Event-ID gets
    exactly the rest."""
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    viewer = add_user(guard, db, "vera", "viewer")
    dash = Dashboard(guard, mosquitto.uri, db, tmp_path / "d", "--instance", "s")
    n = 40
    try:
        req = urllib.request.Request(dash.url + "/api/events", headers={"Authorization": f"Bearer {viewer}"})
        with urllib.request.urlopen(req, timeout=30) as stream:
            assert stream.readline().startswith(b"retry:")
            for i in range(n):
                alert(mosquitto, f"btn-{i % 4}", i)
            events = [read_event(stream) for _ in range(n)]
            dash.wait_for("/api/alerts", viewer, lambda al: len(al) == n)
            time.sleep(1.0)  # a duplicate (the look-back sending again) would be in the stream by now
            alert(mosquitto, "btn-last", 0)
            last = json.loads(read_event(stream)["data"])
        assert last["device_id"] == "btn-last"  # nothing came between the burst and this one
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(ids) and len(set(ids)) == n
        assert sorted(json.loads(e["data"])["seq"] for e in events) == list(range(n))
        # the browser's reconnect: Last-Event-ID of the 25th event gives the 15 after it, then the last
        req = urllib.request.Request(dash.url + "/api/events", headers={"Authorization": f"Bearer {viewer}",
                                                                       "Last-Event-ID": str(ids[24])})
        with urllib.request.urlopen(req, timeout=30) as stream:
            assert stream.readline().startswith(b"retry:")
            again = [int(read_event(stream)["id"]) for _ in range(n - 25 + 1)]
        assert again == [*ids[25:], last["id"]]
    finally:
        assert dash.stop() == 0, dash.stderr()


def read_event(stream: Any) -> dict[str, str]:
    """The next SSE event (comments skipped) as its fields."""
    fields: dict[str, str] = {}
    while True:
        line = stream.readline().decode()
        assert line, "the stream ended"
        line = line.rstrip("\n")
        if not line:
            if fields:
                return fields
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(": ")
        fields[key] = value


# --- browser session and CSRF --------------------------------------------------------------------------
def test_pages_need_a_session_and_forms_a_csrf_token(guard: SecretGuard, mosquitto: Mosquitto,
                                                    tmp_path: Path) -> None:
    import http.cookiejar
    import re

    db = f"sqlite:///{tmp_path / 'registry.db'}"
    installer = add_user(guard, db, "ivan", "installer")
    pw = guard.secrets[-1]  # the password add_user registered
    dash = Dashboard(guard, mosquitto.uri, db, tmp_path / "run")
    try:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        def post(path: str, form: dict[str, str]) -> tuple[int, str]:
            req = urllib.request.Request(dash.url + path, data=urllib.parse.urlencode(form).encode(), method="POST")
            try:
                with opener.open(req, timeout=30) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        def csrf_of(page: str) -> str:
            m = re.search(r'name="csrf" value="([^"]+)"', page)
            assert m is not None, page
            return m.group(1)

        with opener.open(dash.url + "/login", timeout=30) as r:
            page = r.read().decode()
        code, page = post("/login", {"name": "ivan", "password": pw})
        assert code == 403 and "Sign in" in page  # no CSRF value: refused (a new form comes back)
        code, page = post("/login", {"name": "ivan", "password": pw, "csrf": "forged"})
        assert code == 403
        code, page = post("/login", {"name": "ivan", "password": "wrong password", "csrf": csrf_of(page)})
        assert code == 401 and "Wrong name or password" in page
        code, page = post("/login", {"name": "ivan", "password": pw, "csrf": csrf_of(page)})
        assert code == 200 and "No devices yet" in page, page  # redirected to the device list
        record = {"tenant": TENANT, "building": BUILDING, "room": ROOM, "device_id": "btn-9", "chip_id": CHIP,
                  "time": now_iso()}
        assert dash.request("POST", "/api/provisionings", installer, record)[0] == 201
        alert(mosquitto, "btn-9", 0, "test")
        dash.wait_for("/api/alerts", installer, lambda a: len(a) == 1)
        with opener.open(dash.url + "/", timeout=30) as r:
            page = r.read().decode()
        assert "btn-9" in page and "Confirm" in page
        form_csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert form_csrf is not None
        # the session cookie alone does not confirm: the form's CSRF token is needed
        assert post(f"/devices/{TENANT}/btn-9/confirm", {"installer": "ivan"})[0] == 403
        # nor does an API call made with the cookie but without X-CSRF-Token
        req = urllib.request.Request(dash.url + f"/api/devices/{TENANT}/btn-9/confirm", data=b'{"installer":"x"}',
                                     method="POST")
        try:
            opener.open(req, timeout=30)
            raise AssertionError("confirmed without a CSRF token")
        except urllib.error.HTTPError as e:
            assert e.code == 403
        code, page = post(f"/devices/{TENANT}/btn-9/confirm", {"installer": "ivan", "csrf": form_csrf.group(1)})
        assert code == 200 and "btn-9 confirmed by ivan" in page and "✓ confirmed by ivan" in page, page
        d = device(dash.get("/api/devices", installer), "btn-9")
        assert d is not None and d["confirmed"] and d["confirmed_by"] == "ivan"
        # signing out ends the session, and the live stream it had open
        stream = opener.open(dash.url + "/api/events", timeout=30)
        assert stream.readline().startswith(b"retry:")
        assert post("/logout", {"csrf": form_csrf.group(1)})[0] == 200
        rest = stream.read()  # returns when the dashboard ends the stream (within RECHECK, 5 s)
        stream.close()
        assert b"event:" not in rest, rest
        try:
            opener.open(dash.url + "/", timeout=30)
            raise AssertionError("the page was served after signing out")
        except urllib.error.HTTPError as e:
            assert e.code == 401
    finally:
        assert dash.stop() == 0, dash.stderr()


# --- scale out: two instances, one broker, one PostgreSQL ---------------------------------------------------
def test_two_instances_split_the_alerts_and_store_each_once(request: pytest.FixtureRequest, guard: SecretGuard,
                                                           mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = database("postgresql", request, tmp_path)
    viewer = add_user(guard, db, "vera", "viewer")
    a = Dashboard(guard, mosquitto.uri, db, tmp_path / "a", "--instance", "a", "--group", "dash")
    try:
        b = Dashboard(guard, mosquitto.uri, db, tmp_path / "b", "--instance", "b", "--group", "dash")
    except BaseException:
        a.stop()
        raise
    devices, per_device = 6, 20
    try:
        for n in range(per_device):
            for i in range(devices):
                alert(mosquitto, f"btn-{i}", n, "panic", copies=2 if n % 5 == 0 else 1)
        got = a.wait_for("/api/alerts", viewer, lambda al: len(al) >= devices * per_device, timeout=60)
        time.sleep(1.0)  # anything written twice would show up by now
        got = b.get("/api/alerts", viewer)
    finally:
        codes = (a.stop(), b.stop())
    assert codes == (0, 0), a.stderr() + b.stderr()
    keys = [(x["device_id"], x["epoch"], x["seq"]) for x in got]
    assert len(keys) == len(set(keys)) == devices * per_device
    assert set(keys) == {(f"btn-{i}", 7, n) for i in range(devices) for n in range(per_device)}
    stored = [_stored(d) for d in (a, b)]
    # each alert was written by exactly one instance, and the broker gave both instances a share
    assert sum(s for s, _ in stored) == devices * per_device, stored
    assert all(s > 0 for s, _ in stored), stored
    # each message went to one instance only: the only duplicates are the copies published twice
    # (an ordinary subscription would give every alert to both, and one of them a duplicate each)
    assert sum(d for _, d in stored) == devices * len(range(0, per_device, 5)), stored


def test_a_burst_of_presence_ends_in_each_devices_latest_state(guard: SecretGuard, mosquitto: Mosquitto,
                                                                 tmp_path: Path) -> None:
    """After a broker restart every device sends its birth at once.  The ingest notes presence
    and writes it on a thread of its own, the latest message of each device winning: a burst of
    300 devices, a third of which go offline and back and the last third offline, ends with each
    device in its latest state, and an alert in the middle of the burst is stored."""
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    viewer = add_user(guard, db, "vera", "viewer")
    dash = Dashboard(guard, mosquitto.uri, db, tmp_path / "d", "--instance", "p")
    n = 300

    def payload(i: int, online: bool) -> dict[str, Any]:
        pfx = msg.prefix(TENANT, BUILDING, ROOM, f"p-{i}")
        d = json.loads(msg.status_payload(pfx, online, "ss-fw-test", f"boot{i}"))
        d["chip_id"] = CHIP
        return {"topic": pfx + "/status", "payload": json.dumps(d), "qos": 1, "retain": True}

    try:
        burst = [payload(i, True) for i in range(n)]
        burst += [payload(i, False) for i in range(n // 3, n)]
        burst += [payload(i, True) for i in range(n // 3, 2 * n // 3)]
        publish.multiple(burst[:n], hostname=mosquitto.host, port=mosquitto.port)
        alert(mosquitto, "p-0", 1)
        publish.multiple(burst[n:], hostname=mosquitto.host, port=mosquitto.port)
        want = {f"p-{i}": i < 2 * n // 3 for i in range(n)}

        def settled(devs: list[dict[str, Any]]) -> bool:
            return {d["device_id"]: d["online"] for d in devs} == want

        devs = dash.wait_for("/api/devices", viewer, settled, timeout=60)
        assert all(d["firmware"] == "ss-fw-test" for d in devs)
        assert [(a["device_id"], a["seq"]) for a in dash.get("/api/alerts", viewer)] == [("p-0", 1)]
    finally:
        assert dash.stop(signal.SIGINT) == 0, dash.stderr()  # Ctrl-C, as the ready line offers
    assert "Traceback" not in dash.stderr() and "Interrupted" not in dash.stderr(), dash.stderr()
    assert "Dashboard stopped: this instance stored 1 alert(s)" in dash.stderr(), dash.stderr()


def test_while_the_database_is_down_alerts_wait_at_the_broker(guard: SecretGuard, mosquitto: Mosquitto,
                                                                tmp_path: Path) -> None:
    """PostgreSQL stops under a running dashboard: the ingest keeps the alert unacknowledged and
    retries, so the broker keeps it and those behind it; presence waits in the presence thread.
    When the database is back everything is stored, once."""
    pg = Postgres()  # a cluster of its own: this test stops it
    try:
        db = pg.database()
        viewer = add_user(guard, db, "vera", "viewer")
        dash = Dashboard(guard, mosquitto.uri, db, tmp_path / "d", "--instance", "down")
        try:
            alert(mosquitto, "btn-1", 1)
            dash.wait_for("/api/alerts", viewer, lambda al: len(al) == 1)
            pg.halt()
            for n in (2, 3, 4):
                alert(mosquitto, "btn-1", n)
            status(mosquitto, "btn-7", True)
            deadline = time.monotonic() + 30
            while "cannot write to the database" not in dash.stderr():
                assert time.monotonic() < deadline and dash.proc.poll() is None, dash.stderr()
                time.sleep(0.2)
            pg.resume()
            got = dash.wait_for("/api/alerts", viewer, lambda al: len(al) >= 4, timeout=60)
            assert sorted(a["seq"] for a in got) == [1, 2, 3, 4]
            dash.wait_for("/api/devices", viewer, lambda ds: (device(ds, "btn-7") or {}).get("online") is True)
        finally:
            assert dash.stop() == 0, dash.stderr()
        assert "Traceback" not in dash.stderr(), dash.stderr()
    finally:
        pg.stop()


# --- a broker restart -----------------------------------------------------------------------------------------
def test_a_broker_restart_loses_no_alert(guard: SecretGuard, mosquitto: Mosquitto, tmp_path: Path) -> None:
    """One instance (no --group) takes alerts through a durable subscription: the broker saves it
    with the session and queues what arrives before the dashboard is back.  On a real restart
    the devices and the dashboard race to reconnect; here the alerts are published to the
    restarted broker (same persistence) on a port the dashboard does not know, so they always
    arrive first.  Through the shared subscription this loses them: mosquitto 2.0 does not
    save shared subscriptions (see safesignal/dashboard/ingest.py)."""
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    viewer = add_user(guard, db, "vera", "viewer")
    dash = Dashboard(guard, mosquitto.uri, db, tmp_path / "d", "--instance", "solo")
    try:
        alert(mosquitto, "btn-1", 1)
        dash.wait_for("/api/alerts", viewer, lambda al: len(al) == 1, timeout=30)
        mosquitto.stop()  # SIGTERM: it saves the sessions, their subscriptions and queues
        port = free_port()
        conf = mosquitto.dir / "elsewhere.conf"
        conf.write_text(mosquitto.conf.read_text().replace(f"listener {mosquitto.port} ", f"listener {port} "))
        elsewhere = RealMosquitto(mosquitto.dir, mosquitto.host, port, config=conf, log_path=mosquitto.log_path)
        elsewhere.start()
        try:
            alert(elsewhere, "btn-1", 2)
            alert(elsewhere, "btn-2", 1, kind="test")
        finally:
            elsewhere.stop()
        mosquitto.start()
        got = dash.wait_for("/api/alerts", viewer, lambda al: len(al) == 3, timeout=60)
        assert sorted((a["device_id"], a["seq"]) for a in got) == [("btn-1", 1), ("btn-1", 2), ("btn-2", 1)]
        # the broker kept the session and its subscriptions, so the dashboard did not subscribe
        # again (which would have the broker replay every retained status)
        subscribes = mosquitto.log_path.read_text().count("Received SUBSCRIBE from ssdash-solo")
        assert subscribes == 1, mosquitto.log_path.read_text()[-3000:]
    finally:
        assert dash.stop() == 0, dash.stderr()


def _stored(d: Dashboard) -> tuple[int, int]:
    import re

    m = re.search(r"this instance stored (\d+) alert\(s\) \((\d+) duplicate", d.stderr())
    assert m is not None, d.stderr()
    return int(m.group(1)), int(m.group(2))


# --- the schema ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_build_the_models_schema(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from safesignal.dashboard import db as dbm

    url = database(backend, request, tmp_path)
    engine = dbm.make_engine(url)
    try:
        dbm.migrate(engine)
        dbm.migrate(engine)  # a second start changes nothing
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn)
            assert ctx.get_current_revision() == dbm.head_revision()
            assert compare_metadata(ctx, dbm.Base.metadata) == []
    finally:
        engine.dispose()


# --- PostgreSQL ends with the test process ------------------------------------------------------------------
CHILD = """
import sys, time
sys.path[:0] = [{tests!r}]
from support.postgres import Postgres
pg = Postgres()
print(pg.proc.pid, pg.dir, flush=True)
time.sleep(600)
"""


def test_postgres_ends_with_a_killed_test_process() -> None:
    if find_bindir() is None:
        need("PostgreSQL", "apt-get install postgresql")
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(REPO / "tests"))],
                             stdout=subprocess.PIPE, cwd=REPO)
    pid = 0
    pgdir = None
    try:
        assert child.stdout is not None
        pid_text, where = child.stdout.readline().decode().split()
        pid, pgdir = int(pid_text), Path(where)
        assert _alive(pid)
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the postmaster outlived the test process"
    finally:
        stop_process(child, 5, signal.SIGKILL)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        if pgdir is not None:
            shutil.rmtree(pgdir, ignore_errors=True)  # the killed process could not remove it


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


# --- mutual TLS ---------------------------------------------------------------------------------------------
def test_ingest_over_mutual_tls_with_an_operator_certificate(guard: SecretGuard, tmp_path: Path) -> None:
    from tlsutil import running_site

    db = f"sqlite:///{tmp_path / 'registry.db'}"
    viewer = add_user(guard, db, "vera", "viewer")
    with running_site(tmp_path / "site", guard) as site:
        r = run_cli(guard, "dashboard", "--broker", site.uri, "--db", db)
        assert r.returncode == 2 and "--ca DIR" in r.stderr, r.stderr
        dash = Dashboard(guard, site.uri, db, tmp_path / "run", "--ca", str(site.dir / "ca"), "--operator", "monitor",
                         env={"SAFESIGNAL_CA_PASS": site.passphrase})
        try:
            dev = site.client(site.device("button-1"), "button-1").connect()
            pfx = msg.prefix(site.tenant, "main", "room-1", "button-1")
            dev.publish(pfx + "/status", msg.status_payload(pfx, True, "fw", "b1"), retain=True)
            dev.publish(pfx + "/alert", msg.alert_payload(pfx, 0, "panic", time.time(), 5, 3))
            # the alert and the presence (written on its own thread: it may trail the alert; the
            # firmware comes from the status message only)
            devs = dash.wait_for("/api/devices", viewer, lambda ds: any(d["last_alert"] and d["firmware"] for d in ds))
            assert [(d["tenant"], d["device_id"], d["online"]) for d in devs] == [(site.tenant, "button-1", True)]
            assert [(a["device_id"], a["seq"], a["type"]) for a in dash.get("/api/alerts", viewer)] == [
                ("button-1", 0, "panic")]
        finally:
            assert dash.stop() == 0, dash.stderr()


def test_without_the_extra_the_command_says_which_to_install(tmp_path: Path) -> None:
    # starlette made unimportable, as in an installation without the 'dashboard' extra
    code = ("import sys; sys.modules['starlette'] = None\n"
            "from safesignal.cli.commands import main\n"
            "sys.exit(main(sys.argv[1:]))")
    for args in (["dashboard", "--broker", "mqtt://127.0.0.1:1883"], ["dashboard", "user", "add", "x", "--role",
                                                                        "viewer"]):
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path, stdin=subprocess.DEVNULL, env={**os.environ, "SAFESIGNAL_USER_PASS": "pw-x"})
        assert p.returncode == 2 and "pip install 'safesignal[dashboard]'" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr and not list(tmp_path.iterdir())  # no database made


# --- SQLite: writers take the lock first --------------------------------------------------------------------
@pytest.mark.parametrize("write", [False, True])
def test_sqlite_sessions_that_write_take_the_lock_before_they_read(write: bool, tmp_path: Path) -> None:
    """The ingest (alerts, presence on another thread), a login and a confirmation each read and
    then write.  A deferred SQLite transaction that does so fails at once with "database is
    locked" when another connection committed after its read; a writing session (write=True)
    begins IMMEDIATE and waits for the lock instead.  The deferred case shows the failure the
    dashboard had (bench/fleet.py: 175 failed writes in one broker restart)."""
    import threading

    from sqlalchemy import func, select
    from sqlalchemy.exc import OperationalError

    from safesignal.dashboard import db as dbm

    engine = dbm.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        dbm.migrate(engine)
        sessions = dbm.sessions(engine, write=write)

        def other() -> None:
            with dbm.sessions(engine, write=True)() as s:
                s.add(dbm.Device(tenant="t", device_id="other", building="b", room="r", anomalies="[]"))
                s.commit()

        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(dbm.Device)) == 0  # the read
            t = threading.Thread(target=other)
            t.start()
            t.join(0.5 if write else 30)  # deferred: it commits at once; immediate: it waits for this one
            assert t.is_alive() is write
            s.add(dbm.Device(tenant="t", device_id="mine", building="b", room="r", anomalies="[]"))
            if write:
                s.commit()
            else:
                with pytest.raises(OperationalError, match="database is locked"):
                    s.commit()
        t.join(30)
        assert not t.is_alive()
        with dbm.sessions(engine)() as s:
            names = sorted(s.scalars(select(dbm.Device.device_id)))
        assert names == (["mine", "other"] if write else ["other"])
    finally:
        engine.dispose()
