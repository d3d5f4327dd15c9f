"""The virtual board's parts and the supervisor's hw dispatch table (safesignal/sim/parts.py).

Every op a stub sends must have exactly one owner among the parts the supervisor lists, so a
new stub op (or a new part that claims an op another part has) fails here, not at run time
as an EINVAL the firmware may swallow."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from safesignal.sim.air import Air
from safesignal.sim.flash import NvsOpError
from safesignal.sim.parts import HwOp, NoReply, dispatch_table
from safesignal.sim.supervisor import _MUTATING, STUBS, SimConfig, Supervisor

MAC = bytes.fromhex("020000000001")
_CALL = re.compile(r"""_hw\.call\(\s*["']([A-Za-z0-9_]+)["']""")


def stub_ops() -> dict[str, list[str]]:
    """Op name -> the stub files that send it, from every ``_hw.call(...)`` in stubs/."""
    ops: dict[str, list[str]] = {}
    for path in sorted(STUBS.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        calls = text.count("_hw.call(")
        names = _CALL.findall(text)
        # an op name the grep cannot read (a variable) would escape the check: refuse it
        assert len(names) == calls, f"{path.name}: a _hw.call whose op is not a string literal"
        for name in names:
            ops.setdefault(name, []).append(path.name)
    return ops


@pytest.fixture
def sup(tmp_path: Path) -> Supervisor:
    cfg = SimConfig(port_link=tmp_path / "tty", flash=tmp_path / "flash.bin", air=Air(), mac=MAC)
    return Supervisor(cfg)  # not started: construction builds the table and creates no file


def test_grep_finds_the_stub_ops() -> None:
    ops = stub_ops()
    # a few the firmware cannot live without, one per stub module, so an empty grep fails
    for op in ("nvs_set", "part_info", "unique_id", "pin_read", "wlan_connect", "dns_lookup", "reset"):
        assert op in ops


def test_every_stub_op_has_exactly_one_owner(sup: Supervisor) -> None:
    owners: dict[str, list[str]] = {}
    for part in sup.parts:
        for op in part.ops():
            owners.setdefault(op, []).append(type(part).__name__)
    shared = {op: names for op, names in owners.items() if len(names) > 1}
    assert not shared, f"ops claimed by two parts: {shared}"
    unowned = {op: files for op, files in stub_ops().items() if op not in owners}
    assert not unowned, f"stub ops no part answers: {unowned}"
    assert set(sup._ops) == set(owners)
    # power_cut_after counts the flash's writes: they must be the flash's ops
    assert set(_MUTATING) <= set(sup.flash.ops())


def test_dispatch_table_refuses_an_op_claimed_twice() -> None:
    class Radio:
        def ops(self) -> Mapping[str, HwOp]:
            return {"ble_active": lambda req: True, "unique_id": lambda req: "00"}

    class Other:
        def ops(self) -> Mapping[str, HwOp]:
            return {"unique_id": lambda req: "11"}

    with pytest.raises(ValueError, match="'unique_id' is claimed by both Radio and Other"):
        dispatch_table([Radio(), Other()])
    assert set(dispatch_table([Radio()])) == {"ble_active", "unique_id"}


def test_ops_reach_their_parts(sup: Supervisor) -> None:
    hw = sup._hw
    assert hw("unique_id", {"op": "unique_id"}) == MAC.hex()
    assert hw("wlan_config_get", {"name": "mac"}) == [True, {"hex": MAC.hex()}]
    hw("rtc_set", {"datetime": [2026, 1, 2, 3, 4, 5, 6, 0]})
    assert sup.state()["rtc_set"] == [2026, 1, 2, 3, 4, 5, 6, 0]
    hw("pin_init", {"pin": sup.button.gpio, "mode": 1, "pull": 2})
    assert sup.button.pull == 2
    assert hw("pin_value", {"pin": sup.button.gpio}) == 1  # released, pulled up
    hw("nvs_open", {"ns": "probe"})
    hw("nvs_set", {"ns": "probe", "key": "b", "type": "blob", "value": "c0ffee"})
    with pytest.raises(NvsOpError) as err:
        hw("nvs_get", {"ns": "probe", "key": "b", "type": "blob", "size": 2})
    assert err.value.code == 0x110C  # ESP_ERR_NVS_INVALID_LENGTH: the buffer is too small
    assert hw("nvs_get", {"ns": "probe", "key": "b", "type": "blob", "size": 3}) == "c0ffee"
    info: Any = hw("part_info", {})
    assert "nvs" in [p[0] for p in info["parts"]]
    assert hw("net_up", {}) is False
    assert hw("dns_lookup", {"host": "x.local"}) is None  # no IP: no lookup
    with pytest.raises(ValueError, match="unknown hw op"):
        hw("no_such_op", {})
    with pytest.raises(ValueError):
        hw("wlan_status_param", {"param": "rssi"})  # not modelled: EINVAL, as before parts.py


def test_reset_gets_no_reply(sup: Supervisor) -> None:
    resets: list[str] = []
    sup.chip._reset = lambda: resets.append("reset")
    with pytest.raises(NoReply):
        sup._hw("reset", {})
    assert resets == ["reset"]
