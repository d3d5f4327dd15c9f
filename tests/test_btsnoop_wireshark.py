"""`safesignal provision --ble … --btsnoop FILE` writes an HCI log that Wireshark opens (issue 11).

Checked with Wireshark itself, its command-line reader tshark and capinfos (Debian's
`tshark` package; .ci/run installs it; a missing one fails in CI), on the log of a real
provisioning over the virtual link (`safesignal sim --ble`, the same flow as
tests/test_ble_security.py):

- capinfos reads it as a btsnoop file of Bluetooth H4 packets, with as many packets as our own
  reader (tests/support/btsnoop.py) finds records;
- tshark reads it all (exit 0, nothing on stderr), and its full dissection finds no malformed
  packet and no expert warning or error;
- tshark sees the same ATT write requests, write commands and handle value notifications as our
  reader (by direction, opcode and attribute handle), and the same values written to our RX
  characteristic and notified on TX, byte for byte, in the same order;
- its full dissection with hex dumps (`-V -x`) holds the WiFi password in no form (text,
  UTF-16, hex; the hex dumps turned back into bytes), nor do the ATT values tshark extracts
  (in full: -V shortens long values), while the device's name, which crosses the air in the
  clear (PARAMS), is found by the same searches (their positive control).

That the checks catch a bad file: test_broken_btsnoop_logs_are_reported cuts a real log in the
middle of a packet (tshark and capinfos say so, our reader refuses it) and cuts one ATT write
request short inside a record, keeping the file well formed (tshark's dissection reports the
packet malformed, with an expert error on that frame)."""

from __future__ import annotations

import re
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest

import test_ble_security
from support.btsnoop import ATT_NOTIFY, ATT_WRITE_CMD, ATT_WRITE_REQ, Capture, parse, read_records
from support.cli import run_cli
from support.env import need_module, need_program
from support.guard import SecretGuard
from support.sim import Sim
from test_ble_security import PROVISION, _pin

need_module("bumble", "pip install -e '.[test]'")

HOW = "apt-get install tshark (Wireshark's command-line tools: tshark, capinfos; .ci/run installs it)"
OPS = (ATT_WRITE_REQ, ATT_WRITE_CMD, ATT_NOTIFY)
# tshark's fields, one line per ATT PDU of those kinds (display filter)
FIELDS = ("frame.number", "hci_h4.direction", "btatt.opcode", "btatt.handle", "btatt.value")
Op = tuple[bool, int, int]  # (received by the host, ATT opcode, attribute handle)
ble_sim = test_ble_security.ble_sim  # the fixture: a virtual device with BLE on and a PIN verifier


@pytest.fixture
def wireshark() -> None:
    """Before the virtual device starts: tshark and capinfos are here (fails in CI if not)."""
    need_program("tshark", HOW)
    need_program("capinfos", HOW)


def tshark(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need_program("tshark", HOW), "-r", str(path), *args], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def _stderr_lines(err: str) -> list[str]:
    # tshark started as root says so on stderr (a warning about its own privileges, not the file)
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("Running as user")]


def wireshark_problems(path: Path) -> list[str]:
    """What Wireshark finds wrong with a file: tshark's exit code and stderr (a file cut short,
    not a capture file, ...), and in its full dissection malformed packets and expert infos of
    warning or error severity."""
    out = []
    p = tshark(path, "-V")
    if p.returncode != 0:
        out.append(f"tshark -r exited {p.returncode}")
    out += [f"tshark: {ln}" for ln in _stderr_lines(p.stderr)]
    out += [f"dissection: {ln.strip()}" for ln in p.stdout.splitlines() if "malformed" in ln.lower()]
    # PI_WARN is 0x00600000, PI_ERROR 0x00800000 (epan/proto.h)
    q = tshark(path, "-Y", "_ws.malformed || _ws.expert.severity >= 0x00600000")
    out += [f"expert: {ln.strip()}" for ln in q.stdout.splitlines() if ln.strip()]
    return out


def capinfos(path: Path) -> dict[str, str]:
    """capinfos' file type (-t), encapsulation (-E) and packet count (-c), by label."""
    p = subprocess.run([need_program("capinfos", HOW), "-t", "-E", "-c", str(path)], capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout + p.stderr
    return dict((k.strip(), v.strip()) for k, v in (ln.split(":", 1) for ln in p.stdout.splitlines() if ":" in ln))


def wireshark_att(path: Path) -> list[tuple[Op, bytes]]:
    """Every ATT write request, write command and handle value notification tshark dissects,
    in order: ((received by the host, opcode, handle), value)."""
    flt = " || ".join(f"btatt.opcode == 0x{op:02x}" for op in OPS)
    p = tshark(path, "-Y", flt, "-T", "fields", *[a for f in FIELDS for a in ("-e", f)], "-E", "separator=/t")
    assert p.returncode == 0 and not _stderr_lines(p.stderr), p.stderr
    out = []
    for ln in p.stdout.splitlines():
        frame, direction, op, handle, value = (ln.split("\t") + [""] * 5)[:5]
        assert "," not in op + handle, ln  # one ATT PDU per frame
        out.append(((int(direction, 16) == 1, int(op, 16), int(handle, 16) if handle else -1),
                    bytes.fromhex(value)))
    return out


def our_att(cap: Capture) -> list[tuple[Op, bytes]]:
    """The same from our reader (tests/support/btsnoop.py); value: the PDU after opcode and handle."""
    return [((received, pdu[0], int.from_bytes(pdu[1:3], "little") if len(pdu) >= 3 else -1), pdu[3:])
            for _h, received, pdu in cap.att_pdus if pdu and pdu[0] in OPS]


def _ours(cap: Capture, op: Op) -> bool:
    # our characteristics: writes to RX, notifications of TX (the values Wireshark shows as btatt.value)
    return (op[1] != ATT_NOTIFY and op[2] == cap.rx_handle) or (op[1] == ATT_NOTIFY and op[2] == cap.tx_handle)


def hexdump_bytes(text: str) -> bytes:
    """Every byte of tshark's -x hex dumps (frames and reassembled buffers), concatenated."""
    out = bytearray()
    for m in re.finditer(r"^[0-9a-f]{4}  ((?:[0-9a-f]{2} ){1,16})", text, re.M):
        out += bytes.fromhex(m.group(1).replace(" ", ""))
    return bytes(out)


def _forms(s: str) -> dict[str, str]:
    b = s.encode()
    return {"text": s, "hex": b.hex(), "HEX": b.hex().upper(), "spaced hex": " ".join(f"{c:02x}" for c in b),
            "colon hex": ":".join(f"{c:02x}" for c in b), "UTF-16": s.encode("utf-16-le").decode("latin-1")}


def _found(full: str, dump: bytes, s: str) -> list[str]:
    hits = [k for k, v in _forms(s).items() if v in full]
    if s.encode() in dump:
        hits.append("bytes of the hex dumps")
    if s.encode("utf-16-le") in dump:
        hits.append("UTF-16 in the hex dumps")
    return hits


def test_btsnoop_log_opens_in_wireshark(wireshark: None, ble_sim: tuple[Sim, str, str], tmp_path: Path,
                                        guard: SecretGuard) -> None:
    sim, pin, password = ble_sim
    log = tmp_path / "provision.btsnoop"
    guard.binaries.append(log)
    p = run_cli(guard, "provision", "--ble", "--pin", pin, "--ble-transport", str(sim.ble_spec), *PROVISION,
                "--btsnoop", str(log), env={"SAFESIGNAL_WIFI_PASS": password}, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Provisioning complete" in p.stdout
    cap = parse(log)
    assert len(cap.connections) == 2  # before the device's reboot and after it (the read-back)

    # Wireshark's idea of the file
    info = capinfos(log)
    assert info["File type"].endswith("btsnoop"), info  # "Symbian OS btsnoop"
    assert info["File encapsulation"].startswith("Bluetooth H4"), info
    assert int(info["Number of packets"]) == len(cap.records), (info, len(cap.records))
    assert wireshark_problems(log) == []

    # the same ATT operations, and on our characteristics the same values in the same order
    theirs, ours = wireshark_att(log), our_att(cap)
    assert Counter(op for op, _ in theirs) == Counter(op for op, _ in ours)
    count = Counter(op[:2] for op, _ in ours)
    assert count[(False, ATT_WRITE_REQ)] > 10 and count[(True, ATT_NOTIFY)] > 10, count  # a whole provisioning
    assert [(op, v) for op, v in theirs if _ours(cap, op)] == [(op, v) for op, v in ours if _ours(cap, op)]

    # the full dissection holds no WiFi password; the same search finds the device's name
    full = tshark(log, "-V", "-x")
    assert full.returncode == 0 and not _stderr_lines(full.stderr), full.stderr
    guard.output("tshark -V -x of the provisioning's log", full.stdout)  # checked for every secret too
    dump = hexdump_bytes(full.stdout)
    assert len(dump) >= log.stat().st_size - 16 - 24 * len(cap.records)  # every packet's bytes are in it
    values = b"".join(v for _, v in theirs)  # tshark's ATT values in full (-V shortens long ones with "…")
    assert _found(full.stdout, dump, password) == []
    assert password.encode() not in values and password.encode("utf-16-le") not in values
    name = cap.connections[0].device_msgs[0][1][-15:].decode()  # PARAMS ends with the name
    assert name.startswith("SafeSignal-")
    hits = _found(full.stdout, dump, name)
    assert {"text", "bytes of the hex dumps"} <= set(hits), hits
    assert name.encode() in values


def _truncated(src: Path, dst: Path) -> None:
    raw = src.read_bytes()
    dst.write_bytes(raw[:-10])  # the last record loses its end


def _write_request_cut_short(src: Path, dst: Path) -> int:
    """A copy in which the first ATT write request in a single ACL packet keeps its opcode and
    one byte of its handle (the ACL, L2CAP and record lengths made consistent: a well-formed
    file, a malformed ATT PDU); returns its record number (1-based)."""
    raw = bytearray(src.read_bytes())
    i, n = 16, 0
    while i + 24 <= len(raw):
        orig, incl = struct.unpack(">II", raw[i:i + 8])
        p, n = i + 24, n + 1
        pk = raw[p:p + incl]
        if pk[0] == 2 and len(pk) >= 10:
            hf, dlen = struct.unpack("<HH", pk[1:5])
            l2, cid = struct.unpack("<HH", pk[5:9])
            if (hf >> 12) & 3 != 1 and cid == 4 and pk[9] == ATT_WRITE_REQ and dlen == l2 + 4 and l2 >= 5:
                cut = l2 - 2
                struct.pack_into("<HH", raw, p + 1, hf, dlen - cut)
                struct.pack_into("<H", raw, p + 5, 2)
                del raw[p + 11:p + 9 + l2]
                struct.pack_into(">II", raw, i, orig - cut, incl - cut)
                dst.write_bytes(bytes(raw))
                return n
        i = p + incl
    raise AssertionError("no write request in a single ACL packet")


def test_broken_btsnoop_logs_are_reported(wireshark: None, ble_sim: tuple[Sim, str, str], tmp_path: Path,
                                          guard: SecretGuard) -> None:
    """The checks above are real: a real log (a wrong-PIN session) passes them; a copy cut in
    the middle of its last packet, and a copy with one ATT write request cut short, do not."""
    sim, pin, password = ble_sim
    log = tmp_path / "wrong-pin.btsnoop"
    guard.binaries.append(log)
    p = run_cli(guard, "provision", "--ble", "--pin", _pin({pin}), "--ble-transport", str(sim.ble_spec), *PROVISION,
                "--btsnoop", str(log), env={"SAFESIGNAL_WIFI_PASS": password})
    assert p.returncode == 11, p.stdout + p.stderr
    cap = parse(log)
    assert wireshark_problems(log) == []
    assert Counter(op for op, _ in wireshark_att(log)) == Counter(op for op, _ in our_att(cap))

    cut = tmp_path / "cut.btsnoop"
    _truncated(log, cut)
    problems = wireshark_problems(cut)
    assert any("appears to have been cut short in the middle of a packet" in x for x in problems), problems
    assert any(x.startswith("tshark -r exited") for x in problems), problems
    c = subprocess.run([need_program("capinfos", HOW), str(cut)], capture_output=True, text=True, timeout=60)
    assert "cut short" in c.stderr, c.stderr
    with pytest.raises(ValueError, match="ends inside a record"):
        read_records(cut)

    bad = tmp_path / "malformed.btsnoop"
    frame = _write_request_cut_short(log, bad)
    read_records(bad)  # a well-formed btsnoop file ...
    problems = wireshark_problems(bad)  # ... with a malformed ATT PDU in it
    assert any(x.startswith("dissection:") and "Malformed" in x for x in problems), problems
    assert any(x.startswith("expert:") and re.match(rf"expert: {frame} ", x) for x in problems), problems
    # both readers see the write request without its handle (the count check stays honest)
    theirs, ours = wireshark_att(bad), our_att(parse(bad))
    assert ((False, ATT_WRITE_REQ, -1), b"") in theirs and ((False, ATT_WRITE_REQ, -1), b"") in ours
    assert Counter(op for op, _ in theirs) == Counter(op for op, _ in ours)
