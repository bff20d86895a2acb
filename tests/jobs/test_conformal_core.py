"""Tests of one member's inductive conformal predictors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression

from workbench.errors import CalibrationSizeError, ConformalError
from workbench.jobs.conformal import (
    ConformalClassifier,
    ConformalRegressor,
    ConformalWarning,
    check_confidence,
    conformal_p_values,
    minimum_calibration_size,
)

LABELS = np.array(["inactive", "active", "toxic"])


def _data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=n,
        n_features=8,
        n_informative=5,
        n_classes=3,
        random_state=seed,
    )
    return X, LABELS[y]


def _forest(seed: int = 0) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=20, random_state=seed, n_jobs=1)


@pytest.mark.parametrize("value", [0, 1, -0.1, 1.5, float("nan"), True, "0.9", None])
def test_confidence_outside_unit_interval_is_refused(value: object) -> None:
    """A confidence that is not a number strictly inside (0, 1) is refused."""
    with pytest.raises(ConformalError, match="strictly between 0 and 1"):
        check_confidence(value)


def test_predict_set_refuses_bad_confidence() -> None:
    """predict_set names the bad confidence it received."""
    X, y = _data(200)
    model = ConformalClassifier(_forest(), random_state=0).fit(X, y)
    with pytest.raises(ConformalError, match="received 1.2"):
        model.predict_set(X[:3], confidence=1.2)


@pytest.mark.parametrize(
    ("confidence", "size"), [(0.8, 4), (0.9, 9), (0.95, 19), (0.99, 99)]
)
def test_minimum_calibration_size_gives_one_over_n_plus_one(
    confidence: float, size: int
) -> None:
    """The minimum size is the smallest n with 1 / (n + 1) <= 1 - confidence."""
    assert minimum_calibration_size(confidence) == size
    assert 1 / (size + 1) <= 1 - confidence + 1e-12
    assert 1 / size > 1 - confidence


def test_p_values_count_greater_and_equal_scores() -> None:
    """Plain p-values count ties fully; smoothed ones weigh them by the draw."""
    calibration = np.array([0.1, 0.2, 0.2, 0.5])
    plain = conformal_p_values(calibration, np.array([0.2, 0.6, 0.0]))
    np.testing.assert_allclose(plain, [4 / 5, 1 / 5, 5 / 5])
    smoothed = conformal_p_values(
        calibration, np.array([0.2]), tie_breaks=np.array([0.5])
    )
    np.testing.assert_allclose(smoothed, [(1 + 0.5 * 3) / 5])


def test_smoothed_p_values_are_uniform_under_exchangeability() -> None:
    """With exchangeable scores full of ties, smoothed p-values are uniform."""
    rng = np.random.default_rng(1)
    values = rng.choice([0.0, 0.1, 0.7], size=(4000, 31), p=[0.7, 0.2, 0.1])
    p = np.array(
        [
            conformal_p_values(row[:30], row[30:], tie_breaks=rng.random(1))[0]
            for row in values
        ]
    )
    for epsilon in (0.1, 0.2, 0.5):
        assert abs((p <= epsilon).mean() - epsilon) < 0.025


def test_all_tied_scores_give_p_value_one_without_smoothing() -> None:
    """When every score ties, plain p-values are 1 and smoothed ones are uniform."""
    X, y = _data(300)
    constant = DummyClassifier(strategy="prior")
    plain = ConformalClassifier(
        constant, mondrian=True, smoothing=False, random_state=0
    ).fit(X, y)
    np.testing.assert_array_equal(plain.predict_p(X[:50]), 1.0)
    smoothed = ConformalClassifier(constant, mondrian=True, random_state=0).fit(X, y)
    p = smoothed.predict_p(X)
    assert 0.4 < p.mean() < 0.6
    assert p.min() < 0.05


def test_string_labels_keep_their_names_and_order() -> None:
    """Labels that are strings come back sorted as classes_ and in evaluate."""
    X, y = _data(300)
    model = ConformalClassifier(_forest(), random_state=0).fit(X, y)
    assert model.classes_.tolist() == ["active", "inactive", "toxic"]
    result = model.evaluate(X[:100], y[:100], confidence=0.8)
    assert set(result["coverage_per_class"]) == {"active", "inactive", "toxic"}


def test_coverage_is_close_to_nominal_over_splits() -> None:
    """Mean coverage over seeded splits lies within two points of the confidence."""
    coverage = []
    for seed in range(8):
        X, y = _data(700, seed)
        model = ConformalClassifier(_forest(seed), random_state=seed).fit(
            X[:500], y[:500]
        )
        coverage.append(model.evaluate(X[500:], y[500:], 0.8)["coverage"])
    assert abs(np.mean(coverage) - 0.8) < 0.02


def test_evaluate_reports_sizes_and_rates() -> None:
    """evaluate returns error rate, size, singleton and empty rates consistently."""
    X, y = _data(500)
    model = ConformalClassifier(_forest(), random_state=0).fit(X[:400], y[:400])
    result = model.evaluate(X[400:], y[400:], confidence=0.9)
    sets = (
        ConformalClassifier(_forest(), random_state=0)
        .fit(X[:400], y[:400])
        .predict_set(X[400:], 0.9)
    )
    assert result["size"] == pytest.approx(sets.sum(axis=1).mean())
    assert result["error_rate"] == pytest.approx(1 - result["coverage"])
    assert result["singleton_rate"] == pytest.approx((sets.sum(axis=1) == 1).mean())
    assert result["empty_rate"] == pytest.approx((sets.sum(axis=1) == 0).mean())


def test_mondrian_gives_class_conditional_coverage() -> None:
    """A Mondrian predictor covers each class near the confidence."""
    per_class = []
    for seed in range(6):
        X, y = _data(900, seed)
        model = ConformalClassifier(_forest(seed), mondrian=True, random_state=seed)
        model.fit(X[:600], y[:600])
        per_class.append(
            list(model.evaluate(X[600:], y[600:], 0.8)["coverage_per_class"].values())
        )
    assert np.all(np.abs(np.mean(per_class, axis=0) - 0.8) < 0.05)


def test_class_missing_from_mondrian_calibration_has_p_value_one() -> None:
    """A class without calibration examples warns and is never excluded."""
    X, y = _data(300)
    model = ConformalClassifier(_forest(), mondrian=True, random_state=0)
    model.fit(X[:200], y[:200])
    keep = y[200:] != "toxic"
    with pytest.warns(ConformalWarning, match="no calibration example of class toxic"):
        model.calibrate(X[200:][keep], y[200:][keep])
    column = model.classes_.tolist().index("toxic")
    np.testing.assert_array_equal(model.predict_p(X[:20])[:, column], 1.0)


def test_class_missing_from_training_data_still_gets_p_values() -> None:
    """A member whose data lack a class reports low p-values for it."""
    X, y = _data(400)
    keep = y != "toxic"
    model = ConformalClassifier(_forest(), classes=LABELS, random_state=0)
    model.fit(X[keep], y[keep])
    p = model.predict_p(X[~keep][:30])
    assert p.shape == (30, 3)
    assert p[:, model.classes_.tolist().index("toxic")].max() < 0.2


def test_calibration_too_small_names_minimum_size() -> None:
    """A calibration set too small for the confidence raises with the minimum."""
    X, y = _data(40)
    model = ConformalClassifier(_forest(), calibration_size=0.2, random_state=0)
    model.fit(X, y)
    assert model.calibration_size_ == 8
    with pytest.raises(CalibrationSizeError, match="at least 19 calibration"):
        model.predict_set(X[:5], confidence=0.95)
    assert model.predict_set(X[:5], confidence=0.8).shape == (5, 3)


def test_mondrian_small_class_names_the_class() -> None:
    """Under Mondrian the check names the class with too few examples."""
    X, y = _data(300)
    model = ConformalClassifier(_forest(), mondrian=True, random_state=0)
    model.fit(X[:250], y[:250])
    small = np.concatenate([np.flatnonzero(y[250:] != "toxic"), [0]])
    idx = np.flatnonzero(y == "toxic")[:3]
    X_cal = np.concatenate([X[250:][small[:-1]], X[idx]])
    y_cal = np.concatenate([y[250:][small[:-1]], y[idx]])
    model.calibrate(X_cal, y_cal)
    with pytest.raises(CalibrationSizeError, match="class 'toxic'.* has 3"):
        model.predict_set(X[:5], confidence=0.9)


def test_member_with_ten_rows_can_fit_and_predict() -> None:
    """Ten rows give 3 calibration examples: p-values, and sets at low confidence."""
    X, y = _data(10, seed=3)
    model = ConformalClassifier(_forest(), classes=LABELS, random_state=0).fit(X, y)
    assert model.calibration_size_ == 3
    assert model.predict_p(X).shape == (10, 3)
    assert model.predict_set(X, confidence=0.7).shape == (10, 3)
    with pytest.raises(CalibrationSizeError, match="at least 9"):
        model.predict_set(X, confidence=0.9)


def test_unknown_label_is_refused() -> None:
    """Evaluating on a label outside classes_ raises naming it."""
    X, y = _data(200)
    model = ConformalClassifier(_forest(), random_state=0).fit(X, y)
    with pytest.raises(ConformalError, match="label 'unknown'"):
        model.evaluate(X[:2], np.array(["active", "unknown"]))


def test_unknown_score_is_refused() -> None:
    """An unknown nonconformity measure is refused at construction."""
    with pytest.raises(ConformalError, match="score must be one of"):
        ConformalClassifier(score="entropy")


def test_margin_score_is_valid() -> None:
    """The margin score also gives near-nominal coverage."""
    X, y = _data(1200, seed=5)
    model = ConformalClassifier(_forest(), score="margin", random_state=0)
    model.fit(X[:700], y[:700])
    assert abs(model.evaluate(X[700:], y[700:], 0.8)["coverage"] - 0.8) < 0.05


def test_smoothing_is_reproducible_with_a_seed() -> None:
    """Two predictors with the same seed give the same smoothed p-values."""
    X, y = _data(300)
    first = ConformalClassifier(_forest(), random_state=7).fit(X, y)
    second = ConformalClassifier(_forest(), random_state=7).fit(X, y)
    np.testing.assert_array_equal(first.predict_p(X[:20]), second.predict_p(X[:20]))


def test_regressor_interval_uses_the_conformal_rank() -> None:
    """The half-width is the ceil((n + 1) c)-th smallest calibration residual."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=400)
    model = ConformalRegressor(LinearRegression(), random_state=0).fit(X, y)
    n = model.calibration_size_
    rank = math.ceil((n + 1) * 0.9)
    intervals = model.predict_int(X[:5], confidence=0.9)
    np.testing.assert_allclose(
        intervals[:, 1] - intervals[:, 0], 2 * model.residuals_[rank - 1]
    )


def test_regressor_coverage_and_p_values_agree() -> None:
    """Coverage is near nominal, and the p-value is above 1 - c inside the interval."""
    coverage = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(600, 3))
        y = X.sum(axis=1) + rng.standard_t(4, size=600)
        model = ConformalRegressor(LinearRegression(), random_state=seed)
        model.fit(X[:400], y[:400])
        coverage.append(model.evaluate(X[400:], y[400:], 0.8)["coverage"])
    assert abs(np.mean(coverage) - 0.8) < 0.03
    interval = model.predict_int(X[:1], 0.8)[0]
    inside = model.predict_p(X[:1], [np.mean(interval)])[0, 0]
    outside = model.predict_p(X[:1], [interval[1] + 1.0])[0, 0]
    assert inside > 0.2 >= outside


def test_regressor_too_small_calibration_raises() -> None:
    """Four calibration residuals cannot support 90% intervals."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 2))
    model = ConformalRegressor(LinearRegression(), random_state=0).fit(X, X[:, 0])
    with pytest.raises(CalibrationSizeError, match="at least 9 calibration"):
        model.predict_int(X, confidence=0.9)


def test_predicting_before_fitting_raises() -> None:
    """An uncalibrated predictor says what to call first."""
    with pytest.raises(ConformalError, match="call fit"):
        ConformalClassifier().predict_p(np.zeros((1, 2)))
    with pytest.raises(ConformalError, match="call fit"):
        ConformalRegressor().predict_int(np.zeros((1, 2)))


def test_evaluate_intervals_keeps_unbounded_widths_infinite():
    """An unbounded interval has an infinite width and an empty one width 0."""
    import warnings

    from workbench.jobs._conformal_core import evaluate_intervals

    intervals = np.array([[0.0, 2.0], [-np.inf, np.inf], [np.nan, np.nan], [1.0, 5.0]])
    truth = np.array([1.0, 3.0, 0.0, 6.0])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate_intervals(intervals, truth)

    assert result["coverage"] == 0.5
    assert result["mean_width"] == np.inf
    assert result["median_width"] == 3.0
