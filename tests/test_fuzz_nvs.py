"""Fuzzing the NVS reader and ``safesignal nvs dump`` with hypothesis.

The inputs and the properties are the rig's, tests/support/fuzz_nvs.py (its docstring has the
method; bench/fuzz_nvs.py runs it for many more inputs): mutations of valid plain and encrypted
images (page-header, bitmap and item-field rewrites, entry copies, with and without recomputed
CRCs, then raw bit flips, byte writes, junk, truncation, extension), random bytes, random
CRC-valid structures, and flash dumps
with partition tables.  For each: ``parse_partition`` (no keys, right keys, wrong keys, strict),
``erase_unreadable``, ``build_report`` and both renderers raise nothing but their documented
errors, agree with themselves, finish within the deadline, and never show a planted secret.
About 2,500 inputs; the whole file takes well under 40 s.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import fuzz_nvs

FUZZ = settings(
    database=None,
    deadline=timedelta(seconds=3),  # a hang (or an accidental quadratic blow-up) fails the test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PAGE = st.integers(0, 7)
STRUCTURED = st.one_of(
    st.tuples(
        st.just("header"),
        PAGE,
        st.integers(0, 7),
        st.sampled_from([0, 1, 2]) | st.integers(0, 2**32 - 1),
        st.sampled_from([0xFE, 0xFF]) | st.integers(0, 255),
        st.booleans(),
    ),
    st.tuples(st.just("bitmap"), PAGE, st.integers(0, 125), st.integers(0, 3)),
    st.tuples(
        st.just("field"),
        PAGE,
        st.integers(0, 59),
        st.sampled_from([0, 1, 2, 3, 8, 9, 23, 24, 25, 26, 28, 29]) | st.integers(0, 31),
        st.sampled_from([0, 1, 2, 0x21, 0x42, 0x48, 0x80, 0xFF]) | st.integers(0, 255),
    ),
    st.tuples(st.just("copy"), PAGE, st.integers(0, 59), PAGE, st.integers(0, 125)),
)
OFFSET = st.integers(0, 0x5000)
RAW = st.one_of(
    st.tuples(st.just("flip"), OFFSET, st.integers(0, 7)),
    st.tuples(st.just("set"), OFFSET, st.integers(0, 255)),
    st.tuples(st.just("junk"), OFFSET, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("truncate"), OFFSET),
    st.tuples(st.just("extend"), st.sampled_from([1, 4096]) | st.integers(0, 4096)),
)


@settings(FUZZ, max_examples=1600)
@given(
    base=st.sampled_from(fuzz_nvs.BASES),
    structured=st.lists(STRUCTURED, max_size=8),
    fix_crcs=st.booleans(),
    raw=st.lists(RAW, max_size=3).filter(lambda r: sum(m[0] == "truncate" for m in r) <= 1),
)
def test_mutated_images(
    base: fuzz_nvs.Base, structured: list[fuzz_nvs.Mutation], fix_crcs: bool, raw: list[fuzz_nvs.Mutation]
) -> None:
    image, plain = fuzz_nvs.build_case(base, structured, fix_crcs, raw)
    fuzz_nvs.check(image, plain)


@settings(FUZZ, max_examples=500)
@given(seed=st.integers(0, 2**64 - 1), pages=st.integers(1, 3), mode=st.sampled_from(["bytes", "structured", "any"]))
def test_random_images(seed: int, pages: int, mode: str) -> None:
    rng = random.Random(seed)
    if mode == "structured":
        image = fuzz_nvs.structured_random_image(rng, pages)
    elif mode == "bytes":
        image = rng.randbytes(pages * 4096)
    else:
        image = rng.randbytes(rng.randrange(3 * 4096))
    fuzz_nvs.check(image)


@settings(FUZZ, max_examples=200)
@given(seed=st.integers(0, 2**64 - 1), base=st.sampled_from(fuzz_nvs.BASES))
def test_flash_dumps(seed: int, base: fuzz_nvs.Base) -> None:
    nvs = base.plain if base.keys is None else fuzz_nvs.encrypt_image(base.plain, base.keys)
    fuzz_nvs.check(fuzz_nvs.flash_with_table(random.Random(seed), nvs))


def test_planted_secrets_are_really_there() -> None:
    """The secret checks would be vacuous if the bases did not hold the secrets (in plaintext)."""
    for base in fuzz_nvs.BASES:
        if base.name.startswith("safesignal"):
            for secret in fuzz_nvs.SECRETS:
                assert secret in base.plain
                if base.keys is not None:
                    assert secret not in fuzz_nvs.encrypt_image(base.plain, base.keys)
    # and --show-secrets would show them, so the masking is what keeps them out of the output
    report = fuzz_nvs.build_report(fuzz_nvs.BASES[0].plain, show_secrets=True)
    text = fuzz_nvs.render_text(report) + fuzz_nvs.render_json(report)
    assert fuzz_nvs.PASSWORD in text and fuzz_nvs.PSK.hex() in text


def test_bench_engine() -> None:
    """The run loop bench/fuzz_nvs.py uses: a few hundred of its random inputs, and its JSON summary."""
    summary = json.loads(json.dumps(fuzz_nvs.summary(fuzz_nvs.run(200, 0.0, 7, 5.0), 7)))
    assert summary["failures"] == 0, summary["failure_details"]
    assert summary["inputs_tried"] == 200 and summary["inputs_per_s"] > 0 and summary["seed"] == 7
    assert "elapsed_ms" not in summary["inputs_with_finding"]
    assert set(summary["input_kinds"]) >= {"mutated-safesignal-encrypted", "flash-dump"}
