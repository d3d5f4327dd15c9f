"""One exception root for the host library.

Each subclass is also the matching built-in, so callers may catch ``OSError``,
``TimeoutError`` or ``ValueError`` as they would for any other library.  The CLI maps
every :class:`SafeSignalError` to one clean line on stderr and an exit code.
"""

from __future__ import annotations


class SafeSignalError(Exception):
    """Root of every error the host library raises on purpose."""

    exit_code = 1


class UsageError(SafeSignalError, ValueError):
    """The caller's input is invalid (bad flag value, malformed argument)."""

    exit_code = 2


class PortError(SafeSignalError, OSError):
    """The serial port could not be opened or stopped working.

    ``str()`` is the one-line message; ``reason`` what the operating system said.
    """

    exit_code = 3

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


class DeviceTimeout(SafeSignalError, TimeoutError):
    """The device did not answer in time."""

    exit_code = 4


class DeviceError(SafeSignalError):
    """The device answered ``ERR <CODE> <message>``."""

    exit_code = 5

    def __init__(self, code: str, message: str, command: str = "") -> None:
        self.code = code
        self.message = message
        self.command = command
        where = f" to '{command}'" if command else ""
        super().__init__(f"device refused{where}: {code} {message}")


class MismatchError(SafeSignalError):
    """What the device reports does not match what was written."""

    exit_code = 6
