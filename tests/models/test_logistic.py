"""Tests of the logistic loss derivatives and the Newton step."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from workbench.errors import JobSpecError
from workbench.models.logistic import (
    hessian_size,
    logistic_derivatives,
    newton_step,
    pack_hessian,
    unpack_hessian,
)


def _loss(parameters, X, y):  # type: ignore[no-untyped-def]
    margin = X @ parameters[:-1] + parameters[-1]
    return float(np.mean(np.logaddexp(0.0, margin) - y * margin))


def test_derivatives_match_finite_differences() -> None:
    """The gradient and Hessian are those of the mean logistic loss."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = (rng.random(50) < 0.4).astype(float)
    at = rng.normal(size=4)
    gradient, hessian = logistic_derivatives(at, X, y)
    eps = 1e-6
    numeric = np.array(
        [
            (_loss(at + eps * e, X, y) - _loss(at - eps * e, X, y)) / (2 * eps)
            for e in np.eye(4)
        ]
    )
    np.testing.assert_allclose(gradient, numeric, atol=1e-7)
    numeric_hessian = np.array(
        [
            (
                logistic_derivatives(at + eps * e, X, y)[0]
                - logistic_derivatives(at - eps * e, X, y)[0]
            )
            / (2 * eps)
            for e in np.eye(4)
        ]
    )
    np.testing.assert_allclose(hessian, numeric_hessian, atol=1e-7)


def test_hessian_packing_round_trips() -> None:
    """The upper triangle holds the whole symmetric matrix."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 5))
    matrix = a + a.T
    packed = pack_hessian(matrix)
    assert len(packed) == hessian_size(5) == 15
    np.testing.assert_array_equal(unpack_hessian(packed, 5), matrix)
    with pytest.raises(JobSpecError, match="needs 15 values, got 14"):
        unpack_hessian(packed[:-1], 5)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_newton_steps_reach_sklearn(fit_intercept: bool) -> None:
    """Repeated steps minimize LogisticRegression's penalized objective."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(80, 3))
    y = (X @ np.array([1.0, -1.0, 0.5]) + 0.4 + rng.normal(size=80) > 0).astype(float)
    parameters = np.zeros(3 + int(fit_intercept))
    for _ in range(8):
        gradient, hessian = logistic_derivatives(
            parameters, X, y, fit_intercept=fit_intercept
        )
        parameters = newton_step(
            parameters,
            gradient,
            hessian,
            C=2.0,
            n_samples=80,
            fit_intercept=fit_intercept,
        )
    fitted = LogisticRegression(C=2.0, tol=1e-10, fit_intercept=fit_intercept)
    fitted.fit(X, y)
    np.testing.assert_allclose(parameters[:3], fitted.coef_.ravel(), atol=1e-5)
    if fit_intercept:
        assert parameters[3] == pytest.approx(fitted.intercept_[0], abs=1e-5)


def test_newton_step_needs_rows() -> None:
    """A step without the pooled row count is refused."""
    with pytest.raises(JobSpecError, match="pooled row count, got 0"):
        newton_step(np.zeros(2), np.zeros(2), np.eye(2), C=1.0, n_samples=0)
