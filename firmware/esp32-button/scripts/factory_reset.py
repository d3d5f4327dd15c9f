#!/usr/bin/env python3
"""Factory-reset a SafeSignal button over its serial console (PROVISIONING.md, "Factory Reset").

    python scripts/factory_reset.py --port /dev/ttyUSB0

Erases the device's credentials; it reboots into provisioning mode.  A thin wrapper over
`safesignal factory-reset`.
"""

import sys

from _bootstrap import ensure_importable

ensure_importable()

from safesignal.cli.commands import script_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(script_main("factory-reset", "factory_reset.py", sys.argv[1:]))
