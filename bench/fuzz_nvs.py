"""Fuzz the NVS reader (safesignal.nvs.format) and ``safesignal nvs dump`` (safesignal.nvs.dump) with many
more inputs than the test suite: the rig (inputs, properties; its docstring has the method) is
tests/support/fuzz_nvs.py, which tests/test_fuzz_nvs.py drives with hypothesis.

    .venv/bin/python bench/fuzz_nvs.py [--examples 200000] [--seconds 0] [--seed N] [--deadline 5]

Prints one JSON object: inputs tried, failures (with the seed that reproduces each), inputs/s,
and how many inputs hit each kind of finding.  Exit status 1 if any property failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.fuzz_nvs import run, summary  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fuzz safesignal.nvs.format and safesignal nvs dump")
    ap.add_argument("--examples", type=int, default=20000, help="inputs to try (0 = until --seconds)")
    ap.add_argument("--seconds", type=float, default=0.0, help="time budget (0 = until --examples)")
    ap.add_argument("--seed", type=int, default=1, help="first seed; input i uses seed + i")
    ap.add_argument("--deadline", type=float, default=5.0, help="seconds one input may take")
    args = ap.parse_args(argv)
    if args.examples <= 0 and args.seconds <= 0:
        ap.error("give --examples or --seconds")
    totals = run(args.examples, args.seconds, args.seed, args.deadline)
    doc = summary(totals, args.seed)
    print(json.dumps(doc, indent=2))
    return 1 if totals.failures else 0


if __name__ == "__main__":
    sys.exit(main())
