"""MicroPython stub modules for the virtual device (not imported by CPython)."""
