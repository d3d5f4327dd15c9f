# The panic button: a push button from a GPIO to GND (internal pull-up, active low),
# debounced by sampling.  A press counts once the pin has read "pressed" STABLE_SAMPLES
# times in a row; the next press needs as many "released" samples first.  Contact bounce
# (a few ms of chatter) therefore never makes two alerts, and a press as short as
# POLL_MS * STABLE_SAMPLES (30 ms) is still seen.
#
# Sampling runs in the asyncio loop, which a flash write or a blocking name lookup can hold up
# for longer than a press lasts.  A falling-edge pin interrupt latches presses meanwhile: when
# the loop comes back late (more than STALL_MS since the previous sample), finds the pin
# released and the latch set, a press it could not sample happened, and it counts.  Limits:
# the latch is one flag, so several presses inside one pause count once; and if a pause begins
# within a few ms of a release, that release's contact bounce can count as a second press.
# Both err towards sending the alert: a lost panic press is worse than a second alert.

from ss_compat import const, sleep_ms, ticks_diff, ticks_ms

BUTTON_GPIO = const(4)  # board wiring: PROVISIONING.md "Hardware"
POLL_MS = const(10)
STABLE_SAMPLES = const(3)
STALL_MS = const(30)  # a gap between samples longer than this may have hidden a press


class Button:
    def __init__(self, pin, on_press, irq_falling=None):
        self._pin = pin  # machine.Pin(BUTTON_GPIO, Pin.IN, Pin.PULL_UP), made by the composition root
        self._on_press = on_press
        self.pressed = False
        self.presses = 0
        self.latched = 0  # presses counted from the interrupt latch alone
        self._edge = False
        if irq_falling is not None:
            pin.irq(handler=self._irq, trigger=irq_falling)

    def _irq(self, pin):
        self._edge = True  # interrupt context: no allocation, nothing else

    def check_latch(self, level, late):
        """After reading ``level``: count a press the sampling missed.  Returns True if counted."""
        edge = self._edge
        self._edge = False
        if edge and late and level != 0:
            self.presses += 1
            self.latched += 1
            print("[BUTTON] Press latched by the pin interrupt (sampling was held up)")
            self._on_press()
            return True
        return False

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
        last = ticks_ms()
        while True:
            now = ticks_ms()
            late = ticks_diff(now, last) > STALL_MS
            last = now
            try:
                level = self._pin.value()
                if not self.check_latch(level, late):
                    run = self.sample(level, run)
            except Exception as e:  # never let one bad press stop the button
                print("[BUTTON] Error: %s" % e)
            await sleep_ms(POLL_MS)
