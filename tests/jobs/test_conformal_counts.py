"""Tests of pooled counts: members' calibration counts added, plain or encrypted."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from workbench.crypto import aggregate, generate_keypair
from workbench.errors import CalibrationSizeError, ConformalError
from workbench.jobs.conformal import (
    ConformalClassifier,
    ConformalRegressor,
    ConformalWarning,
    CountReply,
    add_counts,
    conformal_counts,
    conformal_p_values,
    count_encoding,
    count_p_values,
    count_reply,
    decrypt_counts,
    encrypt_counts,
    p_values_from_counts,
)


@pytest.fixture(scope="module")
def keys():
    """A 512-bit key pair, made once for the module."""
    return generate_keypair(512, allow_insecure=True)


def test_counts_give_the_same_p_values_as_scores() -> None:
    """P-values from counts equal those computed from the scores, ties included."""
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 6, size=40).astype(float)
    test = rng.integers(0, 7, size=(5, 3)).astype(float)
    draws = rng.random(test.shape)
    greater, equal = conformal_counts(calibration, test)
    for tie_breaks in (None, draws):
        np.testing.assert_allclose(
            p_values_from_counts(greater, equal, 40, tie_breaks=tie_breaks),
            conformal_p_values(calibration, test, tie_breaks=tie_breaks),
        )


def test_summed_counts_are_one_pooled_predictor() -> None:
    """Adding members' counts gives the p-values of one predictor over their union."""
    rng = np.random.default_rng(1)
    parts = [rng.exponential(size=n) for n in (12, 30, 57)]
    test = rng.exponential(size=(8, 4))
    pooled = count_p_values(add_counts([count_reply(part, test) for part in parts]))
    np.testing.assert_allclose(pooled, conformal_p_values(np.concatenate(parts), test))


def test_encrypted_counts_decrypt_to_the_exact_sum(keys) -> None:
    """Under Paillier the decrypted counts equal the plaintext sum exactly."""
    public_key, private_key = keys
    rng = np.random.default_rng(2)
    parts = [rng.normal(size=n) for n in (9, 25, 140)]
    test = rng.normal(size=(6, 5))
    replies = [count_reply(part, test) for part in parts]
    encoding = count_encoding(max_members=3, max_calibration_size=140)
    vectors = [encrypt_counts(public_key, r, encoding=encoding) for r in replies]
    decrypted = decrypt_counts(private_key, aggregate(vectors), test.shape)
    expected = add_counts(replies)
    np.testing.assert_array_equal(decrypted.greater, expected.greater)
    np.testing.assert_array_equal(decrypted.equal, expected.equal)
    np.testing.assert_array_equal(decrypted.sizes, expected.sizes)


def test_classifier_counts_match_its_p_values() -> None:
    """A member's counts reproduce its own plain p-values, Mondrian or not."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    y = np.where(X[:, 0] + rng.normal(size=300) > 0, "a", "b")
    for mondrian in (False, True):
        member = ConformalClassifier(
            LogisticRegression(), mondrian=mondrian, smoothing=False, random_state=0
        ).fit(X[:250], y[:250])
        greater, equal, sizes = member.predict_counts(X[250:])
        np.testing.assert_allclose(
            p_values_from_counts(greater, equal, sizes[None, :]),
            member.predict_p(X[250:]),
        )


def test_regressor_counts_match_its_p_values() -> None:
    """A regressor's counts over a grid reproduce its p-values."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 2))
    y = X[:, 0] + rng.normal(size=200)
    member = ConformalRegressor(random_state=0).fit(X[:150], y[:150])
    grid = np.linspace(-4, 4, 33)
    greater, equal, size = member.predict_counts(X[150:], grid)
    np.testing.assert_allclose(
        p_values_from_counts(greater, equal, size), member.predict_p(X[150:], grid)
    )


def test_pooled_counts_of_a_shared_score_are_exactly_valid() -> None:
    """Smoothed pooled p-values of exchangeable scores cover at the confidence."""
    rng = np.random.default_rng(5)
    covered = []
    for _ in range(4000):
        parts = [rng.normal(size=n) for n in (3, 4, 5)]
        test = rng.normal(size=(1, 1))
        counts = add_counts([count_reply(part, test) for part in parts])
        p_value = count_p_values(counts, tie_breaks=rng.random((1, 1)))[0, 0]
        covered.append(p_value > 0.2)
    # 12 scores: without smoothing coverage would be 11/13 = 0.846; exact is 0.8.
    assert abs(np.mean(covered) - 0.8) < 0.02


def test_count_reply_refuses_inconsistent_counts() -> None:
    """Counts above the calibration size are refused with a clear message."""
    with pytest.raises(ConformalError, match="more calibration scores than its size"):
        CountReply(np.array([[3]]), np.array([[2]]), np.array([4]))
    with pytest.raises(ConformalError, match="one size per column"):
        CountReply(np.zeros((2, 3)), np.zeros((2, 3)), np.array([4, 4]))


def test_add_counts_refuses_different_shapes() -> None:
    """Replies of different shapes cannot be added."""
    a = count_reply(np.arange(5.0), np.zeros((2, 3)))
    b = count_reply(np.arange(5.0), np.zeros((2, 2)))
    with pytest.raises(ConformalError, match="different shapes"):
        add_counts([a, b])
    with pytest.raises(ConformalError, match="no member replied"):
        add_counts([])


def test_columns_without_calibration_get_p_value_one() -> None:
    """A column nobody calibrated is never excluded, with a warning."""
    counts = CountReply(np.array([[0, 0]]), np.array([[0, 0]]), np.array([5, 0]))
    with pytest.warns(ConformalWarning, match="1 of 2 columns"):
        p_values = count_p_values(counts)
    np.testing.assert_allclose(p_values, [[1 / 6, 1.0]])
    empty = CountReply(np.array([[0]]), np.array([[0]]), np.array([0]))
    with pytest.raises(CalibrationSizeError, match="no member has a calibration"):
        count_p_values(empty)


def test_threshold_excludes_a_p_value_equal_to_one_minus_confidence() -> None:
    """A p-value of exactly 1 - confidence is excluded, as the quantile rule says."""
    from workbench.jobs.conformal import p_value_threshold

    assert p_value_threshold(0.9) == 0.1
    assert p_value_threshold(0.95) == 0.05
    calibration = np.arange(1.0, 20.0)  # 19 scores: (n + 1) * 0.1 = 2
    p_values = count_p_values(count_reply(calibration, np.array([[18.0, 18.5]])))
    np.testing.assert_allclose(p_values, [[0.15, 0.1]])
    assert (p_values > p_value_threshold(0.9)).tolist() == [[True, False]]
    with pytest.raises(ConformalError, match="strictly between 0 and 1"):
        p_value_threshold(1.0)


def test_intervals_from_sets_span_the_kept_candidates() -> None:
    """Intervals run between the excluded neighbours of the kept candidates."""
    from workbench.jobs.conformal import intervals_from_sets

    grid = np.arange(5.0)
    inside = np.array(
        [[False, True, True, False, False], [True, True, False, False, False]]
        + [[False] * 5]
    )
    intervals = intervals_from_sets(inside, grid)
    np.testing.assert_array_equal(intervals[:2], [[0.0, 3.0], [-np.inf, 2.0]])
    assert np.isnan(intervals[2]).all()
    with pytest.raises(ConformalError, match="one column per candidate"):
        intervals_from_sets(inside[:, :3], grid)
