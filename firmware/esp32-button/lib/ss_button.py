# The panic button: a push button from a GPIO to GND (internal pull-up, active low),
# debounced by sampling.  A press counts once the pin has read "pressed" STABLE_SAMPLES
# times in a row; the next press needs as many "released" samples first.  Contact bounce
# (a few ms of chatter) therefore never makes two alerts, and a press as short as
# POLL_MS * STABLE_SAMPLES (30 ms) is still seen.

from ss_compat import const, sleep_ms

BUTTON_GPIO = const(4)  # board wiring: PROVISIONING.md "Hardware"
POLL_MS = const(10)
STABLE_SAMPLES = const(3)


class Button:
    def __init__(self, pin, on_press):
        self._pin = pin  # machine.Pin(BUTTON_GPIO, Pin.IN, Pin.PULL_UP), made by the composition root
        self._on_press = on_press
        self.pressed = False
        self.presses = 0

    def sample(self, level, run):
        """Feed one pin reading; ``run`` counts equal readings so far.  Returns the new run."""
        down = level == 0
        if down == self.pressed:
            return 0
        run += 1
        if run >= STABLE_SAMPLES:
            self.pressed = down
            if down:
                self.presses += 1
                self._on_press()
            return 0
        return run

    async def run(self):
        run = 0
        while True:
            try:
                run = self.sample(self._pin.value(), run)
            except Exception as e:  # never let one bad press stop the button
                print("[BUTTON] Error: %s" % e)
            await sleep_ms(POLL_MS)
