#!/usr/bin/env python3
"""Record facts about the pinned MicroPython release, for tests that run without its sources.

Reads a MicroPython git repository (default: the bare mirror /work/.mirror/micropython+micropython/repo)
at the tag named in firmware/MICROPYTHON and writes tests/data/micropython-<tag>-esp32.txt:

- the names of the files under ports/esp32 that a board definition can reference (sdkconfig
  fragments in ports/esp32/boards, the partition tables, the port's boards/manifest.py, the
  files of boards/ESP32_GENERIC_S3), from ``git ls-tree``;
- the version numbers in py/mpconfig.h (MICROPY_VERSION_*) and py/persistentcode.h
  (MPY_VERSION, MPY_SUB_VERSION), the ESP-IDF version of ports/esp32/lockfiles/dependencies.lock.esp32s3,
  the size of the factory app partition of ports/esp32/partitions-4MiBplus.csv (the table the
  ESP32_GENERIC_S3 image is built for, so an upper bound of that image's size),
  and the tag that opens the next development line when it is one commit on from the release.

Only names and numbers are written: no source text of MicroPython.  Run it again after changing
firmware/MICROPYTHON:

    python tools/micropython_facts.py [--repo PATH]

tests/test_micropython_release.py checks the file against the mirror when the mirror exists.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPO = Path("/work/.mirror/micropython+micropython/repo")
PORT = "ports/esp32"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def define(text: str, name: str) -> int:
    m = re.search(rf"^#define {name}\s+\(?(\d+)\)?\s*$", text, re.M)
    if m is None:
        raise SystemExit(f"{name} not found")
    return int(m.group(1))


def facts(repo: Path, tag: str) -> list[str]:
    commit = git(repo, "rev-parse", f"{tag}^{{commit}}").strip()
    mpconfig = git(repo, "show", f"{tag}:py/mpconfig.h")
    version = ".".join(str(define(mpconfig, f"MICROPY_VERSION_{p}")) for p in ("MAJOR", "MINOR", "MICRO"))
    if define(mpconfig, "MICROPY_VERSION_PRERELEASE"):
        raise SystemExit(f"{tag} is a preview, not a release")
    pc = git(repo, "show", f"{tag}:py/persistentcode.h")
    lock = git(repo, "show", f"{tag}:{PORT}/lockfiles/dependencies.lock.esp32s3")
    m = re.search(r"^  idf:\n(?:    .*\n)*?    version: (\S+)$", lock, re.M)
    if m is None:
        raise SystemExit("no idf version in dependencies.lock.esp32s3")
    table = git(repo, "show", f"{tag}:{PORT}/partitions-4MiBplus.csv")
    (factory,) = [ln.split(",") for ln in table.splitlines() if ln.startswith("factory")]
    lines = [
        f"# Facts about MicroPython {tag}, read from its git tag by tools/micropython_facts.py.",
        "# Names and numbers only; regenerate with that script, do not edit by hand.",
        f"tag {tag}",
        f"commit {commit}",
        f"version {version}",
        f"mpy {define(pc, 'MPY_VERSION')}.{define(pc, 'MPY_SUB_VERSION')}",
        f"idf {m.group(1)}",
        f"generic_s3_factory_size {factory[4].strip()}",
    ]
    major, minor, _ = (int(x) for x in version.split("."))
    preview = f"v{major}.{minor + 1}.0-preview"
    if git(repo, "tag", "--list", preview).strip():
        between = git(repo, "rev-list", f"{tag}..{preview}").split()
        changed = git(repo, "diff", "--name-only", tag, preview).split()
        if len(between) == 1 and changed == ["py/mpconfig.h"]:
            # the next development line starts with nothing but the version bump
            lines.append(f"next_preview {preview}")
    names = git(repo, "ls-tree", "-r", "--name-only", tag, f"{PORT}/boards/", f"{PORT}/").split()
    keep = re.compile(rf"{PORT}/(boards/sdkconfig\.[^/]+|boards/manifest\.py|partitions-[^/]+\.csv|"
                      r"boards/ESP32_GENERIC_S3/[^/]+|CMakeLists\.txt|esp32_common\.cmake)$")
    lines += [f"file {n}" for n in sorted(set(names)) if keep.match(n)]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=DEFAULT_REPO, help="a MicroPython git repository (bare is fine)")
    ap.add_argument("--stdout", action="store_true", help="print instead of writing tests/data/")
    ap.add_argument("--check", action="store_true", help="compare with the file in tests/data/ (exit 1 if it differs)")
    args = ap.parse_args()
    tag = (ROOT / "firmware" / "MICROPYTHON").read_text().strip()
    text = "\n".join(facts(args.repo, tag)) + "\n"
    out = ROOT / "tests" / "data" / f"micropython-{tag}-esp32.txt"
    if args.check:
        same = out.is_file() and out.read_text() == text
        print(f"{out.relative_to(ROOT)}: " + ("matches the repository" if same else "DIFFERS: run without --check"))
        return 0 if same else 1
    if args.stdout:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
