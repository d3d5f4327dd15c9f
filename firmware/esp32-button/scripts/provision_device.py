#!/usr/bin/env python3
"""Provision a SafeSignal button over its serial console (PROVISIONING.md, "Step 2").

    python scripts/provision_device.py --port /dev/ttyUSB0 --wifi-ssid "SafeSignal-Edge" \\
        --wifi-pass "your-wifi-password" --device-id "esp32-prod-001" --tenant "tenant-a" \\
        --building "building-a" --room "room-1" [--mqtt-uri mqtt://host:1883]

A thin wrapper over `safesignal provision`; exit codes as documented there.
"""

import sys

from _bootstrap import ensure_importable

ensure_importable()

from safesignal.cli.commands import script_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(script_main("provision", "provision_device.py", sys.argv[1:]))
