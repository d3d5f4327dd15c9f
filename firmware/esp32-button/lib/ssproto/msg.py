# SafeSignal MQTT messages: topic scheme and payloads, shared by the firmware and the host tools.
#
# Runs unchanged on MicroPython and CPython; pure functions, no I/O.  Documented in
# firmware/esp32-button/PROVISIONING.md ("Alerts over MQTT").
#
#   safesignal/<tenant>/<building>/<room>/<device>/alert    QoS 1, not retained
#   safesignal/<tenant>/<building>/<room>/<device>/status   QoS 1, retained; the last will says offline
#
# Every level is an identifier checked by ssproto.check_ident ([A-Za-z0-9._-]), so no level can
# contain "/", "+" or "#".

import json

import ssproto

ROOT = "safesignal"
ALERT = "alert"
STATUS = "status"
MSG_VERSION = 1
KINDS = ("panic", "test")
_IDENT_KEYS = ("tenant", "building", "room", "device")
CHIP_ID_MAX = 47  # 16 bytes as "aa:bb:..": room for any port's unique_id (the ESP32's is 6 bytes)


def prefix(tenant, building, room, device):
    return "%s/%s/%s/%s/%s" % (ROOT, tenant, building, room, device)


def cfg_prefix(cfg):
    """The topic prefix of a stored configuration (keys as in ss_store)."""
    return prefix(cfg["tenant"], cfg["building"], cfg["room"], cfg["device_id"])


def subscription(tenant="+", building="+", room="+", device="+"):
    """A filter for alerts and status of the given scope ("+" = any)."""
    return "%s/%s/%s/%s/%s/+" % (ROOT, tenant, building, room, device)


def parse_topic(topic):
    """(tenant, building, room, device, kind) for one of our topics; ProtocolError otherwise."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != ROOT or parts[5] not in (ALERT, STATUS):
        raise ssproto.ProtocolError(ssproto.E_INVALID, "not a SafeSignal topic")
    for i in range(4):
        ssproto.check_ident(_IDENT_KEYS[i], parts[i + 1])
    return parts[1], parts[2], parts[3], parts[4], parts[5]


def _ident(pfx):
    t, b, r, d, _ = parse_topic(pfx + "/" + ALERT)
    return {"tenant": t, "building": b, "room": r, "device": d}


def alert_payload(pfx, seq, kind, ts, uptime_ms, epoch=None, chip_id=""):
    """JSON bytes of one alert.  ``ts`` is Unix time in seconds (None if the device clock is not
    set), ``uptime_ms`` the device's uptime when the button was pressed.  ``epoch`` names the
    sequence: a random number the device drew when its outbox was created; a new one (after a
    flash erase or a board swap) restarts seq at 0.  Receivers de-duplicate by
    (topic prefix, epoch, seq).  ``chip_id`` is the publishing chip's hardware identity
    (machine.unique_id() as "aa:bb:cc:dd:ee:ff"), added at publish: it is not stored with the
    alert."""
    if kind not in KINDS:
        raise ValueError("alert kind")
    d = _ident(pfx)
    d["v"] = MSG_VERSION
    if epoch is not None:
        d["epoch"] = epoch
    d["seq"] = seq
    d["type"] = kind
    d["ts"] = ts
    d["uptime_ms"] = uptime_ms
    if chip_id:
        d["chip_id"] = check_chip_id(chip_id)
    return json.dumps(d).encode()


def status_payload(pfx, online, firmware="", boot_id="", chip_id=""):
    d = _ident(pfx)
    d["v"] = MSG_VERSION
    d["online"] = bool(online)
    if chip_id:
        d["chip_id"] = check_chip_id(chip_id)
    if firmware:
        d["firmware"] = firmware
    if boot_id:
        d["boot_id"] = boot_id
    return json.dumps(d).encode()


def check_chip_id(chip_id):
    """A chip id as the firmware writes it: lower-case hex bytes joined by ":" (the ESP32's
    machine.unique_id() is the 6-byte eFuse base MAC); ProtocolError otherwise."""
    ok = isinstance(chip_id, str) and 2 <= len(chip_id) <= CHIP_ID_MAX and len(chip_id) % 3 == 2
    if ok:
        for i in range(len(chip_id)):
            c = chip_id[i]
            if (c != ":") if i % 3 == 2 else (c not in "0123456789abcdef"):
                ok = False
                break
    if not ok:
        raise ssproto.ProtocolError(ssproto.E_INVALID, "invalid chip_id")
    return chip_id


def parse_message(topic, payload):
    """Decode one message from our topics into a dict with "kind" ("alert" or "status") plus
    the payload's fields; the identity in the payload must match the topic.  Raises
    ProtocolError for anything malformed."""
    t, b, r, dev, kind = parse_topic(topic)
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeError):
        raise ssproto.ProtocolError(ssproto.E_INVALID, "payload is not JSON")
    if not isinstance(d, dict):
        raise ssproto.ProtocolError(ssproto.E_INVALID, "payload is not a JSON object")
    ident = (t, b, r, dev)
    for i in range(4):
        if d.get(_IDENT_KEYS[i]) != ident[i]:
            raise ssproto.ProtocolError(ssproto.E_INVALID, "payload identity does not match the topic")
    if kind == ALERT:
        seq = d.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ssproto.ProtocolError(ssproto.E_INVALID, "alert without a valid seq")
        if d.get("type") not in KINDS:
            raise ssproto.ProtocolError(ssproto.E_INVALID, "alert with an unknown type")
        ep = d.get("epoch")
        if ep is not None and (not isinstance(ep, int) or isinstance(ep, bool)):
            raise ssproto.ProtocolError(ssproto.E_INVALID, "alert with an invalid epoch")
    elif not isinstance(d.get("online"), bool):
        raise ssproto.ProtocolError(ssproto.E_INVALID, "status without online flag")
    if "chip_id" in d:  # absent from firmware before it was added: still a valid message
        check_chip_id(d["chip_id"])
    d["kind"] = kind
    return d
