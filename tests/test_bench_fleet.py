"""bench/fleet.py runs: a small fleet against a real mosquitto and the real dashboard prints
the figures bench/README.md documents, and loses no alert.  No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.broker import find_mosquitto
from support.env import REPO, need

FIELDS = ("connect", "alerts", "latency_ms", "press_to_stream_ms", "ack_ms", "cpu_percent_of_one_core",
          "db_bytes", "alerts_stored", "ingest_rate_alerts_per_s", "machine")


def test_fleet_bench_prints_its_figures_and_loses_nothing() -> None:
    if find_mosquitto() is None:
        need("mosquitto", "apt-get install mosquitto")
    r = subprocess.run([sys.executable, str(REPO / "bench" / "fleet.py"), "--devices", "20", "--interval", "5",
                        "--duration", "5", "--drain", "15", "--json"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    for key in FIELDS:
        assert key in doc, key
    assert doc["devices"] == 20 and doc["interval_s"] == 5
    assert doc["connect"]["connected"] == 20
    alerts = doc["alerts"]
    assert alerts["pressed"] > 0  # 20 presses/s for 5 s: about 100
    assert alerts["lost"] == 0 and alerts["never_acked"] == 0
    assert alerts["acked"] == alerts["on_stream"] == alerts["pressed"]
    assert alerts["stream_duplicates"] == 0 and alerts["stream_foreign"] == 0
    assert doc["alerts_stored"] == alerts["pressed"]  # the registry holds exactly the fleet's alerts
    assert doc["devices_in_registry"] == 20  # births and alerts made each device's row
    assert doc["latency_ms"]["n"] == alerts["pressed"]
    for key in ("p50", "p99", "max"):
        assert isinstance(doc["latency_ms"][key], float)
    assert doc["db_bytes"] > 0
    assert doc["dashboard_exit"] == 0
    assert not Path(doc.get("workdir", "/nonexistent")).exists()  # the run's directory is gone
