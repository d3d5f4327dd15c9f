"""Client for a running virtual device's control socket (``safesignal sim --control PATH``)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from safesignal.errors import SafeSignalError


class SimControl:
    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        args["op"] = op
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                s.sendall(json.dumps(args).encode() + b"\n")
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
        except OSError as e:
            raise SafeSignalError(f"cannot reach the virtual device at {self.path}: {e}") from None
        reply: dict[str, Any] = json.loads(buf)
        if not reply.get("ok"):
            raise SafeSignalError(f"virtual device refused {op}: {reply.get('error')}")
        return reply

    def state(self) -> dict[str, Any]:
        st: dict[str, Any] = self.call("state")["state"]
        return st

    def reset(self) -> None:
        self.call("reset")

    def power_cut(self) -> None:
        self.call("power_cut")

    def power_cut_after(self, writes: int) -> None:
        """Cut the power at the device's ``writes``-th NVS API write/erase/commit (0 disarms)."""
        self.call("power_cut_after", writes=writes)

    def power_cut_after_flash_writes(self, flash_writes: int, torn: bool = False) -> None:
        """Cut the power at the ``flash_writes``-th physical flash operation from now (an entry, a
        bitmap word, a page header or state word, a sector erase): it does not happen (``torn``:
        an entry write is left half done), nor does anything after it.  0 disarms."""
        self.call("power_cut_after", flash_writes=flash_writes, torn=torn)

    def nvs_mode(self, write_through: bool) -> None:
        """Flash write model: ``True`` = write-through (every set/erase reaches the flash at
        once, commit is a no-op: ESP-IDF's behaviour), ``False`` = held until commit."""
        self.call("nvs_mode", write_through=bool(write_through))

    def press(self, hold_ms: int = 120, bounce: bool = False) -> float:
        """Press the panic button for ``hold_ms``; returns the press's Unix time."""
        return float(self.call("press", hold_ms=hold_ms, bounce=bounce)["pressed_at"])

    def nvs_latency(self, ms: float) -> None:
        """Make every NVS write/erase/commit block the device for ``ms`` (flash timing)."""
        self.call("nvs_latency", ms=ms)
