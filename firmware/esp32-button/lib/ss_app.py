# Composition root: the only place that creates hardware objects.  main.py calls main().

import asyncio
import sys

from ss_compat import sleep_ms

FIRMWARE = "safesignal-button 0.1.0"
_IDENTITY_PRELOAD_FREE = 96 * 1024  # bytes of free heap at boot above which ss_identity loads at once
# Oldest MicroPython this firmware supports (also pinned in manifest.py and PROVISIONING.md).
REQUIRES_MICROPYTHON = (1, 24, 0)
_PRESS_KEPT = "[ALERT] Out of memory: the panic press is kept and stored as soon as memory allows"


def _chip_id(machine):
    return ":".join(["%02x" % b for b in machine.unique_id()])


def _tls_identity(cfg, ident):
    import ssproto

    return ident if ssproto.parse_mqtt_uri(cfg["mqtt_uri"])[0] == "mqtts" else None


async def _reset_soon(machine):
    # Let the reply leave the UART before the chip resets.
    await sleep_ms(200)
    machine.reset()


class App:
    """Owns the network services and the alert path; the console drives it."""

    def __init__(self, store, outbox, wlan_factory, firmware, boot_id, machine=None, chip_id=""):
        import time

        from ss_outbox import OutboxError
        from ss_time import Uptime

        self._OutboxError = OutboxError  # bound now: on_press must not import when memory is short
        self.press_waits = False  # a press is kept because the heap ran out (on_press)
        self.uptime = Uptime(time.ticks_ms, time.ticks_diff)  # alerts carry the time since boot
        self.store = store
        self.machine = machine  # for the RTC (SNTP); None in tests
        self.outbox = outbox
        self._wlan_factory = wlan_factory
        self.firmware = firmware
        self.boot_id = boot_id
        self.chip_id = chip_id  # carried by the status message and every alert
        self.wifi = None
        self.mqtt = None
        self._tasks = []
        self.ble_state = None  # ss_bleauth.BleState: the PIN's verifier and lockout count
        self.ble = None  # ss_ble.Ble while the BLE window is (or was) open this boot

    def start(self, cfg):
        """Join WiFi and keep an MQTT session with the stored configuration."""
        import asyncio

        import ssproto.msg as msg
        from ss_mqtt import Mqtt
        from ss_wifi import Wifi

        if self.wifi is None:
            self.wifi = Wifi(self._wlan_factory())
        self.wifi.configure(cfg["wifi_ssid"], cfg["wifi_pass"])
        self.mqtt = Mqtt(cfg["device_id"], cfg["mqtt_uri"], msg.cfg_prefix(cfg), self.outbox,
                         self.firmware, self.boot_id, _tls_identity(cfg, self.store.identity()), self.chip_id)
        self._tasks = [asyncio.create_task(self.wifi.run()), asyncio.create_task(self.mqtt.run(self.wifi))]
        if self.machine is not None:
            import time

            import ss_time

            self._tasks.append(asyncio.create_task(ss_time.keep_synced(self.wifi, self.machine, time)))

    async def stop(self):
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        await sleep_ms(0)  # let the cancelled tasks close their sockets
        if self.wifi is not None:
            self.wifi.down()

    async def connect_test(self, cfg, ident=None):
        """Join the staged WiFi and reach the staged broker, then leave both.  Raises
        ss_mqtt.ProbeError with the console status code.  The running services (a provisioned
        device being re-provisioned) pause meanwhile and resume afterwards."""
        from ss_mqtt import Mqtt, ProbeError
        from ss_wifi import Wifi

        await self.stop()
        if self.wifi is None:
            self.wifi = Wifi(self._wlan_factory())
        try:
            print("[PROVISION] Testing the new settings: WiFi '%s', broker %s" % (cfg["wifi_ssid"], cfg["mqtt_uri"]))
            code, why = await self.wifi.probe(cfg["wifi_ssid"], cfg["wifi_pass"])
            if code is not None:
                raise ProbeError(code, why)
            tls = _tls_identity(cfg, ident)
            if tls is not None:
                await self._set_clock()  # certificate dates are checked: a chip starts in 2000
            await Mqtt(cfg["device_id"], cfg["mqtt_uri"], tls=tls).probe()
            print("[PROVISION] Connect test passed")
        except BaseException:
            self.wifi.down()
            self.resume()  # a provisioned device goes back to work with what it had
            raise
        self.wifi.down()  # passed: the caller saves and reboots, services stay stopped

    def radio_on(self):
        """Switch the WiFi radio on (not connecting): ESP-IDF's esp_random() draws true
        randomness only while WiFi or Bluetooth runs (ESP-IDF docs, "Random Number Generation")."""
        if self.wifi is None:
            from ss_wifi import Wifi

            self.wifi = Wifi(self._wlan_factory())
        self.wifi.radio_on()

    async def _set_clock(self):
        import time

        import ss_time

        if self.machine is None or ss_time.unix_time(time) is not None:
            return
        try:
            t = await ss_time.query(ss_time.NTP_HOST)
        except OSError:
            t = None
        if t is None:
            print("[TIME] Clock not set (no SNTP answer from %s): TLS will find the broker's certificate "
                  "not yet valid" % ss_time.NTP_HOST)
            return
        ss_time.set_rtc(self.machine, time, t)
        print("[TIME] Clock set by SNTP (%s)" % ss_time.NTP_HOST)

    def resume(self):
        """Restart the services with the stored configuration, if there is one and they are off."""
        if not self._tasks and self.store.provision_is_provisioned():
            self.start(self.store.provision_load_config())

    def alert(self, kind, cfg=None):
        """Store an alert in the outbox and send it as soon as possible; returns its seq."""
        import time

        import ss_time
        import ssproto.msg as msg

        if cfg is None:
            cfg = self.store.provision_load_config()
        seq = self.outbox.add(msg.cfg_prefix(cfg), kind, ss_time.unix_time(time), self.uptime.ms())
        if self.mqtt is not None:
            self.mqtt.kick()
        return seq

    async def keep_uptime(self):
        """Read the uptime hourly, so it counts on across ticks_ms wrapping (ss_time.Uptime)."""
        while True:
            await sleep_ms(3600000)
            self.uptime.ms()

    def ble_boot(self, held, make_console):
        """Open the BLE window if this boot should: the device is not provisioned, a provisioning
        over BLE rebooted it (the host reads back), or the button was held at power-on."""
        import ssproto.ble as P

        st = self.ble_state
        prov = self.store.provision_is_provisioned()
        again = st.open_next_boot()
        if again:
            st.set_open_next_boot(False)
        if prov and not (held or again):
            return  # off, quietly: the seed guide's boot log of a provisioned device stays as it is
        fails = st.fails()
        if fails >= P.HARD_LOCK:
            print("[BLE] Locked after %d wrong PINs: hold the button at power-on for %d s to re-open"
                  % (fails, P.HOLD_MS // 1000))
            return
        if st.verifier() is None:
            print("[BLE] No PIN set (factory step: safesignal pin): provisioning over BLE unavailable")
            return
        try:
            import ss_ble

            self.ble = ss_ble.Ble(st, make_console)
            self.ble.open_window(prov)
        except (ImportError, OSError) as e:
            print("[BLE] Bluetooth unavailable (%s)" % e)
            self.ble = None
            return
        asyncio.create_task(self.ble.run())

    def on_press(self):
        """Store the panic alert of one press.  True when the press is dealt with (stored, or
        refused for good: not provisioned, outbox full); False when the heap ran out before
        the alert was in flash: the button keeps the press and calls again (ss_button), so a
        press is never lost to a moment without memory.  (On the virtual device's 128 kB heap
        a press once hit a MemoryError after its alert was written: the alert was lost.)"""
        outbox = self.outbox
        before = outbox.next_seq
        try:
            if not self.store.provision_is_provisioned():
                print("[BUTTON] Pressed, but the device is not provisioned: no alert can be sent")
                return True
            try:
                seq = self.alert("panic")
            except self._OutboxError as e:
                print("[ALERT] PANIC NOT STORED: %s" % e.message)
                return True
            print("[ALERT] Panic alert %d stored; sending" % seq)
        except MemoryError:
            if outbox.next_seq != before:
                return True  # the alert is in flash (Outbox.add); only what came after ran out
            if not self.press_waits:
                self.press_waits = True
                print(_PRESS_KEPT)  # a constant: printing it allocates nothing
            return False
        if self.press_waits:
            self.press_waits = False
            print("[ALERT] The panic press kept while memory was short is stored")
        return True


async def _main():
    import gc
    import os
    import time

    import esp32
    import machine
    import network

    # Every module is imported here, at boot, while the heap is empty: compiling one later
    # (at the first provision_complete) may not find a large enough free block in a
    # fragmented 128 kB heap.  The exception is the device identity (ss_identity, ss_ec,
    # ss_der): about 25 kB, see below.  Garbage from the imports so far goes first, so the
    # large modules load into one piece of heap rather than into the holes it leaves.
    gc.collect()
    import ss_mqtt  # noqa: F401
    import ss_store
    import ss_time  # noqa: F401
    import ss_wifi  # noqa: F401
    import ssproto.msg  # noqa: F401
    from ss_button import BUTTON_GPIO, Button
    from ss_console import Console
    from ss_outbox import NAMESPACE as OUTBOX_NS
    from ss_outbox import Outbox

    gc.collect()
    if gc.mem_free() > _IDENTITY_PRELOAD_FREE:
        # Room to spare: load the identity code now, while the heap is in one piece (compiling
        # it from source later can fail in a fragmented heap).  A small heap loads it when it
        # is first needed, which from .mpy (no compiling) fits.
        import ss_identity  # noqa: F401
        gc.collect()

    chip_id = _chip_id(machine)
    print("[BOOT] %s, chip %s" % (FIRMWARE, chip_id))
    if tuple(sys.implementation.version[:3]) < REQUIRES_MICROPYTHON:
        print("[BOOT] Warning: MicroPython %d.%d.%d is older than the supported %d.%d.%d"
              % (tuple(sys.implementation.version[:3]) + REQUIRES_MICROPYTHON))
    outbox_nvs = esp32.NVS(OUTBOX_NS)
    outbox = Outbox(outbox_nvs)
    outbox.load()
    for notice in outbox.notices:
        print("[ALERT] " + notice)
    store = ss_store.provision_init(esp32.NVS(ss_store.NAMESPACE))
    for notice in store.notices:
        print("[PROVISION] " + notice)
    print("[PROVISION] Provisioning system initialized")

    # os.urandom with the radio still off is only pseudo-random on the ESP32: mix in the
    # microsecond counter too.  A repeat would only cost a tool a timeout, never a false success.
    boot_id = "%08x" % ((int.from_bytes(os.urandom(4), "big") ^ time.ticks_us()) & 0xFFFFFFFF)
    app = App(store, outbox, lambda: network.WLAN(network.STA_IF), FIRMWARE, boot_id, machine, chip_id)

    print("[WIFI] Loading credentials from NVS...")
    if store.provision_is_provisioned():
        cfg = store.provision_load_config()
        print("[WIFI] Credentials loaded: SSID='%s'" % cfg["wifi_ssid"])
        app.start(cfg)
    else:
        err = store.load_error
        if err is not None and err.reason != "ESP_ERR_NVS_NOT_FOUND":
            print("[PROVISION] Stored configuration unusable: %s" % err.message)
        else:
            import ss_diag  # only on a device that is not provisioned

            ss_diag.explain_unreadable(esp32, outbox_nvs)
            del ss_diag  # used once: give its heap back (the provisioning ahead needs it)
            sys.modules.pop("ss_diag", None)
        print("[WIFI] Failed to load SSID from NVS: ESP_ERR_NVS_NOT_FOUND")
        print("[WIFI] Device not provisioned! Cannot connect to WiFi.")
        print("[WIFI] Please provision device with credentials.")
        print("[PROVISION] Provisioning mode: waiting for commands on the console (type help)")

    asyncio.create_task(app.keep_uptime())
    import ss_bleauth

    app.ble_state = ss_bleauth.BleState(esp32.NVS(ss_bleauth.NAMESPACE))

    async def reset():
        await _reset_soon(machine)

    async def ble_reset():
        app.ble_state.set_open_next_boot(True)  # the host reconnects to read back
        await _reset_soon(machine)

    def ble_console():
        return Console(store, chip_id, FIRMWARE, ble_reset, boot_id=boot_id, app=app)

    pin = machine.Pin(BUTTON_GPIO, machine.Pin.IN, machine.Pin.PULL_UP)
    asyncio.create_task(_button_and_ble(app, pin, machine, Button, ble_console))
    console = Console(store, chip_id, FIRMWARE, reset, boot_id=boot_id, app=app)
    await console.run(asyncio.StreamReader(sys.stdin.buffer))


async def _button_and_ble(app, pin, machine, Button, ble_console):
    """The button task, after a look at whether it is held at power-on: held for HOLD_MS it
    is the long press (BLE opens, the PIN lockout is cleared) and raises no alert; released
    sooner it is a press like any other."""
    import ssproto.ble as P
    from ss_compat import ticks_diff, ticks_ms

    held = False
    button = Button(pin, app.on_press, machine.Pin.IRQ_FALLING)
    if pin.value() == 0:
        t0 = ticks_ms()
        while pin.value() == 0 and ticks_diff(ticks_ms(), t0) < P.HOLD_MS:
            await sleep_ms(20)
        if pin.value() == 0:
            held = True
            print("[BLE] Long press at power-on: Bluetooth opens and the PIN lockout is cleared")
            app.ble_state.clear_fails()
            while pin.value() == 0:
                await sleep_ms(20)
        else:
            button.counted_elsewhere()
    asyncio.create_task(button.run())
    app.ble_boot(held, ble_console)


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
