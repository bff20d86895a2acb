"""The registry of known estimators and their parameter adapters.

A job names its model by a registry name; nothing in a job spec is code. Each entry
builds the estimator from checked hyperparameters and reads and writes its learned
parameters as one flat float vector, the form in which FedAvg averages them.

Registered: ``logistic_regression`` (:class:`sklearn.linear_model.LogisticRegression`)
and ``sgd_classifier`` (:class:`sklearn.linear_model.SGDClassifier` with logistic
loss). :func:`register_model` adds more.
"""

from __future__ import annotations

from workbench.models.registry import (
    ModelAdapter,
    get_model,
    model_names,
    register_model,
)
from workbench.models.sklearn import LinearClassifierAdapter

__all__ = [
    "LinearClassifierAdapter",
    "ModelAdapter",
    "get_model",
    "model_names",
    "register_model",
]
