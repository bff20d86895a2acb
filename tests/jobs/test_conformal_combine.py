"""Tests of the combination rules, in plaintext and under Paillier."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.crypto import aggregate, generate_keypair
from workbench.errors import CalibrationSizeError, ConformalError
from workbench.jobs.conformal import (
    ConformalWarning,
    MemberReply,
    combine_p_values,
    decrypt_combination,
    encrypt_reply,
    reply_encoding,
)


@pytest.fixture(scope="module")
def keys():
    """A 512-bit key pair, made once for the module."""
    return generate_keypair(512, allow_insecure=True)


def _replies(seed: int = 0, members: int = 3, shape=(7, 3)) -> list[MemberReply]:
    rng = np.random.default_rng(seed)
    return [
        MemberReply(
            p_values=rng.random(shape),
            mask=np.ones(shape[1], dtype=bool),
            calibration_size=int(rng.integers(5, 200)),
        )
        for _ in range(members)
    ]


def test_mean_rules_follow_their_formulas() -> None:
    """mean, weighted_mean, median and twice_mean match numpy's own."""
    replies = _replies()
    stack = np.stack([r.p_values for r in replies])
    weights = np.array([r.calibration_size for r in replies], dtype=float)
    np.testing.assert_allclose(combine_p_values(replies, "mean"), stack.mean(0))
    np.testing.assert_allclose(
        combine_p_values(replies, "weighted_mean"),
        np.tensordot(weights, stack, 1) / weights.sum(),
    )
    np.testing.assert_allclose(combine_p_values(replies, "median"), np.median(stack, 0))
    np.testing.assert_allclose(
        combine_p_values(replies, "twice_mean"), np.minimum(1, 2 * stack.mean(0))
    )


@pytest.mark.parametrize("rule", ["mean", "weighted_mean", "twice_mean"])
def test_paillier_path_equals_plaintext_path(keys, rule: str) -> None:
    """The encrypted combination gives exactly the plaintext path's floats."""
    public_key, private_key = keys
    replies = _replies(seed=3)
    replies[1] = MemberReply(
        replies[1].p_values, np.array([True, False, True]), replies[1].calibration_size
    )
    encoding = reply_encoding(rule, max_members=3, max_calibration_size=200)
    vectors = [
        encrypt_reply(public_key, r, rule=rule, encoding=encoding, processes=1)
        for r in replies
    ]
    encrypted = decrypt_combination(
        private_key, aggregate(vectors), (7, 3), rule=rule, processes=1
    )
    plain = combine_p_values(replies, rule, encoding=encoding)
    np.testing.assert_array_equal(encrypted, plain)
    np.testing.assert_allclose(plain, combine_p_values(replies, rule), atol=2e-6)


def test_abstaining_member_is_left_out_of_its_columns() -> None:
    """A column's mean runs over the members that speak for it."""
    replies = _replies()
    replies[0] = MemberReply(replies[0].p_values, np.array([False, True, True]), 10)
    combined = combine_p_values(replies, "mean")
    expected = (replies[1].p_values[:, 0] + replies[2].p_values[:, 0]) / 2
    np.testing.assert_allclose(combined[:, 0], expected)
    median = combine_p_values(replies, "median")
    np.testing.assert_allclose(median[:, 0], expected)


def test_column_without_any_member_gets_p_value_one() -> None:
    """A column no member speaks for warns and has p-value 1."""
    replies = [
        MemberReply(r.p_values, np.array([True, True, False]), r.calibration_size)
        for r in _replies()
    ]
    with pytest.warns(ConformalWarning, match="1 of 3 columns have no member"):
        combined = combine_p_values(replies, "weighted_mean")
    np.testing.assert_array_equal(combined[:, 2], 1.0)


def test_no_column_spoken_for_raises_calibration_size_error() -> None:
    """If every member abstains everywhere the combination refuses."""
    replies = [
        MemberReply(r.p_values, np.zeros(3, dtype=bool), r.calibration_size)
        for r in _replies()
    ]
    with pytest.raises(CalibrationSizeError, match="no member has enough"):
        combine_p_values(replies, "mean")


def test_unknown_rule_and_shape_mismatch_are_refused() -> None:
    """An unknown rule and replies of different shapes raise ConformalError."""
    with pytest.raises(ConformalError, match="unknown combination rule 'max'"):
        combine_p_values(_replies(), "max")
    mixed = _replies()[:1] + _replies(shape=(6, 3))[:1]
    with pytest.raises(ConformalError, match="different shapes"):
        combine_p_values(mixed, "mean")


def test_median_cannot_be_encrypted() -> None:
    """Asking for an encoding of the median rule names the encrypted rules."""
    with pytest.raises(ConformalError, match="not computed under encryption"):
        reply_encoding("median", max_members=3)


def test_reply_refuses_p_values_outside_unit_interval() -> None:
    """A reply holding a p-value above 1 is refused."""
    with pytest.raises(ConformalError, match=r"lie in \[0, 1\]"):
        MemberReply(np.full((2, 2), 1.5), np.ones(2, dtype=bool), 3)


def test_twice_mean_is_never_below_mean() -> None:
    """twice_mean is at least the mean, and at most 1."""
    replies = _replies(seed=9)
    twice = combine_p_values(replies, "twice_mean")
    assert np.all(twice >= combine_p_values(replies, "mean"))
    assert twice.max() <= 1.0
