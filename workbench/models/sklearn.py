"""Adapters for scikit-learn's linear classifiers.

Both keep their parameters in ``coef_`` (one row per class, or one row for two
classes) and ``intercept_``; the flat vector is ``coef_`` row by row followed by
``intercept_``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier

from workbench.errors import JobSpecError
from workbench.models.registry import register_model

__all__ = ["LinearClassifierAdapter"]


@dataclass(frozen=True)
class LinearClassifierAdapter:
    """Adapter for a linear classifier with ``coef_`` and ``intercept_``.

    Parameters
    ----------
    name : str
        Registry name.
    allowed : mapping of str to type
        Hyperparameters a job spec may set, and their types.
    defaults : mapping of str to value
        Hyperparameters set unless the spec overrides them.
    """

    name: str
    allowed: Mapping[str, type | tuple[type, ...]]
    defaults: Mapping[str, Any]

    def build(self, params: Mapping[str, Any], *, random_state: int) -> Any:
        """Return a new estimator; unknown or mistyped hyperparameters are errors."""
        for key, value in params.items():
            if key not in self.allowed:
                raise JobSpecError(
                    f"{self.name} takes no hyperparameter {key!r}",
                    hint=f"allowed: {', '.join(sorted(self.allowed))}",
                )
            if isinstance(value, bool) and bool not in _as_tuple(self.allowed[key]):
                raise JobSpecError(
                    f"{self.name}: {key} must not be a bool, got {value}"
                )
            if not isinstance(value, self.allowed[key]):
                raise JobSpecError(
                    f"{self.name}: {key} has the wrong type ({type(value).__name__})",
                    hint=f"give a {self.allowed[key]}",
                )
        merged = {**self.defaults, **params}
        if self.name == "logistic_regression":
            return LogisticRegression(random_state=random_state, **merged)
        return SGDClassifier(random_state=random_state, **merged)

    def parameter_count(self, n_features: int, classes: Sequence[Any]) -> int:
        """``rows * (n_features + 1)``, one row for two classes."""
        return _rows(classes) * (n_features + 1)

    def initial_parameters(
        self, n_features: int, classes: Sequence[Any]
    ) -> NDArray[np.float64]:
        """Zeros: every member starts from the same model."""
        return np.zeros(self.parameter_count(n_features, classes))

    def get_parameters(self, model: Any) -> NDArray[np.float64]:
        """``coef_`` row by row, then ``intercept_``."""
        return np.concatenate(
            [
                np.asarray(model.coef_, float).ravel(),
                np.asarray(model.intercept_, float),
            ]
        )

    def set_parameters(
        self,
        model: Any,
        vector: NDArray[np.float64],
        n_features: int,
        classes: Sequence[Any],
    ) -> Any:
        """Write a flat vector into ``coef_``, ``intercept_`` and ``classes_``."""
        rows = _rows(classes)
        vector = np.asarray(vector, dtype=float)
        if vector.shape != (rows * (n_features + 1),):
            raise JobSpecError(
                f"{self.name} expects {rows * (n_features + 1)} parameters, got "
                f"{vector.shape}",
                hint="check the job's features and classes",
            )
        model.coef_ = vector[: rows * n_features].reshape(rows, n_features).copy()
        model.intercept_ = vector[rows * n_features :].copy()
        model.classes_ = np.asarray(classes)
        model.n_features_in_ = n_features
        if self.name == "sgd_classifier":
            model.t_ = 1.0
        return model

    def train(
        self, model: Any, X: NDArray[np.float64], y: NDArray[Any], *, epochs: int
    ) -> Any:
        """Train from the current parameters.

        ``logistic_regression`` runs ``epochs`` iterations of its solver with
        ``warm_start``; ``sgd_classifier`` makes ``epochs`` passes of
        ``partial_fit``. Not converging within so few iterations is the point of a
        local step, so the convergence warning is silenced here.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if isinstance(model, LogisticRegression):
                model.set_params(warm_start=True, max_iter=max(1, epochs))
                model.fit(X, y)
            else:
                classes = model.classes_
                for _ in range(max(1, epochs)):
                    model.partial_fit(X, y, classes=classes)
        return model


def _rows(classes: Sequence[Any]) -> int:
    if len(classes) < 2:
        raise JobSpecError(
            f"a classifier needs at least two classes, got {list(classes)}",
            hint="list every class in the job's options: classes=[...]",
        )
    return 1 if len(classes) == 2 else len(classes)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


register_model(
    LinearClassifierAdapter(
        name="logistic_regression",
        allowed={
            "C": (float, int),
            "fit_intercept": bool,
            "tol": (float, int),
            "solver": str,
        },
        defaults={"C": 1.0},
    )
)
register_model(
    LinearClassifierAdapter(
        name="sgd_classifier",
        allowed={
            "alpha": (float, int),
            "learning_rate": str,
            "eta0": (float, int),
            "penalty": str,
            "fit_intercept": bool,
        },
        defaults={"loss": "log_loss", "learning_rate": "constant", "eta0": 0.01},
    )
)
