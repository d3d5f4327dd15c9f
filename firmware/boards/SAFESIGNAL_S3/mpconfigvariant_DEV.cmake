# DEV: for bring-up and development boards.  NVS encryption (from mpconfigboard.cmake) and flash
# encryption in development mode; no secure boot.  The first boot still burns eFuses (the flash
# encryption key, SPI_BOOT_CRYPT_CNT, JTAG off): see README.md.  A DEV board can be reflashed
# with `esptool.py write_flash --encrypt`; it must never be shipped.
set(SDKCONFIG_DEFAULTS
    ${SDKCONFIG_DEFAULTS}
    ${MICROPY_BOARD_DIR}/sdkconfig.development
)

list(APPEND MICROPY_DEF_BOARD
    MICROPY_HW_BOARD_NAME="SafeSignal ESP32-S3 DEV"
)
