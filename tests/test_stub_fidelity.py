"""The virtual device's stubs answer as the ESP32 port does, not as the unix port would (issue 9).

Each check is a small script run by the real MicroPython interpreter with the stubs first on
MICROPYPATH, as the supervisor runs the firmware, against a scripted hardware channel served
here (the supervisor's protocol: token line, then one JSON object per line each way).  Every
check fails against the stubs as they were before (no time/select stub, inline pin interrupts,
240 MHz, the unix port's getaddrinfo, an RTC that took floats).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
STUBS = REPO / "safesignal" / "sim" / "stubs"
MICROPYTHON = Path(sys.executable).parent / "micropython"
TOKEN = "stub-fidelity-token"

Handler = Callable[[dict[str, Any]], Any]


class FakeHw:
    """The supervisor's end of the hardware channel, answering from ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[dict[str, Any]] = []
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen()
        self.port = self.srv.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self._conns.append(c)
            threading.Thread(target=self._client, args=(c,), daemon=True).start()

    def _client(self, c: socket.socket) -> None:
        with c, c.makefile("rwb") as f:
            if f.readline().strip() != TOKEN.encode():
                return
            for line in f:
                req = json.loads(line)
                with self._lock:
                    self.calls.append(req)
                    result = self.handler(req)
                f.write(json.dumps({"result": result}).encode() + b"\n")
                f.flush()

    def close(self) -> None:
        self.srv.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def hw() -> Iterator[Callable[[Handler], FakeHw]]:
    made: list[FakeHw] = []

    def make(handler: Handler) -> FakeHw:
        h = FakeHw(handler)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def run_mpy(script: str, hw: FakeHw | None = None, timeout: float = 30) -> list[str]:
    """Run ``script`` under MicroPython with the stubs; returns its output lines (exit 0 required)."""
    env = dict(os.environ, MICROPYPATH=f"{STUBS}:.frozen")
    if hw is not None:
        env.update(SAFESIGNAL_HW_PORT=str(hw.port), SAFESIGNAL_HW_TOKEN=TOKEN)
    p = subprocess.run([str(MICROPYTHON), "-X", "heapsize=256k", "-c", script], env=env, capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.splitlines()


# --- time: ticks from boot, 30-bit ticks, int time() -------------------------------------

def test_ticks_count_from_boot_and_wrap_at_30_bits() -> None:
    out = run_mpy(
        "import time\n"
        "print(time.ticks_ms() < 5000, time.ticks_us() < 5000000)\n"  # the unix port: the host's uptime
        "print(type(time.time()).__name__)\n"
        "print(time.ticks_diff(5, (1 << 30) - 5), time.ticks_diff((1 << 30) - 5, 5))\n"
        "print(time.ticks_add((1 << 30) - 1, 1), time.ticks_add(0, -1))\n"
        "try:\n time.ticks_add(0, 1 << 29)\nexcept OverflowError as e:\n print('overflow', e)\n"
        "print(time.gmtime(0)[0], time.sleep_ms is not None)\n"
    )
    assert out == ["True True", "int", "10 -10", "0 1073741823", "overflow ticks interval overflow",
                   "1970 True"]


def test_poll_timeouts_end_on_the_freertos_tick() -> None:
    # The arithmetic: a wait ends at the first 10 ms tick (from boot) at or after its deadline.
    out = run_mpy(
        "import time\n"
        "print([time.tick_wait_ms(t, now) for t, now in ((10, 0), (10, 3), (1, 19), (25, 40), (0, 7), (-1, 7))])\n"
    )
    assert out == ["[10, 17, 1, 30, 0, -1]"]
    # And asyncio's sleeps are such waits: every poll the event loop makes goes through it.
    out = run_mpy(
        "import time, asyncio\n"
        "seen = []\n"
        "real = time.tick_wait_ms\n"
        "def spy(t, now=None):\n"
        "    w = real(t, now)\n"
        "    seen.append((t, w))\n"
        "    return w\n"
        "time.tick_wait_ms = spy\n"
        "async def main():\n"
        "    for _ in range(5):\n"
        "        await asyncio.sleep_ms(3)\n"
        "asyncio.run(main())\n"
        "waits = [w for t, w in seen if t > 0]\n"
        "print(len(waits) >= 5, all(w >= t and w < t + 10 for t, w in seen if t > 0))\n"
        "import asyncio.core as core\n"
        "print(core.ticks is time._real.ticks_ms)\n"  # the C scheduler's clock
    )
    assert out == ["True True", "True"]


# --- machine: soft pin interrupts, 160 MHz, an RTC that refuses floats ---------------------

def _pin_board(edges_after: int) -> Callable[[dict[str, Any]], Any]:
    reads = [0]

    def handler(req: dict[str, Any]) -> Any:
        op = req["op"]
        if op == "pin_read":
            reads[0] += 1
            return [1, 1 if reads[0] == edges_after else 0]  # one falling edge, once
        if op == "pin_value":
            return 1
        return None

    return handler


def test_pin_interrupt_is_scheduled_without_any_pin_read(hw: Callable[[Handler], FakeHw]) -> None:
    board = hw(_pin_board(edges_after=3))
    out = run_mpy(
        "import machine, _thread, time\n"
        "hits = []\n"
        "def h(p):\n"
        "    hits.append(_thread.get_ident())\n"
        "p = machine.Pin(4, machine.Pin.IN, machine.Pin.PULL_UP)\n"
        "p.irq(handler=h, trigger=machine.Pin.IRQ_FALLING)\n"
        "t0 = time.ticks_ms()\n"
        "n = 0\n"
        "while not hits and time.ticks_diff(time.ticks_ms(), t0) < 10000:\n"
        "    n += 1\n"  # busy Python code that never looks at the pin
        "print(len(hits), hits == [_thread.get_ident()])\n"
        "p.irq(handler=None, trigger=machine.Pin.IRQ_FALLING)\n",
        board,
    )
    assert out == ["1 True"]  # ran once, in the main thread (scheduled, not called from the watcher)
    assert not any(c["op"] == "pin_value" for c in board.calls)


def test_pin_irq_has_no_hard_argument(hw: Callable[[Handler], FakeHw]) -> None:
    board = hw(_pin_board(edges_after=0))
    out = run_mpy(
        "import machine\n"
        "p = machine.Pin(4, machine.Pin.IN, machine.Pin.PULL_UP)\n"
        "try:\n"
        "    p.irq(handler=lambda p: None, trigger=machine.Pin.IRQ_FALLING, hard=True)\n"
        "    print('accepted')\n"
        "except TypeError:\n"
        "    print('TypeError')\n",
        board,
    )
    assert out == ["TypeError"]  # ports/esp32/machine_pin.c machine_pin_irq: handler, trigger, wake


def test_cpu_frequency_is_the_stock_s3s(hw: Callable[[Handler], FakeHw]) -> None:
    out = run_mpy(
        "import machine\n"
        "print(machine.freq())\n"
        "machine.freq(240000000)\n"
        "print(machine.freq())\n"
        "try:\n    machine.freq(100000000)\nexcept ValueError:\n    print('ValueError')\n",
        hw(lambda req: None),
    )
    assert out == ["160000000", "240000000", "ValueError"]


def test_rtc_refuses_a_float(hw: Callable[[Handler], FakeHw]) -> None:
    board = hw(lambda req: None)
    out = run_mpy(
        "import machine\n"
        "r = machine.RTC()\n"
        "for dt in ((2026, 11, 28, 5, 7, 5, 50, 0.25), (2026, 11, 28, 5, 7, 5, 50.5, 0), (2026, 11, 28)):\n"
        "    try:\n"
        "        r.datetime(dt)\n"
        "        print('accepted')\n"
        "    except (TypeError, ValueError) as e:\n"
        "        print(type(e).__name__)\n"
        "r.datetime((2026, 11, 28, 5, 7, 5, 50, 250000))\n"
        "print('ok')\n",
        board,
    )
    assert out == ["TypeError", "TypeError", "ValueError", "ok"]
    assert [c["datetime"] for c in board.calls if c["op"] == "rtc_set"] == [[2026, 11, 28, 5, 7, 5, 50, 250000]]


# --- socket: getaddrinfo's tuple form, and sockets that take it -----------------------------

def _net(req: dict[str, Any]) -> Any:
    if req["op"] == "net_up":
        return True
    if req["op"] == "dns_lookup":
        return "127.0.0.1" if req["host"] == "edge.local" else None
    return None


def test_getaddrinfo_answers_the_esp32_tuple_and_sockets_take_it(hw: Callable[[Handler], FakeHw]) -> None:
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo.settimeout(10)
    port = echo.getsockname()[1]

    def serve() -> None:
        try:
            data, addr = echo.recvfrom(64)
            echo.sendto(data.upper(), addr)
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        out = run_mpy(
            "import socket\n"
            f"print(socket.getaddrinfo('edge.local', {port}))\n"
            f"print(socket.getaddrinfo('127.0.0.1', '{port}', 0, socket.SOCK_DGRAM))\n"
            "try:\n    socket.getaddrinfo('nowhere.local', 1)\nexcept OSError as e:\n    print('OSError', e.errno)\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.sendto(b'ping', socket.getaddrinfo('edge.local', {port})[0][-1])\n"
            "print(s.recv(16))\n"
            "s.close()\n",
            hw(_net),
        )
    finally:
        echo.close()
        t.join(5)
    assert out == [
        f"[(2, 1, 0, 'edge.local', ('127.0.0.1', {port}))]",
        f"[(2, 2, 0, '127.0.0.1', ('127.0.0.1', {port}))]",
        "OSError -202",
        "b'PING'",
    ]


# --- WiFi: the station keeps its last disconnect reason until the next event ----------------

class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _station(monkeypatch: pytest.MonkeyPatch, reconnects: int | None = 0) -> tuple[Any, _Clock, Any]:
    from safesignal.sim import air as air_mod

    clock = _Clock()
    monkeypatch.setattr("safesignal.sim.air.time.monotonic", clock)
    ap = air_mod.AccessPoint("Net", "right-password", connect_ms=300)
    st = air_mod.Station(air_mod.Air(extra=[ap]))
    if reconnects is not None:
        st.set_config("reconnects", reconnects)  # what the firmware sets: it retries itself
    return st, clock, ap


def test_new_connect_answers_the_last_failure_until_its_own_event(monkeypatch: pytest.MonkeyPatch) -> None:
    st, clock, _ = _station(monkeypatch)
    assert st.status() == 1000  # STAT_IDLE: nothing happened since power-up
    st.connect("Net", "wrong-password")
    assert st.status() == 1001  # STAT_CONNECTING: no reason stored yet
    clock.t += 0.3
    assert st.status() == 202
    st.disconnect()  # not connected: no event, the reason stays
    assert st.status() == 202
    st.connect("Net", "right-password")
    assert st.status() == 202  # the old reason, not CONNECTING: network_wlan_status reads it first
    clock.t += 0.3
    assert st.status() == 1010 and st.ifconfig()[0] == "192.168.1.50"
    st.disconnect()  # a connection ends with ASSOC_LEAVE: IDLE
    assert st.status() == 1000


def test_link_loss_is_a_beacon_timeout_and_the_driver_retries_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    st, clock, ap = _station(monkeypatch, reconnects=0)
    st.connect("Net", "right-password")
    clock.t += 0.3
    assert st.status() == 1010
    ap.fail = "down"
    assert st.status() == 200  # WIFI_REASON_BEACON_TIMEOUT, passed through: no retries allowed
    st2, clock2, ap2 = _station(monkeypatch, reconnects=None)  # default -1: retry forever
    st2.connect("Net", "right-password")
    clock2.t += 0.3
    assert st2.status() == 1010
    ap2.fail = "down"
    assert st2.status() == 1001  # reconnecting by itself
    ap2.fail = None
    clock2.t += 1.6  # the retry that began at the drop found no AP (1.5 s); the next one joins
    clock2.t += 0.3
    assert st2.status() == 1010
