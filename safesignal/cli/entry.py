"""The ``safesignal`` console script and ``python -m safesignal``: as little as possible is imported
before the guard is up, so Ctrl-C at any moment of start-up is one line and exit 130."""

from __future__ import annotations

import sys

from safesignal.cli.base import guarded


def entry() -> None:
    def main() -> int:
        from safesignal.cli.commands import main as cli_main  # the heavy imports, under the guard

        return cli_main()

    sys.exit(guarded(main))
