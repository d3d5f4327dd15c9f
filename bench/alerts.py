"""Alert latency (button press -> subscriber) and recovery after a broker outage, on the virtual device.

Method (also in bench/README.md): a real mosquitto on a loopback address of its own, port 1883,
persistence on; one `safesignal sim` whose site DNS resolves the device's default broker name
(safesignal-edge.local) to it; a persistent AlertReceiver (fixed client id, clean session off)
subscribed before the device is provisioned with the library.

a. Latency: PRESSES presses of HOLD_MS, queued BATCH at a time on the virtual button (back to back,
   80 ms apart); after each batch wait until its alerts arrived.  SimControl.press() gives each
   press's start (Unix time); the device numbers alerts 0 (test alert), 1, 2, ... in press order,
   so press i should be seq i + 1; as a press the device missed would shift every later seq, each
   alert is placed by the device's clock at registration (its ts) and the seq order is checked.
   latency = subscriber receive time - press start.  It includes the firmware's 30 ms debounce
   (3 stable samples 10 ms apart) by design.
b. Recovery, RECOVERIES rounds: SIGTERM mosquitto, press K times while it is down, wait 3 s,
   start it again (same config and persistence), then time from "broker accepts TCP connections"
   to "all K alerts at the subscriber".  The device reconnects with exponential backoff and
   jitter (1 s doubling to 60 s, 50-100 % of it), so the figure depends on the down time, which
   is reported per round.

Prints one JSON object; asserts no time.

    .venv/bin/python bench/alerts.py [--presses 500] [--recoveries 5]
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import serial

import ssproto.msg as msg
from safesignal.alerts.mosquitto import Mosquitto, find_mosquitto
from safesignal.alerts.receiver import AlertReceiver
from safesignal.errors import SafeSignalError
from safesignal.link.serial import open_port
from safesignal.link.session import DeviceSession
from safesignal.provisioning.flow import ProvisionRequest, provision
from safesignal.sim.control import SimControl
from safesignal.tools import die_with_parent, stop_process

REPO = Path(__file__).resolve().parents[1]
SSID, WIFI_PASS = "Bench-Net", "bench-wifi-pass"
TENANT, BUILDING, ROOM = "bench", "hq", "r1"
DEVICE = "bench-btn-01"
K = 10  # presses while the broker is down, per recovery round
DOWN_WAIT_S = 3.0  # fixed wait after the last of them, before the broker starts again


class BenchError(Exception):
    pass


# --- helpers shared with bench/blank_to_alert.py -------------------------------------------------
def mosquitto_exe() -> str:
    exe = find_mosquitto()
    if exe is None:
        raise BenchError("mosquitto is not installed (apt-get install mosquitto); this benchmark needs a real broker")
    return exe


class VirtualDevice:
    """One `safesignal sim` process with a blank (or existing) flash file in ``workdir``."""

    def __init__(self, workdir: Path, broker_host: str, mpy: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = str(workdir / "tty")
        self.control = SimControl(workdir / "ctl")
        self.out_path = workdir / "sim.stdout"
        self.err_path = workdir / "sim.stderr"
        cmd = [sys.executable, "-m", "safesignal", "sim", "--port-link", self.port, "--flash",
               str(workdir / "flash.bin"), "--control", str(workdir / "ctl"), "--ap", SSID, WIFI_PASS,
               "--host", f"safesignal-edge.local={broker_host}"]
        if mpy:
            cmd.append("--mpy")
        # TMPDIR: `sim --mpy` compiles the firmware into a mkdtemp directory; keep it in ours.
        env = {**os.environ, "TMPDIR": str(workdir)}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO, env=env,
                                         preexec_fn=die_with_parent(signal.SIGTERM))
        deadline = time.monotonic() + 120  # --mpy compiles the firmware first
        while not self.out_path.read_bytes().startswith(b"ready "):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"the virtual device did not start: {self.err_path.read_text()[-2000:]}")
            time.sleep(0.01)
        self.ready_at = time.time()

    def stop(self) -> None:
        stop_process(self.proc)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (the smallest value with at least p % of the values <= it)."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def panic_seqs(rx: AlertReceiver) -> set[int]:
    return {a.seq for a in rx.unique_alerts() if a.device == DEVICE and a.type == "panic"}


def wait_count(rx: AlertReceiver, base: int, n: int, timeout: float) -> bool:
    """Wait until ``n`` panic alerts numbered above ``base`` have arrived."""
    return rx.wait_for(lambda r: sum(1 for s in panic_seqs(r) if s > base) >= n, timeout)


def wait_batch(rx: AlertReceiver, base: int, n: int, last_start: float, timeout: float) -> bool:
    """Wait until ``n`` alerts above ``base`` arrived, or (after a missed press, which shifts the
    count for good) the alert the device stamped at or after ``last_start``: the batch is over."""
    return rx.wait_for(lambda r: sum(1 for s in panic_seqs(r) if s > base) >= n or any(
        a.ts is not None and a.ts > last_start for a in r.alerts if a.device == DEVICE), timeout)  # ts: whole s


def wait_reconnect(rx: AlertReceiver, connects: int, timeout: float) -> bool:
    """Wait until the receiver connected again (its ``connects`` count passed ``connects``)."""
    return rx.wait_for(lambda r: r.connects > connects, timeout)


# --- console ---------------------------------------------------------------------------------------
class Console:
    """Reads the device's serial console in a thread and timestamps every line (host Unix time)."""

    def __init__(self, port: str) -> None:
        self._ser = open_port(port)
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                data = self._ser.read(max(1, int(getattr(self._ser, "in_waiting", 1))))
            except (OSError, serial.SerialException):
                time.sleep(0.05)  # the port goes away while the device resets
                continue
            now = time.time()
            buf += data
            *done, buf = buf.split(b"\n")
            if done:
                with self._lock:
                    self.lines += [(now, d.decode("utf-8", "replace").rstrip("\r")) for d in done]

    def times(self, pattern: str, after: float = 0.0) -> dict[str, float]:
        """First time (after ``after``) each match of ``pattern``'s group 1 was seen."""
        rx = re.compile(pattern)
        found: dict[str, float] = {}
        with self._lock:
            lines = list(self.lines)
        for t, line in lines:
            m = rx.search(line)
            if m and t >= after:
                found.setdefault(m.group(1), t)
        return found

    def wait_times(self, pattern: str, after: float, keys: set[str], timeout: float) -> dict[str, float]:
        """:meth:`times`, waiting up to ``timeout`` s until every one of ``keys`` was seen."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.times(pattern, after)
            if keys <= set(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._ser.close()


def ms(v: float) -> float:
    return round(v * 1000, 1)


def summary_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {"p50": ms(percentile(values, 50)), "p90": ms(percentile(values, 90)), "p99": ms(percentile(values, 99)),
            "max": ms(max(values)), "mean": ms(statistics.fmean(values))}


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# --- the two measurements ----------------------------------------------------------------------------
def latency(dev: VirtualDevice, rx: AlertReceiver, con: Console, presses: int, hold_ms: int,
            batch: int) -> dict[str, object]:
    dups0 = rx.duplicates
    base = max(panic_seqs(rx), default=0)  # the test alert is seq 0; presses are base + 1, base + 2, ...
    starts: list[float] = []  # press i -> its start (Unix time)
    t_start = time.time()
    while len(starts) < presses:
        n = min(batch, presses - len(starts))
        starts += [dev.control.press(hold_ms) for _ in range(n)]
        time.sleep(max(0.0, starts[-1] + hold_ms / 1000 - time.time()))
        wait_batch(rx, base, len(starts), starts[-1], 3)
    duration = time.time() - t_start
    alerts = sorted((a for a in rx.unique_alerts() if a.device == DEVICE and a.type == "panic" and a.seq > base),
                    key=lambda a: a.seq)
    # Press i should be seq base + 1 + i; a press the device did not register would shift every later
    # seq by one, so each alert is also placed by when the device registered it: the console line
    # "[ALERT] Panic alert N stored", timed on this machine (press i is the one with
    # starts[i] <= stored < starts[i + 1]).  The alert's own ts cannot do this: it is whole seconds,
    # as time.time() is on the ESP32 port.
    stored = con.wait_times(r"\[ALERT\] Panic alert (\d+) stored", t_start, {str(a.seq) for a in alerts}, 5)
    by_log = all(str(a.seq) in stored for a in alerts)
    press_of: dict[int, int] = {}  # seq -> press index
    for a in alerts:
        i = bisect.bisect_right(starts, stored[str(a.seq)]) - 1 if by_log else a.seq - base - 1
        if 0 <= i < presses:
            press_of[a.seq] = i
    per_press: dict[int, list[int]] = {}
    for seq, i in press_of.items():
        per_press.setdefault(i, []).append(seq)
    first = {i: min(seqs) for i, seqs in per_press.items()}  # seq of each press's (first) alert
    by_seq = {a.seq: a for a in alerts}
    lat = [by_seq[seq].received_at - starts[i] for i, seq in first.items()]
    reg = [stored[str(seq)] - starts[i] for i, seq in first.items() if str(seq) in stored]
    ts_off: list[float] = []
    for i, seq in first.items():
        ts = by_seq[seq].ts
        if ts is not None:
            ts_off.append(ts - starts[i])
    missed = [i for i in range(presses) if i not in per_press]
    return {
        "presses_sent": presses,
        "hold_ms": hold_ms,
        "batch": batch,
        "duration_s": round(duration, 1),
        "button_presses_seen_by_sim": dev.control.state()["button_presses"],
        "alerts_received_unique": len(alerts),
        "duplicates": rx.duplicates - dups0,
        "matching": "console 'stored' time, checked against seq" if by_log else "seq (console lines missing)",
        "seq_in_press_order": all(seq == base + 1 + i for seq, i in press_of.items()),
        "presses_without_alert": len(missed),
        "presses_without_alert_at_s": [round(starts[i] - t_start, 2) for i in missed][:50],
        "presses_with_more_than_one_alert": sum(1 for seqs in per_press.values() if len(seqs) > 1),
        "alerts_not_matching_a_press": len(alerts) - len(press_of),
        "latency_ms": summary_ms(lat),
        "press_to_console_stored_ms": summary_ms(reg),
        "device_ts_minus_press_ms": summary_ms(ts_off) if ts_off else None,
    }


def recovery(dev: VirtualDevice, rx: AlertReceiver, con: Console, broker: Mosquitto, rounds: int,
             hold_ms: int) -> dict[str, object]:
    per: list[dict[str, object]] = []
    done: list[float] = []  # all_alerts_at_subscriber_s of the rounds that completed
    for r in range(rounds):
        base = max(panic_seqs(rx), default=0)
        connects = rx.connects
        dups0 = rx.duplicates
        t_down = time.time()
        broker.stop()
        ats = [dev.control.press(hold_ms) for _ in range(K)]
        time.sleep(max(0.0, ats[-1] + hold_ms / 1000 - time.time()) + DOWN_WAIT_S)
        broker.start()
        t_up = broker.up_since
        sub_ok = wait_reconnect(rx, connects, 60)
        t_sub = time.time()
        ok = wait_count(rx, base, K, 90)
        arrivals = [a.received_at for a in rx.unique_alerts()
                    if a.device == DEVICE and a.type == "panic" and a.seq > base]
        dev_conn = con.times(r"\[MQTT\] (Connected) to broker", t_up).get("Connected")
        # The console line comes a moment after the PUBACK; the subscriber may be faster.
        want = {str(s) for s in range(base + 1, base + K + 1)}
        delivered = con.wait_times(r"\[ALERT\] Alert (\d+) delivered", t_up, want, 5)
        acks = [delivered[s] for s in want if s in delivered]
        per.append({
            "round": r + 1,
            "broker_down_s": round(t_up - t_down, 2),
            "all_alerts_at_subscriber_s": round(max(arrivals) - t_up, 3) if ok else None,
            "first_alert_at_subscriber_s": round(min(arrivals) - t_up, 3) if arrivals else None,
            "device_reconnected_s": round(dev_conn - t_up, 3) if dev_conn is not None else None,
            "device_outbox_drained_s": round(max(acks) - t_up, 3) if len(acks) == K else None,
            "subscriber_reconnected_s": round(t_sub - t_up, 3) if sub_ok else None,
            "alerts_received": len(arrivals),
            "duplicates": rx.duplicates - dups0,
        })
        if ok:
            done.append(max(arrivals) - t_up)
        progress(f"recovery round {r + 1}: {per[-1]}")
        time.sleep(1.0)  # let both sessions settle before the next outage
    return {
        "rounds": rounds,
        "presses_per_round": K,
        "wait_after_presses_s": DOWN_WAIT_S,
        "per_round": per,
        "all_alerts_at_subscriber_s_median": round(statistics.median(done), 3) if done else None,
        "all_alerts_at_subscriber_s_max": round(max(done), 3) if done else None,
        "rounds_incomplete": rounds - len(done),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--presses", type=int, default=500)
    ap.add_argument("--recoveries", type=int, default=5)
    ap.add_argument("--hold-ms", type=int, default=120, help="how long each press holds the button (default 120)")
    ap.add_argument("--batch", type=int, default=20, help="presses queued at once (default 20)")
    ap.add_argument("--mpy", action="store_true", help="run the firmware compiled to .mpy (default: source)")
    args = ap.parse_args()
    logging.getLogger("safesignal").setLevel(logging.ERROR)  # paho reconnect chatter during the outages
    try:
        mosquitto_exe()
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result: dict[str, object] = {"benchmark": "alerts", "firmware": "mpy" if args.mpy else "source"}
    with tempfile.TemporaryDirectory(prefix="ss-bench-") as d:
        broker = Mosquitto(Path(d) / "mosquitto")
        dev: VirtualDevice | None = None
        rx: AlertReceiver | None = None
        con: Console | None = None
        try:
            broker.start()
            rx = AlertReceiver(broker.uri, msg.subscription(TENANT), client_id=f"bench-backend-{os.getpid()}",
                               persistent=True)
            rx.start()
            dev = VirtualDevice(Path(d) / "dev", broker.host, args.mpy)
            with DeviceSession(dev.port, timeout=15) as s:
                provision(s, ProvisionRequest(SSID, WIFI_PASS, DEVICE, TENANT, BUILDING, ROOM))
            if rx.wait_alert(DEVICE, type="test", timeout=30) is None:
                raise BenchError("no test alert after provisioning")
            con = Console(dev.port)
            progress(f"latency: {args.presses} presses")
            result["latency"] = latency(dev, rx, con, args.presses, args.hold_ms, args.batch)
            progress(f"recovery: {args.recoveries} rounds")
            result["recovery"] = recovery(dev, rx, con, broker, args.recoveries, args.hold_ms)
        except (BenchError, SafeSignalError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            if con is not None:
                con.close()
            if rx is not None:
                rx.stop()
            if dev is not None:
                dev.stop()
            broker.stop()
    result["note"] = ("virtual device on this machine (loopback TCP to the broker, the sim's WiFi model); "
                      "a real ESP32-S3 adds radio latency and its own CPU speed")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
