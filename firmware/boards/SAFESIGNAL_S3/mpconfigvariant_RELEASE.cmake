# RELEASE: for boards that ship.  NVS encryption (from mpconfigboard.cmake), flash encryption in
# release mode and secure boot v2.  The first boot makes all of it permanent, and the board can
# never be reflashed over USB afterwards: see README.md before flashing one.
set(SDKCONFIG_DEFAULTS
    ${SDKCONFIG_DEFAULTS}
    ${MICROPY_BOARD_DIR}/sdkconfig.flash_encryption
    ${MICROPY_BOARD_DIR}/sdkconfig.secure_boot
)

list(APPEND MICROPY_DEF_BOARD
    MICROPY_HW_BOARD_NAME="SafeSignal ESP32-S3 RELEASE"
)
