"""Tests of the model registry and the linear classifier adapters."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification

from workbench.errors import JobSpecError, ModelRegistryError
from workbench.models import get_model, model_names


@pytest.mark.parametrize("name", ["logistic_regression", "sgd_classifier"])
def test_parameters_round_trip(name: str) -> None:
    """Parameters written into a fresh estimator give the same predictions."""
    X, y = make_classification(n_samples=200, n_features=5, random_state=0)
    adapter = get_model(name)
    model = adapter.build({}, random_state=0)
    adapter.set_parameters(model, adapter.initial_parameters(5, [0, 1]), 5, [0, 1])
    adapter.train(model, X, y, epochs=20)
    vector = adapter.get_parameters(model)
    assert vector.shape == (adapter.parameter_count(5, [0, 1]),)
    copy = adapter.set_parameters(adapter.build({}, random_state=1), vector, 5, [0, 1])
    np.testing.assert_array_equal(copy.predict(X), model.predict(X))
    assert np.mean(model.predict(X) == y) > 0.8


def test_unknown_hyperparameter_is_refused() -> None:
    """Only listed hyperparameters may be set from a spec."""
    with pytest.raises(JobSpecError, match="no hyperparameter 'n_jobs'"):
        get_model("logistic_regression").build({"n_jobs": 4}, random_state=0)


def test_unknown_model_lists_known() -> None:
    """An unknown name lists the registered models."""
    with pytest.raises(ModelRegistryError, match="sgd_classifier"):
        get_model("forest")
    assert {"logistic_regression", "sgd_classifier"} <= set(model_names())
