# SAFESIGNAL_S3: MicroPython for the SafeSignal panic button on an ESP32-S3-WROOM-1-N8R2 module
# (8 MB flash, 2 MB quad PSRAM), with NVS encryption, flash encryption and (RELEASE only) secure
# boot v2.  Untested on hardware.
#
# Targets MicroPython v1.28.0, the release named in firmware/MICROPYTHON (checked below), with
# the ESP-IDF that release locks for the ESP32-S3 (ports/esp32/lockfiles).  Build from ports/esp32
# of a MicroPython checkout at that tag:
#
#   make BOARD_DIR=/path/to/firmware/boards/SAFESIGNAL_S3 BOARD_VARIANT=DEV
#   make BOARD_DIR=/path/to/firmware/boards/SAFESIGNAL_S3 BOARD_VARIANT=RELEASE
#
# How the pieces fit (micropython ports/esp32/CMakeLists.txt): this file is included first and
# sets SDKCONFIG_DEFAULTS; then mpconfigvariant_<BOARD_VARIANT>.cmake appends to it; then every
# file in the list is concatenated, in order, into build-*/sdkconfig.combined, which ESP-IDF
# reads as its sdkconfig defaults.  A later line overrides an earlier one.  Paths that start
# with boards/ are MicroPython's own fragments (relative to ports/esp32; each must exist at the
# pinned tag: tests/test_board.py checks them against tests/data/micropython-<tag>-esp32.txt);
# ${MICROPY_BOARD_DIR} is this directory (the Makefile passes it as an absolute path).
#
# Which fragments each variant uses:
#
#   fragment                   DEV   RELEASE   what
#   sdkconfig.board            yes   yes       flash size and mode, partition table offset
#   sdkconfig.nvs_encryption   yes   yes       NVS encryption, HMAC scheme, eFuse key BLOCK_KEY5
#   sdkconfig.development      yes   -         flash encryption in development mode
#   sdkconfig.flash_encryption -     yes       flash encryption in release mode, secure download mode
#   sdkconfig.secure_boot      -     yes       secure boot v2, RSA-3072, signing outside the build
#
# No sdkconfig.mbedtls: MicroPython's boards/sdkconfig.base already sets
# CONFIG_MBEDTLS_HAVE_TIME_DATE=y, so mbedTLS checks certificate dates.  No USB fragment: since
# v1.27 the port enables native USB from mpconfigport.h (MICROPY_HW_ENABLE_USBDEV on chips with
# USB OTG), not from an sdkconfig file.

# The MicroPython tree must be the release this repository pins: the firmware is tested on the
# virtual device with that release only (tests/test_micropython_release.py).  The version comes
# from py/mpconfig.h of the tree being built (CMAKE_SOURCE_DIR is its ports/esp32).  REALPATH:
# with a symlink in ports/esp32/boards, firmware/MICROPYTHON is found from the link's target.
get_filename_component(SAFESIGNAL_BOARD_REAL ${MICROPY_BOARD_DIR} REALPATH)
file(STRINGS ${SAFESIGNAL_BOARD_REAL}/../../MICROPYTHON SAFESIGNAL_MICROPYTHON LIMIT_COUNT 1)
file(STRINGS ${CMAKE_SOURCE_DIR}/../../py/mpconfig.h SAFESIGNAL_MP_VERSION_LINES
    REGEX "^#define MICROPY_VERSION_(MAJOR|MINOR|MICRO|PRERELEASE) ")
set(SAFESIGNAL_MP_VERSION "")
foreach(line ${SAFESIGNAL_MP_VERSION_LINES})
    string(REGEX REPLACE "^#define MICROPY_VERSION_([A-Z]+) +\\(?([0-9]+)\\)?.*$" "\\1=\\2" pair "${line}")
    list(APPEND SAFESIGNAL_MP_VERSION ${pair})
endforeach()
list(SORT SAFESIGNAL_MP_VERSION)
string(REGEX MATCH "^v([0-9]+)\\.([0-9]+)\\.([0-9]+)$" _ "${SAFESIGNAL_MICROPYTHON}")
set(SAFESIGNAL_WANT "MAJOR=${CMAKE_MATCH_1};MICRO=${CMAKE_MATCH_3};MINOR=${CMAKE_MATCH_2};PRERELEASE=0")
if(NOT SAFESIGNAL_MP_VERSION STREQUAL SAFESIGNAL_WANT)
    message(FATAL_ERROR "SAFESIGNAL_S3 is for MicroPython ${SAFESIGNAL_MICROPYTHON} (firmware/MICROPYTHON); "
        "this tree is ${SAFESIGNAL_MP_VERSION}: check out that tag")
endif()

# There is no default variant on purpose: a build must say whether it is for bring-up (DEV)
# or for shipping (RELEASE), because the two burn different eFuses on first boot.
if(NOT MICROPY_BOARD_VARIANT)
    message(FATAL_ERROR "SAFESIGNAL_S3 needs BOARD_VARIANT=DEV (bring-up) or BOARD_VARIANT=RELEASE (production); see README.md")
endif()

set(IDF_TARGET esp32s3)

# ESP-IDF resolves CONFIG_PARTITION_TABLE_CUSTOM_FILENAME relative to the project directory
# (ports/esp32; esp-idf components/partition_table/project_include.cmake), which does not
# contain this board when it is built with BOARD_DIR=.  So the file name is written here as an
# absolute path, into a fragment in the build directory, before the fragments are concatenated.
file(WRITE ${CMAKE_BINARY_DIR}/sdkconfig.safesignal_partitions
    "CONFIG_PARTITION_TABLE_CUSTOM=y\nCONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${MICROPY_BOARD_DIR}/partitions-safesignal.csv\"\n")

# The same base as ESP32_GENERIC_S3 at v1.28.0 (its boards/ESP32_GENERIC_S3/mpconfigboard.cmake):
# BLE and quad SPIRAM, which the N8R2 module has (PROVISIONING.md, "Module and heap"); then ours.
set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    boards/sdkconfig.ble
    boards/sdkconfig.spiram_sx
    ${MICROPY_BOARD_DIR}/sdkconfig.board
    ${CMAKE_BINARY_DIR}/sdkconfig.safesignal_partitions
    ${MICROPY_BOARD_DIR}/sdkconfig.nvs_encryption
)

# MicroPython's default frozen modules plus the SafeSignal firmware (main.py and lib/).
set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
