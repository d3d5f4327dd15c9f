"""A long-running CLI's output as a test watches it: stdout lines collected in a thread (wait()
for a condition on them) and stderr in another, so that neither pipe fills and nothing else
reads them.  ``finish()`` is the only way to end the watch: it waits for the process and both
readers.  (``Popen.communicate()`` would race the stdout thread for the last lines: a CI run lost
a monitor's closing summary line to the discarded ``communicate()`` output.)"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable


class Lines:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.lines: list[str] = []
        self._err: list[str] = []
        self._cond = threading.Condition()
        self._proc = proc
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=lambda: self._err.extend(proc.stderr), daemon=True)]  # type: ignore[arg-type]
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait(self, pred: Callable[[list[str]], bool], timeout: float = 30) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(self.lines), timeout)

    def finish(self, timeout: float = 10) -> tuple[str, str]:
        """Wait for the process to end (after the test signalled it) and for everything it
        wrote; returns (stdout, stderr).  A process still running after ``timeout`` is killed
        and the test fails."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            raise AssertionError(f"{self._proc.args!r} did not end within {timeout} s of its signal") from None
        for t in self._threads:
            t.join(timeout)
            assert not t.is_alive(), "a reader of the process's output did not end"
        return "\n".join(self.lines), "".join(self._err)
