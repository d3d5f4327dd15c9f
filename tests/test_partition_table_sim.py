"""The virtual device reports the board's partition table through esp32.Partition, as MicroPython
v1.28.0 does on the chip (ports/esp32/esp32_partition.c): checked from MicroPython in the sim
against the board's CSV read by the static test's own parser (tests/test_board.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_board import read_partitions
from test_sim import ProbeSim

PROBE = """\
import sys
import json
import esp32

P = esp32.Partition


def row(p):
    return list(p.info())


out = {
    "all": [row(p) for p in P.find(P.TYPE_APP) + P.find(P.TYPE_DATA)],
    "running": row(P(P.RUNNING)),
    "boot": row(P(P.BOOT)),
    "next": row(P(P.RUNNING).get_next_update()),
    "next_next": row(P(P.RUNNING).get_next_update().get_next_update()),
    "by_label": {n: row(P(n)) for n in ("nvs", "otadata", "ota_0", "ota_1", "vfs", "phy_init")},
    "nvs_find": [row(p) for p in P.find(P.TYPE_DATA, label="nvs")],
    "data_nvs_subtype": [row(p) for p in P.find(P.TYPE_DATA, 0x02)],
    "vfs_blocks": P.find(P.TYPE_DATA, label="vfs")[0].ioctl(4, 0),
}
try:
    P("no-such-partition")
    out["missing"] = "found"
except OSError as e:
    out["missing"] = e.errno
try:
    P("ota_0").readblocks(0, bytearray(16))
    out["app_read"] = "read"
except OSError as e:
    out["app_read"] = e.errno
nvs = P("nvs")
head = bytearray(32)
nvs.readblocks(0, head)
out["nvs_head"] = list(head[:4])
while True:
    line = sys.stdin.readline()
    if not line:
        break
    if line.strip() == "table":  # asked for: output before the port is open would be lost
        print("TABLE " + json.dumps(out))
"""

TYPES = {"app": 0, "data": 1}
SUBTYPES = {"ota_0": 0x10, "ota_1": 0x11, "ota": 0x00, "phy": 0x01, "nvs": 0x02, "fat": 0x81}


@pytest.fixture
def table_fw(tmp_path: Path) -> Path:
    fw = tmp_path / "table-fw"
    (fw / "lib").mkdir(parents=True)
    (fw / "main.py").write_text(PROBE)
    return fw


def expected_rows() -> list[list[object]]:
    # The virtual device is the hardened board by default (NVS encryption with an eFuse key, and
    # so flash encryption): ESP-IDF reports every app, otadata and the flagged partitions as
    # encrypted (esp_partition/partition.c), never NVS.
    return [[TYPES[p.type], SUBTYPES[p.subtype], p.offset, p.size, p.name,
             p.type == "app" or p.subtype == "ota" or "encrypted" in p.flags] for p in read_partitions()]


def test_esp32_partition_reports_the_boards_table(tmp_path: Path, table_fw: Path) -> None:
    sim = ProbeSim(tmp_path, table_fw, "table")
    try:
        sim.send(b"table\r\n")
        line = sim.expect("TABLE ", 15)
    finally:
        sim.stop()
    got = json.loads(line[len("TABLE "):])
    rows = expected_rows()
    by_name = {r[4]: r for r in rows}
    # find(): apps then data, each in table order, every partition of the board's CSV
    assert got["all"] == [r for r in rows if r[0] == 0] + [r for r in rows if r[0] == 1]
    assert got["by_label"] == {n: by_name[n] for n in got["by_label"]}
    # a freshly flashed board (blank otadata, no factory app) runs ota_0; the update goes to ota_1, then back
    assert got["running"] == got["boot"] == by_name["ota_0"]
    assert got["next"] == by_name["ota_1"] and got["next_next"] == by_name["ota_0"]
    assert got["nvs_find"] == got["data_nvs_subtype"] == [by_name["nvs"]]
    assert got["vfs_blocks"] == by_name["vfs"][3] // 4096
    assert got["missing"] == 2  # ENOENT, as esp32_partition_new raises
    assert got["app_read"] == 5  # EIO: the app's contents are not modelled
    assert got["nvs_head"] == [0xFF] * 4  # a blank NVS partition reads erased
