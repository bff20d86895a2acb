"""The split conformal job kind: calibrate a FedAvg job's model across members.

A ``split_conformal`` job has one round:

1. The querier (the job's submitter) holds the FedAvg job's key, rebuilds its
   shared model from the decrypted aggregates, and sends the model's parameters
   (the pooled feature means and spreads, then the classifier's parameters) as a
   blob named ``model`` sealed to each participant's X25519 key. The coordinator
   relays the sealed blobs without being able to open them.
2. Each participant rebuilds the model from those parameters, takes its
   calibration rows (see below), scores them with ``1 - p(y|x)``, counts the
   scores in the bins the spec declares (per class under Mondrian), encrypts the
   counts (:func:`~workbench.jobs.conformal.encrypt_histogram`: its calibration
   size travels encrypted as the weight) and uploads them as the vector
   ``histogram``.
3. The coordinator adds the histograms. The querier decrypts the pooled
   histogram and reads the conformal quantile from it
   (:class:`~workbench.jobs.conformal.SplitConformalPredictor`); from then on
   predictions are made by the querier alone, and no query object leaves it.

Calibration rows (``options.calibration``):

``"validation"``
    the rows the FedAvg job held out from training at this member (its
    validation part, ``validation_fraction > 0``), found again from the FedAvg
    job's seed exactly as the FedAvg runner drew them. The dataset must be the
    FedAvg job's, with the same rows in the same order.
``"dataset"``
    every row of the job's dataset, a separate dataset registered for
    calibration, which the FedAvg model must not have trained on.

Options (``spec.options``): ``fedavg_job`` (the FedAvg job's id), ``fedavg_spec``
(its spec as canonical JSON, from which members rebuild the model and the
validation split), ``calibration``, ``bins`` (equal bins over ``[0, 1]``, plus one
above that no classification score reaches), ``mondrian`` and ``classes`` (the
FedAvg job's).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from workbench.errors import DatasetError, JobSpecError, WorkbenchError
from workbench.jobs import JobContext, register_job_kind
from workbench.jobs._conformal_split import (
    FederatedSplitConformal,
    encrypt_histogram,
    histogram_encoding,
)
from workbench.jobs.fedavg import FedAvgOptions, FedAvgRunner
from workbench.jobs.spec import EncryptionSpec, JobSpec, parse_spec
from workbench.models import get_model
from workbench.wire import decode_array, decode_bundle, encode_array, encode_bundle

logger = logging.getLogger(__name__)

__all__ = [
    "CALIBRATIONS",
    "HISTOGRAM_VECTOR",
    "MAX_BINS",
    "MODEL_BLOB",
    "SplitConformalOptions",
    "SplitConformalRunner",
    "calibration_histogram",
    "calibration_part",
    "check_options",
    "decode_model",
    "encode_model",
    "model_parameters",
    "shared_model",
    "split_conformal_spec",
]

MODEL_BLOB = "model"
"""Name of the round-1 blob, sealed to each participant, with the model's parameters."""

HISTOGRAM_VECTOR = "histogram"
"""Name of the encrypted vector of a member's update: its counts per bin."""

CALIBRATIONS = ("validation", "dataset")
"""Which rows a member calibrates on; see the module's description."""

MAX_BINS = 10_000
"""Most bins a spec may declare (per class under Mondrian)."""

_KNOWN = {"fedavg_job", "fedavg_spec", "calibration", "bins", "mondrian", "classes"}


@dataclass(frozen=True)
class SplitConformalOptions:
    """The kind-specific options of a split conformal job, checked."""

    fedavg_job: str
    fedavg_spec: JobSpec
    calibration: str
    bins: int
    mondrian: bool
    classes: list[Any]

    @property
    def histogram_length(self) -> int:
        """Entries of a member's histogram: ``bins + 1``, per class under Mondrian."""
        return (self.bins + 1) * (len(self.classes) if self.mondrian else 1)

    @classmethod
    def from_spec(cls, spec: JobSpec) -> SplitConformalOptions:
        """Read and check ``spec.options`` against the embedded FedAvg spec.

        Raises
        ------
        JobSpecError
            If an option is unknown, missing or disagrees with the FedAvg job.
        """
        options = dict(spec.options)
        unknown = sorted(set(options) - _KNOWN)
        if unknown:
            raise JobSpecError(
                f"a split conformal job takes no options {unknown}",
                hint=f"its options are {', '.join(sorted(_KNOWN))}",
            )
        if spec.rounds != 1:
            raise JobSpecError(
                f"a split conformal job calibrates in one round; rounds={spec.rounds}",
                hint="build the spec with split_conformal_spec()",
            )
        job_id = options.get("fedavg_job")
        text = options.get("fedavg_spec")
        if not isinstance(job_id, str) or not job_id or not isinstance(text, str):
            raise JobSpecError(
                "a split conformal job names its FedAvg job: options.fedavg_job (its "
                "id) and options.fedavg_spec (its spec as JSON) are required; "
                f"received fedavg_job={job_id!r}",
                hint="build the spec with split_conformal_spec()",
            )
        fedavg = parse_spec(text)
        if fedavg.kind != "fedavg":
            raise JobSpecError(
                f"options.fedavg_spec describes a {fedavg.kind} job, not a FedAvg one",
                hint="calibrate the model of a FedAvg job",
            )
        trained = FedAvgOptions.from_spec(fedavg)
        calibration = options.get("calibration", "validation")
        if calibration not in CALIBRATIONS:
            raise JobSpecError(
                f"calibration must be one of {', '.join(CALIBRATIONS)}; received "
                f"{calibration!r}",
                hint="'validation' uses the rows the FedAvg job held out",
            )
        if calibration == "validation":
            _check_validation(spec, fedavg, trained)
        bins = options.get("bins", 1000)
        if isinstance(bins, bool) or not isinstance(bins, int):
            raise JobSpecError(
                f"bins must be a whole number from 1 to {MAX_BINS}; received {bins!r}",
                hint="for example bins=1000",
            )
        if not 1 <= bins <= MAX_BINS:
            raise JobSpecError(
                f"bins must be a whole number from 1 to {MAX_BINS}; received {bins!r}",
                hint="for example bins=1000",
            )
        mondrian = options.get("mondrian", False)
        if not isinstance(mondrian, bool):
            raise JobSpecError(f"mondrian must be true or false; received {mondrian!r}")
        classes = options.get("classes")
        if classes != trained.classes:
            raise JobSpecError(
                f"classes must be the FedAvg job's {trained.classes!r}; received "
                f"{classes!r}",
                hint="build the spec with split_conformal_spec()",
            )
        if spec.model != fedavg.model or spec.model_params != fedavg.model_params:
            raise JobSpecError(
                f"the spec names the model {spec.model!r} with {spec.model_params}; "
                f"the FedAvg job trained {fedavg.model!r} with {fedavg.model_params}",
                hint="build the spec with split_conformal_spec()",
            )
        outsiders = sorted(set(spec.members or []) - set(fedavg.members or []))
        if outsiders:
            raise JobSpecError(
                f"members {outsiders} took no part in the FedAvg job; its model is "
                f"sent only to members that trained it",
                hint=f"choose members among {fedavg.members}",
            )
        return cls(
            fedavg_job=job_id,
            fedavg_spec=fedavg,
            calibration=str(calibration),
            bins=bins,
            mondrian=mondrian,
            classes=list(trained.classes),
        )


def _check_validation(spec: JobSpec, fedavg: JobSpec, trained: FedAvgOptions) -> None:
    if trained.validation_fraction <= 0:
        raise JobSpecError(
            "calibration='validation' needs the rows the FedAvg job held out, but it "
            "trained on every row (validation_fraction=0); scores of training rows "
            "are too small and would give sets that cover less than promised",
            hint="train with validation_fraction > 0, or register a separate "
            "dataset and use calibration='dataset'",
        )
    same = (spec.dataset, spec.features, spec.target) == (
        fedavg.dataset,
        fedavg.features,
        fedavg.target,
    )
    if not same:
        raise JobSpecError(
            f"calibration='validation' reads the FedAvg job's dataset "
            f"{fedavg.dataset!r} with its columns; the spec names {spec.dataset!r}",
            hint="leave dataset, features and target as the FedAvg job's",
        )


def check_options(spec: JobSpec) -> None:
    """Raise :class:`~workbench.errors.JobSpecError` if the split spec is wrong."""
    SplitConformalOptions.from_spec(spec)


def split_conformal_spec(
    *,
    fedavg_job: str,
    fedavg_spec: JobSpec,
    calibration: str = "validation",
    dataset: str | None = None,
    bins: int = 1000,
    mondrian: bool = False,
    members: Sequence[str] | None = None,
    min_members: int = 1,
    features: Sequence[str] | None = None,
    target: str | None = None,
    round_deadline: float = 120.0,
    encryption: EncryptionSpec | None = None,
) -> JobSpec:
    """Build the spec of a split conformal calibration of a FedAvg job's model.

    Parameters
    ----------
    fedavg_job : str
        The FedAvg job's id.
    fedavg_spec : JobSpec
        The FedAvg job's spec (``job.spec``).
    calibration : {"validation", "dataset"}, default="validation"
        The rows the FedAvg job held out, or every row of ``dataset``.
    dataset : str, optional
        The calibration dataset; required with ``calibration="dataset"``,
        the FedAvg job's dataset otherwise.
    bins : int, default=1000
        Equal bins of the scores ``1 - p(y|x)`` over ``[0, 1]``.
    mondrian : bool, default=False
        One histogram per class, for coverage per class.
    members : sequence of str, optional
        Participants, among the FedAvg job's; default: all of them.
    min_members : int, default=1
    features, target : optional
        Columns of the calibration dataset; default: the FedAvg job's.
    round_deadline : float, default=120.0
    encryption : EncryptionSpec, optional
        ``max_weight`` bounds each member's calibration rows.

    Returns
    -------
    JobSpec
    """
    if calibration == "dataset" and dataset is None:
        raise JobSpecError(
            "calibration='dataset' needs the name of the calibration dataset",
            hint="pass dataset='...', registered at every participant",
        )
    spec = JobSpec(
        kind="split_conformal",
        dataset=fedavg_spec.dataset if dataset is None else dataset,
        target=fedavg_spec.target if target is None else target,
        features=(
            fedavg_spec.features if features is None else [str(f) for f in features]
        ),
        model=fedavg_spec.model,
        model_params=dict(fedavg_spec.model_params),
        rounds=1,
        min_members=min_members,
        round_deadline=round_deadline,
        seed=fedavg_spec.seed,
        members=list(fedavg_spec.members or []) if members is None else list(members),
        encryption=encryption or EncryptionSpec(),
        options={
            "fedavg_job": fedavg_job,
            "fedavg_spec": fedavg_spec.to_json(),
            "calibration": calibration,
            "bins": bins,
            "mondrian": mondrian,
            "classes": FedAvgOptions.from_spec(fedavg_spec).classes,
        },
    )
    check_options(spec)
    return spec


# The shared model ---------------------------------------------------------------


def model_parameters(
    fedavg_spec: JobSpec, model: Pipeline
) -> dict[str, NDArray[np.float64]]:
    """The parameters of a FedAvg job's model (``job.model``) that rebuild it.

    Parameters
    ----------
    fedavg_spec : JobSpec
        The FedAvg job's spec.
    model : sklearn.pipeline.Pipeline
        Its model, from :func:`workbench.jobs.fedavg.build_model`.

    Returns
    -------
    dict
        ``mean`` and ``scale`` of the pooled standardization, and ``parameters``,
        the classifier's flat vector (:mod:`workbench.models`).
    """
    scaler, classifier = model.named_steps["scale"], model.named_steps["model"]
    adapter = get_model(str(fedavg_spec.model))
    return {
        "mean": np.asarray(scaler.mean_, dtype=np.float64),
        "scale": np.asarray(scaler.scale_, dtype=np.float64),
        "parameters": adapter.get_parameters(classifier),
    }


def shared_model(
    fedavg_spec: JobSpec, parameters: dict[str, NDArray[np.float64]]
) -> Pipeline:
    """Rebuild a FedAvg job's model from :func:`model_parameters`.

    The querier and every member call this on the same arrays, so all of them
    score with the same function.

    Raises
    ------
    JobSpecError
        If the arrays do not fit the FedAvg job's model and classes.
    """
    options = FedAvgOptions.from_spec(fedavg_spec)
    mean, scale = parameters["mean"], parameters["scale"]
    n_features = int(mean.size)
    if mean.shape != (n_features,) or scale.shape != mean.shape:
        raise JobSpecError(
            f"the model's mean and scale have shapes {mean.shape} and {scale.shape}",
            hint="send the arrays model_parameters() makes",
        )
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise JobSpecError(
            "the model's feature scales must be positive finite numbers",
            hint="send the arrays model_parameters() makes",
        )
    adapter = get_model(str(fedavg_spec.model))
    classifier = adapter.build(fedavg_spec.model_params, random_state=fedavg_spec.seed)
    adapter.set_parameters(
        classifier, parameters["parameters"], n_features, options.classes
    )
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = mean.copy(), scale.copy(), scale**2
    scaler.n_features_in_ = n_features
    scaler.n_samples_seen_ = 1
    return Pipeline([("scale", scaler), ("model", classifier)])


def encode_model(parameters: dict[str, NDArray[np.float64]]) -> bytes:
    """The model's parameters as a bundle of ``.npy`` arrays, before sealing."""
    return encode_bundle({name: encode_array(parameters[name]) for name in _ARRAYS})


def decode_model(data: bytes) -> dict[str, NDArray[np.float64]]:
    """Read :func:`encode_model` bytes (no pickle is read).

    Raises
    ------
    JobSpecError
        If an array is missing, not numeric or not finite.
    """
    entries = decode_bundle(data)
    missing = sorted(set(_ARRAYS) - set(entries))
    if missing:
        raise JobSpecError(
            f"the sealed model lacks the arrays {missing}",
            hint="the querier runs another version of workbench; update it",
        )
    arrays = {}
    for name in _ARRAYS:
        array = decode_array(entries[name])
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.number):
            raise JobSpecError(
                f"the sealed model's {name} is not a numeric vector (shape "
                f"{array.shape}, dtype {array.dtype})",
                hint="send the arrays model_parameters() makes",
            )
        values = array.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise JobSpecError(
                f"the sealed model's {name} holds NaN or infinite values",
                hint="calibrate a FedAvg model whose training converged",
            )
        arrays[name] = values
    return arrays


_ARRAYS = ("mean", "scale", "parameters")


# Calibration rows and histograms --------------------------------------------------


class _Rows:
    """Just enough of a JobContext for the FedAvg runner to split given rows."""

    def __init__(self, member: str, X: NDArray[Any], y: NDArray[Any]) -> None:
        self.member = member
        self._xy = (X, y)

    def dataset(self) -> _Rows:
        return self

    def xy(self, features: Any = None, target: Any = None) -> tuple[Any, Any]:
        return self._xy


def calibration_part(
    fedavg_spec: JobSpec, member: str, X: NDArray[Any], y: NDArray[Any]
) -> tuple[NDArray[np.float64], NDArray[Any]]:
    """The rows the FedAvg job held out from training at ``member``.

    Parameters
    ----------
    fedavg_spec : JobSpec
        The FedAvg job's spec (``validation_fraction > 0``).
    member : str
    X, y : ndarray
        The member's rows, as the FedAvg job read them (same order).

    Returns
    -------
    X_cal, y_cal : ndarray
        Its validation part.

    Notes
    -----
    The split is drawn by the FedAvg runner's own code, so the part is exactly
    the one the FedAvg job never trained on (given the same rows in the same
    order).
    """
    runner = FedAvgRunner(fedavg_spec)
    _, _, X_val, y_val = runner._data(_Rows(member, X, y))  # type: ignore[arg-type]
    return np.asarray(X_val, dtype=np.float64), np.asarray(y_val)


def calibration_histogram(
    model: Any,
    X: NDArray[Any],
    y: NDArray[Any],
    *,
    classes: Sequence[Any],
    bins: int,
    mondrian: bool,
) -> NDArray[np.int64]:
    """Counts of one member's scores ``1 - p(y|x)`` per bin.

    Returns
    -------
    ndarray of int64, shape (bins + 1,) or (n_classes * (bins + 1),)
        The bins of :meth:`FederatedSplitConformal.histogram`; under Mondrian the
        histograms of the rows of each class one after the other, in the order of
        ``classes``.
    """
    binner = FederatedSplitConformal(
        model, bins=bins, classes=np.asarray(classes), encrypted=False
    )
    labels = np.asarray(y)
    if not mondrian:
        return binner.histogram(X, labels)
    parts = []
    for label in classes:
        rows = labels == label
        if rows.any():
            parts.append(binner.histogram(X[rows], labels[rows]))
        else:
            parts.append(np.zeros(bins + 1, dtype=np.int64))
    return np.concatenate(parts)


class SplitConformalRunner:
    """A member's side of a split conformal job.

    Parameters
    ----------
    spec : JobSpec
        The job's spec; its options are checked here.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.options = SplitConformalOptions.from_spec(spec)

    def run_round(self, context: JobContext, round: int) -> None:
        """Score this member's calibration rows and upload their histogram."""
        options = self.options
        sealed = context.get_blob(round, MODEL_BLOB, sender=context.submitter)
        model = shared_model(options.fedavg_spec, decode_model(context.unseal(sealed)))
        X_cal, y_cal = self._calibration_rows(context, model)
        counts = calibration_histogram(
            model,
            X_cal,
            y_cal,
            classes=options.classes,
            bins=options.bins,
            mondrian=options.mondrian,
        )
        limit = self.spec.encryption.max_weight
        if int(counts.sum()) > limit:
            raise DatasetError(
                f"{int(counts.sum())} calibration rows exceed the job's "
                f"max_weight={limit}",
                hint="submit the job with a larger encryption.max_weight",
            )
        encoding = histogram_encoding(
            max_members=max(len(context.participants), 1), max_calibration_size=limit
        )
        vector = encrypt_histogram(context.public_key, counts, encoding)
        context.upload(round, {HISTOGRAM_VECTOR: vector})
        logger.info(
            "job %s round %d: histogram of calibration scores uploaded (%s rows)",
            context.job_id,
            round,
            options.calibration,
        )

    def _calibration_rows(
        self, context: JobContext, model: Pipeline
    ) -> tuple[NDArray[np.float64], NDArray[Any]]:
        X, y = context.dataset().xy(self.spec.features, self.spec.target)
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        expected = int(model.named_steps["scale"].n_features_in_)
        if X.shape[1] != expected:
            # Column counts are the schema's size, not data: the report may say them.
            raise _public(
                DatasetError(
                    f"the dataset has {X.shape[1]} feature columns; the shared model "
                    f"takes {expected}",
                    hint="name the FedAvg job's features=[...] for the calibration "
                    "data",
                )
            )
        if self.options.calibration == "validation":
            return calibration_part(self.options.fedavg_spec, context.member, X, y)
        allowed = {json.dumps(c) for c in self.options.classes}
        if any(json.dumps(_plain(v)) not in allowed for v in np.unique(y)):
            raise DatasetError(
                f"the target holds labels that the job does not list "
                f"(classes={self.options.classes})",
                hint="calibrate on rows whose labels the FedAvg job knows",
            )
        return X, y


def _public(exc: WorkbenchError) -> WorkbenchError:
    # The message holds no data value, so the failure report may carry it as is.
    exc.public_message = exc.message  # type: ignore[attr-defined]
    return exc


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


register_job_kind("split_conformal", SplitConformalRunner, check_options=check_options)
