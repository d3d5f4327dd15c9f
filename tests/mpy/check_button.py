# ss_button: debouncing by samples, and the interrupt latch for presses the sampling missed.
# Runtime-neutral: tests/test_firmware_units.py runs it under MicroPython and under CPython.
from mpyunit import eq, run, test

import ss_button
from ss_button import Button


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
    r = 0
    for v in levels:
        r = b.sample(v, r)
    return r


@test
def test_one_press_despite_bounce():
    b, _, got = rig()
    feed(b, [1, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1])
    eq(len(got), 1)
    eq(b.pressed, False)


@test
def test_glitch_shorter_than_three_samples_is_ignored():
    b, _, got = rig()
    feed(b, [1, 0, 0, 1, 1, 1])
    eq(got, [])


@test
def test_two_presses_need_a_release_between():
    b, _, got = rig()
    feed(b, [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0])
    eq(len(got), 2)


@test
def test_latch_counts_a_press_missed_while_late():
    b, pin, got = rig()
    eq(pin.trigger, 2)
    pin.fall()  # pressed and released while the loop was held up
    eq(b.check_latch(1, True), True)
    eq((len(got), b.latched), (1, 1))
    eq(b.check_latch(1, True), False, "the latch is cleared")


@test
def test_latch_ignored_when_sampling_kept_up():
    b, pin, got = rig()
    pin.fall()
    eq(b.check_latch(1, False), False)  # an edge with no gap: a glitch, the samples saw it all
    eq(got, [])


@test
def test_latch_does_not_double_count_a_sampled_press():
    b, pin, got = rig()
    pin.fall()
    eq(b.check_latch(0, False), False)  # the press is being sampled
    r = b.sample(0, 0)
    r = b.sample(0, r)
    r = b.sample(0, r)
    eq(len(got), 1)
    pin.fall()  # release bounce, but the sampling keeps up: not a press
    eq(b.check_latch(1, False), False)
    eq(len(got), 1)
    pin.fall()  # a new press that came and went while the loop was away, before the release
    eq(b.check_latch(1, True), True)  # was debounced: it counts (erring towards the alert)
    eq(len(got), 2)


@test
def test_no_irq_without_a_trigger():
    b, pin, got = rig(irq=False)
    eq(pin.handler, None)


run()
