// SAFESIGNAL_S3: the SafeSignal panic button on an ESP32-S3 module (see README.md).
// As ESP32_GENERIC_S3 (micropython ports/esp32/boards/ESP32_GENERIC_S3/mpconfigboard.h), minus
// its I2C pin defaults, which the button does not use.

#ifndef MICROPY_HW_BOARD_NAME
// Set per variant by mpconfigvariant_DEV.cmake / mpconfigvariant_RELEASE.cmake.
#define MICROPY_HW_BOARD_NAME               "SafeSignal ESP32-S3"
#endif
#define MICROPY_HW_MCU_NAME                 "ESP32-S3"

// The console (and the provisioning commands) also on UART0, for modules wired through a
// USB-UART bridge; native USB (CDC) is enabled by boards/sdkconfig.usb.
#define MICROPY_HW_ENABLE_UART_REPL         (1)
