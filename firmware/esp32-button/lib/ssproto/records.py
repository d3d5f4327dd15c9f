# What the device writes to flash: the NVS key names and record formats, in one place.
# ss_store and ss_outbox write and read them on the device; `safesignal nvs dump` decodes
# them on the host.  Runs on MicroPython and CPython; nothing runs at import but assignments.
#
# A record is  magic(3) + version(1) + JSON object (UTF-8) + SHA-256 of everything before it,
# cut to the format's checksum length:
#   CFG    b"SSC"  configuration record, namespace "provision", keys "cfg0"/"cfg1" (full SHA-256)
#   ALERT  b"SSQ"  outbox entry, namespace "outbox", keys "q00".."q99" (SHA-256, first 8 bytes)
# Namespace "provision" also holds i32 "active" (the committed generation g) and, per slot
# n = g % 2, the record "cfg<n>" and the device identity: blobs "key<n>" (the private key,
# KEY_MAGIC + d(32) + public point(65)), "cert<n>" and "ca<n>" (DER certificates); the
# record's "id" is the SHA-256 (hex) of key + cert + ca.  Namespace "outbox" also holds the
# i32 counters "next" and "epoch" (ss_outbox).
#
# Memory: every name, and every string of up to 10 characters, becomes a qstr when the module
# loads, and the qstr pool grows in steps of several kB; the 144 kB heap the whole flow is
# tested in (tests/test_alerts_e2e.py) has little room.  So: few names, the ones ss_store and
# ss_outbox already had where possible, and longer messages.  Errors are ValueError("what is
# wrong"), never naming a value (it may be a password).

import hashlib
import json

CFG = (b"SSC", 1, 32)  # magic, version, checksum bytes
ALERT = (b"SSQ", 1, 8)
PROVISION = "provision"
ACTIVE = "active"
ID_PARTS = ("key", "cert", "ca")
FIELDS = ("wifi_ssid", "wifi_pass", "device_id", "tenant", "building", "room", "mqtt_uri")
KEY_MAGIC = b"SSK\x01"
KEY_LEN = 101  # magic 4 + d 32 + uncompressed public point 65
OUTBOX = "outbox"


def slot_keys(gen):
    """["cfg<n>", "key<n>", "cert<n>", "ca<n>"] of generation gen's slot n = gen % 2."""
    n = "%d" % (gen % 2)
    return ["cfg" + n] + [p + n for p in ID_PARTS]


def q_key(slot):
    return "q%02d" % slot


def identity_digest(ident):
    h = hashlib.sha256()
    for p in ID_PARTS:
        h.update(ident[p])
    return "".join(["%02x" % b for b in h.digest()])


def pack(kind, obj):
    try:
        text = json.dumps(obj, ensure_ascii=False)  # CPython: keep UTF-8 as is
    except TypeError:
        text = json.dumps(obj)  # MicroPython: no keyword, writes UTF-8 already
    raw = kind[0] + bytes([kind[1]]) + text.encode("utf-8")
    return raw + hashlib.sha256(raw).digest()[: kind[2]]


def unpack(kind, raw):
    """(version, JSON object) of a record (kind CFG or ALERT) of any version; ValueError if it
    does not check out."""
    n = kind[2]
    if len(raw) < 4 + 2 + n or raw[:3] != kind[0]:
        raise ValueError("not a record (bad header)")
    if hashlib.sha256(raw[:-n]).digest()[:n] != raw[-n:]:
        raise ValueError("checksum mismatch")
    try:
        obj = json.loads(raw[4:-n].decode("utf-8"))
    except Exception:  # ValueError, UnicodeError; on CPython RecursionError; MemoryError
        raise ValueError("not valid JSON")
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return raw[3], obj


def encode_record(gen, cfg, id_digest=None):
    obj = {"v": CFG[1], "gen": gen}
    for k in FIELDS:
        obj[k] = cfg[k]
    if id_digest is not None:
        obj["id"] = id_digest
    return pack(CFG, obj)


def decode_record(raw):
    """(gen, cfg, id_digest or None) of a configuration record; the values are not validated."""
    v, obj = unpack(CFG, raw)
    if v != CFG[1]:
        raise ValueError("unknown layout version")
    cfg = {}
    for k in FIELDS:
        if not isinstance(obj.get(k), str):
            raise ValueError("bad field: " + k)
        cfg[k] = obj[k]
    gen = obj.get("gen")
    if not isinstance(gen, int) or isinstance(gen, bool):
        raise ValueError("bad field: gen")
    id_digest = obj.get("id")
    if id_digest is not None and not isinstance(id_digest, str):
        raise ValueError("bad field: id")
    return gen, cfg, id_digest


def encode_entry(pfx, seq, kind, ts, up):
    return pack(ALERT, {"p": pfx, "s": seq, "t": kind, "ts": ts, "up": up})


def decode_entry(raw):
    """(topic prefix, seq, kind, ts, up) of an outbox entry; kind is not checked here."""
    v, obj = unpack(ALERT, raw)
    if v != ALERT[1]:
        raise ValueError("unknown layout version")
    for k in ("p", "s", "t", "ts", "up"):
        if k not in obj:
            raise ValueError("bad field: " + k)
    if not isinstance(obj["p"], str):
        raise ValueError("bad field: p")
    if not isinstance(obj["s"], int) or isinstance(obj["s"], bool):
        raise ValueError("bad field: s")
    return obj["p"], obj["s"], obj["t"], obj["ts"], obj["up"]
