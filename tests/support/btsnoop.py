"""Reading a btsnoop HCI log (``provision --ble --btsnoop FILE``, bumble's BtSnooper) the way an
eavesdropper with Wireshark would: HCI ACL -> L2CAP -> ATT, then the SafeSignal frames
(ssproto.ble) of each connection, host -> device (ATT write requests to the RX characteristic)
and device -> host (handle value notifications of the TX characteristic).

Formats: btsnoop (RFC 1761 style; bumble/snoop.py BtSnooper): an 8-byte identification
``btsnoop\\0``, version and datalink (u32 BE each, H4 = 1002), then records of original length,
included length, flags (bit 0: 1 = received by the host), drops (u32 BE each), a u64 timestamp and
the H4 packet.  H4: a type byte (1 command, 2 ACL, 4 event).  ACL (Core spec Vol 4 Part E 5.4.2):
handle + flags (u16 LE; packet boundary flags bits 12-13, 0b01 = continuing fragment), data
length (u16 LE).  L2CAP basic header (Vol 3 Part A 3.1): length, channel id (u16 LE; 0x0004 is
ATT).  ATT (Vol 3 Part F 3.4): opcode then parameters.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import ssproto.ble as P

H4_COMMAND, H4_ACL, H4_EVENT = 1, 2, 4
ATT_CID = 0x0004
ATT_READ_BY_TYPE_RSP = 0x09
ATT_WRITE_REQ = 0x12
ATT_WRITE_CMD = 0x52
ATT_NOTIFY = 0x1B
EVT_DISCONNECTION_COMPLETE = 0x05
EVT_LE_META = 0x3E
LE_CONNECTION_COMPLETE = (0x01, 0x0A)  # LE Connection Complete, LE Enhanced Connection Complete


@dataclass
class Record:
    received: bool  # controller -> host
    packet: bytes  # the H4 packet (type byte first)


@dataclass
class Connection:
    """One connection's SafeSignal traffic, as an eavesdropper rebuilds it from the log."""

    handle: int
    host_stream: bytearray = field(default_factory=bytearray)  # written to RX (ATT write values)
    device_stream: bytearray = field(default_factory=bytearray)  # notified on TX
    host_msgs: list[tuple[int, bytes]] = field(default_factory=list)
    device_msgs: list[tuple[int, bytes]] = field(default_factory=list)
    order: list[tuple[str, int, bytes]] = field(default_factory=list)  # ("host"|"device", type, payload)


@dataclass
class Capture:
    records: list[Record]
    connections: list[Connection]
    att_bytes: dict[str, int]  # ATT PDU bytes (opcode + parameters): "host_to_device", "device_to_host"
    att_value_bytes: dict[str, int]  # our streams only: RX write values, TX notification values
    acl_bytes: dict[str, int]  # HCI ACL packets (4-byte ACL header + data), each way
    acl_packets: dict[str, int]
    rx_handle: int | None
    tx_handle: int | None
    att_pdus: list[tuple[int, bool, bytes]]  # every ATT PDU in order: (ACL handle, received, PDU)


def read_records(path: Path) -> list[Record]:
    raw = path.read_bytes()
    if raw[:8] != b"btsnoop\0":
        raise ValueError("not a btsnoop file")
    version, datalink = struct.unpack(">II", raw[8:16])
    if version != 1 or datalink != 1002:
        raise ValueError(f"btsnoop version {version}, datalink {datalink}: expected 1, H4 (1002)")
    out = []
    i = 16
    while i + 24 <= len(raw):
        _orig, incl, flags, _drops, _ts = struct.unpack(">IIIIQ", raw[i:i + 24])
        i += 24
        out.append(Record(bool(flags & 1), raw[i:i + incl]))
        i += incl
    if i != len(raw):
        raise ValueError("btsnoop file ends inside a record")
    return out


def _uuid128_le(s: str) -> bytes:
    return bytes.fromhex(s.replace("-", ""))[::-1]


def _char_handles(pdu: bytes, found: dict[bytes, int]) -> None:
    # Read By Type response of characteristic declarations: item length, then items of
    # attribute handle (2), properties (1), value handle (2), UUID (2 or 16), all little-endian
    n = pdu[1]
    body = pdu[2:]
    for k in range(0, len(body) - n + 1, n):
        item = body[k:k + n]
        if n == 21:
            found[item[5:21]] = int.from_bytes(item[3:5], "little")


def parse(path: Path) -> Capture:
    """Every ATT PDU of the log, our characteristics found from the client's discovery, and the
    SafeSignal messages of each connection reassembled with ssproto.ble.Deframer."""
    records = read_records(path)
    acl_bytes = {"host_to_device": 0, "device_to_host": 0}
    acl_packets = {"host_to_device": 0, "device_to_host": 0}
    att_bytes = {"host_to_device": 0, "device_to_host": 0}
    value_bytes = {"host_to_device": 0, "device_to_host": 0}
    partial: dict[tuple[int, bool], bytearray] = {}
    pdus: list[tuple[int, bool, bytes]] = []  # (handle, received, ATT PDU), with connection marks
    marks: list[tuple[int, str, int]] = []  # (index into pdus, "open"|"close", handle)
    for rec in records:
        p = rec.packet
        if not p:
            continue
        if p[0] == H4_EVENT and len(p) >= 3:
            code = p[1]
            if code == EVT_LE_META and p[3] in LE_CONNECTION_COMPLETE and p[4] == 0:
                marks.append((len(pdus), "open", int.from_bytes(p[5:7], "little") & 0x0FFF))
            elif code == EVT_DISCONNECTION_COMPLETE and p[3] == 0:
                marks.append((len(pdus), "close", int.from_bytes(p[4:6], "little") & 0x0FFF))
            continue
        if p[0] != H4_ACL:
            continue
        way = "device_to_host" if rec.received else "host_to_device"
        acl_bytes[way] += len(p) - 1
        acl_packets[way] += 1
        hf, dlen = struct.unpack("<HH", p[1:5])
        handle, pb = hf & 0x0FFF, (hf >> 12) & 3
        data = p[5:5 + dlen]
        key = (handle, rec.received)
        if pb == 1:  # a continuing fragment
            buf = partial.setdefault(key, bytearray())
            buf += data
        else:
            buf = partial[key] = bytearray(data)
        if len(buf) < 4:
            continue
        l2len, cid = struct.unpack("<HH", buf[:4])
        if len(buf) < 4 + l2len:
            continue
        del partial[key]
        if cid == ATT_CID:
            pdus.append((handle, rec.received, bytes(buf[4:4 + l2len])))
            att_bytes[way] += l2len
    found: dict[bytes, int] = {}
    for _h, received, pdu in pdus:
        if received and pdu and pdu[0] == ATT_READ_BY_TYPE_RSP:  # the device is the GATT server
            _char_handles(pdu, found)
    rx = found.get(_uuid128_le(P.RX_UUID))
    tx = found.get(_uuid128_le(P.TX_UUID))
    conns: list[Connection] = []
    current: dict[int, Connection] = {}
    defr: dict[tuple[int, str], P.Deframer] = {}
    mi = 0
    for i, (handle, received, pdu) in enumerate(pdus + [(-1, False, b"")]):
        while mi < len(marks) and marks[mi][0] <= i:
            _, what, h = marks[mi]
            mi += 1
            if what == "open":
                current[h] = Connection(h)
                conns.append(current[h])
                defr[(h, "host")] = P.Deframer()
                defr[(h, "device")] = P.Deframer()
            else:
                current.pop(h, None)
        if handle < 0 or len(pdu) < 3:
            continue
        op, ah = pdu[0], int.from_bytes(pdu[1:3], "little")
        if not received and op in (ATT_WRITE_REQ, ATT_WRITE_CMD) and ah == rx:
            side, value = "host", pdu[3:]
        elif received and op == ATT_NOTIFY and ah == tx:
            side, value = "device", pdu[3:]
        else:
            continue
        value_bytes["host_to_device" if side == "host" else "device_to_host"] += len(value)
        c = current.get(handle)
        if c is None:  # traffic without a connection event in the log: its own connection
            c = current[handle] = Connection(handle)
            conns.append(c)
            defr[(handle, "host")] = P.Deframer()
            defr[(handle, "device")] = P.Deframer()
        (c.host_stream if side == "host" else c.device_stream).extend(value)
        for mtype, payload in defr[(handle, side)].feed(value):
            (c.host_msgs if side == "host" else c.device_msgs).append((mtype, payload))
            c.order.append((side, mtype, payload))
    return Capture(records, conns, att_bytes, value_bytes, acl_bytes, acl_packets, rx, tx, pdus)
