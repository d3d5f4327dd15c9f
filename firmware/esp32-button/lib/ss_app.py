# Composition root: the only place that creates hardware objects.  main.py calls main().

import asyncio
import sys

from ss_compat import sleep_ms

FIRMWARE = "safesignal-button 0.1.0"
# Oldest MicroPython this firmware supports (also pinned in manifest.py and PROVISIONING.md).
REQUIRES_MICROPYTHON = (1, 24, 0)


def _chip_id(machine):
    return ":".join(["%02x" % b for b in machine.unique_id()])


async def _reset_soon(machine):
    # Let the reply leave the UART before the chip resets.
    await sleep_ms(200)
    machine.reset()


async def _main():
    import esp32
    import machine
    import network

    import ss_store
    from ss_console import Console
    from ss_mqtt import Mqtt
    from ss_wifi import Wifi

    print("[BOOT] %s, chip %s" % (FIRMWARE, _chip_id(machine)))
    if tuple(sys.implementation.version[:3]) < REQUIRES_MICROPYTHON:
        print("[BOOT] Warning: MicroPython %d.%d.%d is older than the supported %d.%d.%d"
              % (tuple(sys.implementation.version[:3]) + REQUIRES_MICROPYTHON))
    store = ss_store.provision_init(esp32.NVS(ss_store.NAMESPACE))
    for notice in store.notices:
        print("[PROVISION] " + notice)
    print("[PROVISION] Provisioning system initialized")

    wifi = None
    mqtt = None
    tasks = []
    print("[WIFI] Loading credentials from NVS...")
    if store.provision_is_provisioned():
        cfg = store.provision_load_config()
        print("[WIFI] Credentials loaded: SSID='%s'" % cfg["wifi_ssid"])
        wifi = Wifi(network.WLAN(network.STA_IF))
        wifi.configure(cfg["wifi_ssid"], cfg["wifi_pass"])
        mqtt = Mqtt(cfg["device_id"], cfg["mqtt_uri"])
        tasks.append(asyncio.create_task(wifi.run()))
        tasks.append(asyncio.create_task(mqtt.run(wifi)))
    else:
        err = store.load_error
        if err is not None and err.reason != "ESP_ERR_NVS_NOT_FOUND":
            print("[PROVISION] Stored configuration unusable: %s" % err.message)
        print("[WIFI] Failed to load SSID from NVS: ESP_ERR_NVS_NOT_FOUND")
        print("[WIFI] Device not provisioned! Cannot connect to WiFi.")
        print("[WIFI] Please provision device with credentials.")
        print("[PROVISION] Provisioning mode: waiting for commands on the console (type help)")

    async def reset():
        await _reset_soon(machine)

    import os
    import time

    # os.urandom with the radio still off is only pseudo-random on the ESP32: mix in the
    # microsecond counter too.  A repeat would only cost a tool a timeout, never a false success.
    boot_id = "%08x" % ((int.from_bytes(os.urandom(4), "big") ^ time.ticks_us()) & 0xFFFFFFFF)
    console = Console(store, _chip_id(machine), FIRMWARE, reset, wifi, mqtt, boot_id)
    await console.run(asyncio.StreamReader(sys.stdin.buffer))


def main():
    import micropython

    micropython.kbd_intr(-1)  # Ctrl-C must not drop to the REPL: the console owns the port
    try:
        asyncio.run(_main())
    except EOFError:
        return  # console input closed: only happens under the virtual device's supervisor
    except Exception as e:
        sys.print_exception(e)
        print("[BOOT] Fatal error; restarting in 3 s")
        import time

        import machine

        time.sleep(3)

        machine.reset()
