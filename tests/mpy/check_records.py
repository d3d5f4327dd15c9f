# ssproto.records: the NVS key names and record formats ss_store, ss_outbox and `nvs dump` share.
# Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython and under CPython.
# The expected bytes are built here by hand (magic + version + JSON + SHA-256), not by the codec.
import hashlib
import json

from mpyunit import eq, raises, run, test

import ssproto.records as rec

SECRET = "Rec0rdSecretPw"
CFG = {
    "wifi_ssid": "Caf\u00e9 Net",
    "wifi_pass": SECRET,
    "device_id": "btn-01",
    "tenant": "acme",
    "building": "hq",
    "room": "101",
    "mqtt_uri": "mqtt://broker.local:1883",
}


def by_hand(magic, version, nsum, doc):
    raw = magic + bytes([version]) + json.dumps(doc).encode("utf-8")
    return raw + hashlib.sha256(raw).digest()[:nsum]


def config_doc(gen, **extra):
    d = {"v": 1, "gen": gen}
    d.update(CFG)
    d.update(extra)
    return d


def error(fn, *args):
    e = raises(ValueError, fn, *args)
    assert SECRET not in e.args[0], "a record error repeats a value"
    return e.args[0]


@test
def test_key_names():
    eq([rec.slot_keys(g)[0] for g in range(4)], ["cfg0", "cfg1", "cfg0", "cfg1"])
    eq(rec.slot_keys(0), ["cfg0", "key0", "cert0", "ca0"])
    eq(rec.slot_keys(7), ["cfg1", "key1", "cert1", "ca1"])
    eq(rec.ID_PARTS, ("key", "cert", "ca"))
    eq((rec.CFG, rec.ALERT), ((b"SSC", 1, 32), (b"SSQ", 1, 8)))
    eq((rec.PROVISION, rec.ACTIVE, rec.OUTBOX), ("provision", "active", "outbox"))
    eq([rec.q_key(s) for s in (0, 7, 63, 99)], ["q00", "q07", "q63", "q99"])


@test
def test_config_record_layout():
    raw = rec.encode_record(5, CFG)
    eq(raw[:4], b"SSC\x01")
    eq(hashlib.sha256(raw[:-32]).digest(), raw[-32:])
    eq(json.loads(raw[4:-32].decode("utf-8")), config_doc(5))
    # UTF-8 as is on both runtimes (CPython's json would write \u00e9 by default)
    assert "Caf\u00e9".encode("utf-8") in raw
    eq(rec.decode_record(raw), (5, CFG, None))
    with_id = rec.encode_record(6, CFG, "ab" * 32)
    eq(json.loads(with_id[4:-32].decode("utf-8"))["id"], "ab" * 32)
    eq(rec.decode_record(with_id), (6, CFG, "ab" * 32))
    # a record made elsewhere (a factory image, another runtime's key order) decodes the same
    eq(rec.decode_record(by_hand(b"SSC", 1, 32, config_doc(9, id="cd" * 32))), (9, CFG, "cd" * 32))
    eq(rec.unpack(rec.CFG, raw), (1, config_doc(5)))


@test
def test_config_record_damage():
    raw = rec.encode_record(5, CFG)
    eq(error(rec.decode_record, b""), "not a record (bad header)")
    eq(error(rec.decode_record, raw[:37]), "not a record (bad header)")
    eq(error(rec.decode_record, b"SSQ" + raw[3:]), "not a record (bad header)")
    for i in (3, 10, len(raw) - 40, len(raw) - 1):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        eq(error(rec.decode_record, bytes(bad)), "checksum mismatch", i)
    eq(error(rec.decode_record, raw[:-1]), "checksum mismatch")
    eq(error(rec.decode_record, by_hand(b"SSQ", 1, 8, config_doc(5))), "not a record (bad header)")
    # well-formed and checksummed, but not what this firmware reads
    eq(error(rec.decode_record, by_hand(b"SSC", 2, 32, config_doc(5))), "unknown layout version")
    eq(rec.unpack(rec.CFG, by_hand(b"SSC", 2, 32, {"x": 1})), (2, {"x": 1}))  # nvs dump shows any version
    body = b"SSC\x01" + b'{"wifi_pass": "' + SECRET.encode() + b'"'
    eq(error(rec.decode_record, body + hashlib.sha256(body).digest()), "not valid JSON")
    body = b"SSC\x01\xff\xfe{}"
    eq(error(rec.decode_record, body + hashlib.sha256(body).digest()), "not valid JSON")
    eq(error(rec.decode_record, by_hand(b"SSC", 1, 32, [1, 2])), "not a JSON object")
    for field in rec.FIELDS:
        d = config_doc(5)
        del d[field]
        eq(error(rec.decode_record, by_hand(b"SSC", 1, 32, d)), "bad field: " + field)
        d[field] = 7
        eq(error(rec.decode_record, by_hand(b"SSC", 1, 32, d)), "bad field: " + field)
    for gen in (None, "5", 1.0, True):
        eq(error(rec.decode_record, by_hand(b"SSC", 1, 32, config_doc(gen))), "bad field: gen", gen)
    eq(error(rec.decode_record, by_hand(b"SSC", 1, 32, config_doc(5, id=5))), "bad field: id")


@test
def test_outbox_entry_layout():
    pfx = "safesignal/acme/hq/101/btn-01"
    raw = rec.encode_entry(pfx, 7, "panic", 1767225600, 1234)
    eq(raw[:4], b"SSQ\x01")
    eq(hashlib.sha256(raw[:-8]).digest()[:8], raw[-8:])
    eq(json.loads(raw[4:-8].decode("utf-8")), {"p": pfx, "s": 7, "t": "panic", "ts": 1767225600, "up": 1234})
    eq(rec.decode_entry(raw), (pfx, 7, "panic", 1767225600, 1234))
    eq(rec.decode_entry(rec.encode_entry(pfx, 0, "test", None, 0)), (pfx, 0, "test", None, 0))
    made = by_hand(b"SSQ", 1, 8, {"up": 5, "ts": 1.5, "t": "anything", "s": 3, "p": "x"})
    eq(rec.decode_entry(made), ("x", 3, "anything", 1.5, 5))  # the kind is the outbox's business
    eq(error(rec.decode_entry, raw[:-1]), "checksum mismatch")
    eq(error(rec.decode_entry, raw[:13]), "not a record (bad header)")
    eq(error(rec.decode_entry, rec.encode_record(1, CFG)), "not a record (bad header)")
    eq(error(rec.decode_entry, by_hand(b"SSQ", 2, 8, {"p": "x"})), "unknown layout version")
    eq(error(rec.decode_entry, by_hand(b"SSQ", 1, 8, {"p": "x", "s": 1, "t": "panic", "ts": 0})), "bad field: up")
    for p, s, bad in (("x", "1", "s"), ("x", None, "s"), ("x", True, "s"), (5, 1, "p"), (None, 1, "p")):
        d = {"p": p, "s": s, "t": "panic", "ts": 0, "up": 0}
        eq(error(rec.decode_entry, by_hand(b"SSQ", 1, 8, d)), "bad field: " + bad, d)


@test
def test_identity_digest():
    ident = {"key": rec.KEY_MAGIC + b"\x01" * 97, "cert": b"cert", "ca": b"ca"}
    eq(len(ident["key"]), rec.KEY_LEN)
    want = hashlib.sha256(ident["key"] + b"cert" + b"ca").digest()
    eq(rec.identity_digest(ident), "".join(["%02x" % b for b in want]))
    other = dict(ident)
    other["ca"] = b"cb"
    assert rec.identity_digest(other) != rec.identity_digest(ident)


run()
