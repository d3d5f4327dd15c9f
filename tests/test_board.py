"""Static checks of the hardened MicroPython board firmware/boards/SAFESIGNAL_S3.

Nothing here builds MicroPython or touches a chip: the board is checked against the rules the
build tools and the chip apply (ESP-IDF gen_esp32part.py, kconfig, MicroPython's manifest and
variant handling) and against its own README, so that an inconsistency fails here instead of on
the first board.

``nvs_partition()`` gives the offset and size of the hardened board's NVS partition, for code
that needs to agree with the real flash layout.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from safesignal.sim.flash import NVS_OFFSET, NVS_SIZE

REPO = Path(__file__).resolve().parents[1]
BOARD = REPO / "firmware" / "boards" / "SAFESIGNAL_S3"
FIRMWARE = REPO / "firmware" / "esp32-button"
CSV = BOARD / "partitions-safesignal.csv"
VARIANTS = ("DEV", "RELEASE")

# esp-idf components/partition_table/gen_esp32part.py
PARTITION_TABLE_SIZE = 0x1000
APP_ALIGN = 0x10000
DATA_ALIGN = 0x1000
TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES = {
    "app": {"factory": 0x00, "test": 0x20, **{f"ota_{i}": 0x10 + i for i in range(16)}},
    "data": {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04, "efuse": 0x05,
             "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83},
}
FLAGS = {"encrypted", "readonly"}
# esp-idf components/esptool_py/Kconfig.projbuild: ESPTOOLPY_FLASHSIZE_<n>MB
FLASH_SIZE = re.compile(r"CONFIG_ESPTOOLPY_FLASHSIZE_(\d+)MB")


# --- the pinned MicroPython release (tests/data, made by tools/micropython_facts.py) -----------

def micropython_release() -> str:
    return (REPO / "firmware" / "MICROPYTHON").read_text().strip()


def _facts_lines() -> list[str]:
    path = REPO / "tests" / "data" / f"micropython-{micropython_release()}-esp32.txt"
    return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]


def micropython_facts() -> dict[str, str]:
    return dict(ln.split(" ", 1) for ln in _facts_lines() if not ln.startswith("file "))


def port_files() -> set[str]:
    """Paths (relative to ports/esp32) of the board-related files of the pinned release."""
    return {ln[len("file ports/esp32/"):] for ln in _facts_lines() if ln.startswith("file ")}


# --- the partition table ---------------------------------------------------------------------

@dataclass(frozen=True)
class Partition:
    name: str
    type: str
    subtype: str
    offset: int
    size: int
    flags: frozenset[str]

    @property
    def end(self) -> int:
        return self.offset + self.size


def _number(text: str) -> int:
    """A gen_esp32part.py number: decimal, 0x hex, or with a K/M multiplier."""
    text = text.strip()
    mult = {"K": 1024, "M": 1024 * 1024}.get(text[-1:].upper(), 1)
    if mult != 1:
        text = text[:-1]
    return int(text, 0) * mult


def read_partitions(path: Path = CSV) -> list[Partition]:
    parts = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in (line + ",,,,").split(",")]
        name, ptype, subtype, offset, size, flags = fields[:6]
        assert all((name, ptype, subtype, offset, size)), f"{path.name}:{n}: every partition needs an explicit offset"
        parts.append(Partition(name, ptype, subtype, _number(offset), _number(size),
                               frozenset(f for f in flags.split(":") if f)))
    return parts


def nvs_partition() -> Partition:
    """The hardened board's NVS partition (the one nvs_flash_init() and esp32.NVS use)."""
    (nvs,) = [p for p in read_partitions() if p.name == "nvs"]
    return nvs


# --- sdkconfig fragments and cmake -----------------------------------------------------------

SDK_LINE = re.compile(r'CONFIG_[A-Z0-9_]+=(y|n|-?\d+|0x[0-9A-Fa-f]+|"(?:[^"\\]|\\.)*")?$')
NOT_SET = re.compile(r"# (CONFIG_[A-Z0-9_]+) is not set$")


def parse_sdkconfig(text: str, where: str = "") -> dict[str, str]:
    """Assignments of an sdkconfig fragment, as kconfiglib reads them ("# CONFIG_X is not set" is X=n)."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = NOT_SET.match(line)
        if m:
            key, value = m.group(1), "n"
        elif line.startswith("#"):
            # kconfiglib would read "# CONFIG_X is not set" lookalikes; keep comments clear of them
            assert not line.startswith("# CONFIG_"), f"{where}:{n}: comment looks like an assignment: {line!r}"
            continue
        else:
            assert SDK_LINE.match(line), f"{where}:{n}: not CONFIG_X=value: {line!r}"
            key, value = line.split("=", 1)
        assert key not in out, f"{where}:{n}: {key} set twice"
        out[key] = value
    return out


def fragments() -> list[Path]:
    return sorted(BOARD.glob("sdkconfig.*"))


CMAKE_SET = re.compile(r"set\(\s*SDKCONFIG_DEFAULTS\s+([^)]*)\)", re.S)
CMAKE_WRITE = re.compile(r'file\(\s*WRITE\s+(\S+)\s+"((?:[^"\\]|\\.)*)"\s*\)', re.S)


def _cmake_text(path: Path) -> str:
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


def sdkconfig_defaults(path: Path) -> list[str]:
    """The entries of the set(SDKCONFIG_DEFAULTS ...) in a board/variant cmake file."""
    (body,) = CMAKE_SET.findall(_cmake_text(path))
    return body.split()


def generated_files(path: Path) -> dict[str, str]:
    """file(WRITE target "content") in a cmake file: target -> content (escapes resolved)."""
    out = {}
    for target, body in CMAKE_WRITE.findall(_cmake_text(path)):
        text = body.replace(r"\n", "\n").replace(r"\"", '"').replace("${MICROPY_BOARD_DIR}", str(BOARD))
        out[target] = text
    return out


def variant_entries(variant: str) -> list[str]:
    """SDKCONFIG_DEFAULTS after mpconfigboard.cmake and mpconfigvariant_<variant>.cmake, in order."""
    entries = sdkconfig_defaults(BOARD / "mpconfigboard.cmake")
    extra = sdkconfig_defaults(BOARD / f"mpconfigvariant_{variant}.cmake")
    assert extra[0] == "${SDKCONFIG_DEFAULTS}", f"mpconfigvariant_{variant}.cmake must append to the board's list"
    return entries + extra[1:]


def effective_config(variant: str) -> dict[str, str]:
    """Our fragments merged in build order (MicroPython's own boards/* fragments come first and are
    not in this repository; a later assignment wins, as in the concatenated sdkconfig.combined)."""
    generated = generated_files(BOARD / "mpconfigboard.cmake")
    config: dict[str, str] = {}
    for entry in variant_entries(variant):
        if entry.startswith("${MICROPY_BOARD_DIR}/"):
            path = BOARD / entry.removeprefix("${MICROPY_BOARD_DIR}/")
            config.update(parse_sdkconfig(path.read_text(), path.name))
        elif entry in generated:
            config.update(parse_sdkconfig(generated[entry], entry))
    return config


def partition_table_offset() -> int:
    return int(parse_sdkconfig((BOARD / "sdkconfig.board").read_text())["CONFIG_PARTITION_TABLE_OFFSET"], 16)


def flash_size() -> int:
    sizes = [int(m.group(1)) for k, v in parse_sdkconfig((BOARD / "sdkconfig.board").read_text()).items()
             if v == "y" and (m := FLASH_SIZE.fullmatch(k))]
    assert len(sizes) == 1, "sdkconfig.board must choose exactly one CONFIG_ESPTOOLPY_FLASHSIZE_*MB"
    return sizes[0] * 1024 * 1024


# --- partition table -------------------------------------------------------------------------

def test_partition_table_follows_gen_esp32part_rules() -> None:
    parts = read_partitions()
    table = partition_table_offset()
    assert table % DATA_ALIGN == 0
    assert len({p.name for p in parts}) == len(parts), "partition names must be unique"
    end = table + PARTITION_TABLE_SIZE
    for p in sorted(parts, key=lambda p: p.offset):
        assert p.type in TYPES, p
        assert p.subtype in SUBTYPES[p.type], p
        assert p.flags <= FLAGS, p
        assert len(p.name.encode()) <= 16, p
        align = APP_ALIGN if p.type == "app" else DATA_ALIGN
        assert p.offset % align == 0, f"{p.name}: offset {p.offset:#x} not {align:#x} aligned"
        # with CONFIG_SECURE_BOOT the build runs gen_esp32part.py --secure: app sizes 64 KB aligned too
        assert p.size % align == 0, f"{p.name}: size {p.size:#x} not {align:#x} aligned"
        assert p.size > 0, p
        assert p.offset >= end, f"{p.name} at {p.offset:#x} overlaps what ends at {end:#x}"
        end = p.end
    assert end <= flash_size(), f"the table ends at {end:#x}, beyond the declared flash size {flash_size():#x}"


def test_partition_table_offset_leaves_room_for_the_secure_bootloader() -> None:
    # The ESP32-S3 bootloader starts at 0x0; with secure boot v2 and flash encryption it needs more
    # than the default 0x8000 (esp-idf docs/en/security/secure-boot-bootloader-size.rst).
    assert partition_table_offset() >= 0x10000


def test_nvs_partition_is_micropythons_and_not_flash_encrypted() -> None:
    nvs = nvs_partition()
    assert (nvs.type, nvs.subtype) == ("data", "nvs")
    assert nvs.size == 0x6000, "MicroPython's partition tables give NVS 0x6000 bytes"
    assert "encrypted" not in nvs.flags, "NVS has its own encryption; flash encryption would break its writes"
    assert [p.name for p in read_partitions() if p.subtype == "nvs"] == ["nvs"]


def test_virtual_device_models_the_real_nvs_partition() -> None:
    assert (nvs_partition().offset, nvs_partition().size) == (NVS_OFFSET, NVS_SIZE)


def test_partitions_for_the_hmac_scheme_micropython_and_ota() -> None:
    parts = {p.name: p for p in read_partitions()}
    assert not [p for p in parts.values() if p.subtype == "nvs_keys"], "nvs_keys is for the flash-encryption scheme"
    # Over-the-air updates with rollback come later, and a RELEASE board can never be
    # repartitioned: two app slots and otadata now, no factory app (blank otadata boots ota_0).
    apps = sorted((p for p in parts.values() if p.type == "app"), key=lambda p: p.offset)
    assert [(p.name, p.subtype) for p in apps] == [("ota_0", "ota_0"), ("ota_1", "ota_1")]
    assert apps[0].size == apps[1].size, "an update must fit whichever slot it is written to"
    # MicroPython's ESP32_GENERIC_S3 image of the pinned release fits the factory slot of its
    # partitions-4MiBplus.csv (the build checks it); ours add the frozen firmware and room to grow.
    generic = int(micropython_facts()["generic_s3_factory_size"], 16)
    assert apps[0].size >= generic + 0x100000, "keep at least 1 MB beyond the stock image's limit"
    (otadata,) = [p for p in parts.values() if (p.type, p.subtype) == ("data", "ota")]
    assert otadata.size == 0x2000, "otadata is two flash sectors (esp_ota_ops)"
    assert otadata.offset < apps[0].offset
    vfs = parts["vfs"]  # MicroPython's flashbdev.py mounts the data partition labelled "vfs"
    assert vfs.type == "data" and "encrypted" in vfs.flags, "a plaintext vfs could carry a boot.py or shadow modules"
    assert max(p.end for p in parts.values()) == flash_size(), "flash a shipped board cannot ever use is wasted"


# --- sdkconfig -------------------------------------------------------------------------------

def test_fragments_are_plain_assignments_and_end_with_a_newline() -> None:
    names = {p.name for p in fragments()}
    assert {"sdkconfig.board", "sdkconfig.nvs_encryption", "sdkconfig.development", "sdkconfig.flash_encryption",
            "sdkconfig.secure_boot"} <= names
    for path in fragments():
        text = path.read_text()
        # MicroPython's CMakeLists.txt concatenates the fragments as they are: without a final
        # newline the last line of one would run into the first line of the next.
        assert text.endswith("\n"), f"{path.name} must end with a newline"
        assert parse_sdkconfig(text, path.name), f"{path.name} sets nothing"
    for target, text in generated_files(BOARD / "mpconfigboard.cmake").items():
        assert text.endswith("\n"), target
        parse_sdkconfig(text, target)


NVS = {
    "CONFIG_NVS_ENCRYPTION": "y",
    "CONFIG_NVS_SEC_KEY_PROTECT_USING_HMAC": "y",
}
RELEASE = {
    "CONFIG_SECURE_FLASH_ENC_ENABLED": "y",
    "CONFIG_SECURE_FLASH_ENCRYPTION_MODE_RELEASE": "y",
    "CONFIG_SECURE_ENABLE_SECURE_ROM_DL_MODE": "y",
    "CONFIG_SECURE_BOOT": "y",
    "CONFIG_SECURE_BOOT_V2_ENABLED": "y",
    "CONFIG_SECURE_SIGNED_APPS_RSA_SCHEME": "y",
    "CONFIG_SECURE_BOOT_BUILD_SIGNED_BINARIES": "n",
}
DEV = {
    "CONFIG_SECURE_FLASH_ENC_ENABLED": "y",
    "CONFIG_SECURE_FLASH_ENCRYPTION_MODE_DEVELOPMENT": "y",
}
# Options that would weaken a RELEASE board (esp-idf components/bootloader/Kconfig.projbuild).
INSECURE = (
    "CONFIG_SECURE_BOOT_INSECURE",
    "CONFIG_SECURE_BOOT_ALLOW_JTAG",
    "CONFIG_SECURE_BOOT_ALLOW_ROM_BASIC",
    "CONFIG_SECURE_BOOT_V2_ALLOW_EFUSE_RD_DIS",
    "CONFIG_SECURE_FLASH_UART_BOOTLOADER_ALLOW_ENC",
    "CONFIG_SECURE_FLASH_UART_BOOTLOADER_ALLOW_DEC",
    "CONFIG_SECURE_FLASH_UART_BOOTLOADER_ALLOW_CACHE",
    "CONFIG_SECURE_FLASH_ENCRYPTION_MODE_DEVELOPMENT",
    "CONFIG_SECURE_INSECURE_ALLOW_DL_MODE",
    "CONFIG_SECURE_DISABLE_ROM_DL_MODE",
    "CONFIG_SECURE_BOOT_ENABLE_AGGRESSIVE_KEY_REVOKE",
    "CONFIG_EFUSE_VIRTUAL",
    "CONFIG_NVS_SEC_KEY_PROTECT_USING_FLASH_ENC",
)


def hmac_key_id() -> int:
    value = int(effective_config("RELEASE")["CONFIG_NVS_SEC_HMAC_EFUSE_KEY_ID"])
    assert 0 <= value <= 5, "eFuse key blocks BLOCK_KEY0..BLOCK_KEY5 (nvs_sec_provider/Kconfig: range, default -1)"
    return value


@pytest.mark.parametrize("variant", VARIANTS)
def test_nvs_encryption_with_the_hmac_scheme_in_both_variants(variant: str) -> None:
    config = effective_config(variant)
    for key, value in NVS.items():
        assert config.get(key) == value, f"{variant}: {key}"
    assert config.get("CONFIG_NVS_SEC_HMAC_EFUSE_KEY_ID") == str(hmac_key_id())


def test_release_variant_is_locked_down() -> None:
    config = effective_config("RELEASE")
    for key, value in RELEASE.items():
        assert config.get(key) == value, key
    for key in INSECURE:
        assert config.get(key, "n") == "n", f"{key} must not be set for RELEASE"


def test_dev_variant_cannot_lock_a_board() -> None:
    config = effective_config("DEV")
    for key, value in DEV.items():
        assert config.get(key) == value, key
    for key in ("CONFIG_SECURE_BOOT", "CONFIG_SECURE_FLASH_ENCRYPTION_MODE_RELEASE",
                "CONFIG_SECURE_ENABLE_SECURE_ROM_DL_MODE", "CONFIG_SECURE_DISABLE_ROM_DL_MODE"):
        assert config.get(key, "n") == "n", f"{key} must not be set for DEV"


@pytest.mark.parametrize("variant", VARIANTS)
def test_partition_table_config_points_at_the_csv(variant: str) -> None:
    config = effective_config(variant)
    assert config.get("CONFIG_PARTITION_TABLE_CUSTOM") == "y"
    filename = Path(json.loads(config["CONFIG_PARTITION_TABLE_CUSTOM_FILENAME"]))
    assert filename.is_absolute(), "ESP-IDF resolves a relative name against ports/esp32, not the board"
    assert filename == CSV and filename.exists()
    assert int(config["CONFIG_PARTITION_TABLE_OFFSET"], 16) == partition_table_offset()
    first = min(p.offset for p in read_partitions())
    assert first >= partition_table_offset() + PARTITION_TABLE_SIZE


# --- cmake, variants, manifest ---------------------------------------------------------------

CMAKE_FILES = ["mpconfigboard.cmake"] + [f"mpconfigvariant_{v}.cmake" for v in VARIANTS]
PORT_FRAGMENT = re.compile(r"boards/sdkconfig\.[a-z0-9_]+")


def test_every_file_the_cmake_files_name_exists() -> None:
    generated = generated_files(BOARD / "mpconfigboard.cmake")
    for name in CMAKE_FILES:
        text = _cmake_text(BOARD / name)
        for entry in sdkconfig_defaults(BOARD / name):
            if entry.startswith("${MICROPY_BOARD_DIR}/"):
                continue  # checked below with every other board path
            if entry == "${SDKCONFIG_DEFAULTS}":
                continue  # the list so far (a variant appends to the board's)
            if entry.startswith("${CMAKE_BINARY_DIR}/"):
                assert entry in generated, f"{name}: {entry} is not written by mpconfigboard.cmake"
                continue
            # MicroPython's own fragments, relative to ports/esp32: present at the pinned tag
            assert PORT_FRAGMENT.fullmatch(entry), f"{name}: unexpected SDKCONFIG_DEFAULTS entry {entry}"
            assert entry in port_files(), (
                f"{name}: {entry} does not exist in MicroPython {micropython_release()} ports/esp32")
        for rel in re.findall(r"\$\{MICROPY_BOARD_DIR\}/([A-Za-z0-9_.\-]+)", text):
            assert (BOARD / rel).is_file(), f"{name} names {rel}, which is not in {BOARD.name}"
    text = _cmake_text(BOARD / "mpconfigboard.cmake")
    assert re.search(r"set\(\s*MICROPY_FROZEN_MANIFEST\s+\$\{MICROPY_BOARD_DIR\}/manifest\.py\s*\)", text)
    assert "set(IDF_TARGET esp32s3)" in text


def _fake_micropython(root: Path, version: str) -> Path:
    """A MicroPython tree with the pinned release's port file names (empty files, each holding
    only its own name as a comment) and a py/mpconfig.h that gives ``version``; returns ports/esp32."""
    port = root / "ports" / "esp32"
    for rel in port_files():
        (port / rel).parent.mkdir(parents=True, exist_ok=True)
        (port / rel).write_text(f"# {rel}\n")
    major, minor, micro = version.split(".")
    (root / "py").mkdir()
    (root / "py" / "mpconfig.h").write_text(
        f"#define MICROPY_VERSION_MAJOR {major}\n#define MICROPY_VERSION_MINOR {minor}\n"
        f"#define MICROPY_VERSION_MICRO {micro}\n#define MICROPY_VERSION_PRERELEASE 0\n")
    return port


# What MicroPython's ports/esp32/CMakeLists.txt does with a board before ESP-IDF takes over:
# include the board and variant cmake files, then read every SDKCONFIG_DEFAULTS entry (a relative
# one from ports/esp32) into sdkconfig.combined.  Run by cmake in script mode, in ports/esp32.
_CONFIGURE = """
set(CMAKE_BINARY_DIR ${SAFESIGNAL_TEST_BUILD})  # script mode sets it to the working directory
include(${MICROPY_BOARD_DIR}/mpconfigboard.cmake)
include(${MICROPY_BOARD_DIR}/mpconfigvariant_${MICROPY_BOARD_VARIANT}.cmake)
file(WRITE ${CMAKE_BINARY_DIR}/sdkconfig.combined "")
foreach(f ${SDKCONFIG_DEFAULTS})
    file(READ ${f} contents)
    file(APPEND ${CMAKE_BINARY_DIR}/sdkconfig.combined "${contents}")
endforeach()
file(WRITE ${CMAKE_BINARY_DIR}/manifest.txt "${MICROPY_FROZEN_MANIFEST}")
"""


def _configure(tmp: Path, variant: str, version: str) -> subprocess.CompletedProcess[str]:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake is needed to configure the board (apt-get install cmake)")
    port = _fake_micropython(tmp / "micropython", version)
    build = tmp / "build"
    build.mkdir()
    script = tmp / "configure.cmake"
    script.write_text(_CONFIGURE)
    return subprocess.run([cmake, f"-DMICROPY_BOARD_DIR={BOARD}", f"-DMICROPY_BOARD_VARIANT={variant}",
                           f"-DSAFESIGNAL_TEST_BUILD={build}", "-P", str(script)],
                          cwd=port, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("variant", VARIANTS)
def test_board_configures_against_the_pinned_release(tmp_path: Path, variant: str) -> None:
    p = _configure(tmp_path, variant, micropython_release()[1:])
    assert p.returncode == 0, p.stdout + p.stderr
    combined = (tmp_path / "build" / "sdkconfig.combined").read_text()
    # MicroPython's fragments first (each marked with its name above), then ours, in order
    port_refs = [e for e in variant_entries(variant) if e.startswith("boards/")]
    assert [ln[2:] for ln in combined.splitlines() if ln.startswith("# boards/")] == port_refs
    assert "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME" in combined
    merged: dict[str, str] = {}  # a later assignment wins, as in ESP-IDF's reading of the defaults
    for ln in combined.splitlines():
        if ln.strip() and not ln.startswith("# boards/"):
            merged.update(parse_sdkconfig(ln, "sdkconfig.combined"))
    assert effective_config(variant).items() <= merged.items()
    assert Path((tmp_path / "build" / "manifest.txt").read_text()) == BOARD / "manifest.py"


def test_board_refuses_another_micropython_release(tmp_path: Path) -> None:
    major, minor, micro = micropython_release()[1:].split(".")
    p = _configure(tmp_path, "DEV", f"{major}.{int(minor) - 1}.{micro}")
    assert p.returncode != 0
    assert f"SAFESIGNAL_S3 is for MicroPython {micropython_release()}" in p.stderr


def test_variants_match_board_json_and_a_variant_is_required() -> None:
    files = {p.name.removeprefix("mpconfigvariant_").removesuffix(".cmake") for p in BOARD.glob("mpconfigvariant_*")}
    assert files == set(VARIANTS)
    assert not (BOARD / "mpconfigvariant.cmake").exists(), "no default variant: a build must choose DEV or RELEASE"
    board = json.loads((BOARD / "board.json").read_text())
    assert board["mcu"] == "esp32s3"
    assert set(board["variants"]) == set(VARIANTS)
    for deploy in board["deploy"]:
        assert (BOARD / deploy).is_file()
    text = _cmake_text(BOARD / "mpconfigboard.cmake")
    assert re.search(r"if\(NOT MICROPY_BOARD_VARIANT\)\s*message\(FATAL_ERROR", text)
    for variant in VARIANTS:
        assert f'MICROPY_HW_BOARD_NAME="SafeSignal ESP32-S3 {variant}"' in (
            BOARD / f"mpconfigvariant_{variant}.cmake").read_text()


def test_mpconfigboard_h() -> None:
    text = (BOARD / "mpconfigboard.h").read_text()
    assert re.search(r"#ifndef MICROPY_HW_BOARD_NAME\s+(//.*\s+)*#define MICROPY_HW_BOARD_NAME", text), \
        "the variants set the board name; the header may only provide a default"
    assert re.search(r'#define MICROPY_HW_MCU_NAME\s+"ESP32-S3"', text)


def _manifest_calls(path: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    """(function, positional string args, keyword string args) of the top-level calls of a manifest."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            kwargs = {k.arg: k.value.value for k in node.keywords
                      if k.arg and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)}
            calls.append((node.func.id, args, kwargs))
    return calls


def test_board_manifest_includes_the_port_and_the_firmware() -> None:
    includes = [args[0] for fn, args, _ in _manifest_calls(BOARD / "manifest.py") if fn == "include"]
    assert "$(PORT_DIR)/boards/manifest.py" in includes
    local = [i for i in includes if "$(" not in i]
    assert len(local) == 1
    # manifestfile.py resolves relative paths from the manifest's own directory
    assert (BOARD / local[0]).resolve() == (FIRMWARE / "manifest.py").resolve()


class _Frozen:
    """Just enough of micropython tools/manifestfile.py to run the firmware manifest."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.files: set[Path] = set()

    def include(self, path: str, **_: object) -> None:
        assert path.startswith("$(PORT_DIR)/"), f"the firmware manifest includes {path}"

    def module(self, name: str, base_path: str = ".", **_: object) -> None:
        path = (self.base / base_path / name).resolve()
        assert path.is_file(), f"manifest freezes {path}, which does not exist"
        self.files.add(path)

    def package(self, name: str, files: object = None, base_path: str = ".", **_: object) -> None:
        root = (self.base / base_path / name).resolve()
        assert root.is_dir(), f"manifest freezes package {root}, which does not exist"
        self.files.update(p.resolve() for p in root.rglob("*.py"))


def test_firmware_manifest_freezes_main_and_every_library_module() -> None:
    frozen = _Frozen(FIRMWARE)
    names = {"include": frozen.include, "module": frozen.module, "package": frozen.package}
    exec(compile((FIRMWARE / "manifest.py").read_text(), "manifest.py", "exec"), names)
    expected = {(FIRMWARE / "main.py").resolve()} | {p.resolve() for p in (FIRMWARE / "lib").rglob("*.py")}
    assert frozen.files == expected, (
        f"not frozen: {sorted(str(p) for p in expected - frozen.files)}; "
        f"frozen but not in lib/: {sorted(str(p) for p in frozen.files - expected)}")


# --- the README agrees with the files --------------------------------------------------------

def _readme() -> str:
    return (BOARD / "README.md").read_text()


def test_readme_says_untested_at_the_top() -> None:
    top = "\n".join(_readme().splitlines()[:6])
    assert "Untested on hardware: written from the upstream sources" in top
    assert "treat the first board as an experiment" in top


def test_readme_marks_every_irreversible_step() -> None:
    text = _readme()
    boxes = re.findall(r"^ *> \*\*IRREVERSIBLE:\*\*", text, re.M)
    # the HMAC key burnt by the firmware, the DEV first boot, burn_key, the RELEASE first boot
    assert len(boxes) >= 4
    # Every command that burns eFuses, or flashes an image whose first boot does, is followed by a
    # warning box in the same section.  (Reflashing a DEV board with --encrypt burns nothing.)
    for m in re.finditer(r"```bash\n(.*?)```", text, re.S):
        block = m.group(1)
        burns = "burn_key" in block or ("write_flash" in block and "--encrypt" not in block)
        if burns:
            section = text[m.end():].split("\n## ", 1)[0]
            assert "**IRREVERSIBLE:**" in section, f"no IRREVERSIBLE box after:\n{block}"


def test_readme_commands_use_this_boards_offsets_and_key_block() -> None:
    text = _readme().replace("\\\n", " ")
    nvs = nvs_partition()
    reads = re.findall(r"read_flash (0x[0-9A-Fa-f]+) (0x[0-9A-Fa-f]+)", text)
    assert reads and all((int(o, 16), int(s, 16)) == (nvs.offset, nvs.size) for o, s in reads)
    app = {p.name: p for p in read_partitions()}["ota_0"]
    writes = re.findall(r"(0x[0-9A-Fa-f]+) (\S+\.bin)", text)
    assert writes
    for address, image in writes:
        if "bootloader" in image:
            assert int(address, 16) == 0x0, image  # ESP32-S3: the bootloader is at 0x0
        elif "partition-table" in image:
            assert int(address, 16) == partition_table_offset(), image
        elif "micropython" in image:
            assert int(address, 16) == app.offset, image
    key = hmac_key_id()
    burns = re.findall(r"burn_key (BLOCK_KEY\d) \S+ (\w+)", text)
    assert burns and all(block == f"BLOCK_KEY{key}" and purpose == "HMAC_UP" for block, purpose in burns)
    assert "generate_signing_key --version 2 --scheme rsa3072" in text
