# SAFESIGNAL_S3: MicroPython for the SafeSignal panic button on an ESP32-S3, with NVS
# encryption, flash encryption and (RELEASE only) secure boot v2.  Untested on hardware.
#
# Targets MicroPython v1.25.0 (ports/esp32) and ESP-IDF v5.4.x.  Build from ports/esp32 of a
# MicroPython checkout:
#
#   make BOARD_DIR=/path/to/firmware/boards/SAFESIGNAL_S3 BOARD_VARIANT=DEV
#   make BOARD_DIR=/path/to/firmware/boards/SAFESIGNAL_S3 BOARD_VARIANT=RELEASE
#
# How the pieces fit (micropython ports/esp32/CMakeLists.txt): this file is included first and
# sets SDKCONFIG_DEFAULTS; then mpconfigvariant_<BOARD_VARIANT>.cmake appends to it; then every
# file in the list is concatenated, in order, into build-*/sdkconfig.combined, which ESP-IDF
# reads as its sdkconfig defaults.  A later line overrides an earlier one.  Paths that start
# with boards/ are MicroPython's own fragments (relative to ports/esp32); ${MICROPY_BOARD_DIR}
# is this directory (the Makefile passes it as an absolute path).
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
# CONFIG_MBEDTLS_HAVE_TIME_DATE=y, so mbedTLS checks certificate dates.

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

# The same base as ESP32_GENERIC_S3 (USB CDC console, BLE, optional quad SPIRAM), then ours.
set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    ${SDKCONFIG_IDF_VERSION_SPECIFIC}
    boards/sdkconfig.usb
    boards/sdkconfig.ble
    boards/sdkconfig.spiram_sx
    ${MICROPY_BOARD_DIR}/sdkconfig.board
    ${CMAKE_BINARY_DIR}/sdkconfig.safesignal_partitions
    ${MICROPY_BOARD_DIR}/sdkconfig.nvs_encryption
)

# MicroPython's default frozen modules plus the SafeSignal firmware (main.py and lib/).
set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
