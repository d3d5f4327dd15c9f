"""Shared fixtures: real mosquitto, virtual devices (real MicroPython behind a real pty), and
a guard that fails a test when any output it captured contains a secret.  The classes and helpers
they are built from are in tests/support/ (re-exported here: tests import them from conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.broker import Mosquitto
from support.env import FIRMWARE, IN_CI, REPO, SCRIPTS, free_port, need
from support.guard import SecretGuard
from support.sim import SEED_BOOT_LOG, Sim, flash_partition, terminate

__all__ = [
    "FIRMWARE",
    "IN_CI",
    "REPO",
    "SCRIPTS",
    "SEED_BOOT_LOG",
    "Mosquitto",
    "SecretGuard",
    "Sim",
    "flash_partition",
    "free_port",
    "need",
    "terminate",
]


@pytest.fixture
def guard() -> Iterator[SecretGuard]:
    g = SecretGuard()
    yield g
    g.check()


@pytest.fixture(scope="session")
def site_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """The site's edge broker for tests that do not look at MQTT: every virtual device resolves
    its default broker name, safesignal-edge.local, to it, so the connect test passes."""
    m = Mosquitto(tmp_path_factory.mktemp("site-broker"))
    yield m
    m.stop()


@pytest.fixture
def make_sim(tmp_path: Path, guard: SecretGuard, site_broker: Mosquitto) -> Iterator[object]:
    sims: list[Sim] = []

    def make(**kw: object) -> Sim:
        kw.setdefault("hosts", site_broker.hosts)
        s = Sim(tmp_path, guard, **kw)  # type: ignore[arg-type]
        sims.append(s)
        return s

    yield make
    for s in sims:
        s.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    m = Mosquitto(tmp_path)
    yield m
    m.stop()
