"""The module the SafeSignal button targets, and the Python heap it leaves (the virtual device's
default ``--heap``).  Why this module: PROVISIONING.md, "Module, heap and partition table".

ESP32-S3-WROOM-1-N8R2: 8 MB quad flash, 2 MB quad PSRAM (board firmware/boards/SAFESIGNAL_S3,
sdkconfig.board and MicroPython's boards/sdkconfig.spiram_sx).

The heap, by MicroPython v1.28.0's rules for the esp32 port:

- main.c (mp_task) allocates the first heap area with MP_PLAT_ALLOC_HEAP, i.e. malloc, of
  MICROPY_GC_INITIAL_HEAP_SIZE = 64 KiB on the S3 (mpconfigport.h);
- MICROPY_GC_SPLIT_HEAP_AUTO: when an allocation fails, py/gc.c gc_try_add_heap adds an area at
  least doubling the total (64 -> 128 -> 256 -> 512 -> 1024 KiB), capped by the largest free
  block of ESP-IDF's heap (gccollect.c gc_get_max_new_split: heap_caps_get_largest_free_block
  (MALLOC_CAP_DEFAULT));
- with CONFIG_SPIRAM_USE_MALLOC and CONFIG_SPIRAM_MALLOC_ALWAYSINTERNAL=8192 (sdkconfig.spiram_sx)
  malloc serves requests of 8 KiB and more from PSRAM first: every heap area after the first
  lands in PSRAM, and so does mbedTLS's 16 KiB record buffer (sdkconfig.base sets
  CONFIG_MBEDTLS_DEFAULT_MEM_ALLOC).  WiFi, lwIP and NimBLE buffers stay in internal RAM.

So the Python heap can grow to the PSRAM, 2048 KiB, less what else ESP-IDF puts there: the TLS
session's buffers and handshake (tens of KiB, outside the Python heap on the chip as in the
unix port, whose mbedTLS uses libc calloc: extmod/mbedtls/mbedtls_config_common.h) and any other
large malloc.  128 KiB is kept for those: an estimate, not a measurement on a module.
"""

from __future__ import annotations

MODULE = "ESP32-S3-WROOM-1-N8R2"
FLASH_SIZE = 8 * 1024 * 1024
PSRAM_KIB = 2048
PSRAM_KEPT_FOR_ESP_IDF_KIB = 128  # mbedTLS session buffers and other >= 8 KiB mallocs
PYTHON_HEAP = f"{PSRAM_KIB - PSRAM_KEPT_FOR_ESP_IDF_KIB}k"
