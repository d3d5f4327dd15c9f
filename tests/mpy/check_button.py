# ss_button: a press counts at the first "pressed" sample with a falling edge (or at two in a
# row), re-arming needs STABLE_SAMPLES released samples, and the interrupt latch counts presses
# the sampling missed.  Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython
# and under CPython.
#
# Times in the timeline tests are in units of 0.1 ms (integers: the same under both runtimes).
from mpyunit import eq, run, test

import ss_button
from ss_button import STALL_MS, Button


class Pin:
    def __init__(self):
        self.handler = None
        self.trigger = None

    def irq(self, handler=None, trigger=None):
        self.handler = handler
        self.trigger = trigger

    def fall(self):
        self.handler(self)


def rig(irq=True):
    got = []
    pin = Pin()
    b = Button(pin, lambda: got.append(1), 2 if irq else None)
    ss_button.print = lambda *a: None
    return b, pin, got


def feed(b, levels):
    n = 0
    for v in levels:
        if b.sample(v):
            n += 1
    return n


class Rng:  # a small LCG: the same sequence under both runtimes
    def __init__(self, seed):
        self.x = seed * 2654435761 % 2147483648 + 1

    def below(self, n):
        self.x = (self.x * 1103515245 + 12345) % 2147483648
        return (self.x >> 8) % n


def drive(b, pin, lows, t_end, rnd, gap=(100, 200), lag=0):
    """Run the button over a timeline: ``lows`` are the (start, end) intervals the pin is low.
    Samples come ``gap`` apart (jittered, from a random phase), as on a board with its 10 ms
    tick.  Each falling edge (start of a low interval) reaches the handler up to ``lag`` after
    it happens (0: at once, as on the chip; the virtual device's watcher polls every 10 ms).
    Returns the sample times."""
    deliver = []
    for a, _ in lows:
        deliver.append(a + (rnd.below(lag + 1) if lag else 0))
    deliver.sort()
    t = rnd.below(gap[1])
    prev = t
    di = 0
    times = []
    while t < t_end:
        while di < len(deliver) and deliver[di] <= t:
            if pin.handler is not None:
                pin.fall()
            di += 1
        level = 1
        for a, e in lows:
            if a <= t < e:
                level = 0
        b.sample(level, t - prev > STALL_MS * 10, (t - prev) // 10)
        times.append(t)
        prev = t
        t += gap[0] + rnd.below(gap[1] - gap[0] + 1)
    return times


BOUNCE = ((0, 15), (30, 45), (60, 75))  # safesignal/sim/gpio.py _BOUNCE: closures in the first 7.5 ms


def press(start, hold, bounce=False):
    """The low intervals of one press of ``hold`` (with contact bounce at press and release)."""
    if not bounce:
        return [(start, start + hold)]
    lows = [(start + a, start + e) for a, e in BOUNCE]
    s = start + 90
    lows.append((s, s + hold))
    lows.append((s + hold + 20, s + hold + 35))  # release bounce, as the virtual device's
    lows.append((s + hold + 50, s + hold + 60))  # and a longer tail of it
    return lows


def trials(hold, n, bounce=False, irq=True, lag=0, gap=(100, 200), presses=1, apart=800):
    """Count per trial over ``n`` random phases; presses ``apart`` (80 ms) apart.  Returns the
    counts seen."""
    seen = {}
    for seed in range(n):
        b, pin, got = rig(irq)
        lows = []
        t = 1000
        for _ in range(presses):
            lows += press(t, hold, bounce)
            t = lows[-1][1] + apart
        drive(b, pin, lows, t + 1000, Rng(seed), gap, lag)
        k = len(got)
        seen[k] = seen.get(k, 0) + 1
    return seen


@test
def test_30ms_presses_sampled_10_to_20ms_apart_count_once():
    eq(trials(300, 300), {1: 300})


@test
def test_20ms_presses_count_once_while_samples_are_at_most_20ms_apart():
    eq(trials(201, 300), {1: 300})  # the first sample after the press start falls inside it


@test
def test_30ms_presses_count_once_with_gaps_up_to_45ms():
    # Python on the chip is slow: gaps past the 20 ms of a sleep.  Up to STALL_MS a 30 ms press
    # holds a sample; past it the interrupt latch counts it.
    eq(trials(301, 300, gap=(100, 450)), {1: 300})


@test
def test_bouncy_presses_count_once_with_gaps_up_to_45ms():
    # The same loop, a button with contact bounce: a pause that begins around a release must not
    # latch that release's bounce as a second press (a CI run of the virtual device sent six
    # alerts for five bouncy presses).  No whole new press fits in such a pause: one needs a
    # release, STALL_MS held and a release again, and the sampled path takes a press starting
    # within STABLE_SAMPLES samples of a release for bounce anyway.
    eq(trials(301, 300, bounce=True, gap=(100, 450)), {1: 300})
    # three presses 300 ms apart: each counts once (80 ms apart, as below, is within the
    # re-arm time when samples are 45 ms apart)
    eq(trials(301, 300, bounce=True, gap=(100, 450), presses=3, apart=3000), {3: 300})


@test
def test_30ms_presses_count_once_when_the_interrupt_comes_late():
    # The virtual device's interrupt watcher polls every 10 ms: the edge may come after the
    # first "pressed" sample, even after the release (up to 25 ms here: a busy loop delays it).
    eq(trials(300, 300, lag=250), {1: 300})


@test
def test_bounce_at_press_and_release_makes_one_press():
    eq(trials(300, 200, bounce=True), {1: 200})
    eq(trials(300, 200, bounce=True, lag=250), {1: 200})


@test
def test_a_row_of_short_bouncy_presses_80ms_apart():
    eq(trials(300, 60, bounce=True, presses=5), {5: 60})
    eq(trials(300, 60, bounce=True, presses=5, lag=250), {5: 60})


@test
def test_without_an_interrupt_two_samples_count_40ms_presses():
    eq(trials(401, 200, irq=False), {1: 200})
    eq(trials(401, 100, irq=False, bounce=True), {1: 100})


@test
def test_glitches_alone_count_nothing():
    b, pin, got = rig()
    for _ in range(5):
        pin.fall()  # a pulse too short to be sampled
        feed(b, [1, 1])
    eq(got, [])
    feed(b, [0, 1, 1, 1, 1])  # one "pressed" sample with no edge: noise on the reading
    eq(got, [])
    pin.fall()
    feed(b, [1, 1, 1])  # a stale edge does not confirm an old sample
    feed(b, [0, 1, 1, 1])  # nor a later one
    eq(got, [])
    b, pin, got = rig(irq=False)
    feed(b, [1, 0, 1, 0, 1, 1, 0, 1])
    eq(got, [])


@test
def test_edge_then_pressed_sample_counts_at_once():
    b, pin, got = rig()
    feed(b, [1, 1])
    pin.fall()
    eq(b.sample(0), True)
    eq((len(got), b.pressed), (1, True))
    eq(feed(b, [0, 0, 0]), 0)


@test
def test_late_edge_confirms_the_sample_before():
    for after in (1, 2):  # CONFIRM_SAMPLES: the edge within two samples
        b, pin, got = rig()
        feed(b, [1, 0] + [1] * (after - 1))
        eq(got, [])
        pin.fall()
        eq(b.sample(1), True)
        eq(len(got), 1)
        eq(feed(b, [1, 1, 1, 1]), 0)
    b, pin, got = rig()
    feed(b, [1, 0, 1, 1])
    pin.fall()  # too late to belong to that sample
    eq(b.sample(1), False)


@test
def test_edges_while_pressed_are_ignored_until_rearmed():
    b, pin, got = rig()
    pin.fall()
    feed(b, [0, 0])
    eq(len(got), 1)
    for _ in range(3):  # release bounce: each closure an edge and maybe a "pressed" sample
        pin.fall()
        feed(b, [1, 0, 1])
    eq(len(got), 1)
    pin.fall()
    feed(b, [1, 1, 1])  # three released samples re-arm; the edge was the release's bounce
    eq((len(got), b.pressed), (1, False))
    eq(feed(b, [1, 1]), 0)
    pin.fall()
    eq(b.sample(0), True)
    eq(len(got), 2)


@test
def test_two_presses_need_a_release_between():
    b, _, got = rig(irq=False)
    feed(b, [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0])
    eq(len(got), 2)
    b, _, got = rig(irq=False)
    feed(b, [0, 0, 0, 1, 1, 0, 0, 0])  # two released samples do not re-arm
    eq(len(got), 1)


@test
def test_latch_counts_a_press_missed_while_late():
    b, pin, got = rig()
    eq(pin.trigger, 2)
    pin.fall()  # pressed and released while the loop was held up
    eq(b.sample(1, True), True)
    eq((len(got), b.latched, b.pressed), (1, 1, False))
    eq(b.sample(1, True), False, "the latch is cleared")
    pin.fall()
    eq(b.sample(0), True, "armed after a latched press")


@test
def test_late_sample_of_a_press_still_held_counts_once():
    b, pin, got = rig()
    pin.fall()
    eq(b.sample(0, True), True)
    eq((len(got), b.latched), (1, 0))
    eq(feed(b, [0, 0, 1, 1, 1]), 0)


@test
def test_latch_ignored_when_sampling_kept_up():
    b, pin, got = rig()
    pin.fall()
    eq(b.sample(1, False), False)  # an edge with no gap: a glitch, the samples saw it all
    eq(got, [])


@test
def test_latch_does_not_double_count_a_sampled_press():
    b, pin, got = rig()
    pin.fall()
    eq(b.sample(0, False), True)  # the press is sampled
    eq(b.sample(0, False), False)
    eq(len(got), 1)
    pin.fall()  # release bounce, but the sampling keeps up: not a press
    eq(b.sample(1, False), False)
    eq(len(got), 1)
    pin.fall()  # a new press that came and went while the loop was away, before the release
    eq(b.sample(1, True), True)  # was debounced: it counts (erring towards the alert)
    eq((len(got), b.latched), (2, 1))


@test
def test_no_irq_without_a_trigger():
    b, pin, got = rig(irq=False)
    eq(pin.handler, None)


@test
def test_a_press_the_alert_path_cannot_take_yet_is_kept_and_offered_again():
    # on_press returns False when the heap ran out before the alert was stored (ss_app); it
    # raises MemoryError if even that could not run.  Either way the press is kept, offered
    # again, and the presses after it wait their turn.  (Before: the press was gone.)
    answers = [False, "raise", False]
    taken = []

    def on_press():
        a = answers.pop(0) if answers else True
        if a == "raise":
            raise MemoryError("memory allocation failed")
        if a:
            taken.append(1)
        return a

    pin = Pin()
    b = Button(pin, on_press, 2)
    pin.fall()
    eq(b.sample(0), True)
    eq((b.presses, b.unsent, taken), (1, 1, []))
    feed(b, [0, 1, 1, 1])
    pin.fall()
    eq(b.sample(0), True, "a second press while the first waits")
    eq((b.presses, b.unsent), (2, 2))
    b._offer()  # run() does this every RETRY_MS
    eq((b.unsent, taken), (2, []))
    b._offer()
    eq((b.unsent, len(taken)), (0, 2), "both taken once memory is back, one alert each")
    b._offer()
    eq(len(taken), 2)


@test
def test_the_press_at_power_on_is_kept_too():
    answers = [False]
    pin = Pin()
    b = Button(pin, lambda: answers.pop(0) if answers else True, 2)
    b.counted_elsewhere()
    eq((b.presses, b.unsent), (1, 1))
    b._offer()
    eq(b.unsent, 0)


@test
def test_run_offers_a_kept_press_again_and_survives_errors():
    # The button task itself: a press that waits is offered again within RETRY_MS, and an
    # on_press that fails (a bug) costs that press only, not the task.
    import asyncio

    from ss_compat import sleep_ms

    calls = []

    def on_press():
        calls.append(len(calls))
        if len(calls) == 1:
            return False  # out of memory
        if len(calls) == 3:
            raise ValueError("a bug")
        return True

    class LevelPin(Pin):
        level = 1

        def value(self):
            return self.level

    pin = LevelPin()
    b = Button(pin, on_press, 2)

    async def main():
        task = asyncio.create_task(b.run())
        for _ in range(2):  # two presses, 150 ms each, with 300 ms between
            pin.level = 0
            pin.fall()
            await sleep_ms(150)
            pin.level = 1
            await sleep_ms(300)
        task.cancel()

    asyncio.run(main())
    eq(b.presses, 2)
    eq(b.unsent, 0)
    eq(calls, [0, 1, 2], "offered, offered again (taken), then the second press (the bug)")


run()
