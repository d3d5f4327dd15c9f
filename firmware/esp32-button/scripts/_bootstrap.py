"""Let the seed's scripts run from a checkout even when the safesignal package is not installed."""

import sys
from pathlib import Path


def ensure_importable() -> None:
    try:
        import safesignal.cli  # noqa: F401

        return
    except ModuleNotFoundError as e:
        if e.name == "serial":
            _missing()
    here = Path(__file__).resolve()
    sys.path.insert(0, str(here.parents[1] / "lib"))  # ssproto
    sys.path.insert(0, str(here.parents[3]))  # the repository root: safesignal/
    try:
        import safesignal.cli  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name == "serial":
            _missing()
        raise


def _missing() -> None:
    print("✗ Error: pyserial is not installed: pip install pyserial", file=sys.stderr)
    sys.exit(2)
