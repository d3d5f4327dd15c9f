"""Power cuts at random physical flash writes while the firmware saves its configuration and
raises and delivers alerts; after every cut the device boots and must find the old or the new
configuration (never a mix), every stored alert exactly once, and a clean NVS image.

The firmware's own store code runs here, on CPython: ``ss_store`` (provisioning record + active
marker) and ``ss_outbox`` (alert outbox), unmodified, over ``esp32.NVS`` as MicroPython implements
it (ports/esp32/esp32_nvs.c) on the virtual flash (safesignal/sim/flash.py: ESP-IDF's NVS write
path, one physical flash operation at a time).  A boot is what ss_app.main does with the flash:
``nvs_flash_init`` (FlashNvs power-up recovery), ``Outbox.load()``, ``ss_store.provision_init``.

The rig of tests/test_nvs_history.py (:class:`Scenario`); bench/power_cut.py runs it for many
more cuts and bench/nvs_wear.py for its wear figures (see bench/README.md).
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "firmware" / "esp32-button" / "lib"))

import ss_outbox  # noqa: E402
import ss_store  # noqa: E402
from safesignal.nvs.format import NvsKeys, parse_partition  # noqa: E402
from safesignal.sim.flash import FlashNvs, NvsOpError, PowerCut  # noqa: E402


class BridgeNVS:
    """MicroPython's esp32.NVS(namespace) over the virtual flash: nvs_open(READWRITE) at
    construction, ESP-IDF errors as OSError(-code).  ``log`` records every call that writes."""

    def __init__(self, flash: FlashNvs, ns: str, log: list[tuple[str, ...]] | None = None) -> None:
        self.flash = flash
        self.ns = ns
        self.log = log if log is not None else []
        self._call(flash.open, ns)

    @staticmethod
    def _call(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except NvsOpError as e:
            raise OSError(-e.code) from None

    def set_i32(self, key: str, value: int) -> None:
        self.log.append(("set_i32", self.ns, key))
        self._call(self.flash.set, self.ns, key, "i32", value)

    def get_i32(self, key: str) -> int:
        v = self._call(self.flash.get, self.ns, key, "i32")
        assert isinstance(v, int)
        return v

    def set_blob(self, key: str, value: bytes) -> None:
        self.log.append(("set_blob", self.ns, key, str(len(value))))
        self._call(self.flash.set, self.ns, key, "blob", bytes(value))

    def get_blob(self, key: str, buf: bytearray) -> int:
        v = self._call(self.flash.get, self.ns, key, "blob")
        assert isinstance(v, bytes)
        if len(v) > len(buf):
            raise OSError(-0x110C)  # ESP_ERR_NVS_INVALID_LENGTH
        buf[: len(v)] = v
        return len(v)

    def erase_key(self, key: str) -> None:
        self.log.append(("erase_key", self.ns, key))
        self._call(self.flash.erase, self.ns, key)

    def commit(self) -> None:
        self.log.append(("commit", self.ns))
        self._call(self.flash.commit)


def config(n: int) -> dict[str, str]:
    """The n-th configuration: every field differs from the (n-1)-th, so a mix shows."""
    return {
        "wifi_ssid": f"Net {n}",
        "wifi_pass": f"pass-{n:04d}-secret",
        "device_id": f"dev-{n}",
        "tenant": f"t{n}",
        "building": f"b{n}",
        "room": f"r{n}",
        "mqtt_uri": f"mqtt://10.0.{n % 250}.1:1883",
    }


def identity(n: int) -> dict[str, bytes]:
    """A device identity of realistic size (key 101 bytes, certificates ~500-700 bytes)."""
    rnd = random.Random(n)
    return {
        "key": ss_store.KEY_MAGIC + bytes(rnd.randrange(256) for _ in range(ss_store.KEY_LEN - 4)),
        "cert": bytes(rnd.randrange(256) for _ in range(480 + n % 64)),
        "ca": bytes(rnd.randrange(256) for _ in range(620 + n % 32)),
    }


class Device:
    """One boot of the device, as far as the flash goes (ss_app.main's order)."""

    def __init__(self, path: Path, keys: NvsKeys | None, write_through: bool, log: list[tuple[str, ...]]) -> None:
        self.flash = FlashNvs(path, keys=keys, write_through=write_through)  # nvs_flash_init
        self.flash.create()
        self.outbox = ss_outbox.Outbox(BridgeNVS(self.flash, ss_outbox.NAMESPACE, log))
        self.outbox.load()
        self.store = ss_store.Store(BridgeNVS(self.flash, ss_store.NAMESPACE, log))
        self.store.provision_init()


class Scenario:
    """A device's life: alerts raised and delivered, re-provisionings, power cuts at random
    physical flash writes; the expected state is tracked and checked after every boot."""

    def __init__(self, path: Path, *, keys: NvsKeys | None = None, seed: int = 0) -> None:
        self.path = path
        self.keys = keys
        self.rng = random.Random(seed)
        self.log: list[tuple[str, ...]] = []
        self.gen = 0  # configuration number saved last (0: none)
        self.cfg: tuple[dict[str, str], dict[str, bytes] | None] | None = None
        self.pending: dict[int, bytes] = {}  # seq -> alert payload, stored and not yet delivered
        self.max_seq = -1
        self.epoch: int | None = None
        self.alerts = 0
        self.delivered = 0
        self.saves = 0
        self.cuts: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.boots = 0
        self.inflight: tuple[str, Any] | None = None
        self._erases: list[int] = []
        self._writes = 0
        self.dev = self.boot(None)
        self._erases = [0] * len(self.dev.flash.sector_erases)

    # --- one boot and its checks -----------------------------------------------------------
    def boot(self, inflight: tuple[str, Any] | None) -> Device:
        if hasattr(self, "dev"):  # the wear of the boot that ends here
            for i, n in enumerate(self.dev.flash.sector_erases):
                self._erases[i] += n
            self._writes += self.dev.flash.flash_writes
        write_through = self.rng.random() < 0.5  # ESP-IDF's behaviour, or MicroPython's contract
        dev = Device(self.path, self.keys, write_through, self.log)
        self.boots += 1
        self._check_store(dev, inflight)
        self._check_outbox(dev, inflight)
        image = self.path.read_bytes()
        part = parse_partition(image, keys=self.keys)
        assert not part.issues, f"after power-up recovery the image still has problems: {part.issues}"
        return dev

    def _check_store(self, dev: Device, inflight: tuple[str, Any] | None) -> None:
        got = None
        if dev.store.provision_is_provisioned():
            got = (dev.store.provision_load_config(), dev.store.identity())
        else:
            assert dev.store.load_error is not None and dev.store.load_error.reason == "ESP_ERR_NVS_NOT_FOUND", (
                f"stored configuration unreadable: {dev.store.load_error and dev.store.load_error.message}"
            )
        allowed = [self.cfg]
        if inflight is not None and inflight[0] == "save":
            allowed.append(inflight[1])
        assert got in allowed, "the configuration after the cut is neither the old nor the new one (a mix?)"
        if inflight is not None and inflight[0] == "save":
            self.outcomes["save->" + ("new" if got == inflight[1] and got != self.cfg else "old")] += 1
        self.cfg = got

    def _check_outbox(self, dev: Device, inflight: tuple[str, Any] | None) -> None:
        ob = dev.outbox
        got = {}
        for seq in ob.pending:
            e = ob.entry(seq)
            assert e is not None, f"alert {seq} listed but unreadable"
            got[seq] = e[1]
        add_seq = inflight[1] if inflight is not None and inflight[0] == "alert" else None
        ack_seq = inflight[1] if inflight is not None and inflight[0] == "ack" else None
        for seq, payload in self.pending.items():
            if seq == ack_seq:
                continue  # delivered: it may still be in flash (sent again, de-duplicated by seq)
            assert seq in got, f"alert {seq} was stored but is lost"
            assert got[seq] == payload, f"alert {seq} changed"
        for seq in got:
            assert seq in self.pending or seq == add_seq, f"alert {seq} appeared from nowhere (a duplicate?)"
        assert len(ob.pending) == len(set(ob.pending)), "an alert is stored twice"
        assert ob.next_seq > self.max_seq, "a sequence number would be handed out again"
        if self.epoch is not None:
            assert ob.epoch == self.epoch, "the outbox epoch changed: receivers would see old seqs as new"
        if add_seq is not None:
            self.outcomes["alert->" + ("stored" if add_seq in got else "not stored")] += 1
            if add_seq in got:
                self.max_seq = max(self.max_seq, add_seq)
        if ack_seq is not None:
            self.outcomes["ack->" + ("still pending" if ack_seq in got else "gone")] += 1
        self.pending = got
        self.epoch = ob.epoch

    # --- what the device does ---------------------------------------------------------------
    def alert(self) -> None:
        ob = self.dev.outbox
        cfg = self.cfg[0] if self.cfg is not None else config(0)
        seq = ob.add(ss_outbox.msg.cfg_prefix(cfg), "panic", 1_800_000_000 + self.alerts, 1000 + self.alerts)
        e = ob.entry(seq)
        assert e is not None
        self.pending[seq] = e[1]
        self.max_seq = max(self.max_seq, seq)
        self.epoch = ob.epoch
        self.alerts += 1

    def ack(self, seq: int) -> None:
        self.dev.outbox.ack(seq)
        del self.pending[seq]
        self.delivered += 1

    def save(self, with_identity: bool) -> None:
        self.gen += 1
        cfg = config(self.gen)
        ident = identity(self.gen) if with_identity else None
        self.dev.store.provision_save_config(cfg, ident)
        self.cfg = (cfg, ident)
        self.saves += 1

    def step(self, action: str) -> None:
        """Run one action; ``self.inflight`` says what it was (for the checks after a cut)."""
        if action == "alert":
            self.inflight = ("alert", self.dev.outbox.next_seq)
            self.alert()
        elif action == "ack":
            seq = min(self.pending)
            self.inflight = ("ack", seq)
            self.ack(seq)
        else:
            gen = self.gen + 1
            with_identity = self.rng.random() < 0.5
            self.inflight = ("save", (config(gen), identity(gen) if with_identity else None))
            self.save(with_identity)
        self.inflight = None

    def next_action(self, save_every: int = 0) -> str:
        if save_every and self.rng.randrange(save_every) == 0:
            return "save"
        if len(self.pending) >= 8 or (self.pending and self.rng.random() < 0.5):
            return "ack"
        return "alert"

    def run(self, steps: int, *, cut_rate: float = 0.0, save_every: int = 0, torn_rate: float = 0.5) -> None:
        """``steps`` actions; each is cut with probability ``cut_rate`` at a random flash write."""
        longest: dict[str, int] = {"alert": 20, "ack": 8, "save": 60}
        for _ in range(steps):
            action = self.next_action(save_every)
            cut = self.rng.random() < cut_rate
            before = self.dev.flash.flash_writes
            if cut:
                torn = self.rng.random() < torn_rate
                self.dev.flash.cut_after_flash_writes(
                    self.rng.randint(1, longest[action]), torn=torn, seed=self.rng.randrange(1 << 30)
                )
            try:
                self.step(action)
            except PowerCut:
                assert self.inflight is not None
                self.cuts[action] += 1
                inflight = self.inflight
                self.dev = self.boot(inflight)
                continue
            longest[action] = max(longest[action], self.dev.flash.flash_writes - before)
            self.dev.flash.cut_after_flash_writes(0)

    @property
    def sector_erases(self) -> list[int]:
        """Erase cycles per sector of the NVS partition over all boots so far."""
        return [a + b for a, b in zip(self._erases, self.dev.flash.sector_erases, strict=True)]

    @property
    def flash_writes(self) -> int:
        return self._writes + self.dev.flash.flash_writes

    @property
    def total_cuts(self) -> int:
        return sum(self.cuts.values())

    def figures(self) -> dict[str, Any]:
        return {
            "alerts_raised": self.alerts,  # add() returned; alerts cut mid-add and stored count as delivered only
            "alerts_delivered": self.delivered,
            "saves": self.saves,
            "boots": self.boots,
            "power_cuts": dict(self.cuts),
            "power_cuts_total": self.total_cuts,
            "outcomes": dict(self.outcomes),
        }
