"""The command line as people mistype, interrupt and pipe it (issue 10, findings 6, 11, 12):
every case runs the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import ssproto
from conftest import REPO, SCRIPTS, SecretGuard, Sim
from safesignal.pki import ca

SAFESIGNAL = [sys.executable, "-m", "safesignal"]
SECRET = "hunter2-hunter2"
CA_PASS = "correct horse battery"


def run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    kw.setdefault("timeout", 60)
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, **kw)  # type: ignore[call-overload, no-any-return]


# --- finding 6: a mistyped flag -----------------------------------------------------------------
@pytest.mark.parametrize("cmd, usage", [
    (SAFESIGNAL + ["provision"], "usage: safesignal provision "),
    ([sys.executable, str(SCRIPTS / "provision_device.py")], "usage: provision_device.py "),
])
def test_mistyped_flag_is_named_with_the_commands_usage(cmd: list[str], usage: str, guard: SecretGuard) -> None:
    guard.secret(SECRET)
    p = run(cmd + ["--port", "/dev/null", "--wifi-ssid", "Net", "--wifi-pas", SECRET, "--device-id", "d",
                   "--tenant", "t", "--building", "b", "--room", "r"])
    guard.output("stderr", p.stderr)
    assert p.returncode == 2
    assert p.stderr.startswith(usage), p.stderr
    assert "unrecognized arguments: --wifi-pas (did you mean --wifi-pass?); 1 other argument (values not shown" \
        in p.stderr


def test_mistyped_flag_with_equals_shows_no_value(guard: SecretGuard) -> None:
    guard.secret(SECRET)
    p = run(SAFESIGNAL + ["status", "--port", "x", f"--wifi-password={SECRET}", "--jsn"])
    guard.output("stderr", p.stderr)
    assert p.returncode == 2 and p.stderr.startswith("usage: safesignal status ")
    assert "unrecognized arguments: --wifi-password, --jsn (did you mean --json?)" in p.stderr


def test_usage_errors_of_a_json_command_are_json_on_stdout(guard: SecretGuard) -> None:
    """A factory script runs `provision --json` and reads stdout: a usage error is one JSON
    object there too (exit 2, the same text as on stderr, no value shown), not an empty stdout."""
    guard.secret(SECRET)
    p = run(SAFESIGNAL + ["provision", "--json", "--port", "/dev/null", "--wifi-ssid", "Net", "--wifi-pas", SECRET,
                          "--device-id", "d", "--tenant", "t", "--building", "b", "--room", "r"])
    guard.output("stdout", p.stdout)
    guard.output("stderr", p.stderr)
    assert p.returncode == 2 and p.stderr.startswith("usage: safesignal provision "), p.stderr
    doc = json.loads(p.stdout)
    assert doc["exit_code"] == 2
    assert doc["error"].startswith("usage: unrecognized arguments: --wifi-pas (did you mean --wifi-pass?)"), doc
    p = run(SAFESIGNAL + ["ble", "scan", "--json", "--duration", "soon"])
    assert p.returncode == 2
    assert json.loads(p.stdout) == {"error": "usage: argument --duration: invalid float value (value not shown)",
                                    "exit_code": 2}
    p = run(SAFESIGNAL + ["status", "--port", "x", "--jsn"])  # no --json: stdout stays empty
    assert p.returncode == 2 and p.stdout == ""


def test_nested_and_top_level_unknown_flags() -> None:
    p = run(SAFESIGNAL + ["ca", "init", "--dir", "x", "--tenant", "t", "--dayz", "3"])
    assert p.returncode == 2 and p.stderr.startswith("usage: safesignal ca init ")
    assert "unrecognized arguments: --dayz (did you mean --days?); 1 other argument" in p.stderr
    p = run(SAFESIGNAL + ["--verbos", "status", "--port", "x"])
    assert p.returncode == 2 and "unrecognized arguments: --verbos (did you mean --verbose?)" in p.stderr


# --- finding 12: sim run --help -----------------------------------------------------------------
def test_sim_help_per_action() -> None:
    run_help = run(SAFESIGNAL + ["sim", "run", "--help"]).stdout
    assert "--port-link" in run_help and "--heap" in run_help
    assert "--hold-ms" not in run_help and "--bounce" not in run_help and "--count" not in run_help
    press_help = run(SAFESIGNAL + ["sim", "press", "--help"]).stdout
    assert "--hold-ms" in press_help and "--bounce" in press_help and "--flash" not in press_help
    # `sim` without an action is `sim run`
    p = run(SAFESIGNAL + ["sim", "--flash", "f"])
    assert p.returncode == 2 and p.stderr.startswith("usage: safesignal sim run ") and "--port-link" in p.stderr


# --- finding 12: Ctrl-C while the tool starts -----------------------------------------------------
SITECUSTOMIZE = '''
import os, signal, sys

class _InterruptOnImport:
    """Ctrl-C arriving while the tool imports its modules: SIGINT when one is first imported."""
    def find_spec(self, name, path=None, target=None):
        if name == os.environ.get("SAFESIGNAL_TEST_SIGINT_AT"):
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, _InterruptOnImport())
'''


@pytest.mark.parametrize("how", ["script", "module"])
@pytest.mark.parametrize("module", ["safesignal.link.session", "serial"])
def test_ctrl_c_during_startup(tmp_path: Path, how: str, module: str) -> None:
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SAFESIGNAL_TEST_SIGINT_AT": module}
    cmd = [str(Path(sys.executable).parent / "safesignal")] if how == "script" else SAFESIGNAL
    p = run(cmd + ["status", "--port", "/nonexistent"], env=env)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 130 and p.stderr.strip() == "✗ Interrupted"


# --- finding 12: status | head, status columns -------------------------------------------------
def test_status_into_a_closed_pipe_and_its_columns(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    r, w = os.pipe()
    os.close(r)  # the reader (head -3) has gone before the first line is written
    try:
        proc = subprocess.Popen(SAFESIGNAL + ["status", "--port", sim.port], stdout=w, stderr=subprocess.PIPE,
                                text=True, cwd=REPO)
    finally:
        os.close(w)
    _, stderr = proc.communicate(timeout=60)
    assert stderr == "", stderr  # no BrokenPipeError traceback, no "Exception ignored"
    assert proc.returncode == 141
    # the same through a shell pipeline, as typed
    p = run(["sh", "-c", f"{' '.join(SAFESIGNAL)} status --port {sim.port} | head -3"])
    assert "Traceback" not in p.stderr and "Error" not in p.stderr, p.stderr
    assert len(p.stdout.splitlines()) == 3

    lines = run(SAFESIGNAL + ["status", "--port", sim.port]).stdout.splitlines()
    assert len(lines) == len(ssproto.STATUS_FIELDS)
    cols = set()
    for (label, _), line in zip(ssproto.STATUS_FIELDS, lines, strict=True):
        assert line.startswith(label + ":")
        m = re.match(re.escape(label) + r": +", line)
        assert m is not None
        if m.end() < len(line):  # a value follows
            cols.add(m.end())
    assert len(cols) == 1, lines  # every value starts in the same column


# --- finding 11: a wrong CA passphrase for monitor and verify ----------------------------------
@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ca"
    c = ca.init(d, "tenant-a", CA_PASS)
    c.issue_operator_cert("desk")
    c.lock()
    return d


@pytest.mark.parametrize("cmd", [
    ["monitor", "--broker", "mqtts://127.0.0.1:1", "--tenant", "tenant-a", "--duration", "1"],
    ["verify", "--broker", "mqtts://127.0.0.1:1", "--device-id", "d", "--tenant", "tenant-a", "--building", "b",
     "--room", "r", "--wait", "1"],
])
def test_wrong_ca_passphrase_is_named(ca_dir: Path, cmd: list[str], guard: SecretGuard) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SAFESIGNAL_OPERATOR_PASS"}
    wrong = guard.secret("not the passphrase at all")
    p = run(SAFESIGNAL + cmd + ["--ca", str(ca_dir)], env={**env, "SAFESIGNAL_CA_PASS": wrong})
    guard.output("stderr", p.stderr)
    assert p.returncode == 2, p.stderr
    assert "✗ Error: wrong passphrase for the key of operator desk" in p.stderr and "the CA passphrase" in p.stderr
    assert "PEM lib" not in p.stderr and "SSL" not in p.stderr
    # an operator key with a passphrase of its own: a wrong one is named as that
    p = run(SAFESIGNAL + cmd + ["--ca", str(ca_dir)],
            env={**env, "SAFESIGNAL_CA_PASS": CA_PASS, "SAFESIGNAL_OPERATOR_PASS": wrong})
    assert p.returncode == 2 and "SAFESIGNAL_OPERATOR_PASS" in p.stderr, p.stderr
    # the right passphrase gets past the key: the broker (none there) is what fails now
    p = run(SAFESIGNAL + cmd + ["--ca", str(ca_dir)], env={**env, "SAFESIGNAL_CA_PASS": CA_PASS})
    assert "passphrase" not in p.stderr and p.returncode == 7, p.stderr


def test_sigint_stops_a_running_command_cleanly(make_sim: Callable[..., Sim]) -> None:
    """After start-up, Ctrl-C (SIGINT to the process) is one line too."""
    sim = make_sim()
    proc = subprocess.Popen(SAFESIGNAL + ["console", "--port", sim.port], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and stderr.strip() == "✗ Interrupted"
