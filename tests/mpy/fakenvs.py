# In-memory stand-in for MicroPython's esp32.NVS (one namespace), with the real semantics.
# Runs on MicroPython and CPython: the CPython unit tests import it too.
#
# Semantics modelled (MicroPython ports/esp32/esp32_nvs.c over ESP-IDF nvs.h):
#   get_i32(key) / get_blob(key, buf) raise OSError(ESP_ERR_NVS_NOT_FOUND) when the key is
#     missing, and also when it holds a value of the other type;
#   get_blob(key, buf) raises OSError(ESP_ERR_NVS_INVALID_LENGTH) when buf is too small, else
#     copies the value into buf and returns its length;
#   erase_key(key) raises OSError(ESP_ERR_NVS_NOT_FOUND) when the key is missing;
#   keys are at most 15 characters (ESP_ERR_NVS_KEY_TOO_LONG);
#   set_*/erase_key change what later reads see at once, but only commit() makes the changes
#     durable: a simulated reset (FakeNVS(old.durable)) loses everything not committed.
# With autocommit=True every set/erase is durable at once (ESP-IDF's nvs_commit is in fact a
# no-op today); a store must be safe under both models.
#
# Power cuts: with budget=k the first k mutating calls (set_i32, set_blob, erase_key, commit)
# run and the next one raises PowerCut before it has any effect.
#
# Out of memory: with oom_at=k the k-th call of any kind (counted in ``api``, reads included)
# raises MemoryError once, before its effect (oom_after=False) or after it (True).  The chip's
# esp32.NVS itself allocates nothing; the allocations around a call (ss_nvs.get_blob's buffer
# before it, the bytes it returns after it) are where the firmware's heap runs out.

ESP_ERR_NVS_NOT_FOUND = -0x1102
ESP_ERR_NVS_KEY_TOO_LONG = -0x1109
ESP_ERR_NVS_INVALID_LENGTH = -0x110C

I32 = "i32"
BLOB = "blob"


class PowerCut(BaseException):
    # Not an Exception: code under test must not be able to swallow it.
    pass


class FakeNVS:
    def __init__(self, durable=None, budget=None, autocommit=False):
        self.durable = dict(durable) if durable else {}  # key -> (type, value)
        self.view = dict(self.durable)  # what reads see: durable plus uncommitted changes
        self.budget = budget
        self.autocommit = autocommit
        self.calls = 0  # mutating calls made (including ones that raised OSError)
        self.api = 0  # calls of any kind (for oom_at)
        self.oom_at = None
        self.oom_after = False

    # --- helpers for tests ---------------------------------------------------------------
    def reset(self):
        """A new NVS as the chip sees it after a reset: the durable state only."""
        return FakeNVS(self.durable, autocommit=self.autocommit)

    def blobs(self):
        return [v for (t, v) in self.durable.values() if t == BLOB]

    def _mutating(self, what):
        if self.budget is not None and self.calls >= self.budget:
            raise PowerCut(what)
        self.calls += 1

    def _enter(self):
        self.api += 1
        if self.oom_at == self.api and not self.oom_after:
            self.oom_at = None
            raise MemoryError("memory allocation failed (FakeNVS oom_at, before the call)")

    def _leave(self):
        if self.oom_at == self.api and self.oom_after:
            self.oom_at = None
            raise MemoryError("memory allocation failed (FakeNVS oom_at, after the call)")

    def _key(self, key):
        if not isinstance(key, str):
            raise TypeError("key must be a str")
        if len(key) > 15:
            raise OSError(ESP_ERR_NVS_KEY_TOO_LONG)

    def _get(self, key, typ):
        self._key(key)
        e = self.view.get(key)
        if e is None or e[0] != typ:
            raise OSError(ESP_ERR_NVS_NOT_FOUND)
        return e[1]

    def _set(self, key, entry):
        if entry is None:
            del self.view[key]
        else:
            self.view[key] = entry
        if self.autocommit:
            self.durable = dict(self.view)

    # --- what the esp32.NVS calls below do -------------------------------------------------
    def _set_i32_impl(self, key, value):
        self._key(key)
        if not isinstance(value, int) or value < -0x80000000 or value > 0x7FFFFFFF:
            raise OverflowError("value does not fit in i32")
        self._mutating("set_i32 " + key)
        self._set(key, (I32, value))

    def _get_i32_impl(self, key):
        return self._get(key, I32)

    def _set_blob_impl(self, key, value):
        self._key(key)
        value = bytes(value)
        self._mutating("set_blob " + key)
        self._set(key, (BLOB, value))

    def _get_blob_impl(self, key, buf):
        v = self._get(key, BLOB)
        if len(v) > len(buf):
            raise OSError(ESP_ERR_NVS_INVALID_LENGTH)
        buf[: len(v)] = v
        return len(v)

    def _erase_key_impl(self, key):
        self._key(key)
        self._mutating("erase_key " + key)
        if key not in self.view:
            raise OSError(ESP_ERR_NVS_NOT_FOUND)
        self._set(key, None)

    def _commit_impl(self):
        self._mutating("commit")
        self.durable = dict(self.view)

    # --- esp32.NVS API: each call counts for oom_at ----------------------------------------------
    def _api(impl):  # noqa: N805 - used in this class body, on the functions above
        def call(self, *args):
            self._enter()
            r = impl(self, *args)
            self._leave()
            return r

        return call

    set_i32 = _api(_set_i32_impl)
    get_i32 = _api(_get_i32_impl)
    set_blob = _api(_set_blob_impl)
    get_blob = _api(_get_blob_impl)
    erase_key = _api(_erase_key_impl)
    commit = _api(_commit_impl)


def cut_states(make_store, start, op, autocommit=False):
    """Run ``op(store)`` once for every possible power-cut point.

    ``start`` is a durable NVS state; ``make_store(nvs)`` builds and initialises a store over
    it.  Returns a list of (k, durable state after the cut) for k = 0, 1, ... mutating calls
    made by ``op`` before the power went, ending with the state after ``op`` completed (that
    entry has k = None).
    """
    out = []
    k = 0
    while True:
        nvs = FakeNVS(start, autocommit=autocommit)
        store = make_store(nvs)
        nvs.budget = nvs.calls + k
        try:
            op(store)
        except PowerCut:
            out.append((k, dict(nvs.durable)))
            k += 1
            if k > 100:
                raise AssertionError("operation never completes")
            continue
        out.append((None, dict(nvs.durable)))
        return out
