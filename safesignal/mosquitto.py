"""Run a real mosquitto (the Debian package's binary) for tests, benchmarks and local sites.

Each broker gets its own loopback address (127.x.y.z) and the standard port 1883, so it can
stand in for a site's edge broker at its real port while the virtual device's name service
(``safesignal sim --host safesignal-edge.local=127.x.y.z``) points the device at it.
Persistence is on: a restart keeps persistent sessions and their queued QoS 1 messages, as a
production broker does.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .errors import SafeSignalError

MQTT_PORT = 1883


def find_mosquitto() -> str | None:
    exe = shutil.which("mosquitto")
    if exe is None and Path("/usr/sbin/mosquitto").exists():
        exe = "/usr/sbin/mosquitto"
    return exe


def site_address(port: int = MQTT_PORT) -> str:
    """A loopback address of its own (127.x.y.z) where ``port`` is free."""
    for _ in range(100):
        host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((host, port))
                return host
            except OSError:
                continue
    raise SafeSignalError("no free loopback address for a broker")


class Mosquitto:
    def __init__(self, workdir: Path, host: str | None = None, port: int = MQTT_PORT) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise SafeSignalError("mosquitto not found: apt-get install mosquitto")
        self.exe = exe
        self.host = host or site_address(port)
        self.port = port
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "mosquitto.log"
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.dir}/\nautosave_interval 0\n"
            f"log_dest file {self.log_path}\nlog_type all\n"
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.uri = f"mqtt://{self.host}:{self.port}"
        self.hosts = {"safesignal-edge.local": self.host}  # the device's default broker name
        self.proc: subprocess.Popen[bytes] | None = None
        self.up_since = 0.0  # time.time() when it last started accepting connections

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((self.host, self.port), 0.2).close()
                self.up_since = time.time()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    why = self.proc.stderr.read() if self.proc.stderr else b""
                    self.stop()
                    raise SafeSignalError(f"mosquitto did not start: {why.decode(errors='replace')}") from None
                time.sleep(0.005)  # fine-grained: benchmarks time recovery from this moment

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence database on the way out."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise SafeSignalError(f"mosquitto never logged {text!r}")
            time.sleep(0.05)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
