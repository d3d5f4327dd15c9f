"""The module the product targets (safesignal/sim/module.py) and the heap it leaves: the virtual
device's default heap is that module's, and the whole flow runs in it (provisioning with a
device identity for mqtts:// and the test alert), from .mpy as on a board without the frozen image."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SecretGuard
from safesignal.cli.commands import build_parser
from safesignal.sim import module
from safesignal.sim.supervisor import SimConfig
from support.cli import run_cli
from test_board import flash_size, sdkconfig_defaults
from test_e2e_serial import SSID
from test_identity_e2e import provision_args
from tlsutil import running_site

BOARD = Path(__file__).resolve().parents[1] / "firmware" / "boards" / "SAFESIGNAL_S3"


def _heap_bytes(text: str) -> int:
    return int(text[:-1]) * {"k": 1024, "m": 1024 * 1024}[text[-1]]


def test_virtual_device_defaults_to_the_modules_heap() -> None:
    assert SimConfig.__dataclass_fields__["heap"].default == module.PYTHON_HEAP
    args = build_parser().parse_args(["sim", "--port-link", "p", "--flash", "f"])
    assert args.heap == module.PYTHON_HEAP
    # the board is configured for that module: its flash size and quad PSRAM
    assert flash_size() == module.FLASH_SIZE
    assert "boards/sdkconfig.spiram_sx" in sdkconfig_defaults(BOARD / "mpconfigboard.cmake")
    assert _heap_bytes(module.PYTHON_HEAP) < module.PSRAM_KIB * 1024  # never more than the PSRAM


def test_whole_mqtts_flow_in_the_modules_heap(make_sim, guard: SecretGuard, tmp_path: Path) -> None:
    pw = guard.secret("module-heap-wifi-pass")
    with running_site(tmp_path / "site", guard) as site:
        sim = make_sim(aps=[(SSID, pw)], hosts=site.hosts, mpy=True)  # no --heap: the default
        p = run_cli(guard, *provision_args(sim, site, pw, "--verify", "--broker", site.uri, "--operator", "monitor"),
                    env={"SAFESIGNAL_CA_PASS": site.passphrase})
        assert p.returncode == 0, p.stdout + p.stderr
        assert "✓ Provisioning complete!" in p.stdout
        assert "✓ Test alert received from btn-1 (seq 0)" in p.stdout
        st = json.loads(run_cli(guard, "status", "--port", sim.port, "--json").stdout)
        assert st["mqtt_state"] == "connected" and st["certificate"].startswith("CN=btn-1")
        # the device really ran in the module's heap: free heap after a collection, with the
        # firmware loaded, is more than the old 256k default could ever have held
        free = int(st["free_heap"])
        assert 256 * 1024 < free < _heap_bytes(module.PYTHON_HEAP), free
