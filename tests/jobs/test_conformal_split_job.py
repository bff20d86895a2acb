"""Tests of the split conformal predictor made from a pooled histogram."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from workbench.errors import CalibrationSizeError, ConformalError
from workbench.jobs.conformal import (
    FederatedSplitConformal,
    SplitConformalPredictor,
    p_value_threshold,
)
from workbench.jobs.split_conformal import calibration_histogram


def _setting(seed: int, n: int = 1200) -> tuple[LogisticRegression, list, tuple]:
    X, y = make_classification(
        n_samples=n, n_features=5, n_informative=3, flip_y=0.1, random_state=seed
    )
    model = LogisticRegression().fit(X[:400], y[:400])
    members = [(X[400:520], y[400:520]), (X[520:600], y[520:600])]
    return model, members, (X[600:], y[600:])


def _pooled(  # type: ignore[no-untyped-def]
    model, members, *, bins: int, mondrian: bool
) -> np.ndarray:
    return np.sum(
        [
            calibration_histogram(
                model, X, y, classes=[0, 1], bins=bins, mondrian=mondrian
            )
            for X, y in members
        ],
        axis=0,
    )


def test_threshold_equals_the_library_on_the_pooled_rows() -> None:
    """Without Mondrian the threshold is FederatedSplitConformal's on all members."""
    model, members, (X_test, _) = _setting(0)

    predictor = SplitConformalPredictor(
        model,
        _pooled(model, members, bins=300, mondrian=False),
        classes=[0, 1],
        bins=300,
    )

    library = FederatedSplitConformal(model, bins=300, encrypted=False)
    library.calibrate(members)
    assert predictor.calibration_size_ == 200
    for level in (0.7, 0.9, 0.95):
        assert predictor.threshold(level).tolist() == [library.threshold(level)] * 2
    np.testing.assert_array_equal(
        predictor.predict_set(X_test, 0.9), library.predict_set(X_test, 0.9)
    )


def test_predict_set_is_the_p_values_above_one_minus_confidence() -> None:
    """Sets from p-values above 1 - c equal predict_set, Mondrian or not."""
    model, members, (X_test, _) = _setting(1)
    for mondrian in (False, True):
        counts = _pooled(model, members, bins=400, mondrian=mondrian)
        predictor = SplitConformalPredictor(
            model, counts, classes=[0, 1], bins=400, mondrian=mondrian
        )
        p_values = predictor.predict_p(X_test)
        assert p_values.min() > 0.0 and p_values.max() <= 1.0
        for level in (0.8, 0.9):
            np.testing.assert_array_equal(
                p_values > p_value_threshold(level),
                predictor.predict_set(X_test, level),
            )


def test_mondrian_covers_each_class_near_the_confidence() -> None:
    """Over 20 seeds the coverage of each class is within 2 points of 0.8."""
    coverage: dict[int, list[float]] = {0: [], 1: []}
    for seed in range(20):
        model, members, (X_test, y_test) = _setting(seed, n=1600)
        predictor = SplitConformalPredictor(
            model,
            _pooled(model, members, bins=1000, mondrian=True),
            classes=[0, 1],
            bins=1000,
            mondrian=True,
        )
        result = predictor.evaluate(X_test, y_test, confidence=0.8)
        for label in (0, 1):
            coverage[label].append(result["coverage_per_class"][label])
    for label in (0, 1):
        assert abs(np.mean(coverage[label]) - 0.8) < 0.02, label


def test_small_class_raises_naming_it() -> None:
    """Under Mondrian a class with too few scores raises CalibrationSizeError."""
    model, members, _ = _setting(2)
    X, y = members[0]
    keep = np.flatnonzero(y == 1)[:5].tolist() + np.flatnonzero(y == 0).tolist()
    counts = calibration_histogram(
        model, X[keep], y[keep], classes=[0, 1], bins=50, mondrian=True
    )
    predictor = SplitConformalPredictor(
        model, counts, classes=[0, 1], bins=50, mondrian=True
    )

    assert predictor.class_sizes_[1] == 5
    with pytest.raises(CalibrationSizeError, match=r"class 1: confidence 0.9 needs"):
        predictor.predict_set(X[:3], confidence=0.9)
    assert predictor.predict_set(X[:3], confidence=0.8).shape == (3, 2)


def test_histogram_of_the_wrong_length_is_refused() -> None:
    """Counts that do not match bins and Mondrian raise ConformalError."""
    model, members, _ = _setting(3)
    counts = _pooled(model, members, bins=10, mondrian=False)
    with pytest.raises(ConformalError, match="must hold 22 non-negative counts"):
        SplitConformalPredictor(model, counts, classes=[0, 1], bins=10, mondrian=True)


def test_dataframe_queries_go_by_column_name() -> None:
    """Reordered DataFrame columns give the same sets; wrong ones are refused."""
    import pandas as pd

    X, y = make_classification(n_samples=300, n_features=4, random_state=5)
    frame = pd.DataFrame(X, columns=["w", "x", "y", "z"])
    model = LogisticRegression().fit(frame, y)
    counts = np.ones(101, dtype=np.int64) * 3
    predictor = SplitConformalPredictor(model, counts, classes=[0, 1], bins=100)
    np.testing.assert_array_equal(
        predictor.predict_set(frame.iloc[:20, ::-1], confidence=0.9),
        predictor.predict_set(frame.iloc[:20], confidence=0.9),
    )
    with pytest.raises(ConformalError, match=r"missing \['z'\], not features \['v'\]"):
        predictor.predict_p(frame.rename(columns={"z": "v"}))
