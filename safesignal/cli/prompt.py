"""Secrets the tools need from a person: an environment variable, else a hidden prompt.

One place for the WiFi password, the CA passphrase and an operator key's passphrase: never a
command-line flag for the latter two (any local user can read a process's arguments), an
empty variable counts as unset, and a new secret is asked for twice.
"""

from __future__ import annotations

import getpass
import os
import sys

from safesignal.errors import UsageError


def secret(env: str, what: str, *, confirm: bool = False, prompt: str = "", differ: str = "nothing was written",
           empty_hint: str = "", missing: str = "") -> str:
    """``$env`` if set and not empty, else asked without echo (twice with ``confirm``).

    ``what`` names the secret in messages ("CA passphrase"); ``differ`` says what the caller did
    not do when the two entries differ; ``empty_hint`` follows "no <what> entered"; ``missing``
    replaces the message when there is no terminal to ask on."""
    value = os.environ.get(env)
    if value:
        return value
    if sys.stdin.isatty():
        first = getpass.getpass(f"{prompt or what[0].upper() + what[1:]} (not shown): ")
        if not first:
            raise UsageError(f"no {what} entered{empty_hint}")
        if confirm and getpass.getpass("Again, to confirm: ") != first:
            raise UsageError(f"the two {what.split()[-1]}s differ; {differ}")
        return first
    raise UsageError(missing or f"no {what}: set {env} or run in a terminal to be asked")


CA_PASS_ENV = "SAFESIGNAL_CA_PASS"
OPERATOR_PASS_ENV = "SAFESIGNAL_OPERATOR_PASS"


def ca_passphrase(confirm: bool = False) -> str:
    """$SAFESIGNAL_CA_PASS (empty counts as unset), else a hidden prompt (twice with ``confirm``)."""
    return secret(CA_PASS_ENV, "CA passphrase", confirm=confirm)


def operator_passphrase(confirm: bool = False) -> str | None:
    """An operator key's own passphrase: $SAFESIGNAL_OPERATOR_PASS (empty = unset), else asked
    for when ``confirm`` (issuing), else None (the key is then taken to use the CA passphrase)."""
    if not confirm and not os.environ.get(OPERATOR_PASS_ENV):
        return None
    return secret(OPERATOR_PASS_ENV, "operator key passphrase", confirm=confirm)
