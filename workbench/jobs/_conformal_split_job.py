"""The querier's side of split conformal jobs: a FedAvg model, calibrated.

:func:`calibrate_shared_model` runs one ``split_conformal`` job (see
:mod:`workbench.jobs.split_conformal`) and returns a
:class:`SplitConformalPredictor`: the FedAvg job's model with the conformal
quantile read from the members' pooled, encrypted histogram of calibration
scores. Its ``predict_p``, ``predict_set`` and ``evaluate`` run here, on the
querier's objects, which never leave it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from workbench.crypto import seal
from workbench.errors import CalibrationSizeError, ConformalError, JobFailedError
from workbench.jobs._conformal_core import (
    _as_2d,
    _as_labels,
    check_confidence,
    evaluate_sets,
)
from workbench.jobs._conformal_federated import QueryReport
from workbench.jobs._conformal_query import align_columns
from workbench.jobs._conformal_split import FederatedSplitConformal, histogram_from_sum

logger = logging.getLogger(__name__)

__all__ = ["SplitConformalPredictor", "calibrate_shared_model"]


class SplitConformalPredictor:
    """A shared model with a split conformal quantile from pooled histograms.

    Made by :meth:`workbench.api.Federation.split_conformal`; it can also be made
    in-process from a histogram summed elsewhere.

    Parameters
    ----------
    model : fitted classifier
        The shared model, with ``predict_proba`` in the column order of
        ``classes``.
    counts : array-like of int
        The pooled histogram: ``bins + 1`` counts, or under Mondrian
        ``n_classes * (bins + 1)`` (one histogram per class, in the order of
        ``classes``), as :func:`~workbench.jobs.split_conformal.calibration_histogram`
        makes them.
    classes : array-like of shape (n_classes,)
    bins : int
        Equal bins of the score ``1 - p(y|x)`` over ``[0, 1]``.
    mondrian : bool, default=False

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    counts_ : ndarray of int64, shape (bins + 1,) or (n_classes, bins + 1)
    calibration_size_ : int
        Calibration scores over every member.
    class_sizes_ : dict
        Calibration scores per class (Mondrian only).
    last_report_ : QueryReport
        Who answered the calibration job and who failed, with the reason.
    job_ : workbench.api.Job or None
        The calibration job.

    Notes
    -----
    With ``N`` scores, ``k = ceil((N + 1) c)`` and bin width ``w = 1 / bins``,
    the threshold is the upper edge of the bin holding the ``k``-th smallest
    score (:meth:`FederatedSplitConformal.threshold`). If the calibration rows
    and a test example are exchangeable and the model trained on none of them,

        c <= P(y in set) <= c + 1 / (N + 1) + P(s_(k) < S <= s_(k) + w),

    the last term (the bin-width term) being at most ``w`` times the largest
    density of the scores near the quantile. Under Mondrian the same holds per
    class ``y`` with ``N_y``, the calibration scores of that class.

    ``predict_p`` gives the p-value the histogram allows, ``(G + 1) / (N + 1)``
    with ``G`` the calibration scores in the bin of the test score or above:
    it is at least the exact p-value, and ``predict_p(X) > 1 - c`` is the set
    ``predict_set`` returns (up to rounding of scores on a bin edge).
    """

    def __init__(
        self,
        model: Any,
        counts: ArrayLike,
        *,
        classes: ArrayLike,
        bins: int,
        mondrian: bool = False,
    ) -> None:
        self.model = model
        self.classes_ = np.asarray(classes)
        self.bins = int(bins)
        self.mondrian = bool(mondrian)
        histogram = np.asarray(counts, dtype=np.int64).reshape(-1)
        groups = self.classes_.size if self.mondrian else 1
        if histogram.size != groups * (self.bins + 1) or histogram.min() < 0:
            raise ConformalError(
                f"the pooled histogram must hold {groups * (self.bins + 1)} "
                f"non-negative counts; received {histogram.size}",
                hint="calibrate with the bins and mondrian setting of the job",
            )
        self.counts_ = histogram.reshape(groups, self.bins + 1)
        self.calibration_size_ = int(histogram.sum())
        self._calibrators = [
            FederatedSplitConformal(
                model, bins=self.bins, classes=self.classes_, encrypted=False
            ).calibrate_from_counts(row)
            for row in self.counts_
        ]
        if not self.mondrian:
            self.counts_ = self.counts_[0]
        self.class_sizes_ = (
            {
                label: calibrator.calibration_size_
                for label, calibrator in zip(
                    self.classes_.tolist(), self._calibrators, strict=True
                )
            }
            if self.mondrian
            else {}
        )
        self.last_report_ = QueryReport()
        self.job_: Any = None

    def __repr__(self) -> str:
        return (
            f"SplitConformalPredictor(classes={self.classes_.tolist()!r}, "
            f"bins={self.bins}, mondrian={self.mondrian}, "
            f"calibration_size={self.calibration_size_})"
        )

    def threshold(self, confidence: float = 0.9) -> NDArray[np.float64]:
        """Largest score admitted into a set, per class (the same for all classes
        without Mondrian), shape (n_classes,).

        Raises
        ------
        CalibrationSizeError
            If the calibration scores (of some class, under Mondrian) are too few
            for ``confidence``; the message names the class.
        """
        level = check_confidence(confidence)
        if not self.mondrian:
            limit = self._calibrators[0].threshold(level)
            return np.full(self.classes_.size, limit)
        limits = []
        for label, calibrator in zip(
            self.classes_.tolist(), self._calibrators, strict=True
        ):
            try:
                limits.append(calibrator.threshold(level))
            except CalibrationSizeError as exc:
                raise CalibrationSizeError(
                    f"class {label!r}: {exc.message}",
                    hint="lower the confidence, calibrate on more rows of this "
                    "class, or use mondrian=False",
                ) from exc
        return np.asarray(limits, dtype=np.float64)

    def _by_name(self, X: ArrayLike) -> Any:
        # A DataFrame goes in the model's feature order (or is refused), and stays
        # a DataFrame for the model; without names, and for a plain array, columns
        # go by position.
        names = getattr(self.model, "feature_names_in_", None)
        features = None if names is None else [str(n) for n in names]
        aligned = align_columns(X, features)
        array = _as_2d(aligned)
        return aligned if hasattr(aligned, "columns") else array

    def _scores(self, X: ArrayLike) -> NDArray[np.float64]:
        proba = np.asarray(self.model.predict_proba(self._by_name(X)), dtype=np.float64)
        return 1.0 - proba

    def predict_p(self, X: ArrayLike) -> NDArray[np.float64]:
        """P-values of every class for every object, from the pooled histogram.

        Returns
        -------
        ndarray of shape (n_objects, n_classes)
        """
        scores = self._scores(X)
        width = 1.0 / self.bins
        # The bin whose upper edge is the first at or above the score, so that a
        # score admitted by threshold() counts every calibration score of its bin.
        index = np.clip(np.ceil(scores / width).astype(np.int64) - 1, 0, self.bins)
        index[scores > 1.0] = self.bins
        p_values = np.empty_like(scores)
        for column in range(self.classes_.size):
            calibrator = self._calibrators[column if self.mondrian else 0]
            at_or_above = np.cumsum(calibrator.counts_[::-1])[::-1]
            n = calibrator.calibration_size_
            p_values[:, column] = (at_or_above[index[:, column]] + 1.0) / (n + 1.0)
        return p_values

    def predict_set(self, X: ArrayLike, confidence: float = 0.9) -> NDArray[np.bool_]:
        """Prediction sets at ``confidence``, objects by classes.

        Raises
        ------
        ConformalError
            If ``confidence`` is outside (0, 1).
        CalibrationSizeError
            If the calibration scores are too few for ``confidence``.
        """
        limits = self.threshold(confidence)
        return self._scores(X) <= limits[None, :]

    def evaluate(
        self, X: ArrayLike, y: ArrayLike, confidence: float = 0.9
    ) -> dict[str, Any]:
        """Error rate, set sizes and coverage (per class too) at ``confidence``.

        Returns
        -------
        dict
            See :func:`~workbench.jobs.conformal.evaluate_sets`.
        """
        X_test = self._by_name(X)
        labels = _as_labels(y, X_test.shape[0])
        index = {label: c for c, label in enumerate(self.classes_.tolist())}
        unknown = [label for label in labels.tolist() if label not in index]
        if unknown:
            raise ConformalError(
                f"label {unknown[0]!r} is not among the classes "
                f"{self.classes_.tolist()!r}",
                hint="evaluate on labels the FedAvg job lists in classes=[...]",
            )
        columns = np.array([index[label] for label in labels.tolist()], dtype=np.intp)
        return evaluate_sets(
            self.predict_set(X_test, confidence), columns, self.classes_
        )


def calibrate_shared_model(
    federation: Any,
    fedavg: Any,
    *,
    calibration: str = "validation",
    dataset: str | None = None,
    bins: int = 1000,
    mondrian: bool = False,
    members: Sequence[str] | None = None,
    min_members: int | None = None,
    round_deadline: float = 120.0,
    encryption: Any | None = None,
    features: Sequence[str] | None = None,
    target: str | None = None,
    timeout: float | None = None,
) -> SplitConformalPredictor:
    """Run a split conformal job on a FedAvg job's model; see the module.

    Parameters are those of :meth:`workbench.api.Federation.split_conformal`,
    with ``fedavg`` a :class:`workbench.api.Job` of kind ``fedavg``.

    Raises
    ------
    ConformalError
        If ``fedavg`` is not a completed FedAvg job, or the pooled histogram is
        inconsistent.
    JobFailedError
        If fewer than ``min_members`` members answered; the message names each
        failure.
    """
    from workbench.jobs.split_conformal import (
        HISTOGRAM_VECTOR,
        MODEL_BLOB,
        SplitConformalOptions,
        encode_model,
        model_parameters,
        shared_model,
        split_conformal_spec,
    )

    if getattr(fedavg, "spec", None) is None or fedavg.spec.kind != "fedavg":
        raise ConformalError(
            f"split conformal calibrates the model of a FedAvg job; received "
            f"{fedavg!r}",
            hint="pass the Job that fed.train(...) returned, or its id",
        )
    fedavg.wait(timeout=timeout)
    parameters = model_parameters(fedavg.spec, fedavg.model)
    model = shared_model(fedavg.spec, parameters)
    participants = list(fedavg.spec.members or []) if members is None else members
    if min_members is None:
        min_members = min(2, len(participants))
    spec = split_conformal_spec(
        fedavg_job=fedavg.id,
        fedavg_spec=fedavg.spec,
        calibration=calibration,
        dataset=dataset,
        bins=bins,
        mondrian=mondrian,
        members=participants,
        min_members=min_members,
        features=features,
        target=target,
        round_deadline=round_deadline,
        encryption=encryption,
    )
    job = federation.submit(spec)
    keys = {
        m["name"]: bytes.fromhex(m["sealing_public_key"]) for m in federation.members()
    }
    bundle = encode_model(parameters)
    for name in spec.members or []:
        federation.client.put_blob(
            job.id, 1, MODEL_BLOB, seal(bundle, keys[name]), recipient=name
        )
    try:
        job.wait(timeout=timeout or spec.round_deadline + 60.0)
    except JobFailedError as exc:
        report = QueryReport.from_status(job.status(), "calibration")
        failures = "; ".join(f"{n}: {r}" for n, r in report.failures.items())
        raise JobFailedError(
            f"split conformal calibration {job.id} failed: {exc.message}"
            + (f"; member failures: {failures}" if failures else ""),
            hint="fix what the members report, or calibrate with fewer min_members",
        ) from exc
    report = QueryReport.from_status(job.status(), "calibration")
    decrypted = job.aggregate(1)[HISTOGRAM_VECTOR]
    counts = histogram_from_sum(decrypted)
    if int(counts.sum()) != int(decrypted.weight or 0) or counts.min() < 0:
        raise ConformalError(
            f"the pooled histogram of job {job.id} holds {int(counts.sum())} scores "
            f"but its weight says {decrypted.weight}",
            hint="a member sent a malformed histogram; calibrate again",
        )
    classes = SplitConformalOptions.from_spec(spec).classes
    predictor = SplitConformalPredictor(
        model, counts, classes=classes, bins=bins, mondrian=mondrian
    )
    predictor.last_report_ = report
    predictor.job_ = job
    logger.info(
        "split conformal job %s: %d members answered, %d failed, %d calibration scores",
        job.id,
        len(report.answered),
        len(report.failures),
        predictor.calibration_size_,
    )
    return predictor
