"""Unit tests of the ESP32 firmware modules.

The checks themselves are the runtime-neutral scripts tests/mpy/check_*.py (ssproto, ss_store
over the fake NVS in tests/mpy/fakenvs.py, ss_console, ss_mqtt, ss_compat); each runs here
under the MicroPython interpreter and under CPython.  Only what needs CPython stays in pytest:
the hypothesis property tests (here and in tests/test_ssproto.py).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "firmware" / "esp32-button" / "lib"
MPY_TESTS = REPO / "tests" / "mpy"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))

from ss_compat import backoff_ms  # noqa: E402

MICROPYTHON = Path(sys.executable).parent / "micropython"
MPY_SCRIPTS = sorted(MPY_TESTS.glob("check_*.py"))


# =========================================================================================
# tests/mpy/check_*.py under both interpreters
# =========================================================================================

def _micropython(script):
    env = {"MICROPYPATH": f"{LIB}:{MPY_TESTS}:.frozen"}
    # The firmware's own 144 kB budget is proven by tests/test_alerts_e2e.py (the whole flow on
    # a virtual device); these scripts hold test code and fakes on top of the modules.
    return [str(MICROPYTHON), "-X", "heapsize=256k", str(script)], env


def _cpython(script):
    env = {"PYTHONPATH": f"{LIB}{os.pathsep}{MPY_TESTS}", "PYTHONDONTWRITEBYTECODE": "1"}
    return [sys.executable, str(script)], env


RUNTIMES = {"micropython": _micropython, "cpython": _cpython}


def test_mpy_scripts_exist():
    assert MICROPYTHON.exists(), MICROPYTHON
    assert {p.name for p in MPY_SCRIPTS} >= {"check_ssproto.py", "check_store.py", "check_console.py", "check_mqtt.py",
                                             "check_records.py"}


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("script", MPY_SCRIPTS, ids=[p.stem for p in MPY_SCRIPTS])
def test_check_script(script, runtime):
    argv, env_extra = RUNTIMES[runtime](script)
    proc = subprocess.run(
        argv,
        env=dict(os.environ, **env_extra),
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    failures = [ln for ln in lines if ln.startswith("FAIL")]
    where = f"{runtime} {script.name}"
    assert proc.returncode == 0, f"{where} failed:\n" + ("\n".join(failures) or out)
    assert lines and lines[-1].endswith(" passed, 0 failed"), f"{where}:\n{out}"
    assert int(lines[-1].split()[0]) > 0, f"{where}:\n{out}"
    # Output of the code under test is captured by the scripts: anything else on stdout
    # (console output that bypassed print, say) is a failure too.
    stray = [ln for ln in lines[:-1] if not ln.startswith("ok   ")]
    assert not stray, f"{where} printed more than its results:\n" + "\n".join(stray)


# =========================================================================================
# ss_compat.backoff_ms: properties (fixed examples are in tests/mpy/check_mqtt.py)
# =========================================================================================

@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(0, 200), st.integers(0, 0xFFFF))
def test_backoff_default_bounds(attempt, rnd):
    base = min(1000 << attempt, 60000)
    d = backoff_ms(attempt, rnd)
    assert base // 2 <= d <= base


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(0, 40), st.integers(0, 0xFFFF), st.integers(2, 5000), st.integers(0, 10**7))
def test_backoff_bounds_any_limits(attempt, rnd, lo, extra):
    # The docstring's contract: exponential from lo, capped at hi, then 50%..100% jitter.
    hi = lo + extra
    base = min(lo << attempt, hi)
    d = backoff_ms(attempt, rnd, lo, hi)
    assert base // 2 <= d <= base


# =========================================================================================
# ss_time.query against a real UDP server, under both interpreters
# =========================================================================================

def _ntp_server(answer_unix):
    import socket
    import struct
    import threading

    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(10)
    seen = []

    def serve():
        try:
            data, addr = srv.recvfrom(512)
        except OSError:
            return
        seen.append(data)
        b = bytearray(48)
        b[0] = (4 << 3) | 4  # version 4, mode 4 (server)
        b[1] = 2
        b[40:48] = struct.pack("!II", answer_unix + 2208988800, 0x40000000)
        srv.sendto(bytes(b), addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t, seen


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_sntp_query_against_a_udp_server(runtime, tmp_path):
    srv, thread, seen = _ntp_server(1795849550)
    port = srv.getsockname()[1]
    script = tmp_path / "sntp_probe.py"
    script.write_text(
        "import asyncio\nimport ss_time\n"
        f"print('got', asyncio.run(ss_time.query('127.0.0.1', {port})))\n"
    )
    argv, env_extra = RUNTIMES[runtime](script)
    proc = subprocess.run(argv, env=dict(os.environ, **env_extra), cwd=str(REPO), capture_output=True, text=True,
                          timeout=30)
    thread.join(5)
    srv.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "got (1795849550, 250000)", proc.stdout  # integers: (seconds, microseconds)
    assert len(seen) == 1 and len(seen[0]) == 48 and seen[0][0] == 0x23
