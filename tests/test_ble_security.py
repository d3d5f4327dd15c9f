"""BLE provisioning security, from what an eavesdropper captures: the HCI log that
`safesignal provision --ble … --btsnoop FILE` writes (bumble's BtSnooper, what Wireshark opens),
parsed by tests/support/btsnoop.py (HCI ACL -> L2CAP -> ATT write requests and notifications ->
our frames, reassembled with ssproto.ble.Deframer), against a real `safesignal sim --ble`.

Why a captured session gives no offline PIN test (SPAKE2+, RFC 9383).  The log holds, in the
clear, the device's public parameters (name, address, salt, PBKDF2 iterations: so the context),
shareP = X = x*G + w0*M, shareV = Y = y*G + w0*N and confirmV = HMAC(K_confirmV, X), and in a
successful session confirmP, then only channel ciphertext.  An attacker with a PIN candidate
derives (w0, w1) with PBKDF2 as the host does and can then compute every input of the
transcript TT except one: Z = y*(X - w0*M) = x*(Y - w0*N), which for the TRUE PIN is x*y*G, the
Diffie-Hellman value of X - w0*M = x*G and Y - w0*N = y*G.  (V = w1*(Y - w0*N) IS computable by
a candidate holder, which is why the test below computes it.)  Computing Z from the two public
points without x or y is the computational Diffie-Hellman problem on P-256; every key of the
schedule is HKDF(SHA-256(TT)), so without Z, confirmV (and confirmP, and the channel key) are
unrelated to any value the attacker can compute: whatever Z' it substitutes, the check
"HMAC(K_confirmV(Z'), X) == confirmV" fails for the true PIN exactly as for every wrong one.
The test implements that attacker (``offline_check``) with the substitutes that public data and
a candidate give (X', Y', their sum, w0*Y', w1*X', ...) and shows it answers "no" for the true
PIN and for wrong guesses alike: it cannot tell them apart.  The positive control proves the
same code is a real test when Z IS known: with the host's ephemeral x (a session run through
the library, ssproto.spake2p.Prover given a fixed x) it confirms the true PIN and rejects the
others.  An ACTIVE attacker, who ran the failed session itself and so knows its own x, is no
better off: the device computed Z with the true w0 from a shareP built with the guessed one,
Z = x*y*G + (w0_guess - w0)*y*M, and y*M is again a Diffie-Hellman value: one connection tests
one PIN, and the device counts it (the lockout).  Checked below too.

The log also holds none of the PIN's derived values (the PIN's digits, w0, w1, L, the PBKDF2
output, for the true PIN or any guess), and, in a successful provisioning, no WiFi password (in
the log, in any output of the CLI or the virtual device, or in its flash image)."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ssproto.ble as P
from ssproto import p256, spake2p
from support.btsnoop import Capture, parse
from support.cli import run_cli
from support.env import need_module
from support.guard import SecretGuard
from support.sim import Sim

need_module("bumble", "pip install -e '.[test]'")

from test_ble_e2e import SSID, pin_step  # noqa: E402 - after the module check

PROVISION = ["--wifi-ssid", SSID, "--device-id", "d1", "--tenant", "t1", "--building", "b1", "--room", "r1",
             "--offline"]


def _pin(exclude: frozenset[str] | set[str] = frozenset()) -> str:
    while True:
        p = f"{secrets.randbelow(10**6):06d}"
        if p not in exclude:
            return p


@pytest.fixture
def ble_sim(tmp_path: Path, guard: SecretGuard) -> Iterator[tuple[Sim, str, str]]:
    """A virtual device with BLE on and a PIN verifier; (sim, pin, wifi password)."""
    password = guard.secret("Wp-" + secrets.token_hex(8))
    sim = Sim(tmp_path, guard, ble=True, aps=[(SSID, password)])
    try:
        assert sim.ble_spec
        pin = guard.secret(_pin())
        pin_step(guard, sim, pin)  # the factory step, then the reboot that opens the window
        yield sim, pin, password
    finally:
        sim.stop()


# --- the attacker ---------------------------------------------------------------------------------

def _pt(b: bytes) -> tuple[int, int]:
    return p256.decode_point(b)  # type: ignore[no-any-return]


def _add(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None:
        return b
    if b is None:
        return a
    return p256._affine(*p256._add(a[0], a[1], 1, b[0], b[1], 1))  # type: ignore[no-any-return]


def _neg(a: tuple[int, int]) -> tuple[int, int]:
    return a[0], p256.P - a[1]


def _mul(k: int, a: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None or k % p256.N == 0:
        return None
    return p256._affine(*p256._mul(k % p256.N, a[0], a[1]))  # type: ignore[no-any-return]


M = (spake2p.MX, spake2p.MY)
N = (spake2p.NX, spake2p.NY)
G = (p256.GX, p256.GY)


def _enc(a: tuple[int, int] | None) -> bytes:
    # the point at infinity has no SEC 1 uncompressed form; an attacker would try some encoding
    return p256.encode_point(a[0], a[1]) if a is not None else b"\x00"


class Session:
    """What the log gives of one PIN exchange."""

    def __init__(self, cap: Capture, index: int = 0) -> None:
        c = cap.connections[index]
        kinds = [(side, t) for side, t, _ in c.order[:4]]
        assert kinds == [("host", P.M_HELLO), ("device", P.M_PARAMS), ("host", P.M_SHARE_P),
                         ("device", P.M_SHARE_V)], kinds
        msgs = [p for _, _, p in c.order[:4]]
        self.salt, self.iterations, _fails, _wait, self.address, self.name = P.parse_params(msgs[1])
        self.ctx = spake2p.context(self.name, self.address, self.salt, self.iterations)
        self.share_p = msgs[2]
        self.share_v = msgs[3][:65]
        self.confirm_v = msgs[3][65:]
        assert len(self.share_p) == 65 and len(self.share_v) == 65 and len(self.confirm_v) == 32
        _pt(self.share_p), _pt(self.share_v)  # both real points on the curve

    def derive(self, pin: str) -> tuple[int, int]:
        return spake2p.derive_w(pin, self.salt, self.iterations)  # type: ignore[no-any-return]


def _confirms(s: Session, w0: int, z: bytes, v: bytes) -> bool:
    tt = spake2p.transcript(s.ctx, b"", b"", s.share_p, s.share_v, z, v, w0)
    _, _, kcv, _ = spake2p.key_schedule(tt)
    return bool(p256.hmac_sha256(kcv, s.share_p) == s.confirm_v)


def offline_check(s: Session, w: tuple[int, int], x: int | None = None) -> bool:
    """The attacker's offline test of one candidate (w0, w1) against a captured exchange: does
    any Z it can form reproduce the device's confirmV?  With x (the host's ephemeral scalar),
    Z = x*(Y - w0*N) as the Prover computes it.  Without, the public points and the candidate
    are all there is: X' = X - w0*M, Y' = Y - w0*N and what can be made of them and of w0, w1
    without a Diffie-Hellman oracle."""
    w0, w1 = w
    X, Y = _pt(s.share_p), _pt(s.share_v)
    Xp = _add(X, _neg(_mul(w0, M)))  # type: ignore[arg-type]
    Yp = _add(Y, _neg(_mul(w0, N)))  # type: ignore[arg-type]
    V = _enc(_mul(w1, Yp))  # computable by whoever holds the candidate
    if x is not None:
        zs = [_mul(x, Yp)]
    else:
        zs = [Xp, Yp, _add(Xp, Yp), _mul(w0, Yp), _mul(w0, Xp), _mul(w1, Xp), _mul(w1, Yp),
              _mul(w0 * w1, G), X, Y, G, None]
    return any(_confirms(s, w0, _enc(z), V) for z in zs)


def session_key(s: Session, w: tuple[int, int], x: int) -> bytes:
    """K_shared of a captured exchange, for whoever knows the PIN's (w0, w1) AND the host's x."""
    w0, w1 = w
    Yp = _add(_pt(s.share_v), _neg(_mul(w0, N)))  # type: ignore[arg-type]
    tt = spake2p.transcript(s.ctx, b"", b"", s.share_p, s.share_v, _enc(_mul(x, Yp)), _enc(_mul(w1, Yp)), w0)
    return spake2p.key_schedule(tt)[3]  # type: ignore[no-any-return]


def _derived_values(s: Session, pin: str) -> dict[str, bytes]:
    """Every value a PIN determines before the exchange, in the encodings it could travel in."""
    w0, w1 = s.derive(pin)
    kdf = hashlib.pbkdf2_hmac("sha256", spake2p._lp(pin.encode()) + spake2p._lp(b"") + spake2p._lp(b""), s.salt,
                              s.iterations, 80)
    L = p256.mul_g(w1)
    out = {"PIN digits": pin.encode(), "PIN digits (UTF-16)": pin.encode("utf-16-le"),
           "PBKDF2 output": kdf, "PBKDF2 w0s": kdf[:40], "PBKDF2 w1s": kdf[40:],
           "L": p256.encode_point(*L), "L.x": L[0].to_bytes(32, "big"),
           "verifier record": spake2p.make_record(pin, s.salt, s.iterations)[:97]}
    for name, v in (("w0", w0), ("w1", w1)):
        out[name] = v.to_bytes(32, "big")
        out[name + " (little-endian)"] = v.to_bytes(32, "little")
    return out


class _FixedX:
    """ssproto.spake2p.Prover with a given x (the library's test hook), recording it."""

    def __init__(self, x: int) -> None:
        self.x = x
        self.used = 0
        real = spake2p.Prover
        me = self

        class Prover(real):  # type: ignore[misc, valid-type]
            def __init__(self, *a: Any, **kw: Any) -> None:
                kw["x"] = me.x
                me.used += 1
                super().__init__(*a, **kw)

        self.cls = Prover


def _library_session(monkeypatch: pytest.MonkeyPatch, sim: Sim, pin: str, x: int, log: Path) -> str:
    """One PIN exchange through the library (BlePort, as `provision --ble` opens it) with a fixed
    x, logged to ``log``; "ok" or "wrong"."""
    from safesignal.link.ble import BlePort, WrongPin

    fx = _FixedX(x)
    monkeypatch.setattr(spake2p, "Prover", fx.cls)
    try:
        port = BlePort(sim.ble_spec, None, pin, btsnoop=str(log))
    except WrongPin:
        return "wrong"
    finally:
        monkeypatch.undo()
    port.close()
    assert fx.used == 1
    return "ok"


def test_failed_session_log_gives_no_offline_pin_test(ble_sim: tuple[Sim, str, str], tmp_path: Path,
                                                      guard: SecretGuard, monkeypatch: pytest.MonkeyPatch) -> None:
    sim, pin, password = ble_sim
    guard.secret(pin)
    wrong = _pin({pin})
    others = [_pin({pin, wrong}) for _ in range(2)]
    log = tmp_path / "failed.btsnoop"
    guard.binaries.append(log)
    p = run_cli(guard, "provision", "--ble", "--pin", wrong, "--ble-transport", str(sim.ble_spec), *PROVISION,
                "--btsnoop", str(log), env={"SAFESIGNAL_WIFI_PASS": password})
    assert p.returncode == 11, p.stdout + p.stderr  # wrong PIN, counted
    assert "19 attempts left" in p.stderr

    cap = parse(log)
    assert cap.rx_handle is not None and cap.tx_handle is not None  # found from the GATT discovery
    assert len(cap.connections) == 1
    # (a) the whole exchange is in the log: HELLO, PARAMS, SHARE_P, SHARE_V + confirmV, and no more
    assert [(side, t) for side, t, _ in cap.connections[0].order] == [
        ("host", P.M_HELLO), ("device", P.M_PARAMS), ("host", P.M_SHARE_P), ("device", P.M_SHARE_V)]
    s = Session(cap)
    assert s.name.startswith(P.NAME_PREFIX) and s.iterations == spake2p.ITERATIONS
    # the shareP in the log is the one the host made for its (wrong) guess: x*G + w0(wrong)*M
    # for SOME x; it is not of the true PIN's form with the same x (not testable, just sent)

    # (b) nothing the PIN determines is in the log, for the true PIN nor any guess
    raw = log.read_bytes()
    for cand in [pin, wrong, *others]:
        for what, value in _derived_values(s, cand).items():
            assert value not in raw, f"{what} of a candidate PIN is in the HCI log"

    # (c) the offline test without an ephemeral secret: the same answer (no) for every candidate
    ws = {c: s.derive(c) for c in [pin, wrong, *others]}
    answers = {c: offline_check(s, w) for c, w in ws.items()}
    assert set(answers.values()) == {False}, answers  # the true PIN is not told apart

    # positive control: the same code with the host's x (a library session, true PIN, fixed x)
    x_ok = int.from_bytes(hashlib.sha256(b"test_ble_security x ok").digest(), "big") % p256.N
    log_ok = tmp_path / "ok.btsnoop"
    guard.binaries.append(log_ok)
    assert _library_session(monkeypatch, sim, pin, x_ok, log_ok) == "ok"
    s_ok = Session(parse(log_ok))
    assert s_ok.share_p == spake2p.prover_share(ws[pin][0], x_ok)  # the log holds this session
    assert offline_check(s_ok, ws[pin], x_ok) is True  # Z known: the true PIN is confirmed
    assert not any(offline_check(s_ok, ws[c], x_ok) for c in [wrong, *others])  # and the others rejected
    # ... and without x, a successful session's log is as mute as the failed one's
    assert not any(offline_check(s_ok, w) for w in ws.values())

    # the active attacker: a failed session it ran itself, so it knows its x: still no test of
    # any PIN but the one it sent (the device answered for the true w0 against its guess)
    x_bad = int.from_bytes(hashlib.sha256(b"test_ble_security x wrong").digest(), "big") % p256.N
    log_bad = tmp_path / "active.btsnoop"
    guard.binaries.append(log_bad)
    assert _library_session(monkeypatch, sim, wrong, x_bad, log_bad) == "wrong"
    s_bad = Session(parse(log_bad))
    assert s_bad.share_p == spake2p.prover_share(ws[wrong][0], x_bad)
    assert not any(offline_check(s_bad, w, x_bad) for w in ws.values())  # not even the true PIN
    for lg in (log_ok, log_bad):
        for cand in [pin, wrong]:
            for what, value in _derived_values(s, cand).items():
                assert value not in lg.read_bytes(), f"{what} is in {lg.name}"


def test_wifi_password_in_no_log_or_output(ble_sim: tuple[Sim, str, str], tmp_path: Path,
                                          guard: SecretGuard) -> None:
    sim, pin, password = ble_sim
    guard.secret(pin)
    log = tmp_path / "provision.btsnoop"
    guard.binaries.append(log)
    guard.files.append(log)
    p = run_cli(guard, "provision", "--ble", "--pin", pin, "--ble-transport", str(sim.ble_spec), *PROVISION,
                "--btsnoop", str(log), env={"SAFESIGNAL_WIFI_PASS": password}, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Provisioning complete" in p.stdout
    # the password did cross the air (encrypted): the device stored it ...
    cfg = sim.partition().get("provision", "cfg1")
    assert cfg is not None and password.encode() in bytes(cfg.value)  # decrypted NVS (the chip's view)
    # ... in DATA messages the log holds (so the search below searched something)
    cap = parse(log)
    data = [pl for c in cap.connections for side, t, pl in c.order if side == "host" and t == P.M_DATA]
    assert data and sum(len(d) for d in data) > len(password)
    raw = log.read_bytes()
    for form in (password.encode(), password.encode("utf-16-le"), password.encode().hex().encode()):
        assert form not in raw
    # the sim's stdout/stderr and its raw flash image (NVS encryption) are in the guard (Sim),
    # as are the CLI's outputs (run_cli) and the log: guard.check() runs at the end of the test


def test_wifi_password_crosses_the_air_only_inside_the_channel(ble_sim: tuple[Sim, str, str], tmp_path: Path,
                                                               guard: SecretGuard,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The positive control of the search above: a provisioning through the library with a
    fixed x, logged.  The raw log holds no password, yet the password IS in it, encrypted: with
    the PIN and x (which only the host ever held) the log's DATA frames open with the session
    key, and the host's console lines inside hold provision_set_wifi and the password."""
    from safesignal.link.ble import BlePort
    from safesignal.link.session import DeviceSession
    from safesignal.provisioning.flow import ProvisionRequest, provision
    from ssproto.channel import Channel

    sim, pin, password = ble_sim
    guard.secret(pin)
    log = tmp_path / "library.btsnoop"
    guard.binaries.append(log)
    x = int.from_bytes(hashlib.sha256(b"test_ble_security x provision").digest(), "big") % p256.N
    fx = _FixedX(x)
    monkeypatch.setattr(spake2p, "Prover", fx.cls)
    port = BlePort(sim.ble_spec, None, pin, btsnoop=str(log))
    with DeviceSession(port.url, timeout=10.0, ser=port) as session:  # type: ignore[arg-type]
        status = provision(session, ProvisionRequest(SSID, password, "d1", "t1", "b1", "r1", offline=True),
                           boot_timeout=60.0)
    monkeypatch.undo()
    assert status["device_id"] == "d1" and fx.used == 2  # before the reboot and after it
    raw = log.read_bytes()
    assert password.encode() not in raw
    cap = parse(log)
    assert len(cap.connections) >= 1
    first = cap.connections[0]
    s = Session(cap)
    key = session_key(s, s.derive(pin), x)
    assert spake2p.Prover(*s.derive(pin), s.ctx, x=x).share == s.share_p
    chan = Channel(key, True)  # the device's end: it opens what the host sealed
    plain = b"".join(chan.open(p) for side, t, p in first.order if side == "host" and t == P.M_DATA)
    assert b"provision_set_wifi" in plain and password.encode() in plain
    # and a wrong guess's key opens nothing
    wrong = _pin({pin})
    bad = Channel(session_key(s, s.derive(wrong), x), True)
    frame = next(p for side, t, p in first.order if side == "host" and t == P.M_DATA)
    with pytest.raises(ValueError):
        bad.open(frame)


def test_pin_key_is_made_at_hello_not_in_the_attempt(ble_sim: tuple[Sim, str, str], guard: SecretGuard) -> None:
    """The first PIN attempt after a boot does not pay for the VerifierKey (w0*M, w0*N, the
    comb table for L: as long as the attempt itself, bench/ble.py `prepare`): the device makes
    it at the host's HELLO, right after its parameters went out, while the host runs PBKDF2.
    The device's console (read while a wrong-PIN session runs over BLE) shows it ready before
    the attempt is counted, in the first session after a boot.  Before, the key was made inside
    the attempt: no such line (this test fails)."""
    import os

    from safesignal.tools import stop_process

    sim, pin, password = ble_sim
    guard.secret(pin)
    con = subprocess.Popen([sys.executable, "-m", "safesignal", "console", "--port", sim.port,
                            "--until", r"\[BLE\] (PIN attempt counted|Session refused)", "--duration", "60"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        p = run_cli(guard, "provision", "--ble", "--pin", _pin({pin}), "--ble-transport", str(sim.ble_spec),
                    *PROVISION, env={"SAFESIGNAL_WIFI_PASS": password})
        assert p.returncode == 11, p.stdout + p.stderr
        out, err = con.communicate(timeout=60)
    finally:
        stop_process(con)
    guard.output("safesignal console stdout", out)
    guard.output("safesignal console stderr", err)
    lines = [ln for ln in out.splitlines() if "[BLE]" in ln]
    assert any("PIN attempt counted (1 of" in ln for ln in lines), out + os.linesep + err
    counted = next(i for i, ln in enumerate(lines) if "PIN attempt counted" in ln)
    ready = [i for i, ln in enumerate(lines) if ln.endswith("[BLE] PIN key ready")]
    assert ready and ready[0] < counted, lines
