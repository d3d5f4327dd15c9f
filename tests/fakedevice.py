"""A scripted SafeSignal console for host-only tests: speaks the console protocol (ssproto) the
way ss_console does, in-process, behind a pyserial-like object, so the host library and CLI
run their real code paths in milliseconds without MicroPython.

Each ``FakeDevice`` holds a device's state (stored configuration, staged values, boot id,
outbox counters) and a ``script`` of faults to inject: a refused command, a connect-test
error, a restart in the middle of ``provision_complete`` before or after saving, silence, a
reset between two steps, a different chip or different values after the reboot, Ctrl-C.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field

import ssproto
from safesignal.link.session import BOOT_LINE
from support.checked import take_piece

_boot_ids = itertools.count(0x1000)


@dataclass
class Script:
    refuse: dict[str, tuple[str, str]] = field(default_factory=dict)  # command -> (code, message)
    complete: str = "ok"  # ok | silent | restart_before_save | restart_after_save | <connect-test code>
    complete_log: list[str] = field(default_factory=list)  # log lines printed during provision_complete
    reset_after: str | None = None  # reset (staged values lost) right after answering this command
    saved_differs: dict[str, str] = field(default_factory=dict)  # what the flash holds differs from what was staged
    new_chip_after_reboot: str | None = None
    never_reboots: bool = False  # answers provision_complete, then never comes back
    interrupt_on: str | None = None  # raise KeyboardInterrupt in the host's read after this command is written
    silent: bool = False  # the console answers nothing at all


class FakeDevice:
    def __init__(self, script: Script | None = None, *, config: dict[str, str] | None = None,
                 alerts_pending: int = 0, chip_id: str = "aa:bb:cc:00:00:01") -> None:
        self.script = script or Script()
        self.config = dict(config) if config else None  # stored configuration incl. wifi_pass
        self.staged: dict[str, str] = {}
        self.chip_id = chip_id
        self.boot_id = f"{next(_boot_ids):08x}"
        self.alerts_pending = alerts_pending
        self.next_seq = 0
        self.mqtt_state = "connected" if config else "off"
        self.written: list[str] = []  # every command line the host sent, in order
        self.boots = 1
        self._out = bytearray()
        self._in = bytearray()
        self._interrupt = False
        self._checked = ssproto.Checked()  # checked lines (what the tools send), as ss_console takes them
        self.down = False  # rebooted and never came back

    # --- the pyserial side -----------------------------------------------------------
    @property
    def in_waiting(self) -> int:
        return len(self._out)

    def write(self, data: bytes) -> int:
        self._in += data
        while b"\r\n" in self._in:
            raw, _, rest = bytes(self._in).partition(b"\r\n")
            self._in = bytearray(rest)
            if ssproto.is_checked(raw) and not (self.down or self.script.silent):
                whole = take_piece(self._checked, raw, self._print)
                if whole is None:
                    continue
                raw = whole
            line = raw.decode()
            self.written.append(line)
            if self.down or self.script.silent:
                continue
            self._handle(line)
        return len(data)

    def read(self, n: int = 1) -> bytes:
        if self._interrupt:
            self._interrupt = False
            raise KeyboardInterrupt
        if not self._out:
            time.sleep(0.005)
            return b""
        chunk = bytes(self._out[:n])
        del self._out[:n]
        return chunk

    def close(self) -> None:
        pass

    # --- the device side ---------------------------------------------------------------
    def _print(self, line: str) -> None:
        self._out += line.encode() + b"\r\n"

    def commands(self) -> list[str]:
        """The first word of every line the host sent."""
        return [x.split()[0] for x in self.written if x.strip()]

    def _reboot(self) -> None:
        self.staged = {}
        self.boots += 1
        if self.script.never_reboots:
            self.down = True
            return
        self.boot_id = f"{next(_boot_ids):08x}"
        if self.script.new_chip_after_reboot:
            self.chip_id = self.script.new_chip_after_reboot
        self._print("[BOOT] fake-device 0.0, chip " + self.chip_id)
        self._print(BOOT_LINE)

    def _handle(self, line: str) -> None:
        args = ssproto.split_args(line)
        cmd, a = args[0], args[1:]
        if cmd == self.script.interrupt_on:
            self._interrupt = True
        if cmd in self.script.refuse:
            code, msg = self.script.refuse[cmd]
            self._print(ssproto.err_line(code, msg))
            return
        fn = getattr(self, "_cmd_" + cmd, None)
        if fn is None:
            self._print(ssproto.err_line(ssproto.E_UNKNOWN, "unknown command (type help)"))
            return
        fn(a)
        if cmd == self.script.reset_after:
            self.script.reset_after = None
            self._reboot()

    def _cmd_ping(self, a: list[str]) -> None:
        self._print(ssproto.ok_line("pong " + a[0] if a else "pong"))

    def _cmd_provision_discard(self, a: list[str]) -> None:
        self.staged = {}
        self._print("Staged changes discarded")
        self._print(ssproto.ok_line())

    def _cmd_provision_set_wifi(self, a: list[str]) -> None:
        self.staged["wifi_ssid"], self.staged["wifi_pass"] = a
        self._print(f"WiFi credentials saved: SSID='{a[0]}'")
        self._print(ssproto.ok_line())

    def _cmd_provision_set_device(self, a: list[str]) -> None:
        for k, v in zip(("device_id", "tenant", "building", "room"), a, strict=True):
            self.staged[k] = v
        self._print("Device configuration saved")
        self._print(ssproto.ok_line())

    def _cmd_provision_set_mqtt(self, a: list[str]) -> None:
        self.staged["mqtt_uri"] = a[0]
        self._print(f"MQTT broker saved: {a[0]}")
        self._print(ssproto.ok_line())

    def _save(self) -> None:
        cfg = dict(self.config or {})
        cfg.update(self.staged)
        cfg.setdefault("mqtt_uri", ssproto.DEFAULT_MQTT_URI)
        cfg.update(self.script.saved_differs)
        self.config = cfg
        self.alerts_pending += 1  # the test alert
        self.next_seq += 1

    def _cmd_provision_complete(self, a: list[str]) -> None:
        for x in self.script.complete_log:
            self._print(x)
        mode = self.script.complete
        if mode == "silent":
            return
        if mode == "restart_before_save":
            self._reboot()
            return
        if mode == "restart_after_save":
            self._save()
            self._reboot()
            return
        if mode != "ok":
            self._print("[PROVISION] Connect test failed: nothing was saved; the previous settings stay")
            self._print(ssproto.err_line(mode, "scripted connect-test failure"))
            return
        self._save()
        self._print("Device Provisioning Complete!")
        self._print("Rebooting...")
        self._print(ssproto.ok_line())
        self._reboot()

    def _cmd_provision_status(self, a: list[str]) -> None:
        cfg = self.config or {}
        prov = self.config is not None
        pending = ",".join(sorted(self.staged)) or "none"
        vals = {
            "provisioned": "yes" if prov else "no",
            "wifi_password": "not set" if not prov else ("set" if cfg.get("wifi_pass") else "open network"),
            "pending": pending, "wifi_state": "connected" if prov else "off", "ip_address": "",
            "mqtt_state": self.mqtt_state if prov else "off", "alerts_pending": str(self.alerts_pending),
            "next_alert_seq": str(self.next_seq), "free_heap": "123456", "chip_id": self.chip_id,
            "boot_id": self.boot_id, "firmware": "fake-device 0.0", "certificate": "none",
            "certificate_expires": "", "certificate_sha256": "",
        }
        for k in ("wifi_ssid", "device_id", "tenant", "building", "room", "mqtt_uri"):
            vals[k] = cfg.get(k, "")
        for label, name in ssproto.STATUS_FIELDS:
            self._print(ssproto.status_line(label, vals[name]))
        self._print(ssproto.ok_line())

    def _cmd_provision_verify(self, a: list[str]) -> None:
        if self.config is None:
            self._print(ssproto.err_line(ssproto.E_STATE, "device is not provisioned"))
            return
        psk = ssproto.wpa_psk(hashlib.sha1, self.config["wifi_pass"], self.config["wifi_ssid"])
        self._print(ssproto.CHECK_LABEL + ": " + ssproto.secret_check(hashlib.sha256, a[0], self.config["wifi_ssid"],
                                                                      psk))
        self._print(ssproto.ok_line())

    def _cmd_provision_reset(self, a: list[str]) -> None:
        self.config = None
        self.alerts_pending = 0
        self._print("Provisioning data erased")
        self._print(ssproto.ok_line())
        self._reboot()

    def _cmd_alert_test(self, a: list[str]) -> None:
        seq = self.next_seq
        self.next_seq += 1
        self.alerts_pending += 1
        self._print(ssproto.ok_line(f"seq {seq}"))
