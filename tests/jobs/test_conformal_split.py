"""Tests of federated split conformal prediction with encrypted histograms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LinearRegression, LogisticRegression

from workbench.crypto import generate_keypair
from workbench.errors import CalibrationSizeError, ConformalError
from workbench.jobs.conformal import FederatedSplitConformal, MeanEnsemble


@pytest.fixture(scope="module")
def keys():
    """A 512-bit key pair, made once for the module."""
    return generate_keypair(512, allow_insecure=True)


def _regression(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, X @ np.array([1.5, -1.0, 0.5]) + rng.normal(size=n)


def test_encrypted_histogram_is_exact(keys) -> None:
    """The decrypted sum of encrypted histograms equals the sum of the counts."""
    X, y = _regression(700, 0)
    model = LinearRegression().fit(X[:200], y[:200])
    parts = [(X[200:230], y[200:230]), (X[230:500], y[230:500]), (X[500:], y[500:])]
    public_key, private_key = keys
    encrypted = FederatedSplitConformal(
        model,
        task="regression",
        bins=50,
        score_max=4.0,
        public_key=public_key,
        private_key=private_key,
    ).calibrate(parts)
    plain = FederatedSplitConformal(
        model, task="regression", bins=50, score_max=4.0, encrypted=False
    )
    expected = sum(plain.histogram(Xp, yp) for Xp, yp in parts)
    np.testing.assert_array_equal(encrypted.counts_, expected)
    assert encrypted.calibration_size_ == 500


def test_threshold_is_the_bin_edge_above_the_exact_quantile() -> None:
    """The threshold lies within one bin width above the exact conformal quantile."""
    X, y = _regression(800, 1)
    model = LinearRegression().fit(X[:300], y[:300])
    split = FederatedSplitConformal(
        model, task="regression", bins=400, score_max=5.0, encrypted=False
    )
    split.calibrate([(X[300:550], y[300:550]), (X[550:], y[550:])])
    residuals = np.sort(np.abs(y[300:] - model.predict(X[300:])))
    n = residuals.size
    exact = residuals[math.ceil((n + 1) * 0.9) - 1]
    assert exact <= split.threshold(0.9) <= exact + 5.0 / 400


def test_overflow_bin_gives_infinite_threshold() -> None:
    """When the quantile lies above score_max every interval is unbounded."""
    X, y = _regression(300, 2)
    model = LinearRegression().fit(X[:100], y[:100])
    split = FederatedSplitConformal(
        model, task="regression", bins=10, score_max=0.2, encrypted=False
    ).calibrate([(X[100:], y[100:])])
    assert split.threshold(0.9) == math.inf


def test_split_classification_coverage_and_sizes() -> None:
    """Split conformal sets of a shared classifier cover near the confidence."""
    coverage = []
    for seed in range(5):
        X, y = make_classification(
            n_samples=1500, n_features=6, flip_y=0.1, random_state=seed
        )
        labels = np.array(["no", "yes"])[y]
        model = LogisticRegression().fit(X[:500], labels[:500])
        split = FederatedSplitConformal(model, encrypted=False).calibrate(
            [(X[500:700], labels[500:700]), (X[700:1000], labels[700:1000])]
        )
        result = split.evaluate(X[1000:], labels[1000:], 0.8)
        coverage.append(result["coverage"])
    assert 0.78 < np.mean(coverage) < 0.83


def test_ensemble_of_members_is_calibrated_by_histograms(keys) -> None:
    """Averaging members' models and calibrating on all members covers."""
    X, y = _regression(1200, 3)
    models = [
        LinearRegression().fit(X[i * 150 : i * 150 + 150], y[i * 150 : i * 150 + 150])
        for i in range(3)
    ]
    public_key, private_key = keys
    split = FederatedSplitConformal(
        MeanEnsemble(models),
        task="regression",
        bins=200,
        score_max=6.0,
        public_key=public_key,
        private_key=private_key,
    ).calibrate([(X[450:600], y[450:600]), (X[600:800], y[600:800])])
    result = split.evaluate(X[800:], y[800:], 0.9)
    assert result["coverage"] >= 0.87
    ensemble = MeanEnsemble(models).predict(X[:5])
    np.testing.assert_allclose(
        ensemble, np.mean([m.predict(X[:5]) for m in models], axis=0)
    )


def test_too_few_scores_raise_with_minimum() -> None:
    """Fewer calibration scores than the confidence needs raise naming both."""
    X, y = _regression(100, 4)
    model = LinearRegression().fit(X[:50], y[:50])
    split = FederatedSplitConformal(
        model, task="regression", score_max=5.0, encrypted=False
    ).calibrate([(X[50:60], y[50:60])])
    with pytest.raises(CalibrationSizeError, match="at least 19 .* have 10 in all"):
        split.predict_int(X[:2], confidence=0.95)


def test_regression_needs_score_max_and_valid_bins() -> None:
    """Regression without score_max, or bins that are not positive, are refused."""
    model = LinearRegression()
    with pytest.raises(ConformalError, match="needs score_max"):
        FederatedSplitConformal(model, task="regression")
    with pytest.raises(ConformalError, match="bins must be a positive integer"):
        FederatedSplitConformal(model, task="regression", score_max=1.0, bins=0)
    with pytest.raises(ConformalError, match="task must be one of"):
        FederatedSplitConformal(model, task="ranking")


def _heteroscedastic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, 2))
    noise = rng.normal(size=n) * (0.2 + np.abs(X[:, 0]))
    return X, X @ np.array([1.0, 0.5]) + noise


def test_normalized_intervals_scale_with_the_members_spread() -> None:
    """With a difficulty offset, half-widths are the threshold times spread + offset."""
    X, y = _heteroscedastic(900, 5)
    models = [LinearRegression().fit(X[i : i + 30], y[i : i + 30]) for i in (0, 30, 60)]
    ensemble = MeanEnsemble(models)
    np.testing.assert_allclose(
        ensemble.predict_spread(X[:4]),
        np.std([m.predict(X[:4]) for m in models], axis=0),
    )
    split = FederatedSplitConformal(
        ensemble,
        task="regression",
        bins=2000,
        score_max=50.0,
        encrypted=False,
        difficulty_offset=0.3,
    ).calibrate([(X[100:400], y[100:400]), (X[400:600], y[400:600])])
    intervals = split.predict_int(X[600:], 0.9)
    half_widths = (intervals[:, 1] - intervals[:, 0]) / 2
    expected = split.threshold(0.9) * (ensemble.predict_spread(X[600:]) + 0.3)
    np.testing.assert_allclose(half_widths, expected)
    assert np.ptp(half_widths) > 0.1


def test_summed_counts_of_normalized_scores_cover_at_the_confidence() -> None:
    """Exact pooled counts of a shared normalized score cover within two points."""
    from workbench.jobs.conformal import add_counts, count_p_values, count_reply

    grid = np.linspace(-12, 12, 241)
    covered = []
    for seed in range(20):
        X, y = _heteroscedastic(700, 100 + seed)
        models = [LinearRegression().fit(X[i : i + 40], y[i : i + 40]) for i in (0, 40)]
        split = FederatedSplitConformal(
            MeanEnsemble(models),
            task="regression",
            score_max=100.0,
            encrypted=False,
            difficulty_offset=0.2,
        )
        scores = split.test_scores(X[300:], grid)
        replies = [
            count_reply(split.scores(X[a:b], y[a:b]), scores)
            for a, b in ((80, 180), (180, 300))
        ]
        inside = count_p_values(add_counts(replies)) > 0.1
        nearest = np.abs(grid[None, :] - y[300:, None]).argmin(axis=1)
        covered.append(inside[np.arange(nearest.size), nearest].mean())
    assert abs(np.mean(covered) - 0.9) < 0.02


def test_difficulty_offset_is_checked() -> None:
    """A difficulty offset needs regression, a positive value and a spread."""
    model = LinearRegression()
    with pytest.raises(ConformalError, match="this predictor classifies"):
        FederatedSplitConformal(
            MeanEnsemble([model], classes=[0, 1]), difficulty_offset=1.0
        )
    with pytest.raises(ConformalError, match="positive finite number; received -1"):
        FederatedSplitConformal(
            MeanEnsemble([model]),
            task="regression",
            score_max=1.0,
            difficulty_offset=-1.0,
        )
    with pytest.raises(ConformalError, match="LinearRegression has none"):
        FederatedSplitConformal(
            model, task="regression", score_max=1.0, difficulty_offset=1.0
        )
    split = FederatedSplitConformal(model, task="regression", score_max=1.0)
    with pytest.raises(ConformalError, match="need the grid of candidate"):
        split.test_scores(np.zeros((1, 2)))
