# A small GATT peripheral for tests/test_sim_ble.py, run as a virtual device's main.py under
# `safesignal sim --ble`: written against the bluetooth module's documented API only
# (docs/library/bluetooth.rst), as firmware for an ESP32 would be.  It reports every IRQ on
# the console and takes one command per line: buf N [append], notify HEX, indicate HEX,
# adv [nonconn], stop, disc, reg, kept, mtu N, name NAME, raise.
import select
import sys

import bluetooth
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_GATTS_READ_REQUEST = const(4)
_IRQ_GATTS_INDICATE_DONE = const(20)
_IRQ_MTU_EXCHANGED = const(21)
_FLAG_READ = const(0x0002)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_FLAG_INDICATE = const(0x0020)

SVC = bluetooth.UUID("5a0e0001-0000-4000-8000-00805f9b34fb")
RX = (bluetooth.UUID("5a0e0002-0000-4000-8000-00805f9b34fb"), _FLAG_WRITE | _FLAG_READ)
TX = (bluetooth.UUID("5a0e0003-0000-4000-8000-00805f9b34fb"), _FLAG_READ | _FLAG_NOTIFY | _FLAG_INDICATE)

ble = bluetooth.BLE()
state = {"conn": None, "kept": None, "raise": False}


def irq(event, data):
    if state["raise"]:
        state["raise"] = False
        raise RuntimeError("handler failed")
    if event == _IRQ_CENTRAL_CONNECT:
        conn, addr_type, addr = data
        state["conn"] = conn
        state["kept"] = addr  # wrong on purpose: the memoryview is only valid during the call
        print("EV connect", conn, addr_type, bytes(addr).hex())
    elif event == _IRQ_CENTRAL_DISCONNECT:
        conn, addr_type, addr = data
        state["conn"] = None
        print("EV disconnect", conn, addr_type, bytes(addr).hex())
    elif event == _IRQ_GATTS_WRITE:
        conn, handle = data
        value = ble.gatts_read(handle)
        print("EV write", conn, handle, len(value), value.hex())
    elif event == _IRQ_GATTS_READ_REQUEST:
        conn, handle = data
        print("EV read", conn, handle)
    elif event == _IRQ_MTU_EXCHANGED:
        conn, mtu = data
        print("EV mtu", conn, mtu)
    elif event == _IRQ_GATTS_INDICATE_DONE:
        conn, handle, status = data
        print("EV indicated", conn, handle, status)


def advertise(connectable=True):
    name = ble.config("gap_name")
    adv = bytes((2, 0x01, 0x06, len(name) + 1, 0x09)) + name
    ble.gap_advertise(100000, adv_data=adv, resp_data=b"\x05\xffSS01", connectable=connectable)


def main():
    print("active", ble.active(), ble.active(True))
    try:
        ble.config("rxbuf")
    except ValueError as e:
        print("rxbuf", e)
    print("mtu", ble.config("mtu"))
    ble.config(gap_name=sys.argv[1] if len(sys.argv) > 1 else "SafeSignal-sim")
    at, mac = ble.config("mac")
    print("mac", at, mac.hex())
    ble.irq(irq)
    ((tx, rx),) = ble.gatts_register_services(((SVC, (TX, RX)),))
    print("handles", tx, rx)
    ble.gatts_write(tx, b"hello")
    advertise()
    print("ready")
    p = select.poll()
    p.register(sys.stdin, select.POLLIN)
    while True:
        if not p.poll(10):
            continue
        words = sys.stdin.readline().split()
        if not words:
            continue
        cmd = words[0]
        try:
            if cmd == "buf":
                ble.gatts_set_buffer(rx, int(words[1]), len(words) > 2)
            elif cmd == "notify":
                ble.gatts_notify(state["conn"], tx, bytes.fromhex(words[1]))
            elif cmd == "indicate":
                ble.gatts_indicate(state["conn"], tx, bytes.fromhex(words[1]))
            elif cmd == "adv":
                advertise(len(words) == 1)
            elif cmd == "stop":
                ble.gap_advertise(None)
            elif cmd == "disc":
                print("disc", ble.gap_disconnect(state["conn"]))
            elif cmd == "reg":
                ble.gatts_register_services(((SVC, (TX, RX)),))
            elif cmd == "kept":
                print("kept", bytes(state["kept"]).hex())
            elif cmd == "mtu":
                ble.config(mtu=int(words[1]))
            elif cmd == "raise":
                state["raise"] = True
            elif cmd == "read":
                print("value", ble.gatts_read(rx).hex())
            print("ok", cmd)
        except OSError as e:
            print("oserror", cmd, e.errno)


main()
