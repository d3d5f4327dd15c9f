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
# command line runs in one process.  Then the BlueZ VM tests (marker bluez_vm), alone: QEMU
# without KVM takes a whole core for minutes and would starve the timing of the tests beside it.
# A phase that the arguments leave empty (pytest's exit code 5) counts as passed, unless both are.
set +e
.venv/bin/python -m pytest -n 4 -m "not bluez_vm" "$@"
first=$?
.venv/bin/python -m pytest -n 0 -m bluez_vm "$@"
second=$?
if [ "$first" -eq 5 ] && [ "$second" -eq 5 ]; then exit 5; fi
[ "$first" -eq 5 ] && first=0
[ "$second" -eq 5 ] && second=0
if [ "$first" -ne 0 ]; then exit "$first"; fi
exit "$second"
