"""SafeSignal host library: links, device sessions, provisioning and the virtual device.

Library code never prints; only :mod:`safesignal.cli` talks to the user.
"""

__version__ = "0.1.0"
