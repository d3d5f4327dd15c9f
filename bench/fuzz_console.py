"""Fuzz the serial console (firmware/esp32-button/lib/ss_console.py) with many more inputs than the
test suite: the rig (grammar, reference model, properties; its docstring has the method) is
tests/support/fuzz_console.py, which tests/test_fuzz_console.py drives with hypothesis.

    .venv/bin/python bench/fuzz_console.py [--examples 2000] [--seconds 0] [--seed N]
                                           [--max-ops 40] [--only I]

Prints one JSON object: examples, operations and lines tried, failures (each with the seed and
example index that reproduce it: ``--seed S --only I`` reruns one with its trace), examples/s
and lines/s, and how often each reply code came back.  Exit status 1 if any property failed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.fuzz_console import Failure, example, pki  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fuzz the SafeSignal serial console")
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: no limit)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-ops", type=int, default=40)
    ap.add_argument("--deadline", type=float, default=5.0, help="seconds one operation may take")
    ap.add_argument("--only", type=int, default=None, help="run one example (with --seed) and print its failure")
    ns = ap.parse_args(argv)
    seed = ns.seed if ns.seed is not None else random.SystemRandom().getrandbits(32)
    if ns.only is not None:
        try:
            example(seed, ns.only, ns.max_ops, ns.deadline)
        except Failure as e:
            print(e)
            return 1
        print(f"example {ns.only} of seed {seed}: no failure")
        return 0
    pki()  # the CA keys: not part of the timing
    t0 = time.perf_counter()
    failures: list[dict[str, Any]] = []
    kinds: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    n = ops = lines = 0
    while n < ns.examples and not (ns.seconds and time.perf_counter() - t0 >= ns.seconds):
        try:
            o, k, s = example(seed, n, ns.max_ops, ns.deadline)
            ops += o
            lines += k
            stats.update(s)
        except Failure as e:
            first = str(e).splitlines()[0]
            kinds[first[:120]] += 1
            if len(failures) < 20:
                failures.append({"seed": seed, "example": n, "error": first,
                                 "reproduce": f"bench/fuzz_console.py --seed {seed} --only {n}"
})
        n += 1
    dt = time.perf_counter() - t0
    print(json.dumps({
        "examples": n, "operations": ops, "lines": lines, "seed": seed,
        "seconds": round(dt, 2), "examples_per_s": round(n / dt, 1) if dt else None,
        "lines_per_s": round(lines / dt, 1) if dt else None,
        "failed_examples": sum(kinds.values()), "failure_kinds": dict(kinds), "failures": failures,
        "replies": dict(sorted(stats.items())),
    }, indent=2))
    return 1 if kinds else 0


if __name__ == "__main__":
    sys.exit(main())
