"""syn2co.seeds.derive_seed: stable, 63-bit, and different for different keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syn2co.seeds import derive_seed

PART = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=8))


def test_known_values_are_stable() -> None:
    """The values a key gives are part of every seeded run: pinned here, written by hand from
    BLAKE2b-64 of the key text, little-endian, shifted right by one bit."""
    import hashlib

    expected = int.from_bytes(hashlib.blake2b(b"pass/0/3", digest_size=8).digest(), "little")
    assert derive_seed("pass", 0, 3) == expected >> 1


@given(st.lists(PART, min_size=1, max_size=4), st.lists(PART, min_size=1, max_size=4))
def test_in_range_and_different_keys_differ(a: list[int | str], b: list[int | str]) -> None:
    assert 0 <= derive_seed(*a) < 2**63
    if "/".join(map(str, a)) != "/".join(map(str, b)):
        assert derive_seed(*a) != derive_seed(*b)
