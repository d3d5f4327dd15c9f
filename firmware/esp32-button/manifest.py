# Freeze the SafeSignal firmware into a MicroPython build for the ESP32-S3 (optional: copying
# the files with mpremote works too; see PROVISIONING.md).  For MicroPython v1.28.0, the release
# named in firmware/MICROPYTHON: the only one the firmware is tested with (virtual device).
#
#   make -C ports/esp32 BOARD=ESP32_GENERIC_S3 FROZEN_MANIFEST=/path/to/firmware/esp32-button/manifest.py
#
# A frozen main.py takes precedence over one on the filesystem, so a frozen build cannot be
# replaced by copying files onto the board.

include("$(PORT_DIR)/boards/manifest.py")

package("ssproto", base_path="lib")
for name in ("ss_app.py", "ss_ble.py", "ss_bleauth.py", "ss_button.py", "ss_compat.py", "ss_console.py",
             "ss_der.py", "ss_diag.py", "ss_ec.py", "ss_help.py", "ss_identity.py", "ss_mqtt.py", "ss_nvs.py",
             "ss_outbox.py", "ss_store.py", "ss_time.py", "ss_wifi.py"):
    module(name, base_path="lib")
module("main.py")
