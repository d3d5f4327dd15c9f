#!/usr/bin/env bash
# README command 2: the whole test suite (unit, firmware under MicroPython, virtual device end
# to end with a real mosquitto, static checks).  Tests that need mosquitto skip locally with
# the command that installs it; under CI=true nothing skips.
set -euo pipefail
cd "$(dirname "$0")"
source tools/venv.sh
ensure_venv "[test]"
# Four workers (pytest-xdist): most tests wait on virtual devices booting and brokers answering,
# not on the CPU, so four share two cores well (about 5 min instead of 17 here).  `-n 0` on the
# command line runs in one process.
exec .venv/bin/python -m pytest -n 4 "$@"
