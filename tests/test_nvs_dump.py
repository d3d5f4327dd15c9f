"""``safesignal nvs dump``: plain and encrypted images (ours and Espressif's tool's), whole-flash
dumps with a partition table, masking, integrity findings and exit codes.

Run through :func:`safesignal.cli.nvs.main` (the same argparse registration the CLI uses) and
through ``python -m safesignal nvs dump``.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from safesignal.cli.nvs import main
from safesignal.nvs.dump import MASK, classify
from safesignal.nvs.format import (
    PAGE_SIZE,
    NvsEntry,
    NvsKeys,
    build_partition,
    derive_hmac_keys,
    keys_partition,
)

PASSWORD = "hunter2-Pa55-DUMPTEST"
URI_PASSWORD = "mqtt-pw-DUMPTEST"
PRIVATE = b"\x30\x77\x02\x01\x01\x04\x20" + b"PRIVATE-KEY-DUMPTEST" + bytes(12)
NET_PSK = b"net80211-psk-DUMPTEST"
SECRETS = (PASSWORD, URI_PASSWORD, "PRIVATE-KEY-DUMPTEST", "net80211-psk-DUMPTEST")
HMAC_KEY = bytes(range(1, 33))
KEYS = derive_hmac_keys(HMAC_KEY)
SIZE = 0x6000


def config_record(gen: int, password: str = PASSWORD) -> bytes:
    """firmware lib/ss_store.py encode_record()"""
    body = {"v": 1, "gen": gen, "wifi_ssid": "School WiFi", "wifi_pass": password, "device_id": "esp32-01",
            "tenant": "t1", "building": "main", "room": "gym", "mqtt_uri": f"mqtts://dev:{URI_PASSWORD}@edge:8883"}
    raw = b"SSC\x01" + json.dumps(body).encode()
    return raw + hashlib.sha256(raw).digest()


def outbox_record(seq: int) -> bytes:
    """firmware lib/ss_outbox.py encode_entry()"""
    raw = b"SSQ\x01" + json.dumps({"p": "safesignal/t1/main/gym/esp32-01", "s": seq, "t": "panic", "ts": 0,
                                   "up": 12}).encode()
    return raw + hashlib.sha256(raw).digest()[:8]


def certificate() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "esp32-01")])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SafeSignal Test CA")])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


CERT = certificate()
CONTENT = [
    NvsEntry("provision", "active", "i32", 3),
    NvsEntry("provision", "cfg0", "blob", config_record(2, "old-password-DUMPTEST")),
    NvsEntry("provision", "cfg1", "blob", config_record(3)),
    NvsEntry("provision", "key1", "blob", PRIVATE),  # the device identity of generation 3 (slot 1)
    NvsEntry("provision", "cert1", "blob", CERT),
    NvsEntry("provision", "ca1", "blob", b"not a certificate"),
    NvsEntry("outbox", "next", "i32", 8),
    NvsEntry("outbox", "epoch", "i32", 123456),
    NvsEntry("outbox", "q00", "blob", outbox_record(6)),
    NvsEntry("outbox", "q07", "blob", outbox_record(7)),
    NvsEntry("nvs.net80211", "sta.ssid", "blob", b"School WiFi".ljust(36, b"\x00")),
    NvsEntry("nvs.net80211", "sta.pswd", "blob", NET_PSK),
    NvsEntry("misc", "note", "string", "Grüße 🚨".encode()),
    NvsEntry("misc", "big", "blob", bytes(range(256)) * 20),
]
ALL_SECRETS = (*SECRETS, "old-password-DUMPTEST")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["nvs", "dump", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = run(capsys, *argv, "--json")
    assert err == ""
    return rc, json.loads(out)


def no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in ALL_SECRETS:
            assert secret not in text
            assert secret.encode().hex() not in text


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dump")
    paths = {
        "plain": d / "plain.bin",
        "enc": d / "enc.bin",
        "keys": d / "keys.bin",
        "hmac_raw": d / "hmac.bin",
        "hmac_hex": d / "hmac.txt",
        "efuse": d / "chip.efuse",
    }
    paths["plain"].write_bytes(build_partition(CONTENT, SIZE))
    paths["enc"].write_bytes(build_partition(CONTENT, SIZE, KEYS))
    paths["keys"].write_bytes(keys_partition(KEYS))
    paths["hmac_raw"].write_bytes(HMAC_KEY)
    paths["hmac_hex"].write_text(HMAC_KEY.hex() + "\n")
    paths["efuse"].write_text(json.dumps({"version": 1, "mac": "aa:bb:cc:dd:ee:ff", "hmac_key": HMAC_KEY.hex()}))
    return paths


def by_key(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["namespace"], e["key"]): e for e in doc["entries"]}


# -- plain images ------------------------------------------------------------------------------------


def test_plain_text_dump(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    rc, out, err = run(capsys, str(files["plain"]))
    assert rc == 0 and err == ""
    no_secrets(out)
    assert "Keys: none given (plain image)" in out
    assert "Result: intact" in out
    for ns in ("provision", "outbox", "nvs.net80211", "misc"):
        assert f"  {ns} = " in out
    assert '"wifi_pass": "********"' in out
    assert f"mqtts://dev:{MASK}@edge:8883" in out
    assert '"wifi_ssid": "School WiFi"' in out
    assert "CN=esp32-01" in out and "CN=SafeSignal Test CA" in out and "2034-12-30" in out
    assert '"s": 6' in out  # the outbox record decoded
    assert "Grüße 🚨" in out
    assert f"({len(PRIVATE)} bytes) {MASK}" in out


def test_plain_json_dump(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    rc, doc = run_json(capsys, str(files["plain"]))
    assert rc == 0
    assert set(doc) >= {"pages", "namespaces", "entries", "issues", "integrity", "source", "encryption"}
    assert doc["namespaces"] == {"provision": 1, "outbox": 2, "nvs.net80211": 3, "misc": 4}
    assert [(e["namespace"], e["key"], e["type"]) for e in doc["entries"]] == [
        (e.namespace, e.key, e.type) for e in CONTENT
    ]
    assert doc["issues"] == []
    integ = doc["integrity"]
    assert integ["clean"] is True and integ["problems"] == 0
    assert integ["header_crc_bad"] == integ["entry_crc_bad"] == integ["undecryptable"] == 0
    assert integ["header_crc_ok"] >= 2 and integ["entry_crc_ok"] > 20
    assert integ["orphan_chunks"] == 0 and integ["duplicate_key"] == 0
    pages = doc["pages"]
    assert len(pages) == SIZE // PAGE_SIZE
    assert pages[0]["state"] == "full" and pages[0]["header_crc_ok"] is True and pages[0]["seq"] == 0
    assert pages[-1]["state"] == "empty" and pages[-1]["empty"] == 126
    e = by_key(doc)
    assert e[("provision", "active")]["value"] == 3
    cfg = e[("provision", "cfg1")]
    assert cfg["record"]["check"] == "ok" and cfg["record"]["fields"]["wifi_pass"] == MASK
    assert cfg["record"]["fields"]["gen"] == 3
    assert e[("outbox", "q07")]["record"]["fields"]["s"] == 7
    assert e[("provision", "key1")] == {
        "namespace": "provision", "key": "key1", "type": "blob", "class": "secret", "length": len(PRIVATE),
        "value": MASK, "masked": True,
    }
    cert = e[("provision", "cert1")]
    assert cert["sha256"] == hashlib.sha256(CERT).hexdigest()
    assert cert["x509"]["subject"] == "CN=esp32-01" and cert["x509"]["not_after"].startswith("2034-12-30")
    assert e[("provision", "ca1")]["x509"] is None
    assert e[("nvs.net80211", "sta.pswd")]["value"] == MASK
    assert e[("nvs.net80211", "sta.ssid")]["value"].startswith(b"School WiFi".hex())
    assert e[("misc", "note")]["value"] == "Grüße 🚨"
    big = e[("misc", "big")]
    assert big["length"] == 5120 and big["truncated"] is True and len(big["value"]) == 2 * 512
    no_secrets(json.dumps(doc))


def test_show_secrets(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    rc, out, _ = run(capsys, str(files["plain"]), "--show-secrets")
    assert rc == 0
    assert PASSWORD in out and URI_PASSWORD in out and NET_PSK.hex() in out
    assert PRIVATE[:32].hex() in out  # text output truncates hex at 32 bytes
    assert "Secrets: SHOWN" in out
    rc, doc = run_json(capsys, str(files["plain"]), "--show-secrets")
    assert by_key(doc)[("provision", "cfg1")]["record"]["fields"]["wifi_pass"] == PASSWORD
    assert doc["secrets_shown"] is True


def test_classify_is_the_masking_policy() -> None:
    assert classify("provision", "cfg0") == classify("provision", "cfg1") == "config_record"
    assert classify("provision", "active") == "plain"
    assert classify("outbox", "q63") == "outbox_record" and classify("outbox", "next") == "plain"
    assert classify("outbox", "q00") == classify("outbox", "q99") == "outbox_record"
    for ns, key in [("outbox", "q0"), ("outbox", "q100"), ("outbox", "Q00"), ("outbox", "q\u0660\u0661"),
                    ("outbox", "q+1"), ("outbox", "epoch"), ("misc", "q00"), ("provision", "cfg2")]:
        assert classify(ns, key) == "plain", (ns, key)
    # the device identity as ss_store keeps it (ssproto.records): private key masked, certificates shown
    assert classify("provision", "key0") == classify("provision", "key1") == "secret"
    assert classify("provision", "cert0") == classify("provision", "ca1") == "certificate"
    # the firmware has no "identity" namespace: only the name rule applies there
    assert classify("identity", "key") == classify("identity", "cert_key") == "secret"
    assert classify("identity", "cert") == classify("identity", "serial") == "plain"
    for ns, key in [("x", "password"), ("x", "wifi_psk"), ("nvs.net80211", "sta.pswd"), ("nvs.net80211", "ap.pmk"),
                    ("x", "APIKey"), ("secrets", "a"), ("x", "token")]:
        assert classify(ns, key) == "secret", (ns, key)
    assert classify("misc", "note") == "plain"


# -- encrypted images ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "name", "described"),
    [
        ("--key", "keys", "nvs_keys partition"),
        ("--hmac-key", "hmac_raw", "eFuse HMAC key"),
        ("--hmac-key", "hmac_hex", "eFuse HMAC key"),
        ("--efuse", "efuse", "virtual eFuse file"),
    ],
)
def test_encrypted_dump_with_keys(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], option: str, name: str, described: str
) -> None:
    rc, doc = run_json(capsys, str(files["enc"]), option, str(files[name]))
    assert rc == 0, doc["issues"]
    assert described in doc["encryption"]["keys"]
    assert len(doc["entries"]) == len(CONTENT) and doc["integrity"]["clean"]
    _, plain = run_json(capsys, str(files["plain"]))
    assert doc["entries"] == plain["entries"]
    rc, out, err = run(capsys, str(files["enc"]), option, str(files[name]))
    assert rc == 0 and "Result: intact" in out
    no_secrets(out, err)


def test_encrypted_dump_without_key(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    rc, out, err = run(capsys, str(files["enc"]))
    assert rc == 6
    no_secrets(out, err)
    assert "look encrypted" in out and "--key" in out
    assert re.search(r"^ +0  full +0  0xfe  ok +\d+", out, re.M)  # pages and their states are still shown
    rc, doc = run_json(capsys, str(files["enc"]))
    assert rc == 6
    assert doc["encryption"]["looks_encrypted"] is True and doc["integrity"]["looks_encrypted"] is True
    assert doc["entries"] == [] and doc["namespaces"] == {}
    written = doc["integrity"]["written_entries"]
    assert written > 40 and sum(p["written"] for p in doc["pages"]) == written
    assert doc["integrity"]["entry_crc_bad"] == written and doc["integrity"]["entry_crc_ok"] == 0


def test_wrong_key(capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.bin"
    other.write_bytes(keys_partition(NvsKeys(b"\x01" * 32, b"\x02" * 32)))
    rc, doc = run_json(capsys, str(files["enc"]), "--key", str(other))
    assert rc == 6
    integ = doc["integrity"]
    assert integ["undecryptable"] == integ["written_entries"] == integ["entry_crc_bad"] > 40
    assert doc["entries"] == [] and not doc["encryption"]["looks_encrypted"]
    assert any("cannot be decrypted" in i for i in doc["issues"])


def test_key_on_plain_image(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    rc, doc = run_json(capsys, str(files["plain"]), "--key", str(files["keys"]))
    assert rc == 6
    assert doc["encryption"]["not_encrypted"] is True and doc["integrity"]["not_encrypted"] is True
    assert len(doc["entries"]) == len(CONTENT)  # shown as read without the key
    no_secrets(json.dumps(doc))


def test_tool_encrypted_image(capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path) -> None:
    """An image made by Espressif's ``nvs_partition_gen.py encrypt`` with our keys file."""
    rows = [["key", "type", "encoding", "value"], ["provision", "namespace", "", ""], ["active", "data", "i32", "3"]]
    (tmp_path / "cfg1.bin").write_bytes(config_record(3))
    rows += [["cfg1", "file", "binary", str(tmp_path / "cfg1.bin")], ["misc", "namespace", "", ""],
             ["note", "data", "string", "hello"], ["n", "data", "u8", "7"]]
    with open(tmp_path / "in.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    subprocess.run(
        [sys.executable, "-m", "esp_idf_nvs_partition_gen", "encrypt", "in.csv", "enc.bin", "0x3000",
         "--inputkey", str(files["keys"])],
        cwd=tmp_path, capture_output=True, timeout=120, check=False,
    )
    assert (tmp_path / "enc.bin").exists()
    rc, doc = run_json(capsys, str(tmp_path / "enc.bin"), "--key", str(files["keys"]))
    assert rc == 0, doc["issues"]
    e = by_key(doc)
    assert e[("misc", "note")]["value"] == "hello" and e[("misc", "n")]["value"] == 7
    assert e[("provision", "cfg1")]["record"]["fields"]["wifi_pass"] == MASK
    rc, doc = run_json(capsys, str(tmp_path / "enc.bin"))
    assert rc == 6 and doc["encryption"]["looks_encrypted"]


# -- whole-flash dumps ------------------------------------------------------------------------------


def partition_table(rows: list[tuple[str, int, int, int, int, int]], md5: bool = True) -> bytes:
    """A binary partition table as gen_esp32part.py writes it: 32-byte entries
    ``<2sBBLL16sL`` (magic AA 50, type, subtype, offset, size, label, flags), an MD5 entry
    (EB EB, 14 x FF, MD5 of the entries), then 0xFF up to 0xC00."""
    raw = b"".join(
        struct.pack("<2sBBLL16sL", b"\xaa\x50", t, st, off, size, label.encode(), flags)
        for label, t, st, off, size, flags in rows
    )
    if md5:
        raw += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(raw).digest()
    return raw.ljust(0xC00, b"\xff")


ROWS = [
    ("nvs", 1, 2, 0x9000, 0x6000, 0),
    ("phy_init", 1, 1, 0xF000, 0x1000, 0),
    ("factory", 0, 0, 0x10000, 0x1F0000, 0),
    ("nvs_keys", 1, 4, 0x200000, 0x1000, 1),
]


def flash_dump(nvs: bytes, table_offset: int = 0x8000, rows: list[Any] = ROWS, size: int = 0x201000) -> bytes:
    flash = bytearray(b"\xff" * size)
    flash[0:4] = b"\xe9\x03\x02\x4f"  # a bootloader image header, for realism
    table = partition_table(rows)
    flash[table_offset : table_offset + len(table)] = table
    nvs_row = next(r for r in rows if r[2] == 2)
    flash[nvs_row[3] : nvs_row[3] + len(nvs)] = nvs
    return bytes(flash)


def test_whole_flash_dump(capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path) -> None:
    dump = tmp_path / "flash.bin"
    dump.write_bytes(flash_dump(files["enc"].read_bytes()))
    rc, doc = run_json(capsys, str(dump), "--efuse", str(files["efuse"]))
    assert rc == 0, doc["issues"]
    assert doc["source"]["partition"]["label"] == "nvs" and doc["source"]["partition"]["offset"] == 0x9000
    table = doc["source"]["partition_table"]
    assert table["offset"] == 0x8000 and table["md5"] == "ok"
    assert [p["label"] for p in table["partitions"]] == ["nvs", "phy_init", "factory", "nvs_keys"]
    assert table["partitions"][3]["encrypted_flag"] is True
    assert doc["size"] == 0x6000 and len(doc["entries"]) == len(CONTENT)
    rc, out, _ = run(capsys, str(dump), "--efuse", str(files["efuse"]))
    assert rc == 0 and "partition 'nvs' at 0x9000" in out
    no_secrets(out)


def test_flash_dump_other_table_offset_and_label(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path
) -> None:
    rows = [("nvs_data", 1, 2, 0x11000, 0x6000, 0), ("app", 0, 0x10, 0x20000, 0x10000, 0)]
    dump = tmp_path / "flash.bin"
    dump.write_bytes(flash_dump(files["plain"].read_bytes(), 0x10000, rows, 0x30000))
    rc, doc = run_json(capsys, str(dump), "--partition", "nvs_data")
    assert rc == 0 and doc["source"]["partition_table"]["offset"] == 0x10000
    assert len(doc["entries"]) == len(CONTENT)
    rc, out, err = run(capsys, str(dump))  # default label "nvs" is not there
    assert rc == 2 and "no partition 'nvs'" in err and "'nvs_data'" in err and out == ""


def test_flash_dump_bad_partition_choices(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path
) -> None:
    dump = tmp_path / "flash.bin"
    dump.write_bytes(flash_dump(files["plain"].read_bytes()))
    rc, _, err = run(capsys, str(dump), "--partition", "nvs_keys")
    assert rc == 2 and "nvs_keys partition" in err
    rc, _, err = run(capsys, str(dump), "--partition", "factory")
    assert rc == 2 and "not an NVS data partition" in err
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(dump.read_bytes()[:0xC000])
    rc, _, err = run(capsys, str(truncated))
    assert rc == 2 and "dump ends at 0xc000" in err


# -- integrity problems --------------------------------------------------------------------------


def item_offset(image: bytes, key: str) -> int:
    want = key.encode().ljust(16, b"\x00")
    for page in range(len(image) // PAGE_SIZE):
        for slot in range(126):
            off = page * PAGE_SIZE + 64 + slot * 32
            if image[off + 8 : off + 24] == want and image[off + 1] != 0xFF:
                return off
    raise AssertionError(key)


def fix_crc(image: bytearray, off: int) -> None:
    struct.pack_into("<I", image, off + 4, zlib.crc32(bytes(image[off : off + 4] + image[off + 8 : off + 32]),
                                                      0xFFFFFFFF))


def test_flipped_entry_byte(capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path) -> None:
    image = bytearray(files["plain"].read_bytes())
    image[item_offset(image, "epoch") + 25] ^= 0x10
    bad = tmp_path / "bad.bin"
    bad.write_bytes(image)
    rc, doc = run_json(capsys, str(bad))
    assert rc == 6
    assert doc["integrity"]["entry_crc_bad"] == 1 and not doc["integrity"]["clean"]
    assert ("outbox", "epoch") not in by_key(doc)
    assert any("bad entry CRC" in i for i in doc["issues"])
    rc, out, _ = run(capsys, str(bad))
    assert rc == 6 and "integrity problem" in out


def test_flipped_ciphertext_byte(capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path) -> None:
    image = bytearray(files["enc"].read_bytes())
    image[64 + 17] ^= 0x01  # page 0, entry 0: the first namespace entry
    bad = tmp_path / "bad.bin"
    bad.write_bytes(image)
    rc, doc = run_json(capsys, str(bad), "--key", str(files["keys"]))
    assert rc == 6 and doc["integrity"]["undecryptable"] >= 1
    assert doc["pages"][0]["item_crc_bad"] >= 1


def test_bad_page_header_crc(capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path) -> None:
    image = bytearray(files["plain"].read_bytes())
    image[PAGE_SIZE + 4] ^= 0x01  # page 1's sequence number
    bad = tmp_path / "bad.bin"
    bad.write_bytes(image)
    rc, doc = run_json(capsys, str(bad))
    assert rc == 6
    assert doc["integrity"]["header_crc_bad"] == 1 and doc["pages"][1]["header_crc_ok"] is False
    rc, out, _ = run(capsys, str(bad))
    assert "BAD" in out


def test_record_checks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = bytearray(config_record(3))
    broken[20] ^= 0x01  # the NVS CRCs are fine, the record's SHA-256 is not
    bad_q = bytearray(outbox_record(1))
    bad_q[-1] ^= 0x01
    entries = [
        NvsEntry("provision", "active", "i32", 3),
        NvsEntry("provision", "cfg1", "blob", bytes(broken)),
        NvsEntry("outbox", "q01", "blob", bytes(bad_q)),
    ]
    path = tmp_path / "rec.bin"
    path.write_bytes(build_partition(entries, 0x3000))
    rc, doc = run_json(capsys, str(path))
    assert rc == 6
    assert doc["integrity"]["record_check"] == 2 and doc["integrity"]["provision_record"] == 1
    e = by_key(doc)
    assert e[("provision", "cfg1")]["value"] == MASK  # undecodable config: masked entirely
    assert e[("outbox", "q01")]["record"]["check"] == "checksum mismatch"
    assert e[("outbox", "q01")]["value"] == bytes(bad_q).hex()  # not secret: shown
    no_secrets(json.dumps(doc))
    rc, out, err = run(capsys, str(path))
    no_secrets(out, err)


def test_records_written_by_the_firmware_codec(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The dump decodes with the codec ss_store and ss_outbox write with (ssproto.records), and
    shows a layout version the device would refuse, as long as its checksum holds."""
    from ssproto import records

    cfg = {"wifi_ssid": "School WiFi", "wifi_pass": PASSWORD, "device_id": "esp32-01", "tenant": "t1",
           "building": "main", "room": "gym", "mqtt_uri": "mqtts://edge:8883"}
    later = records.pack((b"SSC", 2, 32), {"gen": 2, "wifi_pass": PASSWORD})
    entries = [
        NvsEntry("provision", "active", "i32", 4),
        NvsEntry("provision", records.slot_keys(4)[0], "blob", records.encode_record(4, cfg, "ab" * 32)),
        NvsEntry("provision", records.slot_keys(5)[0], "blob", later),
        NvsEntry("outbox", records.q_key(3), "blob", records.encode_entry("safesignal/t1/main/gym/esp32-01", 11,
                                                                          "test", None, 5)),
    ]
    path = tmp_path / "codec.bin"
    path.write_bytes(build_partition(entries, 0x3000))
    rc, doc = run_json(capsys, str(path))
    assert rc == 0, doc["issues"]
    e = by_key(doc)
    cfg0 = e[("provision", "cfg0")]["record"]
    assert cfg0["check"] == "ok" and cfg0["version"] == 1
    assert cfg0["fields"] == {**cfg, "v": 1, "gen": 4, "id": "ab" * 32, "wifi_pass": MASK}
    assert e[("provision", "cfg1")]["record"] == {"check": "ok", "version": 2, "fields": {"gen": 2, "wifi_pass": MASK}}
    assert e[("outbox", "q03")]["record"]["fields"] == {"p": "safesignal/t1/main/gym/esp32-01", "s": 11, "t": "test",
                                                       "ts": None, "up": 5}
    no_secrets(json.dumps(doc))


def test_active_names_missing_record(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(build_partition([NvsEntry("provision", "active", "i32", 4),
                                      NvsEntry("provision", "cfg1", "blob", config_record(3))], 0x3000))
    rc, doc = run_json(capsys, str(path))
    assert rc == 6 and doc["integrity"]["provision_record"] == 1
    assert any("'cfg0' is missing" in i for i in doc["issues"])


def test_orphan_chunk_and_duplicate_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    image = bytearray(build_partition([NvsEntry("m", "b", "blob", b"x" * 100), NvsEntry("m", "n", "u8", 1)], 0x3000))
    # erase the blob index -> its chunk is an orphan
    index = next(s for s in range(126) if image[64 + s * 32 + 1] == 0x48)
    image[32 + index // 4] &= ~(3 << ((index % 4) * 2)) & 0xFF
    # copy the u8 into the next free slot -> a duplicate key
    n_off = item_offset(image, "n")
    free = next(s for s in range(126) if image[64 + s * 32 : 64 + s * 32 + 32] == b"\xff" * 32)
    image[64 + free * 32 : 64 + free * 32 + 32] = image[n_off : n_off + 32]
    image[64 + free * 32 + 24] = 2
    fix_crc(image, 64 + free * 32)
    image[32 + free // 4] &= ~(1 << ((free % 4) * 2)) & 0xFF  # 11 -> 10 written
    path = tmp_path / "o.bin"
    path.write_bytes(image)
    rc, doc = run_json(capsys, str(path))
    assert rc == 6
    assert doc["integrity"]["orphan_chunks"] == 1 and doc["integrity"]["duplicate_key"] == 1
    assert by_key(doc)[("m", "n")]["value"] == 2


def test_terminal_escapes_are_neutralised(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "esc.bin"
    path.write_bytes(build_partition([NvsEntry("m\x1b]0;x\x07", "k\x1b[2J", "string", b"v\x1b[31m\x9b")], 0x3000))
    rc, out, _ = run(capsys, str(path))
    assert rc == 0
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out


# -- unusable input -------------------------------------------------------------------------------


def test_unusable_input(capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path) -> None:
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\xff" * 5000)
    rc, out, err = run(capsys, str(odd))
    assert rc == 2 and err.startswith("✗ Error:") and out == ""
    rc, _, err = run(capsys, str(tmp_path / "missing.bin"))
    assert rc == 2 and "missing.bin" in err
    bad_keys = tmp_path / "badkeys.bin"
    bad_keys.write_bytes(b"\x00" * 4096)
    rc, _, err = run(capsys, str(files["enc"]), "--key", str(bad_keys))
    assert rc == 2 and "CRC" in err
    for text in ("{", json.dumps({"version": 2, "mac": "aa:bb:cc:dd:ee:ff", "hmac_key": "00" * 32}),
                 json.dumps({"version": 1, "mac": "aa:bb:cc:dd:ee:ff", "hmac_key": "00" * 31})):
        efuse = tmp_path / "bad.efuse"
        efuse.write_text(text)
        rc, _, err = run(capsys, str(files["enc"]), "--efuse", str(efuse))
        assert rc == 2 and "--efuse" in err
    short = tmp_path / "short.key"
    short.write_bytes(b"\x01" * 31)
    rc, _, err = run(capsys, str(files["enc"]), "--hmac-key", str(short))
    assert rc == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["nvs", "dump", str(files["enc"]), "--key", str(files["keys"]), "--efuse", str(files["efuse"])])
    assert exit_info.value.code == 2
    capsys.readouterr()


def test_blank_partition_is_clean(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "blank.bin"
    path.write_bytes(b"\xff" * 0x6000)
    for extra in ([], ["--hmac-key", str(path.with_name("k"))]):
        path.with_name("k").write_bytes(HMAC_KEY)
        rc, doc = run_json(capsys, str(path), *extra)
        assert rc == 0 and doc["entries"] == [] and doc["integrity"]["clean"]


# -- through the real CLI ---------------------------------------------------------------------------


def test_through_the_cli(files: dict[str, Path]) -> None:
    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "safesignal", "nvs", "dump", *argv], capture_output=True,
                              text=True, timeout=60, check=False)

    p = cli(str(files["enc"]), "--efuse", str(files["efuse"]), "--json")
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)["entries"]) == len(CONTENT)
    no_secrets(p.stdout, p.stderr)
    p = cli(str(files["enc"]))
    assert p.returncode == 6 and "look encrypted" in p.stdout
    p = cli(str(files["enc"]), "--key", "/nonexistent/keys.bin")
    assert p.returncode == 2 and p.stderr.startswith("✗ Error:")
    p = cli(str(files["plain"]), "--show-secrets")
    assert p.returncode == 0 and PASSWORD in p.stdout
