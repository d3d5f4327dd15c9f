"""Inside the BlueZ test VM: give the guest's Linux kernel a Bluetooth controller that lives on the
virtual device's air.

The kernel is the HCI host on /dev/vhci (the hci_vhci driver: what userspace writes there comes
from a controller); the controller is the one the virtual device's air offers at the ready
line's ble=SPEC (reached from the guest at the host's address, 10.0.2.2 under QEMU's user
networking).  bumble's hci-bridge app opens the host side first, and the kernel's first command
(HCI_Reset, sent when the vhci device registers) then times out before the controller side is
open, leaving hci0 dead; this opens the controller first.

python vhci_bridge.py CONTROLLER_SPEC
"""

from __future__ import annotations

import asyncio
import sys

from bumble.transport import open_transport


async def bridge(spec: str) -> None:
    async with await open_transport(spec) as controller, await open_transport("vhci") as kernel:
        kernel.source.set_packet_sink(controller.sink)
        controller.source.set_packet_sink(kernel.sink)
        print("bridge up", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(bridge(sys.argv[1]))
