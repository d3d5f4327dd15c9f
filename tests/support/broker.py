"""mosquitto for the tests: started, or the test skips (fails in CI) without it."""

from __future__ import annotations

from pathlib import Path

from safesignal.alerts.mosquitto import Mosquitto as RealMosquitto
from safesignal.alerts.mosquitto import find_mosquitto

from .env import need


class Mosquitto(RealMosquitto):
    """safesignal.alerts.mosquitto.Mosquitto, started; missing mosquitto skips (fails in CI)."""

    def __init__(self, tmp: Path) -> None:
        if find_mosquitto() is None:
            need("mosquitto", "apt-get install mosquitto")
        super().__init__(tmp / "mosquitto")
        self.start()
