# Frozen modules of the SAFESIGNAL_S3 board: MicroPython's default set for the esp32 port
# (asyncio, the networking bundle, umqtt, ...) and the SafeSignal firmware.
#
# Paths in a manifest are relative to the manifest's own directory (micropython
# tools/manifestfile.py changes into it while running it), and that directory is where the
# board really lives: with `make BOARD_DIR=/path/to/firmware/boards/SAFESIGNAL_S3`, and also with
# a symlink in ports/esp32/boards (the working directory is the link's target).  A copy of this
# directory elsewhere would not find the firmware: use BOARD_DIR= or a symlink.
#
# The firmware manifest includes the port's manifest too; a manifest included twice is read
# once (manifestfile.py keeps a set of visited manifests).

include("$(PORT_DIR)/boards/manifest.py")  # noqa: F821 (manifest function)
include("../../esp32-button/manifest.py")  # noqa: F821 (manifest function)
