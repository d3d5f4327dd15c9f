"""The virtual device itself: its hw channel is authenticated, its files are private, both NVS
write models behave as specified under a power cut, Ctrl-C is modelled the way a board's UART
driver handles it, and bad paths are refused before anything is created."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from conftest import REPO, SecretGuard, Sim, flash_partition, terminate
from safesignal.cli.commands import main as cli_main
from safesignal.errors import SafeSignalError, UsageError
from safesignal.link.session import DeviceSession
from safesignal.nvs.format import parse_partition
from safesignal.sim import supervisor as supervisor_mod
from safesignal.sim.air import Air
from safesignal.sim.control import SimControl
from safesignal.sim.flash import FlashNvs
from safesignal.sim.supervisor import SimConfig, Supervisor, catches_sigint
from safesignal.tools import die_with_parent

# A tiny firmware for the probes: one command per console line.  It never calls
# micropython.kbd_intr(-1) unless told to ("kbd -1"), so a Ctrl-C interrupts it.
PROBE_MAIN = """\
import sys
import binascii
import micropython
import esp32
import network

nvs = esp32.NVS("probe")
print("up")
while True:
    try:
        line = sys.stdin.readline()
        if not line:
            break
        args = line.split()
        cmd = args[0] if args else ""
        if cmd == "set":
            nvs.set_i32(args[1], int(args[2]))
            print("done")
        elif cmd == "erase":
            nvs.erase_key(args[1])
            print("done")
        elif cmd == "commit":
            nvs.commit()
            print("done")
        elif cmd == "ping":
            print("pong")
        elif cmd == "get":
            try:
                print("value", nvs.get_i32(args[1]))
            except OSError:
                print("value missing")
        elif cmd == "kbd":
            micropython.kbd_intr(int(args[1]))
            print("done")
        elif cmd == "wlan":
            w = network.WLAN(network.STA_IF)
            w.active(True)
            w.config(reconnects=0)
            mac = w.config("mac")
            print("mac", type(mac).__name__, binascii.hexlify(mac).decode(), w.config("reconnects"))
            try:
                w.config(no_such_param=1)
                print("unknown accepted")
            except ValueError:
                print("unknown refused")
        else:
            print("got", binascii.hexlify(line.encode()).decode())
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
"""


@pytest.fixture
def probe_fw(tmp_path: Path) -> Path:
    fw = tmp_path / "probe-fw"
    (fw / "lib").mkdir(parents=True)  # the supervisor puts FIRMWARE/lib on MICROPYPATH
    (fw / "main.py").write_text(PROBE_MAIN)
    return fw


class ProbeSim:
    """`safesignal sim --firmware DIR`, the way a user would start it."""

    def __init__(self, tmp: Path, firmware: Path, name: str) -> None:
        d = tmp / name
        d.mkdir()
        self.port = str(d / "tty")
        self.flash = d / "flash.bin"
        ctl = d / "ctl"
        self.stderr_path = d / "sim.stderr"
        self._err = open(self.stderr_path, "wb")
        cmd = [sys.executable, "-m", "safesignal", "sim", "--port-link", self.port, "--flash", str(self.flash),
               "--control", str(ctl), "--firmware", str(firmware)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, cwd=REPO,
                                     preexec_fn=die_with_parent(signal.SIGTERM))
        assert self.proc.stdout is not None
        self.ready = self.proc.stdout.readline().decode()
        if not self.ready.startswith("ready "):
            self.stop()
            raise AssertionError(f"sim did not start: {self.ready!r} {self.stderr_path.read_text()}")
        self.control = SimControl(ctl)
        self.session = DeviceSession(self.port)

    def expect(self, prefix: str, timeout: float = 8.0) -> str:
        deadline = time.monotonic() + timeout
        while (line := self.session.read_line(deadline)) is not None:
            if line.startswith(prefix):
                return line
        raise AssertionError(f"device never printed {prefix!r}; got {list(self.session.received)[-5:]}")

    def barrier(self, timeout: float = 15.0) -> None:
        """Ping until the probe answers: its "up" may be printed before the port is open
        (pyserial flushes input on open), so waiting for "up" alone is a race."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send(b"ping\r\n")
            step = min(deadline, time.monotonic() + 0.5)
            while (line := self.session.read_line(step)) is not None:
                if line == "pong":
                    return
        raise AssertionError(f"probe never answered ping; got {list(self.session.received)[-5:]}")

    def send(self, data: bytes) -> None:
        self.session._ser.write(data)
        self.session._ser.flush()

    def do(self, line: str, prefix: str = "done") -> str:
        self.send(line.encode() + b"\r\n")
        return self.expect(prefix)

    def power_cut(self) -> None:
        boots = self.control.state()["boots"]
        self.control.power_cut()
        deadline = time.monotonic() + 10
        while not (st := self.control.state())["boots"] > boots or not st["running"]:
            assert time.monotonic() < deadline, "device did not come back"
            time.sleep(0.02)
        self.barrier()

    def stop(self) -> None:
        if hasattr(self, "session"):
            self.session.close()
        terminate(self.proc)
        self._err.close()


@pytest.fixture
def probe_sim(tmp_path: Path, probe_fw: Path) -> Iterator[Callable[[], ProbeSim]]:
    sims: list[ProbeSim] = []

    def make() -> ProbeSim:
        s = ProbeSim(tmp_path, probe_fw, f"probe{len(sims)}")
        sims.append(s)
        s.barrier()
        return s

    yield make
    for s in sims:
        s.stop()


def in_process(tmp: Path, firmware: Path, body: Callable[[Supervisor], Awaitable[None]]) -> None:
    """Run a Supervisor in this process (for what only its object shows: the hw port)."""

    async def run() -> None:
        cfg = SimConfig(port_link=tmp / "tty", flash=tmp / "flash.bin", air=Air(), mac=bytes.fromhex("020000000001"),
                        control=tmp / "ctl", firmware=firmware)
        sup = Supervisor(cfg)
        await sup.start()
        try:
            await body(sup)
        finally:
            await sup.stop()

    asyncio.run(run())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --- 1. the hw channel needs the boot's token ----------------------------------------------
def test_hw_channel_drops_clients_without_the_token(tmp_path: Path, probe_fw: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_mod, "HW_AUTH_TIMEOUT", 1.0)
    request = json.dumps({"op": "nvs_get", "ns": "probe", "key": "k", "type": "i32"}).encode() + b"\n"

    async def ask(sup: Supervisor, first: bytes) -> bytes:
        """The first reply line, or b"" when the supervisor hangs up without one."""
        reader, writer = await asyncio.open_connection("127.0.0.1", sup.hw_port)
        writer.write(first)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.readline(), 3)
        finally:
            writer.close()

    async def body(sup: Supervisor) -> None:
        assert sup.hw_port > 0
        sup.flash.set("probe", "k", "i32", 42)
        # No token: the request itself as the first line.
        assert await ask(sup, request) == b""
        # A wrong token of the right length, then the request.
        assert await ask(sup, b"0" * len(sup._hw_token) + b"\n" + request) == b""
        # Nothing at all: hung up after the authentication timeout.
        assert await ask(sup, b"") == b""
        assert sup.rejected_hw_connections == 3
        # Control: the same request with this boot's token is answered.
        reply = await ask(sup, sup._hw_token.encode() + b"\n" + request)
        assert json.loads(reply) == {"result": 42}
        # The device process itself got in (it opens its NVS namespace at boot).
        for _ in range(500):
            if "probe" in sup.flash.namespaces:
                break
            await asyncio.sleep(0.01)
        assert "probe" in sup.flash.namespaces

    in_process(tmp_path, probe_fw, body)


def test_hw_token_is_per_boot(tmp_path: Path, probe_fw: Path) -> None:
    async def body(sup: Supervisor) -> None:
        first = sup._hw_token
        assert len(first) >= 32
        boots = sup.boots
        sup.reset()
        for _ in range(500):
            if sup.boots > boots and sup.running:
                break
            await asyncio.sleep(0.01)
        assert sup.boots == boots + 1
        assert sup._hw_token != first

    in_process(tmp_path, probe_fw, body)


# --- 2. private files ------------------------------------------------------------------------
def test_flash_and_control_socket_are_0600_whatever_the_umask(tmp_path: Path, probe_fw: Path) -> None:
    stale_tmp = tmp_path / "flash.bin.tmp"
    stale_tmp.write_bytes(b"stale")
    os.chmod(stale_tmp, 0o666)

    async def body(sup: Supervisor) -> None:
        assert mode(tmp_path / "flash.bin") == 0o600
        assert stat.S_ISSOCK((tmp_path / "ctl").lstat().st_mode)
        assert mode(tmp_path / "ctl") == 0o600
        sup.flash.set("probe", "secret", "blob", b"hunter22")
        sup.flash.commit()  # a rewrite through a new temporary file
        assert mode(tmp_path / "flash.bin") == 0o600
        assert not stale_tmp.exists()
        assert parse_partition((tmp_path / "flash.bin").read_bytes()).get("probe", "secret") is not None

    old = os.umask(0)
    try:
        in_process(tmp_path, probe_fw, body)
    finally:
        os.umask(old)
    assert not (tmp_path / "ctl").exists()


# --- 3. NVS write models -----------------------------------------------------------------------
def test_flash_write_models(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"

    def on_file(key: str) -> int | bytes | None:
        e = parse_partition(path.read_bytes(), strict=True).get("ns", key)
        return None if e is None else e.value

    f = FlashNvs(path)
    assert not path.exists()  # nothing created until the device powers up
    f.create()
    f.set("ns", "a", "i32", 1)
    assert f.get("ns", "a", "i32") == 1 and on_file("a") is None  # held until commit
    f.drop_pending()  # power cut
    assert on_file("a") is None
    f.set("ns", "a", "i32", 2)
    f.commit()
    assert on_file("a") == 2

    f.set_write_through(True)
    f.set("ns", "b", "i32", 3)
    assert on_file("b") == 3 and not f.pending  # on the file at once
    f.erase("ns", "a")
    assert on_file("a") is None
    f.drop_pending()
    f.commit()  # nothing to do
    assert (on_file("a"), on_file("b")) == (None, 3)
    assert FlashNvs(path).get("ns", "b", "i32") == 3
    assert mode(path) == 0o600


def test_power_cut_keeps_write_through_writes_and_drops_uncommitted_ones(probe_sim) -> None:
    sim: ProbeSim = probe_sim()
    st = sim.control.state()
    assert st["nvs_write_through"] is False  # the default: MicroPython's documented model

    def on_file(key: str) -> int | bytes | None:
        e = flash_partition(sim.flash, strict=True).get("probe", key)
        return None if e is None else e.value

    # Commit mode: a set without commit is gone after a power cut; a committed one stays.
    sim.do("set a 1")
    assert sim.do("get a", "value") == "value 1"
    assert on_file("a") is None
    sim.power_cut()
    assert sim.do("get a", "value") == "value missing"
    sim.do("set a 2")
    sim.do("commit")
    sim.power_cut()
    assert sim.do("get a", "value") == "value 2"

    # Write-through (ESP-IDF's real behaviour): every set/erase is on the flash at once.
    sim.control.nvs_mode(True)
    assert sim.control.state()["nvs_write_through"] is True
    sim.do("set b 3")
    assert on_file("b") == 3
    sim.do("erase a")
    assert on_file("a") is None
    sim.power_cut()
    assert sim.do("get b", "value") == "value 3"
    assert sim.do("get a", "value") == "value missing"
    assert sim.control.state()["nvs_write_through"] is True  # a property of the flash: survives boots

    # And back: held until commit again.
    sim.control.nvs_mode(False)
    sim.do("set c 4")
    sim.power_cut()
    assert sim.do("get c", "value") == "value missing"

    with pytest.raises(SafeSignalError, match="write_through"):
        sim.control.call("nvs_mode", write_through="yes")


# --- 4. Ctrl-C ---------------------------------------------------------------------------------
def test_ctrl_c_interrupts_firmware_that_keeps_the_interrupt_char(probe_sim) -> None:
    sim: ProbeSim = probe_sim()
    boots = sim.control.state()["boots"]
    # The interrupt character is enabled: 0x03 raises KeyboardInterrupt and is consumed.
    sim.send(b"\x03")
    sim.expect("KeyboardInterrupt")
    assert sim.do("x", "got") == "got " + b"x\r\n".hex()  # no 0x03 reached the input
    # kbd_intr(-1): 0x03 is ordinary input, as on a board.
    sim.do("kbd -1")
    assert sim.do("\x03y", "got") == "got " + b"\x03y\r\n".hex()
    # Enabled again: interrupts again.
    sim.do("kbd 3")
    sim.send(b"\x03")
    sim.expect("KeyboardInterrupt")
    st = sim.control.state()
    assert st["interrupts"] == 2
    assert st["boots"] == boots and st["running"]  # interrupted, not restarted


def test_ctrl_c_does_not_stop_the_real_firmware(make_sim, guard: SecretGuard) -> None:
    sim: Sim = make_sim()
    with sim.session() as s:
        s.sync()
        boots = sim.control.state()["boots"]
        s._ser.write(b"\x03")
        s._ser.write(b"half-typed\x03\x03\r\n")
        s._ser.flush()
        assert s.command(["ping", "after-ctrl-c"]).text == "pong after-ctrl-c"
        st = sim.control.state()
        assert st["boots"] == boots and st["running"]
        assert st["interrupts"] == 0  # the firmware called kbd_intr(-1): 0x03 stayed data
        assert not any("KeyboardInterrupt" in x or ">>>" in x for x in s.received)
        guard.output("console", "\n".join(s.received))


def test_sigcgt_reading() -> None:
    # This process (CPython) catches SIGINT; a child that resets it to SIG_DFL does not.
    assert catches_sigint(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
                              "signal.SIG_DFL); print('ok', flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ok\n"
        assert not catches_sigint(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not catches_sigint(2**22 + 12345)  # no such process


# --- WLAN.config -------------------------------------------------------------------------------
def test_wlan_config_reconnects_recorded_and_mac_is_bytes(probe_sim) -> None:
    sim: ProbeSim = probe_sim()
    assert sim.control.state()["wlan_config"]["reconnects"] == -1
    mac = sim.ready.split("mac=")[1].strip().replace(":", "")
    assert sim.do("wlan", "mac") == f"mac bytes {mac} 0"
    sim.expect("unknown refused")
    assert sim.control.state()["wlan_config"]["reconnects"] == 0


# --- 5. bad paths --------------------------------------------------------------------------------
def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli_main(["sim", *args])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("which", ["port-link", "flash", "control"])
def test_missing_directories_are_usage_errors(which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = {"port-link": tmp_path / "tty", "flash": tmp_path / "f.bin", "control": tmp_path / "ctl"}
    paths[which] = Path("/nonexistent/dir") / paths[which].name
    rc, err = run_cli([f"--{k}={v}" for k, v in paths.items()], capsys)
    assert rc == UsageError.exit_code
    assert err.startswith(f"✗ Error: --{which} {paths[which]}: directory /nonexistent/dir does not exist")
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_bad_files_are_refused_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tty, flash, ctl = tmp_path / "tty", tmp_path / "f.bin", tmp_path / "ctl"
    base = ["--port-link", str(tty), "--flash", str(flash), "--control", str(ctl)]
    # A regular file where the port link goes is not replaced.
    tty.write_text("keep me")
    rc, err = run_cli(base, capsys)
    assert rc == 2 and "--port-link" in err and "not a symlink" in err
    assert tty.read_text() == "keep me" and not flash.exists()
    tty.unlink()
    # Nor one where the control socket goes (it used to be unlinked).
    ctl.write_text("keep me too")
    rc, err = run_cli(base, capsys)
    assert rc == 2 and "--control" in err and "not a socket" in err
    assert ctl.read_text() == "keep me too" and not flash.exists()
    ctl.unlink()
    # A flash "file" that is a directory, or not an NVS image.
    flash.mkdir()
    rc, err = run_cli(base, capsys)
    assert rc == 2 and "--flash" in err and "not a regular file" in err
    flash.rmdir()
    flash.write_bytes(b"\x00" * 100)
    rc, err = run_cli(base, capsys)
    assert rc == 2 and "not an NVS partition image" in err
    assert flash.read_bytes() == b"\x00" * 100
    # A firmware directory without main.py.
    flash.unlink()
    rc, err = run_cli([*base, "--firmware", str(tmp_path)], capsys)
    assert rc == 2 and "main.py missing" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert "Traceback" not in err


def test_bad_path_from_the_command_line_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "safesignal", "sim", "--port-link", "/nonexistent/dir/tty",
                        "--flash", str(tmp_path / "f.bin")], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "✗ Error: --port-link /nonexistent/dir/tty: directory /nonexistent/dir does not exist"
    ]
    assert not (tmp_path / "f.bin").exists()


# --- the device process ends with its supervisor (issue 9.8) -------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat_line = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat_line[stat_line.rindex(")") + 2:].split()
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line[stat_line.rindex(")") + 2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
@pytest.mark.parametrize("how", ["supervisor", "process-group"])
def test_interpreter_ends_with_its_supervisor_however_it_is_killed(tmp_path: Path, how: str) -> None:
    """SIGKILL, no clean shutdown, while the firmware waits in a hardware call (a name lookup
    the supervisor answers after 5 s): the MicroPython process must not live on (a board
    without power runs nothing).  Fails with the old code: the orphan spun on the closed hw
    socket at ~77 % of a core."""
    import signal

    port = tmp_path / "tty"
    ctl = tmp_path / "ctl"
    proc = subprocess.Popen([sys.executable, "-m", "safesignal", "sim", "--port-link", str(port), "--flash",
                             str(tmp_path / "flash.bin"), "--control", str(ctl), "--ap", "Net", "password-1",
                             "--host", "dead.local=127.0.0.1", "--dns-delay", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, start_new_session=True)
    device: list[int] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"ready ")
        device = [p for p in _children(proc.pid) if "micropython" in Path(f"/proc/{p}/cmdline").read_bytes().decode()]
        assert len(device) == 1, device
        p = subprocess.run([sys.executable, "-m", "safesignal", "provision", "--port", str(port), "--wifi-ssid", "Net",
                            "--wifi-pass", "password-1", "--device-id", "d", "--tenant", "t", "--building", "b",
                            "--room", "r", "--mqtt-uri", "mqtt://dead.local:9", "--offline"],
                           capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        control = SimControl(ctl)
        deadline = time.monotonic() + 30
        while not control.state()["in_lookup"]:
            assert time.monotonic() < deadline, "no name lookup"
            time.sleep(0.02)
        device = [p for p in _children(proc.pid) if "micropython" in Path(f"/proc/{p}/cmdline").read_bytes().decode()]
        assert len(device) == 1, device
        if how == "supervisor":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGKILL)  # the sim's group; the interpreter has its own session
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _alive(device[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(device[0]), "the MicroPython process outlived its supervisor"
    finally:
        for pid in device:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_hw_stub_powers_off_when_its_supervisor_is_gone(tmp_path: Path) -> None:
    """Where no parent-death signal exists (or it was missed): the stub's hardware channel
    hangs up and the console's other end is gone, so the board is off: the interpreter ends
    instead of spinning on a closed socket (the old stub looped on readline() forever)."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    script = tmp_path / "probe.py"
    script.write_text("import _hw\n_hw.call('unique_id')\nprint('unreachable')\n")
    env = dict(os.environ, MICROPYPATH=f"{supervisor_mod.STUBS}:.frozen", SAFESIGNAL_HW_PORT=str(srv.getsockname()[1]),
               SAFESIGNAL_HW_TOKEN="t" * 64)
    r, w = os.pipe()
    proc = subprocess.Popen([supervisor_mod.find_micropython(), str(script)], stdin=r, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    os.close(r)
    try:
        conn, _ = srv.accept()
        conn.recv(100)  # the token and the request
        conn.close()  # the supervisor's end of the hw channel goes ...
        srv.close()
        os.close(w)  # ... and so does the console: the supervisor is gone
        w = -1
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and b"unreachable" not in out, out
    finally:
        if w >= 0:
            os.close(w)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
