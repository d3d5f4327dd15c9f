"""provision() and the provision / factory-reset / status / verify commands against a scripted
console (tests/fakedevice.py): every failure path and exit code, host only, in seconds."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import ssproto
from fakedevice import FakeDevice, Script
from safesignal.cli import commands as cli
from safesignal.errors import DeviceError, DeviceTimeout, MismatchError, PortError, SafeSignalError, UsageError
from safesignal.link import session as session_mod
from safesignal.link.session import DeviceSession
from safesignal.provisioning import flow as prov
from safesignal.provisioning.flow import (
    Cancelled,
    CommitLost,
    ConnectTestError,
    Interrupted,
    ProvisionEvents,
    ProvisionRequest,
    provision,
)

PW = "fast-test-password"
OLD = {"wifi_ssid": "Old-Net", "wifi_pass": "old-password-1", "device_id": "old-dev", "tenant": "t",
       "building": "b", "room": "r", "mqtt_uri": "mqtt://10.0.0.1:1883"}
REQ = ProvisionRequest("New-Net", PW, "new-dev", "t", "b", "r2", "mqtt://10.0.0.2:1883")


@pytest.fixture(autouse=True)
def fast_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prov, "COMPLETE_TIMEOUT", 0.5)


def sess(dev: FakeDevice) -> DeviceSession:
    return DeviceSession("fake://dev", timeout=0.5, ser=dev)  # type: ignore[arg-type]


class Record(ProvisionEvents):
    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.current_seen: list[tuple[dict[str, str], list[prov.Change]]] = []
        self.asked = 0
        self.device_lines: list[str] = []
        self.restarts: list[bool] = []

    def current(self, status: dict[str, str], changes: list[prov.Change]) -> None:
        self.current_seen.append((status, changes))

    def confirm_replace(self, status: dict[str, str], changes: list[prov.Change]) -> bool:
        self.asked += 1
        return self.answer

    def device_log(self, line: str) -> None:
        self.device_lines.append(line)

    def restarted(self, saved: bool) -> None:
        self.restarts.append(saved)


# --- the library --------------------------------------------------------------------------
def test_blank_device_success_and_round_trips() -> None:
    dev = FakeDevice()
    ev = Record()
    st = provision(sess(dev), REQ, ev)
    assert (st["provisioned"], st["device_id"], st["room"]) == ("yes", "new-dev", "r2")
    assert ev.current_seen == [] and ev.asked == 0  # nothing to replace on a blank device
    cmds = dev.commands()
    # 12 round trips: barrier (2 pings + status), 3 set, staged check, complete, barrier after
    # the reboot (2 pings + status), password check.  No discard: nothing was staged.
    assert cmds.count("provision_status") == 3, cmds
    assert "provision_discard" not in cmds
    assert len(cmds) == 12, cmds


def test_stale_staged_values_are_discarded_first() -> None:
    dev = FakeDevice()
    dev.staged = {"wifi_ssid": "left-over", "wifi_pass": "x" * 8}
    provision(sess(dev), REQ)
    assert dev.commands()[:5].count("provision_discard") == 1


def test_reprovision_shows_what_it_replaces_and_asks_for_a_new_scope() -> None:
    dev = FakeDevice(config=OLD)
    ev = Record(answer=False)
    with pytest.raises(Cancelled) as e:
        provision(sess(dev), REQ, ev)
    assert e.value.exit_code == 1
    status, changes = ev.current_seen[0]
    assert status["device_id"] == "old-dev"
    assert {c.field: (c.old, c.new) for c in changes} == {
        "wifi_ssid": ("Old-Net", "New-Net"), "device_id": ("old-dev", "new-dev"), "room": ("r", "r2"),
        "mqtt_uri": ("mqtt://10.0.0.1:1883", "mqtt://10.0.0.2:1883")}
    assert ev.asked == 1
    assert not [c for c in dev.commands() if c.startswith("provision_set")]  # nothing staged
    assert dev.config == OLD


def test_reprovision_same_scope_does_not_ask() -> None:
    dev = FakeDevice(config=OLD)
    ev = Record(answer=False)
    req = ProvisionRequest("Other-Net", PW, "old-dev", "t", "b", "r")
    provision(sess(dev), req, ev)
    assert ev.asked == 0 and [c.field for c in ev.current_seen[0][1]] == ["wifi_ssid"]


@pytest.mark.parametrize("code", ssproto.CONNECT_TEST_CODES)
def test_connect_test_failure_exit_9(code: str) -> None:
    dev = FakeDevice(Script(complete=code, complete_log=["[WIFI] Connecting to 'New-Net'..."]))
    ev = Record()
    with pytest.raises(ConnectTestError) as e:
        provision(sess(dev), REQ, ev)
    assert e.value.exit_code == 9 and code in str(e.value) and "Nothing was saved" in str(e.value)
    assert "[WIFI] Connecting to 'New-Net'..." in ev.device_lines  # shown while it happens
    assert dev.config is None
    # nothing saved, and the password does not stay staged in the device's RAM
    assert dev.commands()[-1] == "provision_discard" and dev.staged == {}


def test_device_refuses_a_step_exit_5_and_discards() -> None:
    dev = FakeDevice(Script(refuse={"provision_set_device": (ssproto.E_INVALID, "bad room")}))
    with pytest.raises(DeviceError) as e:
        provision(sess(dev), REQ)
    assert e.value.exit_code == 5
    assert dev.commands()[-1] == "provision_discard" and dev.staged == {}
    assert "provision_complete" not in dev.commands()


def test_reset_between_steps_commits_nothing() -> None:
    dev = FakeDevice(Script(reset_after="provision_set_wifi"), config=OLD)
    with pytest.raises(SafeSignalError, match="nothing was committed") as e:
        provision(sess(dev), ProvisionRequest("New-Net", PW, "old-dev", "t", "b", "r"))
    assert e.value.exit_code == 1 and "provision_complete" not in dev.commands()


def test_silent_complete_times_out_exit_4() -> None:
    dev = FakeDevice(Script(complete="silent"))
    with pytest.raises(DeviceTimeout) as e:
        provision(sess(dev), REQ)
    assert e.value.exit_code == 4 and "provision_complete" in str(e.value)


def test_restart_before_save_is_reported_at_once_as_old_settings_kept() -> None:
    dev = FakeDevice(Script(complete="restart_before_save"), config=OLD)
    ev = Record()
    req = ProvisionRequest("New-Net", PW, "old-dev", "t", "b", "r")
    with pytest.raises(CommitLost) as e:
        provision(sess(dev), req, ev)
    assert e.value.exit_code == 4
    assert "before it saved" in str(e.value) and "previous settings (device old-dev)" in str(e.value)
    assert "run the command again" in str(e.value)


def test_restart_before_save_blank_device() -> None:
    dev = FakeDevice(Script(complete="restart_before_save"))
    with pytest.raises(CommitLost, match="still blank"):
        provision(sess(dev), REQ)


def test_restart_after_save_is_verified_success() -> None:
    dev = FakeDevice(Script(complete="restart_after_save"))
    ev = Record()
    st = provision(sess(dev), REQ, ev)
    assert st["device_id"] == "new-dev" and ev.restarts == [True]


def test_restart_into_something_else_is_exit_6() -> None:
    dev = FakeDevice(Script(complete="restart_after_save", saved_differs={"room": "elsewhere"}), config=OLD)
    with pytest.raises(MismatchError, match="neither"):
        provision(sess(dev), ProvisionRequest("New-Net", PW, "old-dev", "t", "b", "r"))


def test_read_back_differs_exit_6() -> None:
    dev = FakeDevice(Script(saved_differs={"room": "elsewhere"}))
    with pytest.raises(MismatchError, match="room") as e:
        provision(sess(dev), REQ)
    assert e.value.exit_code == 6


def test_stored_password_differs_exit_6() -> None:
    dev = FakeDevice(Script(saved_differs={"wifi_pass": "not-what-was-sent"}))
    with pytest.raises(MismatchError, match="password"):
        provision(sess(dev), REQ)


def test_other_chip_after_reboot_exit_6() -> None:
    dev = FakeDevice(Script(new_chip_after_reboot="aa:bb:cc:00:00:99"))
    with pytest.raises(MismatchError, match="different device"):
        provision(sess(dev), REQ)


def test_no_reboot_exit_4() -> None:
    dev = FakeDevice(Script(never_reboots=True))
    with pytest.raises(DeviceTimeout) as e:
        provision(sess(dev), REQ, boot_timeout=1.0)
    assert e.value.exit_code == 4 and dev.config is not None  # it saved, then never came back


def test_silent_device_exit_4() -> None:
    dev = FakeDevice(Script(silent=True))
    with pytest.raises(DeviceTimeout, match="did not answer"):
        provision(sess(dev), REQ)


def test_ctrl_c_before_complete_discards() -> None:
    dev = FakeDevice(Script(interrupt_on="provision_set_device"))
    with pytest.raises(Interrupted, match="nothing was saved") as e:
        provision(sess(dev), REQ)
    assert e.value.exit_code == 130
    assert dev.commands()[-1] == "provision_discard" and "provision_complete" not in dev.commands()


def test_ctrl_c_after_complete_says_what_may_be_saved() -> None:
    dev = FakeDevice(Script(interrupt_on="provision_complete", complete="silent"))
    with pytest.raises(Interrupted) as e:
        provision(sess(dev), REQ)
    msg = str(e.value)
    assert e.value.exit_code == 130
    assert "after provision_complete was sent" in msg and "safesignal status" in msg and "saved" in msg
    assert dev.commands()[-1] == "provision_complete"  # no discard queued behind it


def test_bad_input_nothing_sent() -> None:
    dev = FakeDevice()
    with pytest.raises(UsageError):
        provision(sess(dev), ProvisionRequest("x" * 33, PW, "d", "t", "b", "r"))
    assert dev.written == []


def test_factory_reset_asks_with_undelivered_alerts() -> None:
    dev = FakeDevice(config=OLD, alerts_pending=3)
    asked: list[str] = []

    def no(st: dict[str, str]) -> bool:
        asked.append(st["alerts_pending"])
        return False

    with pytest.raises(Cancelled, match="3 undelivered"):
        prov.factory_reset(sess(dev), confirm=no)
    assert asked == ["3"] and "provision_reset" not in dev.commands() and dev.config == OLD
    st = prov.factory_reset(sess(dev), confirm=lambda st: True)
    assert st["provisioned"] == "no" and dev.config is None


def test_factory_reset_does_not_ask_without_alerts() -> None:
    dev = FakeDevice(config=OLD)
    prov.factory_reset(sess(dev), confirm=lambda st: pytest.fail("asked"))  # type: ignore[arg-type,return-value]
    assert dev.config is None


# --- the command line, in-process ----------------------------------------------------------
@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, FakeDevice]]:
    devices: dict[str, FakeDevice] = {}

    def fake_open(url: str, **kw: object) -> FakeDevice:
        if url not in devices:
            raise PortError(f"Could not open serial port {url}", reason="No such file or directory")
        return devices[url]

    monkeypatch.setattr(session_mod, "open_port", fake_open)
    yield devices


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    o, e = capsys.readouterr()
    return rc, o, e


def prov_args(port: str, *extra: str) -> list[str]:
    return ["provision", "--port", port, "--wifi-ssid", "New-Net", "--wifi-pass", PW, "--device-id", "new-dev",
            "--tenant", "t", "--building", "b", "--room", "r2", "--timeout", "0.5", *extra]


EXIT_CASES = [
    ("ok", FakeDevice, 0),
    ("refused", lambda: FakeDevice(Script(refuse={"provision_set_wifi": ("INVALID", "no")})), 5),
    ("connect", lambda: FakeDevice(Script(complete="WIFI_AUTH")), 9),
    ("silent", lambda: FakeDevice(Script(complete="silent")), 4),
    ("lost", lambda: FakeDevice(Script(complete="restart_before_save")), 4),
    ("restart-saved", lambda: FakeDevice(Script(complete="restart_after_save")), 0),
    ("differs", lambda: FakeDevice(Script(saved_differs={"room": "x"})), 6),
    ("staged-lost", lambda: FakeDevice(Script(reset_after="provision_set_device")), 1),
    ("ctrl-c", lambda: FakeDevice(Script(interrupt_on="provision_complete", complete="silent")), 130),
]


@pytest.mark.parametrize("name,make,code", EXIT_CASES, ids=[c[0] for c in EXIT_CASES])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_exit_codes_and_json(port: dict[str, FakeDevice], capsys: pytest.CaptureFixture[str], name: str,
                                 make: object, code: int, as_json: bool) -> None:
    port["fake:1"] = make()  # type: ignore[operator]
    rc, o, e = run(capsys, *prov_args("fake:1", *(["--json"] if as_json else [])))
    assert rc == code, e
    assert PW not in o + e
    if as_json:
        doc = json.loads(o)  # exactly one document: json.loads refuses anything more
        if code == 0:
            assert doc["provisioned"] is True and doc["device_id"] == "new-dev"
            assert isinstance(doc["alerts_pending"], int) and isinstance(doc["next_alert_seq"], int)
            assert doc.get("restarted_during_commit", False) is (name == "restart-saved")
        else:
            assert doc["exit_code"] == code and doc["error"] and doc["provisioned"] is False
        assert "Sending" in e  # the human lines went to stderr
    else:
        if code == 0:
            assert "✓ Provisioning complete!" in o
        else:
            assert "✓" not in o and "✗" in e


def test_cli_usage_and_port_errors(port: dict[str, FakeDevice], capsys: pytest.CaptureFixture[str]) -> None:
    port["fake:1"] = dev = FakeDevice()
    rc, o, e = run(capsys, *prov_args("fake:1", "--wifi-ssid", "x" * 33))
    assert rc == 2 and dev.written == [] and "--wifi-ssid" in e
    rc, o, e = run(capsys, *prov_args("fake:missing"))
    assert rc == 3 and "Could not open serial port fake:missing" in e
    rc, o, e = run(capsys, *prov_args("fake:missing", "--json"))
    assert rc == 3 and json.loads(o)["exit_code"] == 3
    rc, o, e = run(capsys, "status", "--port", "fake:missing", "--json")
    assert rc == 3 and json.loads(o)["exit_code"] == 3


def test_cli_reprovision_prints_what_it_replaces(port: dict[str, FakeDevice],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    port["fake:1"] = FakeDevice(config=OLD)
    rc, o, e = run(capsys, *prov_args("fake:1"))  # stdin is not a terminal: no question, it proceeds
    assert rc == 0, e
    assert "this replaces its settings" in o
    assert "Device ID:      old-dev → new-dev" in o and "Tenant:         t\n" in o
    assert OLD["wifi_pass"] not in o
    port["fake:2"] = FakeDevice(config=OLD)
    rc, o, e = run(capsys, *prov_args("fake:2", "--json"))
    assert rc == 0 and json.loads(o)["replaced"]["device_id"] == "old-dev"


def test_cli_reprovision_question(port: dict[str, FakeDevice], capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(cli, "_on_terminal", lambda: True)
    port["fake:1"] = dev = FakeDevice(config=OLD)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    rc, o, e = run(capsys, *prov_args("fake:1"))
    assert rc == 1 and "Go on? [y/N]" in e and dev.config == OLD
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    rc, o, e = run(capsys, *prov_args("fake:1"))
    assert rc == 0 and dev.config is not None and dev.config["device_id"] == "new-dev"
    port["fake:2"] = dev2 = FakeDevice(config=OLD)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    rc, o, e = run(capsys, *prov_args("fake:2", "--yes"))
    assert rc == 0 and "Go on?" not in e and dev2.config is not None and dev2.config["device_id"] == "new-dev"


def test_cli_factory_reset_confirmation(port: dict[str, FakeDevice], capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    port["fake:1"] = dev = FakeDevice(config=OLD, alerts_pending=2)
    rc, o, e = run(capsys, "factory-reset", "--port", "fake:1")  # no terminal, no --force: refused
    assert rc == 2 and "--force" in e and "2 undelivered alert(s)" in e
    assert "provision_reset" not in dev.commands() and dev.config == OLD
    monkeypatch.setattr(cli, "_on_terminal", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))
    rc, o, e = run(capsys, "factory-reset", "--port", "fake:1")
    assert rc == 1 and "Erase them with the configuration? [y/N]" in e and dev.config == OLD
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    rc, o, e = run(capsys, "factory-reset", "--port", "fake:1")
    assert rc == 0 and dev.config is None and "✓ Factory reset complete" in o
    port["fake:2"] = dev2 = FakeDevice(config=OLD, alerts_pending=2)
    monkeypatch.setattr(cli, "_on_terminal", lambda: False)
    rc, o, e = run(capsys, "factory-reset", "--port", "fake:2", "--force")
    assert rc == 0 and dev2.config is None


def test_cli_status_json_numbers(port: dict[str, FakeDevice], capsys: pytest.CaptureFixture[str]) -> None:
    port["fake:1"] = FakeDevice(config=OLD, alerts_pending=4)
    rc, o, e = run(capsys, "status", "--port", "fake:1", "--json")
    doc = json.loads(o)
    assert rc == 0 and (doc["alerts_pending"], doc["next_alert_seq"], doc["free_heap"]) == (4, 0, 123456)
    assert doc["provisioned"] is True and doc["wifi_ssid"] == "Old-Net"


def test_cli_verify_refuses_a_disconnected_device(port: dict[str, FakeDevice], capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from safesignal.provisioning import verify

    monkeypatch.setattr(verify, "CONNECT_WAIT", 0.6)
    port["fake:1"] = dev = FakeDevice(config=OLD, alerts_pending=5)
    dev.mqtt_state = "connecting"
    rc, o, e = run(capsys, "verify", "--port", "fake:1", "--json", "--timeout", "0.5")
    doc = json.loads(o)
    assert rc == 8 and doc["verified"] is False and "not connected to its broker" in doc["error"]
    assert "alert_test" not in dev.commands()  # no test alert piled into the outbox
    assert dev.alerts_pending == 5


def test_parse_seq() -> None:
    from safesignal.provisioning.verify import parse_seq

    assert (parse_seq("seq 17"), parse_seq("seq x"), parse_seq("")) == (17, None, None)
