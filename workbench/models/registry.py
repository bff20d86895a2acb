"""A name-to-adapter registry of estimators that jobs may train."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from workbench.errors import ModelRegistryError

__all__ = ["ModelAdapter", "get_model", "model_names", "register_model"]


class ModelAdapter(Protocol):
    """What the registry knows about one estimator.

    An adapter builds the estimator, and moves its learned parameters in and out
    as one flat float vector of :meth:`parameter_count` values.
    """

    @property
    def name(self) -> str:
        """Registry name."""
        ...

    def build(self, params: Mapping[str, Any], *, random_state: int) -> Any:
        """Return a new estimator with checked hyperparameters ``params``."""
        ...

    def parameter_count(self, n_features: int, classes: Sequence[Any]) -> int:
        """Length of the parameter vector for this many features and classes."""
        ...

    def initial_parameters(
        self, n_features: int, classes: Sequence[Any]
    ) -> NDArray[np.float64]:
        """Parameters of the first round (the same at every member)."""
        ...

    def get_parameters(self, model: Any) -> NDArray[np.float64]:
        """Read the learned parameters of a fitted estimator."""
        ...

    def set_parameters(
        self,
        model: Any,
        vector: NDArray[np.float64],
        n_features: int,
        classes: Sequence[Any],
    ) -> Any:
        """Write ``vector`` into ``model`` so that it predicts (returns ``model``)."""
        ...

    def train(
        self, model: Any, X: NDArray[np.float64], y: NDArray[Any], *, epochs: int
    ) -> Any:
        """Train ``model`` locally from its current parameters (returns ``model``)."""
        ...


_REGISTRY: dict[str, ModelAdapter] = {}


def register_model(adapter: ModelAdapter) -> None:
    """Add an adapter under ``adapter.name``.

    Raises
    ------
    ModelRegistryError
        If the name is taken.
    """
    if adapter.name in _REGISTRY:
        raise ModelRegistryError(
            f"a model named {adapter.name!r} is registered already",
            hint="choose another name for the new adapter",
        )
    _REGISTRY[adapter.name] = adapter


def get_model(name: str) -> ModelAdapter:
    """Return the adapter registered as ``name``.

    Raises
    ------
    ModelRegistryError
        If no such model is registered; the message lists the known names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelRegistryError(
            f"there is no model {name!r} in the registry",
            hint=f"known models: {', '.join(model_names())}",
        ) from None


def model_names() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)
