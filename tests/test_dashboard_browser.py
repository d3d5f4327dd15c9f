"""Issue 12: the dashboard's pages in a real browser.  Playwright for Python drives Debian's
chromium (/usr/bin/chromium; no browser download); the dashboard runs as a subprocess with a
real mosquitto; the device is a virtual one (the real firmware under MicroPython) provisioned
with `safesignal provision … --verify --dashboard URL --token TOKEN`, and its button is pressed
with `safesignal sim press`.

Screenshots are kept under test-output/dashboard-browser/<test>/ at the repository root
(git-ignored); each test prints the directory.  Every process (browser, dashboard, device,
broker) ends with the test, even when the test process is killed
(test_a_killed_test_process_leaves_no_browser_and_no_dashboard).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Mosquitto, SecretGuard, Sim, need
from support.cli import run_cli
from support.dashboard import Dashboard, add_user

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-output" / "dashboard-browser"
SSID = "Lobby-Net"
TENANT, BUILDING, ROOM, DEVICE = "acme", "hq", "r204", "btn-web-01"

try:
    from playwright import sync_api
except ImportError:  # the test extra installs it; launch_options() skips (fails in CI) without it
    sync_api = None


def launch_options(home: Path) -> dict[str, Any]:
    """Debian's chromium, with its profile, caches and crash reports in the test's directory."""
    if sync_api is None:
        need("playwright", "pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        need("chromium", "apt-get install chromium")
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")})
    # The autoplay rule of a desktop browser (headless chromium's default lets any page play):
    # audio starts only after the person has clicked on the page.
    return {"executable_path": CHROMIUM, "env": env,
            "args": ["--disable-crash-reporter", "--autoplay-policy=document-user-activation-required"]}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = launch_options(tmp_path / "chromium-home")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(**options)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    """This test's screenshot directory (emptied first)."""
    d = ARTIFACTS / request.node.name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    print(f"\nscreenshots: {d}")
    return d


def sign_in(browser: Any, url: str, name: str, password: str) -> Any:
    """A new browser context signed in through the login page; its page (on the device list)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.goto(url + "/")
    assert page.get_by_role("heading", name="Sign in").is_visible()  # no session: the sign-in form
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + "/")
    assert page.get_by_text(f"{name} (").is_visible()
    return page


def provision(guard: SecretGuard, sim: Sim, mosquitto: Mosquitto, dash: Dashboard, wifi: str, token: str) -> None:
    r = run_cli(guard, "provision", "--port", sim.port, "--wifi-ssid", SSID, "--wifi-pass", wifi, "--device-id",
                DEVICE, "--tenant", TENANT, "--building", BUILDING, "--room", ROOM, "--yes", "--verify", "--broker",
                mosquitto.uri, "--dashboard", dash.url, "--token", token, "--installer", "Ivan Installer",
                timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "✓ Provisioning record posted to " in r.stdout


def row(page: Any) -> Any:
    return page.locator(f"tr#device-{TENANT}-{DEVICE}")


def test_feed_shows_a_press_live_and_the_installer_confirms(make_sim: Any, guard: SecretGuard, mosquitto: Mosquitto,
                                                            browser: Any, shots: Path, tmp_path: Path) -> None:
    wifi = guard.secret("browser-site-pass")
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    installer = add_user(guard, db, "ivan", "installer")
    ivan_pw = guard.secrets[-1]
    add_user(guard, db, "vera", "viewer")
    vera_pw = guard.secrets[-1]
    sim: Sim = make_sim(aps=[(SSID, wifi)], hosts=mosquitto.hosts)
    dash = Dashboard(guard, mosquitto.uri, db, tmp_path / "run")
    try:
        provision(guard, sim, mosquitto, dash, wifi, installer)
        dash.wait_for("/api/devices", installer, lambda ds: any(
            d["device_id"] == DEVICE and d["provisioned_at"] and d["last_test_alert"]
            and d["last_test_alert"] >= d["provisioned_at"] for d in ds))

        # --- the front desk (a viewer) leaves the feed open; the installer has it open too
        desk = sign_in(browser, dash.url, "vera", vera_pw)
        desk.get_by_role("link", name="Live panic feed").click()
        desk.wait_for_url(dash.url + "/feed")
        page = sign_in(browser, dash.url, "ivan", ivan_pw)
        page.goto(dash.url + "/feed")
        for p in (desk, page):
            p.wait_for_selector('#live-status[data-state="live"]')
            assert p.locator("ol#feed li").count() == 0  # the provisioning's test alert is no panic
        # sound: the browser plays it only once the person has clicked on the site (its autoplay
        # rule, set as a desktop browser's at launch); the button turns it on, or tests it, with
        # one beep.  A feed that opens by itself (the front desk's browser restored after a
        # restart: the session cookie, no click) cannot play, and its button asks for the click.
        restored = browser.new_context(storage_state=desk.context.storage_state()).new_page()
        restored.goto(dash.url + "/feed")
        restored.wait_for_selector('#live-status[data-state="live"]')
        assert restored.locator("#feed").get_attribute("data-sound") == "off"
        assert restored.locator("button#sound").inner_text() == "Turn sound on"
        assert "attention" in (restored.locator("button#sound").get_attribute("class") or "").split()
        desk.locator("button#sound").click()
        desk.wait_for_selector('#sound[aria-pressed="true"]')
        desk.wait_for_function("document.getElementById('feed').dataset.beeps === '1'")
        desk.screenshot(path=str(shots / "1-feed-waiting.png"), full_page=True)
        navigations: list[str] = []
        desk.on("framenavigated", lambda frame: navigations.append(frame.url))

        r = run_cli(guard, "sim", "press", "--control", str(sim.control_path))
        assert r.returncode == 0, r.stderr
        pressed = time.monotonic()
        item = desk.locator("ol#feed li.panic", has_text=DEVICE)
        item.wait_for(timeout=30_000)
        seen_after = time.monotonic() - pressed
        print(f"the press appeared in the feed {seen_after:.2f} s after `sim press` returned")
        assert navigations == []  # no reload: the page took it from the live stream
        assert "flash" in (item.get_attribute("class") or "").split()
        assert item.locator(".room").inner_text() == ROOM and item.locator(".building").inner_text() == BUILDING
        assert "alarm" in (desk.locator("body").get_attribute("class") or "").split()
        desk.wait_for_function("document.getElementById('feed').dataset.beeps === '2'")  # the panic's beep
        assert desk.locator("#feed").get_attribute("data-sound") == "on"
        assert float(desk.evaluate("parseFloat(getComputedStyle(document.querySelector('.room')).fontSize)")) >= 40
        desk.screenshot(path=str(shots / "2-feed-panic.png"), full_page=True)
        page.locator("ol#feed li.panic.flash", has_text=DEVICE).wait_for(timeout=30_000)  # every open feed
        # the restored feed flashed the panic, played no beep, and still asks for the click
        restored.locator("ol#feed li.panic.flash", has_text=DEVICE).wait_for(timeout=30_000)
        assert restored.locator("#feed").get_attribute("data-sound") == "off"
        assert restored.locator("#feed").get_attribute("data-beeps") == "0"
        assert restored.locator("button#sound").inner_text() == "Turn sound on"
        restored.screenshot(path=str(shots / "2b-feed-panic-sound-off.png"), full_page=True)
        restored.context.close()
        # reloaded, the feed lists the panic from the database (one item, no duplicate from the stream)
        desk.reload()
        desk.wait_for_selector('#live-status[data-state="live"]')
        assert desk.locator("ol#feed li.panic", has_text=DEVICE).count() == 1

        # --- a viewer sees the device, not the confirm button
        desk.goto(dash.url + "/")
        assert row(desk).is_visible()
        assert row(desk).locator(".presence").inner_text() == "online"
        assert row(desk).get_by_role("button", name="Confirm").count() == 0
        assert desk.get_by_role("button", name="Confirm").count() == 0
        assert "not confirmed" in row(desk).locator('[data-field="confirmation"]').inner_text()
        desk.screenshot(path=str(shots / "3-devices-viewer.png"), full_page=True)

        # --- the installer confirms on the device list, after the provisioning's test alert
        page.goto(dash.url + "/")
        r_ = row(page)
        assert r_.locator(".readiness").get_attribute("data-ready") == "yes"
        assert r_.locator('[data-field="last_test_alert"] time').count() == 1
        assert r_.locator('[data-field="last_alert"] time').count() == 1
        assert r_.locator('[data-field="anomalies"]').inner_text() == "none"
        fw = json.loads(run_cli(guard, "status", "--port", sim.port, "--json").stdout)["firmware"]
        assert fw and fw in r_.inner_text()
        page.screenshot(path=str(shots / "4-devices-installer.png"), full_page=True)
        r_.get_by_label("Installer").fill("Ivan Installer")
        r_.get_by_role("button", name="Confirm").click()
        page.wait_for_url(f"{dash.url}/?message=*")
        assert page.locator("p.message").inner_text() == f"{DEVICE} confirmed by Ivan Installer"
        assert row(page).locator(".confirmed").inner_text() == "✓ confirmed by Ivan Installer"
        assert row(page).get_by_role("button", name="Confirm").count() == 0
        page.screenshot(path=str(shots / "5-devices-confirmed.png"), full_page=True)
        d = next(d for d in dash.get("/api/devices", installer) if d["device_id"] == DEVICE)
        assert (d["confirmed"], d["confirmed_by"]) == (True, "Ivan Installer")
        # the viewer's open list shows it without a reload (it refreshes from the API)
        desk.locator(f"tr#device-{TENANT}-{DEVICE} .confirmed").wait_for(timeout=30_000)
        assert desk.locator(f"tr#device-{TENANT}-{DEVICE} .confirmed").inner_text() == "✓ confirmed by Ivan Installer"
    finally:
        assert dash.stop() == 0, dash.stderr()
    assert sorted(p.name for p in shots.iterdir()) == [
        "1-feed-waiting.png", "2-feed-panic.png", "2b-feed-panic-sound-off.png", "3-devices-viewer.png",
        "4-devices-installer.png",
        "5-devices-confirmed.png"]


def test_confirm_before_a_test_alert_says_why(guard: SecretGuard, mosquitto: Mosquitto, browser: Any, shots: Path,
                                              tmp_path: Path) -> None:
    """A provisioning record without a test alert after it: the button is there, the page says
    the device is waiting, and confirming shows the registry's reason (409), nothing confirmed."""
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    token = add_user(guard, db, "ada", "admin")
    pw = guard.secrets[-1]
    dash = Dashboard(guard, mosquitto.uri, db, tmp_path / "run")
    try:
        record = {"tenant": TENANT, "building": BUILDING, "room": ROOM, "device_id": "btn-new",
                  "chip_id": "aa:bb:cc:dd:ee:ff", "time": "2026-01-01T00:00:00+00:00",
                  "cert_expires": "2026-01-02T00:00:00Z"}
        assert dash.request("POST", "/api/provisionings", token, record)[0] == 201
        page = sign_in(browser, dash.url, "ada", pw)
        r_ = page.locator(f"tr#device-{TENANT}-btn-new")
        assert r_.locator(".readiness").inner_text() == "waiting for a test alert since provisioning"
        assert "expired" in r_.locator(".cert").inner_text()
        r_.get_by_role("button", name="Confirm").click()
        page.wait_for_url(f"{dash.url}/?message=*")
        assert "no test alert from btn-new has arrived" in page.locator("p.message").inner_text()
        assert page.locator(f"tr#device-{TENANT}-btn-new").get_by_role("button", name="Confirm").count() == 1
        page.screenshot(path=str(shots / "confirm-refused.png"), full_page=True)
        d = next(d for d in dash.get("/api/devices", token) if d["device_id"] == "btn-new")
        assert d["confirmed"] is False
    finally:
        assert dash.stop() == 0, dash.stderr()


# --- nothing is left running -----------------------------------------------------------------------
CHILD = """
import sys, time
from pathlib import Path
sys.path[:0] = [{tests!r}]
from support.broker import Mosquitto
from support.dashboard import Dashboard, add_user
from support.guard import SecretGuard
from support.sim import Sim
from test_dashboard_browser import launch_options
from playwright.sync_api import sync_playwright
tmp = Path({tmp!r})
guard = SecretGuard()
broker = Mosquitto(tmp)
db = "sqlite:///" + str(tmp / "registry.db")
add_user(guard, db, "vera", "viewer")
dash = Dashboard(guard, broker.uri, db, tmp / "run")
sim = Sim(tmp, guard)
p = sync_playwright().start()
b = p.chromium.launch(**launch_options(tmp / "chromium-home"))
page = b.new_page()
page.goto(dash.url + "/login")
print(" ".join(map(str, [broker.proc.pid, dash.proc.pid, sim.proc.pid])), flush=True)
time.sleep(600)
"""


def _ps() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().split(") ", 1)[1].split()
            if fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        out[int(entry)] = (int(fields[1]), cmd)
    return out


def _family(root: int, tag: str) -> set[int]:
    """``root``'s descendants, and every process whose command line names ``tag`` (chromium's
    crash handler leaves its parent at start)."""
    ps = _ps()
    found = {pid for pid, (_, cmd) in ps.items() if tag in cmd and pid != os.getpid()}
    todo, done = [root], set()
    while todo:
        parent = todo.pop()
        done.add(parent)
        for pid, (ppid, _) in ps.items():
            if ppid == parent and pid not in done:
                found.add(pid)
                todo.append(pid)
    return found


def test_a_killed_test_process_leaves_no_browser_and_no_dashboard(tmp_path: Path) -> None:
    from safesignal.alerts.mosquitto import find_mosquitto

    if find_mosquitto() is None:
        need("mosquitto", "apt-get install mosquitto")
    launch_options(tmp_path / "probe")  # chromium is there (or the test skips / fails in CI)
    code = CHILD.format(tests=str(REPO / "tests"), tmp=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO / "tests")})
    started: set[int] = set()
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode().split()
        assert len(line) == 3, line  # mosquitto, the dashboard, the device's supervisor
        wanted = ("mosquitto", "safesignal dashboard", "safesignal sim", "micropython", "playwright/driver",
                  "/usr/lib/chromium/chromium", "--type=renderer", "chrome_crashpad_handler")
        deadline = time.monotonic() + 30
        while True:
            started = _family(child.pid, str(tmp_path))
            cmds = " ".join(_ps().get(p, (0, ""))[1] for p in started)
            missing = [w for w in wanted if w not in cmds]
            if not missing:
                break
            assert time.monotonic() < deadline, f"{missing} did not start"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 30
        left = started
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = _ps()
            left = {p for p in started if p in alive}
        assert not left, "left running after the test process was killed: " + "; ".join(
            _ps().get(p, (0, "?"))[1][:100] for p in left)
    finally:
        child.kill()
        child.wait(10)
        for p in started:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
