"""Power cuts (SIGKILL of the device process) at random moments while the device saves or
clears its configuration: every boot must find the old state or the complete new one."""

from __future__ import annotations

import random
import threading
import time

from conftest import SecretGuard, Sim
from safesignal.link.session import DeviceSession

OLD = {"wifi_ssid": "Old-Net", "device_id": "dev-old", "tenant": "t-old", "building": "b-old", "room": "r-old"}
NEW = {"wifi_ssid": "New Net", "device_id": "dev-new", "tenant": "t-new", "building": "b-new", "room": "r-new"}
OLD_PW = "old-password-1"
NEW_PW = "new password 2"
TRIALS = 60


def stage(s: DeviceSession, cfg: dict[str, str], pw: str) -> None:
    s.command(["provision_set_wifi", cfg["wifi_ssid"], pw])
    s.command(["provision_set_device", cfg["device_id"], cfg["tenant"], cfg["building"], cfg["room"]])


def observed(s: DeviceSession) -> str:
    """'blank', 'old' or 'new' — anything else fails the test."""
    st = s.status()
    if st["provisioned"] == "no":
        assert all(st[k] == "" for k in OLD), st
        return "blank"
    for name, cfg, pw in (("old", OLD, OLD_PW), ("new", NEW, NEW_PW)):
        if st["wifi_ssid"] == cfg["wifi_ssid"]:
            assert {k: st[k] for k in cfg} == cfg, f"mixed configuration: {st}"
            assert s.secret_matches(cfg["wifi_ssid"], pw), "password from another configuration"
            return name
    raise AssertionError(f"unexpected state {st}")


def test_power_cut_during_save_and_clear(make_sim, guard: SecretGuard) -> None:
    guard.secret(OLD_PW)
    guard.secret(NEW_PW)
    sim: Sim = make_sim()
    rng = random.Random(20261128)
    seen: dict[tuple[str, str, str], int] = {}
    with sim.session(timeout=15) as s:
        s.sync()
        for trial in range(TRIALS):
            start = rng.choice(["blank", "old"])
            action = rng.choice(["save", "save", "clear"]) if start == "old" else "save"
            # Bring the device into the start state (normal, uncut operations).
            if start == "old":
                stage(s, OLD, OLD_PW)
                s.command(["provision_complete", "--offline"])  # no network here: NVS is the subject
                s.wait_reboot()
            else:
                s.command(["provision_reset", "--confirm"])
                s.wait_reboot()
            assert observed(s) == start
            # Half the trials model ESP-IDF (every set/erase reaches flash at once, commit is a
            # no-op), half MicroPython's documented contract (only committed writes survive).
            write_through = rng.random() < 0.5
            sim.control.nvs_mode(write_through)
            if action == "save":
                stage(s, NEW, NEW_PW)
            boots = sim.control.state()["boots"]
            line = "provision_complete --offline" if action == "save" else "provision clear"
            if trial % 2 == 0:
                # Deterministic: cut at the k-th NVS write/erase/commit the device issues.
                sim.control.power_cut_after(rng.randint(1, 7))
                s.write_line(line)
            else:
                # Wall-clock: cut after a random delay, wherever the device happens to be.
                delay = rng.uniform(0, 0.02)
                t = threading.Timer(delay, sim.control.power_cut)
                s.write_line(line)
                t.start()
                t.join()
            sim.wait_boot(boots)
            s.sync(timeout=15)
            sim.control.power_cut_after(0)
            got = observed(s)
            allowed = {"save": {start, "new"}, "clear": {"old", "blank"}}[action]
            assert got in allowed, f"trial {trial}: {start} --{action}--> {got}"
            sim.control.nvs_mode(False)
            key = (start, action, got)
            seen[key] = seen.get(key, 0) + 1
            # The flash image is always a readable NVS partition.
            part = sim.partition(strict=True)
            assert not part.issues, part.issues
            # Let the device settle before the next trial's reboot.
            time.sleep(0.01)
        guard.output("console", "\n".join(s.received))
    print("power-cut outcomes:", seen)
    # The trials really exercised both outcomes of interrupted saves and clears.
    assert seen.get(("blank", "save", "blank"), 0) + seen.get(("old", "save", "old"), 0) > 0, seen
    assert seen.get(("blank", "save", "new"), 0) + seen.get(("old", "save", "new"), 0) > 0, seen
    assert sum(v for (st, a, _), v in seen.items() if a == "clear") > 0, seen


FLASH_TRIALS = 16


def test_power_cut_at_random_flash_writes_in_the_real_device(make_sim, guard: SecretGuard) -> None:
    """End to end: the control op power_cut_after {"flash_writes": N} cuts the power at the N-th
    physical flash write (an entry, a bitmap word, a page header/state word, a sector erase) while
    the real firmware saves a configuration; the next boot (ESP-IDF's recovery, then the
    firmware's) finds the old or the new configuration and the image is clean."""
    guard.secret(OLD_PW)
    guard.secret(NEW_PW)
    sim: Sim = make_sim()
    rng = random.Random(20260301)
    seen: dict[str, int] = {}
    with sim.session(timeout=15) as s:
        s.sync()
        stage(s, OLD, OLD_PW)
        s.command(["provision_complete", "--offline"])
        s.wait_reboot()
        for trial in range(FLASH_TRIALS):
            start = observed(s)
            assert start in ("old", "new")
            cfg, pw = (NEW, NEW_PW) if start == "old" else (OLD, OLD_PW)
            other = "new" if start == "old" else "old"
            sim.control.nvs_mode(rng.random() < 0.5)
            stage(s, cfg, pw)
            boots = sim.control.state()["boots"]
            # a save writes ~20-60 flash words; some cuts land after it (then it completes)
            sim.control.power_cut_after_flash_writes(rng.randint(1, 60), torn=trial % 2 == 1)
            s.write_line("provision_complete --offline")
            sim.wait_boot(boots)
            s.sync(timeout=15)
            sim.control.power_cut_after_flash_writes(0)
            got = observed(s)
            assert got in (start, other), f"trial {trial}: {start} -> {got}"
            seen[got == other and "new" or "old"] = seen.get(got == other and "new" or "old", 0) + 1
            part = sim.partition(strict=True)
            assert not part.issues, part.issues
            sim.control.nvs_mode(False)
        guard.output("console", "\n".join(s.received))
    print("flash-write power cuts:", seen)
    assert seen.get("old", 0) > 0 and seen.get("new", 0) > 0, seen
