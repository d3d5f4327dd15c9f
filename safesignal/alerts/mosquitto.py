"""Run a real mosquitto (the Debian package's binary) for tests, benchmarks and local sites.

Each broker gets its own loopback address (127.x.y.z) and the standard port 1883, so it can
stand in for a site's edge broker at its real port while the virtual device's name service
(``safesignal sim --host safesignal-edge.local=127.x.y.z``) points the device at it.
Persistence is on: a restart keeps persistent sessions and their queued QoS 1 messages, as a
production broker does.

:meth:`Mosquitto.mtls` starts the same broker with the tenant's mutual-TLS configuration,
rendered from the shipped templates in ``broker/mosquitto/`` (:func:`safesignal.pki.ca.write_broker_config`):
port 8883, client certificates from the tenant CA required, the ACL applied.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from safesignal.errors import SafeSignalError
from safesignal.tools import die_with_parent, stop_process

if TYPE_CHECKING:
    from collections.abc import Sequence

    from safesignal.pki.ca import BrokerFiles, TenantCA

MQTT_PORT = 1883
MTLS_PORT = 8883
RELOAD_LOG = "Reloading config"  # what mosquitto 2.0 logs on SIGHUP (log_type all)
# Logged once its signal handlers are installed, after the listeners are open: a SIGHUP before
# that line terminates mosquitto (SIGHUP's default action).
RUNNING_LOG = re.compile(r"mosquitto version \S+ running")


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
    """One mosquitto process.  By default a plain listener that lets anyone in (tests, local
    sites); with ``config`` it runs that configuration file as it is (``host``/``port`` must be
    what it listens on, ``log_path`` where it logs)."""

    def __init__(self, workdir: Path, host: str | None = None, port: int = MQTT_PORT, *,
                 config: Path | None = None, log_path: Path | None = None, tls: bool = False) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise SafeSignalError("mosquitto not found: apt-get install mosquitto")
        self.exe = exe
        if config is not None and host is None:
            raise SafeSignalError("a broker with its own configuration needs the host it listens on")
        self.host = host or site_address(port)
        self.port = port
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.files: BrokerFiles | None = None  # set by mtls()
        if config is None:
            self.log_path = self.dir / "mosquitto.log"
            self.conf = self.dir / "mosquitto.conf"
            self.conf.write_text(
                f"listener {self.port} {self.host}\nallow_anonymous true\n"
                f"persistence true\npersistence_location {self.dir}/\nautosave_interval 0\n"
                # the shipped configuration's queue limits (broker/mosquitto/mosquitto-mtls.conf.in says why)
                f"max_queued_messages 1000000\nmax_queued_bytes 268435456\n"
                f"log_dest file {self.log_path}\nlog_type all\n"
                + ("user root\n" if os.geteuid() == 0 else "")
            )
        else:
            self.conf = config
            self.log_path = log_path or self.dir / "mosquitto.log"
        self.uri = f"{'mqtts' if tls else 'mqtt'}://{self.host}:{self.port}"
        self.hosts = {"safesignal-edge.local": self.host}  # the device's default broker name
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0  # how many times start() launched it (the log file is appended to)
        self.up_since = 0.0  # time.time() when it last started accepting connections

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=die_with_parent(signal.SIGTERM))
        self.starts += 1
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
            stop_process(self.proc)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        self.proc = None

    @classmethod
    def mtls(cls, workdir: Path, ca: TenantCA, host: str | None = None, port: int = MTLS_PORT,
             host_names: Sequence[str] = ("safesignal-edge.local", "localhost")) -> Mosquitto:
        """A broker (not started) with the tenant's mutual-TLS configuration rendered into
        ``workdir`` from the shipped templates.  The broker certificate names ``host_names``
        plus the broker's own address; issuing it needs ``ca`` unlocked.  Test settings on top
        of the shipped ones: everything logged, persistence saved at exit (as the plain
        broker), and ``user root`` when run as root (mosquitto would otherwise drop to its own
        user, which cannot read the 0600 key)."""
        from safesignal.pki.ca import write_broker_config

        host = host or site_address(port)
        extra = ["log_type all"] + (["user root"] if os.geteuid() == 0 else [])
        files = write_broker_config(ca, workdir, host, port, [*host_names, host], autosave_interval=0,
                                    extra=extra)
        m = cls(workdir, host, port, config=files.config, log_path=files.log, tls=True)
        m.files = files
        return m

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP: mosquitto re-reads the ACL file (and its certificate and key); returns once it
        has logged the reload.  mosquitto is single-threaded, so packets sent after this returns
        are checked against the new ACL."""
        deadline = time.monotonic() + timeout
        while len(RUNNING_LOG.findall(self.log())) < self.starts:
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise SafeSignalError("mosquitto is not running")
            time.sleep(0.01)
        assert self.proc is not None
        before = self.log().count(RELOAD_LOG)
        self.proc.send_signal(signal.SIGHUP)
        while self.log().count(RELOAD_LOG) <= before:
            if time.monotonic() > deadline:
                raise SafeSignalError("mosquitto did not reload its configuration")
            time.sleep(0.01)

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
