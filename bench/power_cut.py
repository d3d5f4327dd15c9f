"""Power cuts at random physical flash writes while the firmware saves its configuration and
raises and delivers alerts, as many as asked: the rig of tests/test_nvs_history.py
(tests/support/power_cut.py), which checks after every cut that the device boots to the old or
the new configuration (never a mix), with every stored alert exactly once and a clean NVS image.

    .venv/bin/python bench/power_cut.py [--cuts 5000] [--encrypted] [--seed N]

prints JSON figures (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.power_cut import Scenario  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from safesignal.nvs.format import derive_hmac_keys

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuts", type=int, default=5000, help="power cuts to make (default 5000)")
    ap.add_argument("--encrypted", action="store_true", help="NVS encryption on (XTS-AES per entry)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    keys = derive_hmac_keys(bytes(range(32))) if args.encrypted else None
    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as d:
        sc = Scenario(Path(d) / "nvs.bin", keys=keys, seed=args.seed)
        while sc.total_cuts < args.cuts:
            sc.run(200, cut_rate=0.4, save_every=6)
        result = sc.figures()
        result["sector_erases"] = sc.sector_erases
    # any violation stops the run with an AssertionError (exit status 1): a printed result is a clean run
    result.update({"encrypted": args.encrypted, "seed": args.seed, "cpu_s": round(time.process_time() - t0, 1)})
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
