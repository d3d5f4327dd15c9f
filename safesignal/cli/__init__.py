"""The command line: argparse, rendering and exit codes (one module per command group).

This package stays light: `base` (the entry point) must be importable before anything heavy, so
that Ctrl-C during start-up is caught.  The commands live in `commands`, `ca` and `nvs`."""
