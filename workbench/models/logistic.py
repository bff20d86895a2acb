"""Derivatives of the L2-penalized logistic loss, for federated Newton steps.

The parameters are laid out as the adapters lay them out: the coefficients, then
the intercept (absent without one). A member evaluates the mean gradient and mean
Hessian of the logistic loss over its rows; the row-weighted means over members are
those of the pooled rows, and :func:`newton_step` adds the penalty of the pooled
objective of :class:`sklearn.linear_model.LogisticRegression`,

.. math:: \\frac{1}{N} \\sum_i \\ell(y_i, x_i^\\top w + b)
          + \\frac{1}{2 C N} \\lVert w \\rVert^2,

which is its objective divided by ``C * N``: both have the same minimum.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from workbench.errors import JobSpecError

__all__ = [
    "hessian_size",
    "logistic_derivatives",
    "newton_step",
    "pack_hessian",
    "unpack_hessian",
]


def _design(X: NDArray[np.float64], fit_intercept: bool) -> NDArray[np.float64]:
    X = np.asarray(X, dtype=float)
    if fit_intercept:
        return np.hstack([X, np.ones((X.shape[0], 1))])
    return X


def logistic_derivatives(
    parameters: NDArray[np.float64],
    X: NDArray[np.float64],
    y: NDArray[np.float64],
    *,
    fit_intercept: bool = True,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean gradient and mean Hessian of the logistic loss over the rows.

    Parameters
    ----------
    parameters : numpy.ndarray of shape (n_features + fit_intercept,)
        Coefficients, then the intercept.
    X : numpy.ndarray of shape (n_samples, n_features)
    y : numpy.ndarray of shape (n_samples,)
        Labels 0 and 1 (1 is the second class).
    fit_intercept : bool, default=True

    Returns
    -------
    gradient : numpy.ndarray of shape (p,)
    hessian : numpy.ndarray of shape (p, p)
        Without the penalty; ``p = len(parameters)``.
    """
    A = _design(X, fit_intercept)
    if A.shape[1] != len(parameters):
        raise JobSpecError(
            f"{len(parameters)} parameters do not fit {X.shape[1]} features "
            f"(fit_intercept={fit_intercept})",
            hint="check the job's features",
        )
    n = max(A.shape[0], 1)
    margin = A @ parameters
    p = 0.5 * (1.0 + np.tanh(0.5 * margin))
    gradient = A.T @ (p - np.asarray(y, dtype=float)) / n
    hessian = (A * (p * (1.0 - p))[:, None]).T @ A / n
    return gradient, hessian


def hessian_size(p: int) -> int:
    """Number of values in the upper triangle of a ``p`` by ``p`` matrix."""
    return p * (p + 1) // 2


def pack_hessian(hessian: NDArray[np.float64]) -> NDArray[np.float64]:
    """The upper triangle of a symmetric matrix, row by row."""
    rows, columns = np.triu_indices(hessian.shape[0])
    return np.asarray(hessian[rows, columns], dtype=float)


def unpack_hessian(values: NDArray[np.float64], p: int) -> NDArray[np.float64]:
    """The symmetric ``p`` by ``p`` matrix of :func:`pack_hessian`'s values."""
    if len(values) != hessian_size(p):
        raise JobSpecError(
            f"a {p} by {p} Hessian needs {hessian_size(p)} values, got {len(values)}"
        )
    matrix = np.zeros((p, p))
    rows, columns = np.triu_indices(p)
    matrix[rows, columns] = values
    matrix[columns, rows] = values
    return matrix


def newton_step(
    parameters: NDArray[np.float64],
    gradient: NDArray[np.float64],
    hessian: NDArray[np.float64],
    *,
    C: float,
    n_samples: int,
    fit_intercept: bool = True,
) -> NDArray[np.float64]:
    """The parameters after one Newton step on the penalized pooled objective.

    Parameters
    ----------
    parameters : numpy.ndarray of shape (p,)
        Where ``gradient`` and ``hessian`` were evaluated.
    gradient, hessian : numpy.ndarray
        Mean gradient and Hessian of the loss over the pooled rows.
    C : float
        Inverse penalty strength, as in LogisticRegression.
    n_samples : int
        Number of pooled rows, ``N``.
    fit_intercept : bool, default=True
        The last parameter is an intercept, not penalized.

    Returns
    -------
    numpy.ndarray of shape (p,)

    Notes
    -----
    The penalized Hessian is positive definite (the penalty adds ``1 / (C N)`` to
    every coefficient's diagonal entry; a tiny ridge keeps the intercept's entry
    positive when every probability has saturated), so the step is well defined.
    Newton's method converges to the minimum quadratically once close to it; from
    zero, on logistic losses like the demo's, a handful of steps get there.
    """
    if n_samples < 1:
        raise JobSpecError(
            f"a Newton step needs the pooled row count, got {n_samples}",
            hint="the aggregate carries it as its weight",
        )
    penalty = np.full(len(parameters), 1.0 / (C * n_samples))
    if fit_intercept:
        penalty[-1] = 0.0
    penalized_gradient = gradient + penalty * parameters
    penalized_hessian = hessian + np.diag(penalty + 1e-10)
    step = np.linalg.solve(penalized_hessian, penalized_gradient)
    return np.asarray(parameters - step, dtype=float)
