"""`safesignal console` as a person uses it: typed at through a real terminal (tmux), with the
wrong-password recovery of PROVISIONING.md ("Wrong WiFi Password") done by hand."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import SecretGuard, Sim, need
from safesignal.link.terminal import LineEditor, secrets_of, shown, token_spans
from support.env import tmux_dies_with_this_process

SSID = "Site Net"
RIGHT = "right-password-1"
WRONG = "wrong-password-9"


# --- the line editor and the mask (no terminal) ------------------------------------------------
@pytest.mark.parametrize("line, want", [
    ("provision_set_wifi Net secret123", "provision_set_wifi Net ********"),
    ('provision_set_wifi "Site Net" "pass with space"', 'provision_set_wifi "Site Net" ********'),
    ("provision_set_wifi Net se", "provision_set_wifi Net ********"),  # while it is typed
    ('provision_set_wifi Net "unfinished quote', "provision_set_wifi Net ********"),
    ("provision_set_wifi Net", "provision_set_wifi Net"),
    ("provision_set_wifi Net\\ 2 pw\\ x", "provision_set_wifi Net\\ 2 ********"),
    ("provision_status", "provision_status"),
    ("ping secret123", "ping secret123"),
])
def test_typed_password_is_masked(line: str, want: str) -> None:
    assert shown(line) == want


def test_secrets_of_a_sent_line() -> None:
    assert secrets_of('provision_set_wifi "Site Net" "pa ss\\"word"') == ['"pa ss\\"word"', 'pa ss"word']
    assert secrets_of("provision_set_wifi Net pw12345678") == ["pw12345678"]
    assert secrets_of("provision_status") == []


def test_token_spans_follow_the_grammar() -> None:
    line = 'a "b c" d\\ e'
    assert [line[s:e] for s, e in token_spans(line)] == ["a", '"b c"', "d\\ e"]


def test_line_editor_keys() -> None:
    ed = LineEditor()
    assert list(ed.feed("provision_statux\x7fs")) == []
    assert ed.line == "provision_status"
    assert list(ed.feed("\x1b[A\x1b[D\r")) == [("send", "provision_status")]  # arrows ignored
    assert list(ed.feed("junk\x15ping 1\r")) == [("send", "ping 1")]  # Ctrl-U clears
    assert list(ed.feed("half\x03")) == [("interrupt", "")] and ed.line == ""
    assert list(ed.feed("x\x1dignored")) == [("quit", "")]


# --- through a real terminal --------------------------------------------------------------------
class Tmux:
    """One tmux server of our own (its own socket), running a shell in a 200x50 window."""

    def __init__(self, cwd: Path) -> None:
        self.sock = f"safesignal-test-{uuid.uuid4().hex[:12]}"
        subprocess.run(["tmux", "-L", self.sock, "new-session", "-d", "-x", "200", "-y", "50",
                        "bash --norc --noprofile"], check=True, cwd=cwd)
        tmux_dies_with_this_process(self.sock)
        self.run("export PS1='$ '; clear")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], check=True, capture_output=True,
                              text=True).stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-l", text)  # literally, key by key

    def run(self, line: str) -> None:
        self.type(line)
        self.keys("Enter")

    def screen(self) -> str:
        """Everything the terminal shows and showed (scrollback included)."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-")

    def wait(self, pred: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if pred(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"terminal never showed {what}:\n{text}")
            time.sleep(0.1)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        need("tmux", "apt-get install tmux")
    t = Tmux(tmp_path)
    try:
        yield t
    finally:
        t.kill()


def console_cmd(port: str, *extra: str) -> str:
    return " ".join([sys.executable, "-m", "safesignal", "console", "--port", port, *extra])


def test_wrong_password_recovery_typed_at_the_console(make_sim: Callable[..., Sim], tmux: Tmux,
                                                      guard: SecretGuard, tmp_path: Path) -> None:
    """PROVISIONING.md, "Wrong WiFi Password": a device saved with a wrong password is fixed by
    typing provision_set_wifi and provision_complete at `safesignal console`."""
    guard.secret(RIGHT)
    guard.secret(WRONG)
    sim = make_sim(aps=[(SSID, RIGHT)])
    # Set-up: saved --offline with a wrong password (the device then fails to join, and retries).
    with sim.session() as dev:
        dev.sync()
        dev.command(["provision_set_wifi", SSID, WRONG])
        dev.command(["provision_set_device", "esp32-lobby", "t1", "b1", "r1"])
        boots = sim.control.state()["boots"]
        dev.command(["provision_complete", "--offline"])
    sim.wait_boot(boots)

    tmux.run(f"stty -g > {tmp_path}/stty.before; {console_cmd(sim.port)}; echo \"console\"-exit=$?; "
             f"stty -g > {tmp_path}/stty.after")
    tmux.wait(lambda s: "Ctrl-] quits" in s, "the console's banner")
    tmux.wait(lambda s: "authentication failed" in s, "the device's failing WiFi log")
    tmux.type(f'provision_set_wifi "{SSID}" {RIGHT}')
    typed = tmux.wait(lambda s: f'provision_set_wifi "{SSID}" ********' in s, "the masked password")
    assert RIGHT not in typed  # no echo of the terminal's own, no echo of the tool's
    tmux.keys("Enter")
    tmux.wait(lambda s: "WiFi credentials saved" in s, "the device's answer")
    tmux.run("provision_complete")
    screen = tmux.wait(lambda s: "[MQTT] Connected to broker" in s.split("Rebooting...")[-1],
                       "the device joining WiFi and its broker with the typed password", timeout=40)
    assert "[WIFI] Connected to AP" in screen.split("Rebooting...")[-1]
    tmux.keys("C-]")
    screen = tmux.wait(lambda s: re.search(r"^console-exit=\d+$", s, re.M) is not None, "the console ending on Ctrl-]")
    guard.output("terminal", screen)
    assert re.search(r"^console-exit=0$", screen, re.M)
    assert RIGHT not in screen and WRONG not in screen
    tmux.wait(lambda s: (tmp_path / "stty.after").exists(), "the shell running again")
    assert (tmp_path / "stty.before").read_text() == (tmp_path / "stty.after").read_text()  # terminal restored


def test_terminal_restored_when_the_port_goes_away(make_sim: Callable[..., Sim], tmux: Tmux,
                                                   tmp_path: Path) -> None:
    sim = make_sim()
    tmux.run(f"stty -g > {tmp_path}/stty.before; {console_cmd(sim.port, '--timeout', '2')}; echo \"console\"-exit=$?; "
             f"stty -g > {tmp_path}/stty.after")
    tmux.wait(lambda s: "Ctrl-] quits" in s, "the console's banner")
    tmux.type("half a line")
    sim.stop()  # the device (and its port) disappears
    screen = tmux.wait(lambda s: re.search(r"^console-exit=\d+$", s, re.M) is not None,
                       "the console giving up on the port")
    assert "Traceback" not in screen, screen
    assert re.search(r"^console-exit=3$", screen, re.M) and "✗ Error: Could not open serial port" in screen, screen
    tmux.wait(lambda s: (tmp_path / "stty.after").exists(), "the shell running again")
    assert (tmp_path / "stty.before").read_text() == (tmp_path / "stty.after").read_text()


def test_console_without_keyboard_keeps_reboot_and_until(make_sim: Callable[..., Sim]) -> None:
    """Scripts (the demo) watch the console with --reboot/--until/--duration, stdin not a terminal."""
    sim = make_sim()
    p = subprocess.run([sys.executable, "-m", "safesignal", "console", "--port", sim.port, "--reboot",
                        "--until", r"Provisioning system initialized", "--duration", "30"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("[BOOT]") and lines[-1] == "[PROVISION] Provisioning system initialized"
    assert "\r" not in p.stdout and "\x1b" not in p.stdout  # plain lines, no terminal control
    p = subprocess.run([sys.executable, "-m", "safesignal", "console", "--port", sim.port,
                        "--until", "never-printed", "--duration", "1"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 4 and "no line matched 'never-printed' within 1 s" in p.stderr
