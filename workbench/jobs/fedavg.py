"""Encrypted FedAvg of scikit-learn linear classifiers.

Rounds of a FedAvg job (``spec.rounds`` in all):

1. ``scale`` (only with ``standardize``, the default): each member uploads the
   logarithm of each feature's local standard deviation, weighted by its training
   row count. The decrypted mean gives a common scale ``g`` (the weighted geometric
   mean of the local spreads).
2. ``moments`` (only with ``standardize``): each member uploads the means of
   ``z = x / g`` and of ``z**2`` over its training rows, weighted by their count,
   from which every member derives the pooled mean and standard deviation of each
   feature exactly (up to the packing error). Dividing by ``g`` first keeps both
   moments within one encoding whatever the units of a column.
3. ``train`` (every later round): each member standardizes with the pooled
   moments, warm-starts the model from the global parameters (zeros in the first
   training round, else the decrypted aggregate of the previous round), trains for
   ``local_epochs``, and uploads its parameters weighted by its training row count,
   together with the validation loss and accuracy of its updated model weighted by
   its validation row count. The weights are encrypted with the values.

With ``strategy="newton"`` (two classes, ``logistic_regression`` only) a training
round is one step of federated Newton's method instead: each member evaluates the
gradient and the Hessian of the logistic loss at the current global parameters on
its training rows and uploads their means weighted by its row count; the decrypted
aggregates are the pooled mean gradient and Hessian, to which every member adds the
L2 penalty of the pooled objective (``1 / (C * N)`` per row, ``N`` the total row
count, intercept not penalized) and takes the Newton step. The global parameters of
a round are replayed from the aggregates of the earlier rounds, so members and the
submitter agree on them without sending them. The metrics of a Newton round are
those of the global parameters the round starts from.

Everything a member does is seeded by the job's seed, the round and the member's
name, so a job gives the same model whenever it is run with the same seed,
including after a coordinator restart.

Options (``spec.options``): ``classes`` (list, required), ``standardize`` (bool,
default true), ``local_epochs`` (int, default 5), ``validation_fraction`` (float,
default 0.2; with 0 every row trains and the metrics of each round are computed on
the training rows, in-sample, and reported as such), ``moments_clip`` (float,
default 1e6), ``strategy`` (``"fedavg"``, the default, or ``"newton"``).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from workbench.crypto import (
    DecryptedSum,
    EncryptedVector,
    PackedEncoding,
    decrypt_vector,
    encrypt_vector,
)
from workbench.errors import DatasetError, JobSpecError
from workbench.jobs import JobContext, register_job_kind
from workbench.jobs.spec import EncryptionSpec, JobSpec
from workbench.models import get_model
from workbench.models.logistic import (
    logistic_derivatives,
    newton_step,
    pack_hessian,
    unpack_hessian,
)

logger = logging.getLogger(__name__)

__all__ = [
    "FedAvgOptions",
    "FedAvgRunner",
    "build_model",
    "check_options",
    "fedavg_spec",
    "history",
    "newton_parameters",
    "phase",
    "pooled_scaler",
]

SCALE_CLIP = 64.0
METRICS_CLIP = 32.0
NEWTON_CLIP = 64.0
STRATEGIES = ("fedavg", "newton")
_TINY = 1e-12


@dataclass(frozen=True)
class FedAvgOptions:
    """The kind-specific options of a FedAvg job, checked."""

    classes: list[Any]
    standardize: bool = True
    local_epochs: int = 5
    validation_fraction: float = 0.2
    moments_clip: float = 1e6
    strategy: str = "fedavg"

    @classmethod
    def from_spec(cls, spec: JobSpec) -> FedAvgOptions:
        """Read and check ``spec.options``.

        Raises
        ------
        JobSpecError
            If an option is unknown or has a bad value.
        """
        options = dict(spec.options)
        known = {
            "classes",
            "standardize",
            "local_epochs",
            "validation_fraction",
            "moments_clip",
            "strategy",
        }
        unknown = sorted(set(options) - known)
        if unknown:
            raise JobSpecError(
                f"FedAvg takes no options {unknown}",
                hint=f"known options: {', '.join(sorted(known))}",
            )
        classes = options.get("classes")
        if not isinstance(classes, list) or len(classes) < 2:
            raise JobSpecError(
                f"FedAvg needs options.classes, a list of two or more labels; got "
                f"{classes!r}",
                hint="pass classes=[...] listing every label of the target",
            )
        epochs = options.get("local_epochs", 5)
        if not isinstance(epochs, int) or isinstance(epochs, bool) or not 1 <= epochs:
            raise JobSpecError(
                f"local_epochs must be a positive integer, got {epochs!r}"
            )
        fraction = options.get("validation_fraction", 0.2)
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0.0 <= float(fraction) < 0.9
        ):
            raise JobSpecError(
                f"validation_fraction must be between 0 and 0.9, got {fraction!r}",
                hint="0 keeps no validation part: every row trains",
            )
        clip = options.get("moments_clip", 1e6)
        if not isinstance(clip, int | float) or not 0 < float(clip) <= 1e9:
            raise JobSpecError(f"moments_clip must be in (0, 1e9], got {clip!r}")
        standardize = options.get("standardize", True)
        if not isinstance(standardize, bool):
            raise JobSpecError(
                f"standardize must be true or false, got {standardize!r}"
            )
        setup = 2 if standardize else 0
        if spec.rounds <= setup:
            raise JobSpecError(
                f"a FedAvg job with standardize={standardize} needs more than {setup} "
                f"rounds, got rounds={spec.rounds}",
                hint="use fedavg_spec(), which adds the setup rounds",
            )
        if spec.model is None:
            raise JobSpecError("a FedAvg job must name a model", hint="e.g. model=...")
        _check_features(spec.features)
        # Building the estimator checks every hyperparameter's name and type.
        get_model(spec.model).build(spec.model_params, random_state=0)
        strategy = options.get("strategy", "fedavg")
        if strategy not in STRATEGIES:
            raise JobSpecError(
                f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}",
                hint='use strategy="fedavg" or strategy="newton"',
            )
        if strategy == "newton":
            _check_newton(spec, classes)
        return cls(
            classes=list(classes),
            standardize=standardize,
            local_epochs=int(epochs),
            validation_fraction=float(fraction),
            moments_clip=float(clip),
            strategy=str(strategy),
        )


def _check_features(features: object) -> None:
    if features is None:
        return
    if (
        isinstance(features, str)
        or not isinstance(features, Sequence)
        or not features
        or not all(isinstance(f, str) and f for f in features)
    ):
        raise JobSpecError(
            f"features must be a non-empty list of column names, got {features!r}",
            hint=f"pass features=[{features!r}] for a single column"
            if isinstance(features, str)
            else "pass features=['age', 'weight'], or leave it out",
        )
    if len(set(features)) != len(features):
        raise JobSpecError(
            f"features lists a column twice: {list(features)}",
            hint="name each column once",
        )


def _check_newton(spec: JobSpec, classes: list[Any]) -> None:
    if spec.model != "logistic_regression":
        raise JobSpecError(
            f'strategy="newton" trains logistic_regression only, got '
            f"model={spec.model!r}",
            hint='use model="logistic_regression", or strategy="fedavg"',
        )
    if len(classes) != 2:
        raise JobSpecError(
            f'strategy="newton" takes two classes, got {len(classes)}: {classes!r}',
            hint='use strategy="fedavg" for more classes',
        )
    C = dict(spec.model_params).get("C", 1.0)
    if isinstance(C, bool) or not isinstance(C, int | float) or not C > 0:
        raise JobSpecError(
            f"logistic_regression: C must be a positive number, got {C!r}",
            hint="e.g. model_params={'C': 1.0}",
        )


def check_options(spec: JobSpec) -> None:
    """Raise :class:`~workbench.errors.JobSpecError` if the FedAvg options are wrong."""
    FedAvgOptions.from_spec(spec)


def fedavg_spec(
    *,
    dataset: str,
    model: str,
    rounds: int,
    classes: Sequence[Any],
    members: Sequence[str],
    standardize: bool = True,
    local_epochs: int = 5,
    validation_fraction: float = 0.2,
    strategy: str = "fedavg",
    model_params: Mapping[str, Any] | None = None,
    features: Sequence[str] | None = None,
    target: str | None = None,
    min_members: int | None = None,
    round_deadline: float = 120.0,
    seed: int = 0,
    encryption: EncryptionSpec | None = None,
) -> JobSpec:
    """Build the spec of a FedAvg job with ``rounds`` training rounds.

    With ``standardize`` the job runs two setup rounds first, so
    ``spec.rounds == rounds + 2``. ``min_members`` defaults to all members.
    ``strategy`` is ``"fedavg"`` (average locally trained parameters) or
    ``"newton"`` (one federated Newton step per training round; see the module's
    description).
    """
    _check_features(features)
    setup = 2 if standardize else 0
    spec = JobSpec(
        kind="fedavg",
        dataset=dataset,
        target=target,
        features=None if features is None else list(features),
        model=model,
        model_params=dict(model_params or {}),
        rounds=rounds + setup,
        min_members=len(members) if min_members is None else min_members,
        round_deadline=round_deadline,
        seed=seed,
        members=list(members),
        encryption=encryption or EncryptionSpec(),
        options={
            "classes": [_plain(c) for c in classes],
            "standardize": standardize,
            "local_epochs": local_epochs,
            "validation_fraction": validation_fraction,
            "strategy": strategy,
        },
    )
    check_options(spec)
    return spec


def phase(spec: JobSpec, number: int) -> str:
    """The phase of round ``number``: ``"scale"``, ``"moments"`` or ``"train"``.

    A training round is ``"train"`` whatever the strategy.
    """
    if FedAvgOptions.from_spec(spec).standardize and number <= 2:
        return "scale" if number == 1 else "moments"
    return "train"


def first_training_round(spec: JobSpec) -> int:
    """Number of the first training round (3 with ``standardize``, else 1)."""
    return 3 if FedAvgOptions.from_spec(spec).standardize else 1


def pooled_scaler(
    scale: DecryptedSum, moments: DecryptedSum
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The pooled mean and standard deviation of each feature.

    Parameters
    ----------
    scale : DecryptedSum
        Aggregate of the ``scale`` round: weighted log standard deviations.
    moments : DecryptedSum
        Aggregate of the ``moments`` round: weighted means of ``z`` and ``z**2``.

    Returns
    -------
    mean, std : numpy.ndarray
        Per feature; a feature of zero spread gets ``std = 1``.
    """
    g = np.exp(scale.mean())
    values = moments.mean()
    d = len(g)
    mean_z, mean_z2 = values[:d], values[d:]
    variance = np.maximum(mean_z2 - mean_z**2, 0.0)
    std = g * np.sqrt(variance)
    std = np.where(std > _TINY, std, 1.0)
    return g * mean_z, std


def _encodings(spec: JobSpec, participants: int) -> dict[str, PackedEncoding]:
    crypto = spec.encryption
    options = FedAvgOptions.from_spec(spec)
    contributions = max(participants, 1)
    return {
        "scale": PackedEncoding(
            clip=SCALE_CLIP,
            bits=16,
            max_contributions=contributions,
            max_weight=crypto.max_weight,
        ),
        "moments": PackedEncoding(
            clip=options.moments_clip,
            bits=32,
            max_contributions=contributions,
            max_weight=crypto.max_weight,
        ),
        "params": PackedEncoding(
            clip=crypto.clip,
            bits=crypto.bits,
            max_contributions=contributions,
            max_weight=crypto.max_weight,
        ),
        "metrics": PackedEncoding(
            clip=METRICS_CLIP,
            bits=16,
            max_contributions=contributions,
            max_weight=crypto.max_weight,
        ),
        "newton": PackedEncoding(
            clip=NEWTON_CLIP,
            bits=32,
            max_contributions=contributions,
            max_weight=crypto.max_weight,
        ),
    }


def member_seed(spec: JobSpec, member: str, number: int = 0) -> int:
    """A seed for ``member`` in round ``number``, fixed by the job's seed."""
    text = f"{spec.seed}:{member}:{number}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big")


class FedAvgRunner:
    """A member's side of a FedAvg job.

    Parameters
    ----------
    spec : JobSpec
        The job's spec; its options are checked here.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.options = FedAvgOptions.from_spec(spec)
        self.adapter = get_model(str(spec.model))
        self._split: tuple[Any, Any, Any, Any] | None = None
        self._scaler: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
        self._newton_sums: dict[int, dict[str, DecryptedSum]] = {}

    def run_round(self, context: JobContext, round: int) -> None:
        """Compute and upload this member's update for ``round``."""
        X_train, y_train, X_val, y_val = self._data(context)
        encodings = _encodings(self.spec, len(context.participants))
        weight = self._weight(len(y_train))
        kind = phase(self.spec, round)

        if kind == "scale":
            spread = np.log(np.maximum(X_train.std(axis=0), _TINY))
            vectors = {
                "scale": self._encrypt(context, spread, encodings["scale"], weight)
            }
        elif kind == "moments":
            g = np.exp(self._decrypted(context, 1, "scale").mean())
            z = X_train / g
            moments = np.concatenate([z.mean(axis=0), (z**2).mean(axis=0)])
            self._check_moments(context, moments)
            vectors = {
                "moments": self._encrypt(context, moments, encodings["moments"], weight)
            }
        elif self.options.strategy == "newton":
            vectors = self._newton(context, round, X_train, y_train, X_val, y_val)
        else:
            vectors = self._train(context, round, X_train, y_train, X_val, y_val)
        context.upload(round, vectors)
        logger.info("job %s round %d: %s update uploaded", context.job_id, round, kind)

    def _train(
        self,
        context: JobContext,
        round: int,
        X_train: NDArray[np.float64],
        y_train: NDArray[Any],
        X_val: NDArray[np.float64],
        y_val: NDArray[Any],
    ) -> dict[str, EncryptedVector]:
        encodings = _encodings(self.spec, len(context.participants))
        classes = self.options.classes
        n_features = X_train.shape[1]
        if self.options.standardize:
            mean, std = self._pooled_scaler(context)
            X_train = (X_train - mean) / std
            X_val = (X_val - mean) / std
        if round == first_training_round(self.spec):
            start = self.adapter.initial_parameters(n_features, classes)
        else:
            start = self._decrypted(context, round - 1, "params").mean()
        model = self.adapter.build(
            self.spec.model_params,
            random_state=member_seed(self.spec, context.member, round),
        )
        self.adapter.set_parameters(model, start, n_features, classes)
        self.adapter.train(model, X_train, y_train, epochs=self.options.local_epochs)
        parameters = self.adapter.get_parameters(model)
        clipped = int(np.sum(np.abs(parameters) > encodings["params"].clip))
        if clipped:
            logger.warning(
                "job %s round %d: %d parameters exceed the clip bound %g and are "
                "clipped",
                context.job_id,
                round,
                clipped,
                encodings["params"].clip,
            )
        return {
            "params": self._encrypt(
                context, parameters, encodings["params"], self._weight(len(y_train))
            ),
            **self._metrics(context, model, X_train, y_train, X_val, y_val),
        }

    def _newton(
        self,
        context: JobContext,
        round: int,
        X_train: NDArray[np.float64],
        y_train: NDArray[Any],
        X_val: NDArray[np.float64],
        y_val: NDArray[Any],
    ) -> dict[str, EncryptedVector]:
        encoding = _encodings(self.spec, len(context.participants))["newton"]
        if self.options.standardize:
            mean, std = self._pooled_scaler(context)
            X_train = (X_train - mean) / std
            X_val = (X_val - mean) / std
        for number in range(first_training_round(self.spec), round):
            if number not in self._newton_sums:
                self._newton_sums[number] = {
                    name: self._decrypted(context, number, name)
                    for name in ("gradient", "hessian")
                }
        parameters = newton_parameters(self.spec, self._newton_sums, X_train.shape[1])
        fit_intercept = _fit_intercept(self.spec)
        positive = self.options.classes[1]
        gradient, hessian = logistic_derivatives(
            parameters,
            X_train,
            (y_train == positive).astype(float),
            fit_intercept=fit_intercept,
        )
        packed = pack_hessian(hessian)
        clipped = int(np.sum(np.abs(gradient) > encoding.clip))
        clipped += int(np.sum(np.abs(packed) > encoding.clip))
        if clipped:
            logger.warning(
                "job %s round %d: %d gradient or Hessian values exceed the clip "
                "bound %g and are clipped",
                context.job_id,
                round,
                clipped,
                encoding.clip,
            )
        model = self.adapter.build(self.spec.model_params, random_state=0)
        self.adapter.set_parameters(
            model,
            _full_parameters(parameters, fit_intercept),
            X_train.shape[1],
            self.options.classes,
        )
        weight = self._weight(len(y_train))
        return {
            "gradient": self._encrypt(context, gradient, encoding, weight),
            "hessian": self._encrypt(context, packed, encoding, weight),
            **self._metrics(context, model, X_train, y_train, X_val, y_val),
        }

    def _metrics(
        self,
        context: JobContext,
        model: Any,
        X_train: NDArray[np.float64],
        y_train: NDArray[Any],
        X_val: NDArray[np.float64],
        y_val: NDArray[Any],
    ) -> dict[str, EncryptedVector]:
        # Without a validation part the metrics are in-sample, and named so.
        name = "metrics" if len(y_val) else "train_metrics"
        X, y = (X_val, y_val) if len(y_val) else (X_train, y_train)
        proba = model.predict_proba(X)
        loss = float(log_loss(y, proba, labels=model.classes_))
        accuracy = float(np.mean(model.predict(X) == y))
        encoding = _encodings(self.spec, len(context.participants))["metrics"]
        vector = self._encrypt(
            context, np.array([loss, accuracy]), encoding, self._weight(len(y))
        )
        return {name: vector}

    def _data(self, context: JobContext) -> tuple[Any, Any, Any, Any]:
        if self._split is not None:
            return self._split
        X, y = context.dataset().xy(self.spec.features, self.spec.target)
        X = np.asarray(X, dtype=float)
        y = np.asarray(y)
        unknown = sorted({_plain(v) for v in np.unique(y)} - set(self.options.classes))
        if unknown:
            raise DatasetError(
                f"the target holds labels {unknown[:5]} that the job does not list "
                f"(classes={self.options.classes})",
                hint="submit the job with every label in classes=[...]",
            )
        n = len(y)
        n_val = int(round(self.options.validation_fraction * n))
        if (n_val < 1 and self.options.validation_fraction > 0) or n - n_val < 2:
            raise DatasetError(
                f"the dataset has {n} rows, too few to split into training and "
                "validation parts",
                hint="a member needs at least 3 rows",
            )
        order = np.random.default_rng(
            member_seed(self.spec, context.member)
        ).permutation(n)
        val, train = order[:n_val], order[n_val:]
        self._split = (X[train], y[train], X[val], y[val])
        return self._split

    def _pooled_scaler(
        self, context: JobContext
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        if self._scaler is None:
            self._scaler = pooled_scaler(
                self._decrypted(context, 1, "scale"),
                self._decrypted(context, 2, "moments"),
            )
        return self._scaler

    def _decrypted(self, context: JobContext, round: int, name: str) -> DecryptedSum:
        vectors = context.aggregate(round)
        if name not in vectors:
            raise JobSpecError(
                f"the aggregate of round {round} holds no vector {name!r} "
                f"(it holds {sorted(vectors)})"
            )
        return decrypt_vector(context.private_key, vectors[name])

    def _check_moments(self, context: JobContext, moments: NDArray[np.float64]) -> None:
        limit = self.options.moments_clip
        if np.any(np.abs(moments) > limit):
            d = len(moments) // 2
            index = int(np.argmax(np.abs(moments))) % d
            names = self.spec.features or context.dataset().features
            raise DatasetError(
                f"the feature {names[index]!r} lies too far from zero relative to its "
                f"spread to be standardized under encryption (moments above "
                f"{limit:g})",
                hint="center the column, or raise options.moments_clip",
            )

    def _weight(self, count: int) -> int:
        limit = self.spec.encryption.max_weight
        if count > limit:
            raise DatasetError(
                f"{count} rows exceed the job's max_weight={limit}",
                hint="submit the job with a larger encryption.max_weight",
            )
        return count

    def _encrypt(
        self,
        context: JobContext,
        values: NDArray[np.float64],
        encoding: PackedEncoding,
        weight: int,
    ) -> EncryptedVector:
        return encrypt_vector(
            context.public_key,
            values,
            encoding,
            weight=weight,
            private_key=context.private_key,
        )


def _fit_intercept(spec: JobSpec) -> bool:
    return bool(dict(spec.model_params).get("fit_intercept", True))


def _full_parameters(
    parameters: NDArray[np.float64], fit_intercept: bool
) -> NDArray[np.float64]:
    # The adapters always carry an intercept; without one it stays zero.
    return parameters if fit_intercept else np.append(parameters, 0.0)


def newton_parameters(
    spec: JobSpec, sums: Mapping[int, Mapping[str, DecryptedSum]], n_features: int
) -> NDArray[np.float64]:
    """The global parameters after the Newton steps of the training rounds in ``sums``.

    Parameters
    ----------
    spec : JobSpec
        A job with ``strategy="newton"``.
    sums : mapping of round to mapping of vector name to DecryptedSum
        Rounds holding ``gradient`` and ``hessian`` aggregates, which must be every
        training round from the first one on; other rounds are ignored.
    n_features : int

    Returns
    -------
    numpy.ndarray
        Coefficients, then the intercept if the model fits one: zeros when no
        training round is given.

    Raises
    ------
    JobSpecError
        If a training round is missing between the first one and the last given.
    """
    fit_intercept = _fit_intercept(spec)
    C = float(dict(spec.model_params).get("C", 1.0))  # type: ignore[arg-type]
    parameters = np.zeros(n_features + int(fit_intercept))
    steps = sorted(r for r in sums if "gradient" in sums[r])
    first = first_training_round(spec)
    if steps and steps != list(range(first, steps[-1] + 1)):
        raise JobSpecError(
            f"Newton steps need every training round from {first} on, got rounds "
            f"{steps}",
            hint="pass the aggregates of every closed training round",
        )
    for number in steps:
        gradient = sums[number]["gradient"]
        hessian = sums[number]["hessian"].mean()
        parameters = newton_step(
            parameters,
            gradient.mean(),
            unpack_hessian(hessian, len(parameters)),
            C=C,
            n_samples=int(gradient.weight or 0),
            fit_intercept=fit_intercept,
        )
    return parameters


def build_model(spec: JobSpec, sums: Mapping[int, Mapping[str, DecryptedSum]]) -> Any:
    """The job's global model from the decrypted aggregates of its rounds.

    Parameters
    ----------
    spec : JobSpec
    sums : mapping of round to mapping of vector name to DecryptedSum
        Must hold the last closed training round (and rounds 1 and 2 with
        ``standardize``).

    Returns
    -------
    sklearn.pipeline.Pipeline
        A fitted :class:`~sklearn.preprocessing.StandardScaler` set to the pooled
        moments (or an identity one) followed by the fitted classifier.
    """
    options = FedAvgOptions.from_spec(spec)
    adapter = get_model(str(spec.model))
    vector = "gradient" if options.strategy == "newton" else "params"
    trained = [r for r in sorted(sums) if vector in sums[r]]
    if not trained:
        raise JobSpecError(
            "no training round of the job has closed yet, so there is no model",
            hint="wait for the job: job.wait()",
        )
    if options.strategy == "newton":
        fit_intercept = _fit_intercept(spec)
        n_features = len(sums[trained[-1]]["gradient"].values) - int(fit_intercept)
        parameters = _full_parameters(
            newton_parameters(spec, sums, n_features), fit_intercept
        )
    else:
        parameters = sums[trained[-1]]["params"].mean()
        rows = 1 if len(options.classes) == 2 else len(options.classes)
        n_features = len(parameters) // rows - 1
    model = adapter.build(spec.model_params, random_state=spec.seed)
    adapter.set_parameters(model, parameters, n_features, options.classes)
    scaler = _NamedScaler()
    if options.standardize:
        mean, std = pooled_scaler(sums[1]["scale"], sums[2]["moments"])
    else:
        mean, std = np.zeros(n_features), np.ones(n_features)
    scaler.mean_, scaler.scale_, scaler.var_ = mean, std, std**2
    scaler.n_features_in_ = n_features
    scaler.n_samples_seen_ = int(sums[trained[-1]][vector].weight or 0)
    if spec.features is not None:
        if len(spec.features) != n_features:
            raise JobSpecError(
                f"the job names {len(spec.features)} features but its model has "
                f"{n_features}",
                hint="rebuild the model from the aggregates of this job's own rounds",
            )
        scaler.feature_names_in_ = np.asarray(spec.features, dtype=object)
    return Pipeline([("scale", scaler), ("model", model)])


class _NamedScaler(StandardScaler):
    """A StandardScaler that knows its feature names yet takes plain arrays.

    A DataFrame must carry the job's columns in the job's order (scikit-learn
    raises otherwise); a plain array goes by position, without the warning that
    scikit-learn gives when names are known but the input has none.
    """

    def transform(self, X: Any, copy: bool | None = None) -> Any:
        """Standardize ``X``; see :meth:`sklearn.preprocessing.StandardScaler`."""
        if hasattr(X, "columns"):
            return super().transform(X, copy=copy)
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="X does not have valid feature names"
            )
            return super().transform(X, copy=copy)


def history(
    spec: JobSpec, sums: Mapping[int, Mapping[str, DecryptedSum]]
) -> pd.DataFrame:
    """Per-round metrics as a table, one row per closed round.

    Columns:

    - ``round`` (int), ``phase`` (``"scale"``, ``"moments"`` or ``"train"``);
    - ``members`` (int): updates added in the round;
    - ``n_train`` (int): training rows behind the round's aggregate;
    - ``n_validation`` (nullable int): validation rows behind the metrics;
      missing in setup rounds and in a job with ``validation_fraction=0``;
    - ``val_loss``, ``val_accuracy`` (float): validation-weighted means over
      members of their updated local models (with ``strategy="newton"``, of the
      global parameters the round starts from); NaN in setup rounds;
    - ``train_loss``, ``train_accuracy`` (float): the same on the training rows,
      computed only in a job with ``validation_fraction=0`` (the metrics are then
      in-sample); NaN whenever the job keeps a validation part.
    """
    rows = []
    for number in sorted(sums):
        entry = sums[number]
        counted = [n for n in ("params", "gradient", "scale", "moments") if n in entry]
        first = entry[counted[0]] if counted else next(iter(entry.values()))
        row: dict[str, Any] = {
            "round": number,
            "phase": phase(spec, number),
            "members": first.contributions,
            "n_train": first.weight,
            "n_validation": None,
            "val_loss": np.nan,
            "val_accuracy": np.nan,
            "train_loss": np.nan,
            "train_accuracy": np.nan,
        }
        if "metrics" in entry:
            loss, accuracy = entry["metrics"].mean()
            row.update(
                n_validation=entry["metrics"].weight,
                val_loss=float(loss),
                val_accuracy=float(accuracy),
            )
        if "train_metrics" in entry:
            loss, accuracy = entry["train_metrics"].mean()
            row.update(train_loss=float(loss), train_accuracy=float(accuracy))
        rows.append(row)
    columns = [
        "round",
        "phase",
        "members",
        "n_train",
        "n_validation",
        "val_loss",
        "val_accuracy",
        "train_loss",
        "train_accuracy",
    ]
    table = pd.DataFrame(rows, columns=columns)
    counts = {"round": "int64", "members": "Int64", "n_train": "Int64"}
    return table.astype({**counts, "n_validation": "Int64"})


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


register_job_kind("fedavg", FedAvgRunner, check_options=check_options)
