#!/usr/bin/env bash
# README command 2: the whole test suite (unit, firmware under MicroPython, virtual device end
# to end with a real mosquitto, static checks).  Tests that need mosquitto skip locally with
# the command that installs it; under CI=true nothing skips.
set -euo pipefail
cd "$(dirname "$0")"
source tools/venv.sh
ensure_venv "[test]"
exec .venv/bin/python -m pytest "$@"
