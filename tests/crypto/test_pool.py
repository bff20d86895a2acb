"""Tests of the pool of precomputed random factors."""

from __future__ import annotations

import threading
import time

import pytest

from workbench.crypto import RandomnessPool
from workbench.crypto.paillier import decrypt_raw
from workbench.errors import RandomnessPoolError


def _wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_fill_then_take_hands_out_each_factor_once(keypair):
    """Factors taken are distinct, encrypt zero, and leave the pool."""
    public_key, private_key = keypair
    with RandomnessPool(public_key, background=False) as pool:
        pool.fill(8)
        assert pool.available == 8
        first = pool.take(5)
        second = pool.take(3)
        assert pool.available == 0
        factors = [int(f) for f in first + second]
        assert len(set(factors)) == 8
        assert decrypt_raw(private_key, factors) == [0] * 8
        assert pool.computed == 8 and pool.computed_on_demand == 0


def test_take_computes_what_is_missing(public_key):
    """A dry pool computes the missing factors at once and counts them."""
    with RandomnessPool(public_key, background=False) as pool:
        pool.fill(2)
        assert len(pool.take(5)) == 5
        assert pool.computed_on_demand == 3


@pytest.mark.parametrize("short_exponent", [False, True])
def test_background_thread_fills_to_target(keypair, short_exponent):
    """The background thread keeps the target number of factors ready."""
    public_key, private_key = keypair
    with RandomnessPool(
        public_key, private_key=private_key, short_exponent=short_exponent, target=20
    ) as pool:
        assert _wait_for(lambda: pool.available == 20)
        pool.take(15)
        assert _wait_for(lambda: pool.available == 20)
        assert decrypt_raw(private_key, pool.take(20)) == [0] * 20
        assert pool.kind == ("short_exponent" if short_exponent else "crt")


def test_close_stops_the_thread_and_forgets_factors(public_key):
    """After close, no pool thread runs and the pool refuses to serve."""
    pool = RandomnessPool(public_key, target=5)
    assert _wait_for(lambda: pool.available == 5)
    pool.close()
    assert pool.available == 0
    names = [thread.name for thread in threading.enumerate()]
    assert "workbench-randomness-pool" not in names
    with pytest.raises(RandomnessPoolError, match="is closed"):
        pool.take(1)
    with pytest.raises(RandomnessPoolError, match="is closed"):
        pool.fill(1)
