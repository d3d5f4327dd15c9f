"""A device-side SPAKE2+ Verifier and channel running under the MicroPython interpreter
(tests/mpy/pake_peer.py), driven over a pipe: the host's Prover and channel talk to the
firmware's code in the firmware's runtime.  The process always ends (close, or the context
manager)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "firmware" / "esp32-button" / "lib"
MPY = REPO / "tests" / "mpy"
MICROPYTHON = Path(sys.executable).parent / "micropython"


class PeerError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class MpyVerifier:
    def __init__(self, heap: str = "128k") -> None:
        self.proc = subprocess.Popen(
            [str(MICROPYTHON), "-X", f"heapsize={heap}", str(MPY / "pake_peer.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, MICROPYPATH=f"{LIB}:.frozen"), cwd=str(REPO))
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def call(self, cmd: str, arg: bytes = b"", timeout: float = 60) -> bytes:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{cmd} {arg.hex()}\n")
        self.proc.stdin.flush()
        line = self._lines.get(timeout=timeout)
        if line is None:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"MicroPython peer ended: {err}")
        if line.startswith("err "):
            kind, _, msg = line[4:].partition(" ")
            raise PeerError(kind, msg)
        assert line == "ok" or line.startswith("ok "), line
        return bytes.fromhex(line[3:])

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            for f in (self.proc.stdout, self.proc.stderr):
                if f is not None:
                    f.close()

    def __enter__(self) -> MpyVerifier:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
