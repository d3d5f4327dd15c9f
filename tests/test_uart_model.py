"""The console's receive path on the virtual device (issue 9.1).

A board's console input lands in one 259-byte ring (ports/esp32/mphalport.c stdin_ringbuf);
over a UART what does not fit while the firmware is not reading is lost (ports/esp32/uart.c
uart_irq_handler), over native USB the host waits instead (shared/tinyusb/mp_usbd_cdc.c
tud_cdc_rx_cb).  `safesignal sim --dns-delay S` makes every name lookup block the interpreter
for S seconds, as lwIP's getaddrinfo does, so the firmware reads nothing meanwhile.

Each test provisions a device (offline) for a broker name that resolves to a closed port: its
MQTT task then keeps looking the name up, and the tests send while it is blocked in a lookup
(the control socket's state says when: ``in_lookup``).
"""

from __future__ import annotations

import binascii
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ssproto
from conftest import REPO, SecretGuard, terminate
from safesignal.link.session import DeviceSession
from safesignal.sim.control import SimControl
from safesignal.tools import die_with_parent
from support.cli import run_cli
from test_e2e_serial import SSID
from tlsutil import running_site

DNS_DELAY = 3.0  # seconds each lookup blocks the device
DEAD = "dead-broker.local"  # resolves, but nothing listens there: the MQTT task retries, looking it up each time


class DnsSim:
    """`safesignal sim --dns-delay`, run as a user would."""

    def __init__(self, tmp: Path, guard: SecretGuard, pw: str, *extra: str,
                 hosts: dict[str, str] | None = None) -> None:
        self.dir = tmp / "dev"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = str(self.dir / "ttySIM0")
        self.ctl = self.dir / "ctl"
        self.err = self.dir / "sim.stderr"
        guard.files.append(self.err)
        cmd = [sys.executable, "-m", "safesignal", "sim", "--port-link", self.port, "--flash",
               str(self.dir / "flash.bin"), "--control", str(self.ctl), "--ap", SSID, pw,
               "--dns-delay", str(DNS_DELAY), "--host", f"{DEAD}=127.0.0.1", *extra]
        for name, addr in (hosts or {}).items():
            cmd += ["--host", f"{name}={addr}"]
        self._err = open(self.err, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, cwd=REPO,
                                     preexec_fn=die_with_parent(signal.SIGTERM))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(b"ready "):
            self.stop()
            raise AssertionError(f"sim did not start: {line!r} {self.err.read_text()}")
        self.control = SimControl(self.ctl)

    def state(self) -> dict[str, object]:
        return self.control.state()

    def wait_lookup(self, timeout: float = 60) -> None:
        """Until the device is blocked in a name lookup (and has at least 2 s of it left)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.state()
            if st["in_lookup"] and st["dns_lookups"] != getattr(self, "_seen", None):
                self._seen = st["dns_lookups"]
                return
            time.sleep(0.01)
        raise AssertionError(f"the device did not look a name up within {timeout} s: {self.state()}")

    def stop(self) -> None:
        terminate(self.proc)  # type: ignore[arg-type]
        self._err.close()


@pytest.fixture
def looking_up(tmp_path: Path, guard: SecretGuard) -> Iterator[tuple[DnsSim, str]]:
    pw = guard.secret("uart-model-pass")
    made: list[DnsSim] = []

    def make(*extra: str, hosts: dict[str, str] | None = None) -> DnsSim:
        sim = DnsSim(tmp_path, guard, pw, *extra, hosts=hosts)
        made.append(sim)
        p = run_cli(guard, "provision", "--port", sim.port, "--wifi-ssid", SSID, "--wifi-pass", pw, "--device-id",
                    "btn-1", "--tenant", "acme", "--building", "main", "--room", "r101", "--mqtt-uri",
                    f"mqtt://{DEAD}:9", "--offline")
        assert p.returncode == 0, p.stdout + p.stderr
        return sim

    yield make, pw  # type: ignore[misc]
    for s in made:
        s.stop()


def _long_device_line() -> str:
    return ssproto.join_args(["provision_set_device", "d" * 64, "t" * 64, "b" * 64, "r" * 64])  # 281 bytes


def _reply(s: DeviceSession, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while (line := s.read_line(deadline)) is not None:
        if ssproto.is_log_line(line):
            continue
        got.append(line)
        if ssproto.parse_status(line) is not None:
            return got
    raise AssertionError(f"no status line; got {got}")


def test_uart_drops_what_arrives_while_the_device_is_in_a_lookup_and_the_line_is_not_run(looking_up) -> None:
    """The old host's way (one write of a whole line longer than the ring) during a lookup:
    bytes are lost, the device notices (length, CRC) and runs nothing.  Fails against the
    old lossless pipe (nothing dropped: the line runs)."""
    make, _ = looking_up
    sim = make()
    line = _long_device_line()
    (whole,) = ssproto.checked_lines(line, binascii.crc32, piece=4096)  # one line, no acknowledged pieces
    assert len(whole) + 2 > ssproto.RX_BUFFER
    with DeviceSession(sim.port, timeout=15) as s:
        s.sync()
        sim.wait_lookup()
        s._write(whole + b"\r\n")
        while sim.state()["in_lookup"]:
            time.sleep(0.05)
        st = sim.state()
        assert st["console"] == "uart" and st["dropped_input"] == len(whole) + 2 - ssproto.RX_BUFFER
        # The line's end was among the lost bytes: the next line ending completes what arrived,
        # which the device takes for an unfinished checked line, and runs nothing.
        s._write(b"\r\n")
        reply = _reply(s, 3 * DNS_DELAY)
        assert reply == [f"OK +{ssproto.RX_BUFFER - (len(whole) - len(line))}"], reply
        s._write(b"ping x\r\n")
        assert _reply(s, 3 * DNS_DELAY) == ["ERR CHECKSUM checked line interrupted; nothing was run"]
        assert s.status()["pending"] == "none"  # nothing of it was staged


def test_acknowledged_pieces_pass_while_the_device_is_in_a_lookup(looking_up) -> None:
    """The session's way: never more than one piece unacknowledged.  The same line, sent while
    the device is blocked, is staged exactly and nothing is dropped."""
    make, _ = looking_up
    sim = make()
    with DeviceSession(sim.port, timeout=15) as s:
        s.sync()
        sim.wait_lookup()
        before = sim.state()["input_during_lookup"]
        assert s.command(["provision_set_device", "d" * 64, "t" * 64, "b" * 64, "r" * 64]).ok
        st = sim.state()
        assert st["input_during_lookup"] > before  # it really arrived while the device was blocked
        assert st["dropped_input"] == 0
        got = s.status()
        assert got["pending"] == "building,device_id,room,tenant"
        s.command(["provision_discard"])


def test_usb_cdc_pushes_back_instead_of_dropping(looking_up) -> None:
    """Native USB: the whole line in one write during a lookup waits in the host and arrives
    whole once the firmware reads again."""
    make, _ = looking_up
    sim = make("--usb-cdc")
    (whole,) = ssproto.checked_lines(_long_device_line(), binascii.crc32, piece=4096)
    with DeviceSession(sim.port, timeout=15) as s:
        s.sync()
        sim.wait_lookup()
        s._write(whole + b"\r\n")
        reply = _reply(s, 3 * DNS_DELAY)
        assert reply[-1] == "OK", reply
        st = sim.state()
        assert st["console"] == "usb-cdc" and st["dropped_input"] == 0
        assert s.status()["pending"] == "building,device_id,room,tenant"
        s.command(["provision_discard"])


def test_provision_with_ca_passes_on_the_uart_while_the_device_blocks_in_lookups(looking_up, tmp_path: Path,
                                                                                   guard: SecretGuard) -> None:
    """`provision --ca` (base64 certificate lines of 600-900 bytes) started while the device
    is blocked in a lookup, with every lookup (the old broker's retries, SNTP, the connect
    test's) blocking it for DNS_DELAY seconds."""
    make, pw = looking_up
    with running_site(tmp_path / "site", guard) as site:
        sim = make(hosts=site.hosts)
        sim.wait_lookup()
        p = run_cli(guard, "provision", "--port", sim.port, "--wifi-ssid", SSID, "--wifi-pass", pw, "--device-id",
                    "btn-1", "--tenant", "acme", "--building", "main", "--room", "r101", "--mqtt-uri",
                    "mqtts://safesignal-edge.local:8883", "--ca", str(site.ca.dir),
                    env={"SAFESIGNAL_CA_PASS": site.passphrase})
        assert p.returncode == 0, p.stdout + p.stderr
        assert "✓ Provisioning complete!" in p.stdout
        st = sim.state()
        assert st["dropped_input"] == 0 and st["input_during_lookup"] > 0, json.dumps(st)
        # the lookup the test started in, then at least the connect test's own (the old broker's
        # retries no longer look its name up: getaddrinfo answers the port's tuple form, so the
        # MQTT client keeps the address it resolved)
        assert st["dns_lookups"] >= 2, json.dumps(st)
        status = json.loads(run_cli(guard, "status", "--port", sim.port, "--json").stdout)
        assert status["certificate"] == "CN=btn-1 issued by SafeSignal acme CA"
