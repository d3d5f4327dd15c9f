# A tiny assert-based test runner for MicroPython (no pytest there).
#
#   from mpyunit import test, raises, run
#   @test
#   def test_something(): assert ...
#   run()   # one line per test, then "N passed, M failed"; sys.exit(1) if anything failed

import sys

_tests = []


def test(fn):
    _tests.append(fn)
    return fn


def raises(exc, fn, *args, **kw):
    """Call fn and return the exception of type exc it raised; fail if it raised none."""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", "call"), exc.__name__))


def eq(got, want, what=""):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def run():
    passed = 0
    failed = 0
    for fn in _tests:
        try:
            fn()
        except Exception as e:
            failed += 1
            print("FAIL %s: %s %s" % (fn.__name__, e.__class__.__name__, e))
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)
        else:
            passed += 1
            print("ok   %s" % fn.__name__)
    print("%d passed, %d failed" % (passed, failed))
    if failed or not passed:
        sys.exit(1)
