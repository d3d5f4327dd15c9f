"""An embedded MQTT broker (amqtt, pure Python) for demos: no root, no system service.

Always bound to 127.0.0.1 explicitly (amqtt's own default is 0.0.0.0:1883).  The tests use a
real mosquitto instead; this one exists so the README's first command needs nothing but pip.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

from safesignal.errors import SafeSignalError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedBroker:
    """amqtt in a background thread with its own event loop."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mqtt-broker", daemon=True)
        self._broker: object | None = None

    @property
    def uri(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        from amqtt.broker import Broker
        from amqtt.contexts import BrokerConfig, ListenerConfig

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        cfg = BrokerConfig(
            listeners={"default": ListenerConfig(bind=f"{self.host}:{self.port}")},
            plugins={"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        )
        self._thread.start()

        async def boot() -> object:
            b = Broker(cfg)
            await b.start()
            return b

        try:
            self._broker = asyncio.run_coroutine_threadsafe(boot(), self._loop).result(timeout)
        except Exception as e:  # amqtt raises its own types
            raise SafeSignalError(f"embedded MQTT broker did not start on {self.host}:{self.port}: {e}") from None
        log.info("embedded broker on %s", self.uri)

    def stop(self, timeout: float = 10.0) -> None:
        b = self._broker
        if b is not None:
            try:
                asyncio.run_coroutine_threadsafe(b.shutdown(), self._loop).result(timeout)  # type: ignore[attr-defined]
            except Exception as e:
                log.warning("broker shutdown: %s", e)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
