"""The virtual device's flash against Espressif's own tool (esp-idf-nvs-partition-gen):
an image it encrypts for a chip (the factory-line model: one image per device from a CSV,
encrypted with keys derived from the HMAC key burnt into that chip) boots provisioned, and
every image the device writes (an append-only log, as ESP-IDF writes it) decrypts with Espressif's
tool, parses to the same content, and that content regenerates identically."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from conftest import FIRMWARE, SecretGuard
from safesignal.nvs.format import build_partition, derive_hmac_keys, keys_partition, parse_partition
from safesignal.sim import efuse

sys.path.insert(0, str(FIRMWARE / "lib"))
import ss_store  # noqa: E402  (the firmware's own record format, run on CPython)


def official_generate(csv_text: str, out: Path) -> bytes:
    csv = out.with_suffix(".csv")
    csv.write_text(csv_text)
    subprocess.run([sys.executable, "-m", "esp_idf_nvs_partition_gen", "generate", str(csv), str(out), "0x6000"],
                   check=False, capture_output=True)
    assert out.exists(), "esp-idf-nvs-partition-gen made no image"
    return out.read_bytes()


def official_encrypt(csv_text: str, out: Path, hmac_key: bytes) -> bytes:
    """The tool's HMAC scheme: it derives the XTS keys from the chip's eFuse HMAC key itself."""
    csv = out.with_suffix(".csv")
    csv.write_text(csv_text)
    key_file = out.with_name("hmac.key")
    key_file.write_bytes(hmac_key)
    subprocess.run([sys.executable, "-m", "esp_idf_nvs_partition_gen", "encrypt", csv.name, out.name, "0x6000",
                    "--keygen", "--keyfile", "keys.bin", "--key_protect_hmac", "--kp_hmac_inputkey", key_file.name,
                    "--outdir", "."], check=False, capture_output=True, cwd=out.parent)
    key_file.unlink()
    assert out.exists(), "esp-idf-nvs-partition-gen made no image"
    return out.read_bytes()


def test_image_from_official_tool_boots_provisioned(make_sim, guard: SecretGuard, tmp_path: Path) -> None:
    pw = guard.secret("factory-line-pw")
    cfg = {"wifi_ssid": "School WiFi 🚀", "wifi_pass": pw, "device_id": "esp32-line-042", "tenant": "tenant-z",
           "building": "main", "room": "gym", "mqtt_uri": "mqtt://127.0.0.1:1"}
    record = ss_store.encode_record(1, cfg)
    line = tmp_path / "line"
    line.mkdir()
    flash = line / "factory.bin"
    # The line burns this chip's HMAC key (here: writes the virtual chip's eFuse file), then
    # encrypts the chip's own image with it.
    chip = efuse.Efuse(bytes.fromhex("02aabbccdd42"), secrets.token_bytes(32))
    efuse.burn(efuse.default_path(flash), chip)
    official_encrypt(
        "key,type,encoding,value\n"
        "provision,namespace,,\n"
        "active,data,i32,1\n"
        f"cfg1,data,hex2bin,{record.hex()}\n",
        flash,
        chip.hmac_key,
    )
    assert pw.encode() not in flash.read_bytes()
    sim = make_sim(flash=flash, aps=[("School WiFi 🚀", pw)])
    assert sim.control.state()["nvs_unreadable_at_power_up"] == 0
    with sim.session() as s:
        s.sync()
        st = s.status()
        assert st["provisioned"] == "yes"
        assert (st["wifi_ssid"], st["device_id"], st["room"]) == ("School WiFi 🚀", "esp32-line-042", "gym")
        assert s.secret_matches("School WiFi 🚀", pw)
        guard.output("console", "\n".join(s.received))


def test_device_written_image_matches_official_tool(make_sim, guard: SecretGuard, tmp_path: Path) -> None:
    pw = guard.secret("written-by-device")
    sim = make_sim(aps=[("Net", pw)])
    with sim.session() as s:
        s.sync()
        s.command(["provision_set_wifi", "Net", pw])
        s.command(["provision_set_device", "d1", "t1", "b1", "r1"])
        s.command(["provision_complete"])
        s.wait_reboot()
        s.command(["provision_set_device", "d1", "t1", "b1", "r2"])  # re-provisioned: history in the log
        s.command(["provision_complete"])
        s.wait_reboot()
        guard.output("console", "\n".join(s.received))
    image = sim.flash.read_bytes()
    keys = derive_hmac_keys(efuse.load(efuse.default_path(sim.flash)).hmac_key)
    part = parse_partition(image, strict=True, keys=keys)
    assert not part.issues
    # The device wrote through ESP-IDF's append-only write path: replaced and erased items stay in
    # the flash as erased entries, so the image is a log, not the tool's fresh layout ...
    assert sum(p.erased for p in part.pages) > 0
    # ... yet Espressif's decrypt reads it: decrypted, it parses plain to the same content.
    (tmp_path / "keys.bin").write_bytes(keys_partition(keys))
    (tmp_path / "dev.bin").write_bytes(image)
    subprocess.run([sys.executable, "-m", "esp_idf_nvs_partition_gen", "decrypt", "dev.bin", "keys.bin", "dec.bin"],
                   check=False, capture_output=True, cwd=tmp_path)
    plain_part = parse_partition((tmp_path / "dec.bin").read_bytes(), strict=True)
    assert plain_part.entries == part.entries and plain_part.namespaces == part.namespaces
    # Espressif's generator, fed the same content, produces the very same bytes as our writer.
    rows = ["key,type,encoding,value"]
    namespaces = list(dict.fromkeys(e.namespace for e in part.entries))
    assert set(namespaces) == {"provision", "outbox"}  # the configuration; the alert sequence (and queue)
    content = sorted(part.entries, key=lambda e: namespaces.index(e.namespace))
    image = build_partition(content, len(image))
    for e in content:
        if f"{e.namespace},namespace,," not in rows:
            rows.append(f"{e.namespace},namespace,,")
        if e.type == "blob":
            assert isinstance(e.value, bytes)
            rows.append(f"{e.key},data,hex2bin,{e.value.hex()}")
        else:
            rows.append(f"{e.key},data,{e.type},{e.value}")
    assert official_generate("\n".join(rows) + "\n", tmp_path / "regen.bin") == image
