"""Flash wear of the NVS partition under the firmware's real write pattern: page (sector) erases
per 1,000 alerts, and the years until the most-erased sector reaches its rated erase cycles at
a given number of alerts a day.  Prints JSON; method in bench/README.md.

The firmware's own outbox and store code (ss_outbox, ss_store, unmodified) runs over the
virtual flash (safesignal/sim/flash.py, ESP-IDF v5.5's NVS write path); every alert is stored
(Outbox.add) and then delivered (Outbox.ack), as the device does once the broker acknowledges
it.  Usage: ``.venv/bin/python bench/nvs_wear.py [--alerts 20000] [--provisionings 4]
[--per-day 20] [--cycles 100000] [--encrypted]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from safesignal.nvs.format import derive_hmac_keys  # noqa: E402
from support.power_cut import Scenario  # noqa: E402


def measure(alerts: int, provisionings: int, encrypted: bool, seed: int = 7) -> dict[str, object]:
    keys = derive_hmac_keys(bytes(range(32))) if encrypted else None
    with tempfile.TemporaryDirectory() as d:
        sc = Scenario(Path(d) / "nvs.bin", keys=keys, seed=seed)
        for _ in range(provisionings):
            sc.step("save")
        base_erases = sum(sc.sector_erases)
        base_writes = sc.flash_writes
        base_per_sector = sc.sector_erases
        for _ in range(alerts):
            sc.step("alert")
            sc.step("ack")
        per_sector = [a - b for a, b in zip(sc.sector_erases, base_per_sector, strict=True)]
        erases = sum(sc.sector_erases) - base_erases
        writes = sc.flash_writes - base_writes
    return {"per_sector": per_sector, "erases": erases, "writes": writes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=int, default=20000)
    ap.add_argument("--provisionings", type=int, default=4, help="configurations saved before the alerts")
    ap.add_argument("--per-day", type=float, default=20.0, help="alerts a day (default 20)")
    ap.add_argument("--cycles", type=int, default=100000, help="rated erase cycles per sector (default 100000)")
    ap.add_argument("--encrypted", action="store_true")
    args = ap.parse_args(argv)
    m = measure(args.alerts, args.provisionings, args.encrypted)
    per_sector = m["per_sector"]
    assert isinstance(per_sector, list) and isinstance(m["erases"], int) and isinstance(m["writes"], int)
    sectors = len(per_sector)
    worst = max(per_sector) / args.alerts  # erases of the most-used sector per alert
    mean = m["erases"] / sectors / args.alerts
    days_worst = args.cycles / (worst * args.per_day) if worst else float("inf")
    days_mean = args.cycles / (mean * args.per_day) if mean else float("inf")
    print(json.dumps({
        "alerts": args.alerts,
        "provisionings_before": args.provisionings,
        "encrypted": args.encrypted,
        "nvs_sectors": sectors,
        "page_erases_per_1000_alerts": round(m["erases"] * 1000 / args.alerts, 2),
        "flash_writes_per_alert": round(m["writes"] / args.alerts, 2),
        "erases_per_sector": per_sector,
        "alerts_per_day": args.per_day,
        "rated_erase_cycles": args.cycles,
        "years_until_worn_most_erased_sector": round(days_worst / 365.25, 1),
        "years_until_worn_if_perfectly_even": round(days_mean / 365.25, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
