"""Tests of aggregated conformal predictors over members in this process."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression

from workbench.crypto import generate_keypair
from workbench.errors import CalibrationSizeError, ConformalError
from workbench.jobs.conformal import (
    ConformalClassifier,
    ConformalRegressor,
    ConformalWarning,
    FederatedConformalClassifier,
    FederatedConformalRegressor,
    intervals_from_grid,
)

LABELS = np.array(["benign", "malignant"])


@pytest.fixture(scope="module")
def keys():
    """A 512-bit key pair, made once for the module."""
    return generate_keypair(512, allow_insecure=True)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=n, n_features=6, n_informative=4, flip_y=0.08, random_state=seed
    )
    return X, LABELS[y]


def _members(X, y, count=3, *, smoothing=True, seed=0) -> list[ConformalClassifier]:
    parts = np.array_split(np.arange(len(y)), count)
    return [
        ConformalClassifier(
            RandomForestClassifier(n_estimators=20, random_state=seed + i, n_jobs=1),
            smoothing=smoothing,
            classes=LABELS,
            random_state=seed + i,
        ).fit(X[part], y[part])
        for i, part in enumerate(parts)
    ]


@pytest.mark.parametrize("rule", ["mean", "weighted_mean", "twice_mean"])
def test_encrypted_query_equals_plaintext_query(keys, rule: str) -> None:
    """Combining under Paillier gives the plaintext combination, within 2e-6."""
    X, y = _data(400, 0)
    members = _members(X[:300], y[:300], smoothing=False)
    public_key, private_key = keys
    encrypted = FederatedConformalClassifier(
        members, rule=rule, public_key=public_key, private_key=private_key
    ).predict_p(X[300:320])
    plain = FederatedConformalClassifier(members, rule=rule, encrypted=False)
    np.testing.assert_allclose(encrypted, plain.predict_p(X[300:320]), atol=2e-6)


def test_federated_mean_coverage_is_at_least_nominal() -> None:
    """The mean rule covers at least the confidence, less two points, over seeds."""
    coverage = []
    for seed in range(4):
        X, y = _data(900, seed)
        members = _members(X[:600], y[:600], seed=seed)
        federated = FederatedConformalClassifier(members, encrypted=False)
        coverage.append(federated.evaluate(X[600:], y[600:], 0.8)["coverage"])
    assert np.mean(coverage) > 0.78


def test_failing_member_is_reported_and_others_combined() -> None:
    """A member that fails is left out, named in the report, and the rest combine."""
    X, y = _data(400, 1)
    members = _members(X[:300], y[:300], smoothing=False)
    broken = ConformalClassifier(
        RandomForestClassifier(n_estimators=5, random_state=0),
        classes=LABELS,
        smoothing=False,
        random_state=0,
    ).fit(X[:100, :3], y[:100])
    federated = FederatedConformalClassifier(
        {"a": members[0], "b": members[1], "broken": broken}, encrypted=False
    )
    combined = federated.predict_p(X[300:310])
    report = federated.last_report_
    assert report.answered == ["a", "b"]
    assert "broken" in report.failures and "features" in report.failures["broken"]
    expected = (members[0].predict_p(X[300:310]) + members[1].predict_p(X[300:310])) / 2
    np.testing.assert_allclose(combined, expected)


def test_every_member_failing_raises() -> None:
    """When no member answers, the query fails naming the failures."""
    X, y = _data(200, 2)
    members = _members(X, y, count=2)
    federated = FederatedConformalClassifier(members, encrypted=False)
    with pytest.raises(ConformalError, match="every member failed"):
        federated.predict_p(X[:5, :2])


def test_member_with_ten_rows_abstains_at_high_confidence() -> None:
    """A 10-row member abstains where its 3 calibration examples cannot reach."""
    X, y = _data(700, 3)
    members = _members(X[:600], y[:600], count=2, smoothing=False)
    tiny = ConformalClassifier(
        RandomForestClassifier(n_estimators=5, random_state=0),
        classes=LABELS,
        smoothing=False,
        random_state=0,
    ).fit(X[600:610], y[600:610])
    assert tiny.calibration_size_ == 3
    with_tiny = FederatedConformalClassifier(members + [tiny], encrypted=False)
    without = FederatedConformalClassifier(members, encrypted=False)
    sets = with_tiny.predict_set(X[610:], 0.9)
    assert with_tiny.last_report_.abstentions == {"member-3": 2}
    np.testing.assert_array_equal(sets, without.predict_set(X[610:], 0.9))
    low = with_tiny.predict_p(X[610:], confidence=0.7)
    assert with_tiny.last_report_.abstentions == {}
    assert low.shape == (90, 2)


def test_no_member_large_enough_raises_with_minimum() -> None:
    """If no member can reach the confidence, the error names the size needed."""
    X, y = _data(60, 4)
    members = _members(X, y, count=2)
    federated = FederatedConformalClassifier(members, encrypted=False)
    with pytest.raises(CalibrationSizeError, match="the 99 calibration examples"):
        federated.predict_set(X[:3], confidence=0.99)


def test_twice_mean_needs_twice_the_calibration() -> None:
    """Members abstain under twice_mean where the mean rule still lets them speak."""
    X, y = _data(120, 5)
    members = _members(X, y, count=3)
    assert {m.calibration_size_ for m in members} == {12}
    FederatedConformalClassifier(members, encrypted=False).predict_set(X[:3], 0.9)
    twice = FederatedConformalClassifier(members, rule="twice_mean", encrypted=False)
    with pytest.raises(CalibrationSizeError, match="the 19 calibration examples"):
        twice.predict_set(X[:3], 0.9)


def test_mondrian_member_missing_a_class_abstains_on_it() -> None:
    """A Mondrian member without calibration examples of a class abstains on it."""
    X, y = _data(600, 6)
    members = [
        ConformalClassifier(
            RandomForestClassifier(n_estimators=10, random_state=i),
            mondrian=True,
            classes=LABELS,
            smoothing=False,
            random_state=i,
        ).fit(X[i * 200 : i * 200 + 200], y[i * 200 : i * 200 + 200])
        for i in range(2)
    ]
    keep = y[400:500] == "benign"
    with pytest.warns(ConformalWarning, match="malignant"):
        members[1].calibrate(X[400:500][keep], y[400:500][keep])
    federated = FederatedConformalClassifier(members, encrypted=False)
    combined = federated.predict_p(X[500:], confidence=0.9)
    assert federated.last_report_.abstentions == {"member-2": 1}
    np.testing.assert_allclose(combined[:, 1], members[0].predict_p(X[500:])[:, 1])


def test_median_refuses_encryption_and_classes_must_agree() -> None:
    """median needs encrypted=False; members must share their classes."""
    X, y = _data(200, 7)
    members = _members(X, y, count=2)
    with pytest.raises(ConformalError, match="discloses each member's p-values"):
        FederatedConformalClassifier(members, rule="median")
    other = ConformalClassifier(random_state=0).fit(X, np.where(y == "benign", 0, 1))
    with pytest.raises(ConformalError, match="disagree on the classes"):
        FederatedConformalClassifier(members + [other], encrypted=False)


def test_string_labels_in_federated_evaluate() -> None:
    """evaluate reports coverage under the members' string labels."""
    X, y = _data(500, 8)
    federated = FederatedConformalClassifier(
        _members(X[:400], y[:400]), rule="median", encrypted=False
    )
    result = federated.evaluate(X[400:], y[400:], confidence=0.8)
    assert set(result["coverage_per_class"]) == {"benign", "malignant"}
    with pytest.raises(ConformalError, match="strictly between 0 and 1"):
        federated.evaluate(X[400:], y[400:], confidence=0.0)


def test_intervals_from_grid_widen_to_excluded_neighbours() -> None:
    """Intervals span the included candidates plus one step; edges are open."""
    grid = np.arange(10.0)
    p = np.array(
        [
            [0, 0, 0.5, 0.6, 0.5, 0, 0, 0, 0, 0],
            [0.5, 0.5, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    intervals = intervals_from_grid(p, grid, 0.8)
    np.testing.assert_array_equal(intervals[0], [1, 5])
    np.testing.assert_array_equal(intervals[1], [-np.inf, 2])
    assert np.isnan(intervals[2]).all()


def test_federated_regression_covers(keys) -> None:
    """The grid rule covers at least the confidence, and encrypted equals plain."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(900, 3))
    y = X @ np.array([2.0, -1.0, 0.5]) + rng.normal(size=900)
    parts = np.array_split(np.arange(700), 3)
    members = [
        ConformalRegressor(LinearRegression(), random_state=i).fit(X[p], y[p])
        for i, p in enumerate(parts)
    ]
    grid = np.linspace(-15, 15, 301)
    plain = FederatedConformalRegressor(members, candidates=grid, encrypted=False)
    result = plain.evaluate(X[700:], y[700:], confidence=0.8)
    assert result["coverage"] >= 0.77
    public_key, private_key = keys
    encrypted = FederatedConformalRegressor(
        members, candidates=grid, public_key=public_key, private_key=private_key
    )
    np.testing.assert_allclose(
        encrypted.predict_p(X[700:705]), plain.predict_p(X[700:705]), atol=2e-6
    )


def test_regression_grid_too_narrow_warns() -> None:
    """Intervals that reach the edge of the grid are open there, with a warning."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 2))
    y = 10 * X[:, 0] + rng.normal(size=200)
    members = [ConformalRegressor(LinearRegression(), random_state=0).fit(X, y)]
    federated = FederatedConformalRegressor(
        members, candidates=np.linspace(-1, 1, 21), encrypted=False
    )
    with pytest.warns(ConformalWarning, match="edge of the grid"):
        intervals = federated.predict_int(X[:20], 0.9)
    assert np.isinf(intervals).any()


def test_predict_set_excludes_p_value_equal_to_one_minus_confidence() -> None:
    """A p-value of exactly 0.1 is excluded at confidence 0.9 (not kept by 1 - 0.9)."""
    X, y = _data(200, 3)
    member = ConformalClassifier(
        RandomForestClassifier(n_estimators=10, random_state=0, n_jobs=1),
        smoothing=False,
        classes=LABELS,
        random_state=0,
    ).fit(X[:30], y[:30])
    assert member.calibration_size_ == 9
    federated = FederatedConformalClassifier([member], rule="median", encrypted=False)
    p_values = federated.predict_p(X[30:])
    sets = federated.predict_set(X[30:], confidence=0.9)
    at_threshold = p_values == 0.1
    assert at_threshold.any()
    assert not sets[at_threshold].any()
    np.testing.assert_array_equal(sets[~at_threshold], p_values[~at_threshold] > 0.1)


def test_intervals_from_grid_exclude_p_value_equal_to_one_minus_confidence() -> None:
    """Candidates whose p-value is exactly 1 - confidence fall outside the interval."""
    grid = np.arange(6.0)
    p = np.array([[0.0, 0.1, 0.3, 0.2, 0.1, 0.0]])
    np.testing.assert_array_equal(intervals_from_grid(p, grid, 0.9)[0], [1, 4])
