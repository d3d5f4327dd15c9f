# The panic button: a push button from a GPIO to GND (internal pull-up, active low), sampled
# from the asyncio loop with help from the falling-edge pin interrupt.
#
# Sampling is slow on a board: asyncio.sleep_ms(POLL_MS) ends on the 10 ms FreeRTOS tick, so it
# lasts 10-20 ms, and the other tasks' Python runs in between (40-90x slower than on a PC).
# Counting a press only after STABLE_SAMPLES equal samples therefore needed up to 60 ms of press
# or more, and missed real 30 ms presses.  Instead, while the button is armed (released):
#   - a sample that reads "pressed" counts at once if a falling edge was seen since the
#     previous sample: the edge says the level changed, the sample says it is still low;
#   - the interrupt handler runs soon after the edge, but on the virtual device (and whenever
#     the VM is busy) it can come one sample late: an edge seen within CONFIRM_SAMPLES samples
#     after a "pressed" sample confirms that sample's press too;
#   - two "pressed" samples in a row count without any edge (no interrupt, or a lost one).
# A press counts once; the next needs STABLE_SAMPLES "released" samples in a row first, so
# contact bounce at the release never makes a second alert, and edges while pressed are
# ignored.  Bounce at the press is inside the press: it is counted on whichever sample sees
# a closure first.  An edge alone (a glitch too short to sample) counts nothing.
#
# Minimum press: the first sample after a press starts comes at most one sample interval
# later; that is <= 20 ms while the loop keeps up (10 ms sleep + tick rounding), so a press of
# 20 ms or more is sampled "pressed" and counts.  If a gap between samples is longer than
# STALL_MS (30 ms; a flash write or a blocking name lookup holds the loop up), the latch
# below counts a press that came and went inside it.  Together: every press of STALL_MS =
# 30 ms or more counts, however late the loop is (a gap up to 30 ms contains no whole press
# of 30 ms; a longer one is latched, or sampled if still held).  Without an interrupt: two
# samples, so 40 ms.  A press that starts before the button re-armed (within STABLE_SAMPLES
# samples, 20-60 ms, of the previous release) is taken as that press's bounce.
#
# The latch: when the loop comes back late (more than STALL_MS since the previous sample),
# finds the pin released and an edge seen, a press it could not sample happened, and it
# counts.  A pause shorter than LATCH_HELD_MS (60 ms) is read more closely: if it began before
# the button re-armed, its edge is the last press's release bounce (no whole new press fits:
# a release, STALL_MS held, a release again), and a press it latches re-arms as after any
# release, so its own bounce does not count again.  (Without this, slow sampling turned about
# half of all bouncy presses into two alerts: tests/mpy/check_button.py.)  Limits: the edge
# is one flag, so several presses inside one pause count once; and a longer pause around a
# release can still count its bounce as a second press.  Both err towards sending the alert:
# a lost panic press is worse than a second alert.

from ss_compat import const, sleep_ms, ticks_diff, ticks_ms

BUTTON_GPIO = const(4)  # board wiring: PROVISIONING.md "Hardware"
POLL_MS = const(10)
STABLE_SAMPLES = const(3)  # released samples in a row that re-arm the button after a press
CONFIRM_SAMPLES = const(2)  # samples after a "pressed" one in which a late edge still counts it
STALL_MS = const(30)  # a gap between samples longer than this may have hidden a press
LATCH_HELD_MS = const(60)  # a pause that began before the button re-armed latches only if this long
RETRY_MS = const(100)  # a press the alert path could not take yet (no memory): offered again this often


class Button:
    def __init__(self, pin, on_press, irq_falling=None):
        self._pin = pin  # machine.Pin(BUTTON_GPIO, Pin.IN, Pin.PULL_UP), made by the composition root
        self._on_press = on_press
        self.pressed = False  # a press was counted and the button is not re-armed yet
        self.presses = 0
        self.latched = 0  # presses counted from the interrupt latch alone
        self.unsent = 0  # presses counted that on_press has not taken yet (it returned False)
        self._offered = 0  # ticks_ms when an unsent press was last offered
        self._run = 0  # pressed: released samples in a row; armed: 1 if the last sample was low
        self._low = 0  # armed: samples left in which an edge confirms the last "pressed" sample
        self._edge = False
        if irq_falling is not None:
            pin.irq(handler=self._irq, trigger=irq_falling)

    def _irq(self, pin):
        self._edge = True  # interrupt context: no allocation, nothing else

    def _count(self):
        self.pressed = True
        self._run = 0
        self._low = 0
        self.presses += 1
        self.unsent += 1
        self._offer()

    def counted_elsewhere(self):
        """A press seen by other code (the power-on check): handed over like any other."""
        self.presses += 1
        self.unsent += 1
        self._offer()

    def _offer(self):
        """Give every counted press to on_press.  on_press returns False when it cannot take
        it yet (out of memory before the alert was stored): the press stays in ``unsent`` (an
        int: counting it allocates nothing) and run() offers it again every RETRY_MS.  Any
        other result (None included) takes it.  An exception takes it too, and propagates."""
        self._offered = ticks_ms()
        while self.unsent:
            try:
                taken = self._on_press()
            except MemoryError:
                taken = False
            except BaseException:
                self.unsent -= 1
                raise
            if taken is False:
                return
            self.unsent -= 1

    def sample(self, level, late=False, gap_ms=None):
        """Feed one pin reading; ``late``: more than STALL_MS since the previous one, which was
        ``gap_ms`` ago (None: unknown, taken as long).  Returns True if it counted a press."""
        edge = self._edge
        self._edge = False
        down = level == 0
        short = gap_ms is not None and gap_ms < LATCH_HELD_MS
        if late and edge and not down and self.pressed and short:
            # Not re-armed since the last press: the edge is that press's release bounce.  A
            # new press does not fit in the pause: it needs a release, STALL_MS held and a
            # release again, and one starting within STABLE_SAMPLES samples of a release is
            # bounce on the sampled path too.  (Latching here sent a second alert for one
            # bouncy press whenever the loop paused around a release.)
            edge = False
        if late and edge and not down:
            self.presses += 1
            self.latched += 1
            self._low = 0
            if short:
                # A short pause: the press it hid was released moments ago, or is still in
                # its contact bounce at the start: re-arm as after any release, so the rest of
                # that press is not a second one.
                self.pressed = True
                self._run = 0
            elif not self.pressed:
                self._run = 0
            self.unsent += 1  # counted before anything that could run out of memory
            try:
                print("[BUTTON] Press latched by the pin interrupt (sampling was held up)")
            except MemoryError:
                pass
            self._offer()
            return True
        if self.pressed:  # wait for STABLE_SAMPLES released samples; edges are bounce
            if down:
                self._run = 0
            else:
                self._run += 1
                if self._run >= STABLE_SAMPLES:
                    self.pressed = False
                    self._run = 0
                    self._low = 0
            return False
        if down:
            if edge or self._run:
                self._count()
                return True
            self._run = 1
            self._low = CONFIRM_SAMPLES
            return False
        self._run = 0
        if self._low:
            self._low -= 1
            if edge:  # the interrupt of the press sampled before came late
                self._count()
                return True
        return False

    async def run(self):
        last = ticks_ms()
        while True:
            now = ticks_ms()
            gap = ticks_diff(now, last)
            last = now
            try:
                self.sample(self._pin.value(), gap > STALL_MS, gap)
                if self.unsent and ticks_diff(now, self._offered) >= RETRY_MS:
                    self._offer()
            except Exception as e:  # never let one bad press stop the button
                try:
                    print("[BUTTON] Error: %s" % e)
                except MemoryError:
                    pass  # formatting the message needs heap; the loop must go on all the same
            await sleep_ms(POLL_MS)
