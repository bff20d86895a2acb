"""The querier's side of conformal jobs: one job per query, over the coordinator.

:class:`ConformalQuerier` has the methods of the in-process aggregated predictors
(``predict_p``, ``predict_set``, ``predict_int``, ``evaluate``), but its members
are the federation's member agents: every call that needs p-values submits one
conformal job (see :mod:`workbench.jobs._conformal_job`), sends the query objects
as the job's plaintext round input, waits for the round to close and decrypts the
sum of the members' encrypted replies (or, under ``median``, opens the replies
sealed to this member).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from workbench.crypto import DecryptedSum, unseal
from workbench.errors import ConformalError, JobFailedError
from workbench.jobs._conformal_combine import (
    ENCRYPTED_RULES,
    MemberReply,
    _finish,
    _split_sum,
    check_rule,
    combine_p_values,
)
from workbench.jobs._conformal_core import (
    _as_2d,
    _as_labels,
    check_confidence,
    evaluate_intervals,
    evaluate_sets,
    p_value_threshold,
)
from workbench.jobs._conformal_federated import (
    QueryReport,
    intervals_from_grid,
    warn_open_intervals,
)
from workbench.jobs._conformal_job import (
    P_VALUES_BLOB,
    QUERY_BLOB,
    REPLY_VECTOR,
    conformal_spec,
    decode_sealed_reply,
)
from workbench.jobs.spec import EncryptionSpec
from workbench.wire import encode_array

logger = logging.getLogger(__name__)

__all__ = ["ConformalQuerier", "align_columns", "combination_from_sum"]


def combination_from_sum(
    decrypted: DecryptedSum, shape: tuple[int, int], *, rule: str
) -> NDArray[np.float64]:
    """Combined p-values from the decrypted sum of members' encrypted replies.

    The same arithmetic as :func:`~workbench.jobs.conformal.decrypt_combination`,
    applied to a sum that the job's handle has decrypted already.

    Parameters
    ----------
    decrypted : DecryptedSum
        The decrypted aggregate of the ``reply`` vectors.
    shape : tuple of int
        ``(n_objects, n_columns)`` of the query.
    rule : {"mean", "weighted_mean", "twice_mean"}

    Returns
    -------
    ndarray of shape ``shape``
    """
    check_rule(rule)
    total = (
        decrypted.weight if decrypted.weight is not None else decrypted.contributions
    )
    numerator, denominator = _split_sum(
        np.asarray(decrypted.values, dtype=np.float64), int(total), shape
    )
    return _finish(numerator, denominator, rule)


class ConformalQuerier:
    """Aggregated conformal prediction by the federation's members, one job a query.

    Made by :meth:`workbench.api.Federation.conformal`. Members train and
    calibrate on their own registered dataset in every query (seeded, so the same
    query gives the same answer); only p-values leave them, encrypted under the
    mean rules.

    Parameters
    ----------
    federation : workbench.api.Federation
        The querier's handle on its federation.
    dataset : str
        Dataset name registered at every participant.
    task : {"classification", "regression"}, default="classification"
    rule : {"mean", "weighted_mean", "median", "twice_mean"}, default="mean"
    classes : sequence, optional
        Every label of the target (classification).
    candidates : sequence of float, optional
        Increasing grid of target values (regression).
    key_bits : int, default=2048
        Paillier key size of each query's job.
    allow_insecure_keys : bool, default=False
        Allow ``key_bits`` below 2048 (tests only).
    timeout : float or None, default=None
        Seconds to wait for a query; ``None``: the round deadline and a minute.
    **spec_options
        Passed on to :func:`~workbench.jobs._conformal_job.conformal_spec`
        (``mondrian``, ``smoothing``, ``calibration_size``, ``model``,
        ``model_params``, ``members``, ``min_members``, ``features``, ``target``,
        ``round_deadline``, ``seed``, ``bits``).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,) or None
    candidates : ndarray of shape (n_candidates,) or None
    last_report_ : QueryReport
        Who answered and who failed (with the reason) in the latest query; under
        ``median`` also who abstained on how many columns.
    last_job_ : workbench.api.Job or None
        The job of the latest query.

    Notes
    -----
    A DataFrame query is put in the job's feature order by name (missing or
    other columns are refused); a plain array goes by position. When the job
    names no features (the querier holds no copy of the dataset and not every
    participant published its schema), every query goes by position at each
    member.

    Each query discloses its objects (feature vectors) to the coordinator and to
    every participant; the job's spec says so. Under ``median`` each member's
    p-values reach the querier; under the mean rules only their combination
    does, with the number of members (or calibration examples) behind each column.
    """

    def __init__(
        self,
        federation: Any,
        *,
        dataset: str,
        task: str = "classification",
        rule: str = "mean",
        classes: Sequence[Any] | None = None,
        candidates: ArrayLike | None = None,
        key_bits: int = 2048,
        allow_insecure_keys: bool = False,
        timeout: float | None = None,
        **spec_options: Any,
    ) -> None:
        self.federation = federation
        self.dataset = dataset
        self.task = task
        self.rule = check_rule(rule)
        self.encryption = EncryptionSpec(
            key_bits=key_bits, allow_insecure_keys=allow_insecure_keys
        )
        self.spec_options: dict[str, Any] = dict(spec_options)
        self.classes_ = None if classes is None else np.asarray(list(classes))
        self.candidates = (
            None
            if candidates is None
            else np.asarray(candidates, dtype=np.float64).reshape(-1)
        )
        self.timeout = timeout
        self.last_report_ = QueryReport()
        self.last_job_: Any = None
        # Check every option now, with a query of one object, so that a bad option
        # fails here and not at the first query.
        self._spec(1, 1, None)

    def __repr__(self) -> str:
        return (
            f"ConformalQuerier(dataset={self.dataset!r}, task={self.task!r}, "
            f"rule={self.rule!r})"
        )

    def _spec(self, n_objects: int, n_features: int, confidence: float | None) -> Any:
        return conformal_spec(
            dataset=self.dataset,
            n_objects=n_objects,
            n_features=n_features,
            task=self.task,
            rule=self.rule,
            classes=None if self.classes_ is None else self.classes_.tolist(),
            candidates=None if self.candidates is None else self.candidates.tolist(),
            confidence=confidence,
            encryption=self.encryption,
            **self.spec_options,
        )

    # Queries ----------------------------------------------------------------------

    def predict_p(
        self, X: ArrayLike, *, confidence: float | None = None
    ) -> NDArray[np.float64]:
        """Combined p-values of every class (or candidate) for every object.

        Parameters
        ----------
        X : array-like of shape (n_objects, n_features)
            The query objects; they are sent to the members in plaintext.
        confidence : float, optional
            Members abstain on columns with too few calibration examples for it.

        Returns
        -------
        ndarray of shape (n_objects, n_classes) or (n_objects, n_candidates)

        Raises
        ------
        ConformalError
            If ``X`` is not a finite numeric matrix, or no member's reply arrived.
        CalibrationSizeError
            If no member has enough calibration examples for any column.
        JobFailedError
            If fewer than ``min_members`` members answered; the message names the
            failures.
        """
        level = None if confidence is None else check_confidence(confidence)
        X_query = _query_matrix(self._by_name(X))
        self._check_width(X_query.shape[1])
        spec = self._spec(X_query.shape[0], X_query.shape[1], level)
        job = self.federation.submit(spec)
        self.last_job_ = job
        self.federation.client.put_blob(
            job.id, 1, QUERY_BLOB, encode_array(X_query), format="npy"
        )
        timeout = self.timeout or spec.round_deadline + 60.0
        try:
            job.wait(timeout=timeout)
        except JobFailedError as exc:
            self.last_report_ = QueryReport.from_status(job.status(), "query")
            failures = "; ".join(
                f"{name}: {reason}"
                for name, reason in self.last_report_.failures.items()
            )
            raise JobFailedError(
                f"conformal query {job.id} failed: {exc.message}"
                + (f"; member failures: {failures}" if failures else ""),
                hint="fix what the members report, or query with fewer "
                "min_members; querier.last_report_ lists each member",
            ) from exc
        report = QueryReport.from_status(job.status(), "query")
        shape = (X_query.shape[0], self._n_columns())
        if self.rule in ENCRYPTED_RULES:
            decrypted = job.aggregate(1)[REPLY_VECTOR]
            p_values = combination_from_sum(decrypted, shape, rule=self.rule)
        else:
            p_values = self._median(job, report, shape)
        self.last_report_ = report
        logger.info(
            "conformal query %s: %d members answered, %d failed (%s)",
            job.id,
            len(report.answered),
            len(report.failures),
            self.rule,
        )
        return p_values

    def predict_set(self, X: ArrayLike, confidence: float = 0.9) -> NDArray[np.bool_]:
        """Prediction sets at ``confidence``, objects by classes (classification).

        Raises
        ------
        ConformalError
            If ``confidence`` is outside (0, 1), or the job is a regression.
        """
        level = check_confidence(confidence)
        self._require("classification", "predict_set")
        return self.predict_p(X, confidence=level) > p_value_threshold(level)

    def predict_int(self, X: ArrayLike, confidence: float = 0.9) -> NDArray[np.float64]:
        """Prediction intervals at ``confidence`` (regression), shape (n_objects, 2).

        See :func:`~workbench.jobs.conformal.intervals_from_grid`; an interval
        that reaches the grid's edge is open there, with a ConformalWarning.
        """
        level = check_confidence(confidence)
        self._require("regression", "predict_int")
        assert self.candidates is not None
        intervals = intervals_from_grid(
            self.predict_p(X, confidence=level), self.candidates, level
        )
        warn_open_intervals(intervals, self.candidates)
        return intervals

    def evaluate(
        self, X: ArrayLike, y: ArrayLike, confidence: float = 0.9
    ) -> dict[str, Any]:
        """Error rate, set sizes (or widths) and coverage at ``confidence``.

        The true labels ``y`` stay with the querier: only ``X`` is sent.

        Returns
        -------
        dict
            See :func:`~workbench.jobs.conformal.evaluate_sets` (classification)
            or :func:`~workbench.jobs.conformal.evaluate_intervals` (regression).
        """
        X_test = _query_matrix(self._by_name(X))
        labels = _as_labels(y, X_test.shape[0])
        if self.task == "regression":
            return evaluate_intervals(
                self.predict_int(X_test, confidence), labels.astype(np.float64)
            )
        assert self.classes_ is not None
        index = {label: c for c, label in enumerate(self.classes_.tolist())}
        unknown = [label for label in labels.tolist() if label not in index]
        if unknown:
            raise ConformalError(
                f"label {unknown[0]!r} is not among the classes "
                f"{self.classes_.tolist()!r}",
                hint="evaluate on labels the job lists in classes=[...]",
            )
        columns = np.array([index[label] for label in labels.tolist()], dtype=np.intp)
        sets = self.predict_set(X_test, confidence)
        return evaluate_sets(sets, columns, self.classes_)

    # Helpers ----------------------------------------------------------------------

    def _by_name(self, X: ArrayLike) -> ArrayLike:
        # A DataFrame goes in the job's feature order; an array goes by position.
        return align_columns(X, self.spec_options.get("features"))

    def _check_width(self, n_features: int) -> None:
        # The querier's own copy of the dataset, if it holds one, says how many
        # features the members expect: a mismatch fails here, not at every member.
        datasets = getattr(self.federation, "datasets", None)
        if datasets is None or self.dataset not in datasets:
            return
        features = self.spec_options.get("features")
        expected = (
            len(features)
            if features is not None
            else len(datasets.get(self.dataset).features)
        )
        if n_features != expected:
            raise ConformalError(
                f"the query objects have {n_features} feature columns; the dataset "
                f"{self.dataset!r} has {expected}",
                hint=f"query with {expected} columns, in the dataset's order",
            )

    def _n_columns(self) -> int:
        columns = self.classes_ if self.task == "classification" else self.candidates
        assert columns is not None
        return int(columns.size)

    def _require(self, task: str, method: str) -> None:
        if self.task != task:
            raise ConformalError(
                f"{method}() is for {task}; this querier runs {self.task} jobs",
                hint="use predict_set() for classification, predict_int() for "
                "regression",
            )

    def _median(
        self, job: Any, report: QueryReport, shape: tuple[int, int]
    ) -> NDArray[np.float64]:
        key = bytes.fromhex(self.federation.credential.sealing_private_key)
        replies: list[MemberReply] = []
        for name in list(report.answered):
            sealed = self.federation.client.get_blob(
                job.id, 1, P_VALUES_BLOB, sender=name, wait=0
            )
            if sealed is None:
                report.answered.remove(name)
                report.failures[name] = "its sealed p-values did not arrive"
                continue
            reply = decode_sealed_reply(unseal(sealed, key), shape)
            replies.append(reply)
            if not reply.mask.all():
                report.abstentions[name] = int((~reply.mask).sum())
        if not replies:
            raise ConformalError(
                f"no member's sealed p-values arrived for job {job.id}: "
                f"{report.failures}",
                hint="check the members' logs and query again",
            )
        return combine_p_values(replies, "median")


def _query_matrix(X: ArrayLike) -> NDArray[np.float64]:
    array = _as_2d(X)
    try:
        matrix = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConformalError(
            f"the query objects must be numeric; received dtype {array.dtype}",
            hint="encode the features as numbers, as the members' datasets do",
        ) from exc
    if matrix.shape[0] < 1 or not np.all(np.isfinite(matrix)):
        raise ConformalError(
            f"the query objects must be a non-empty matrix of finite numbers; "
            f"received shape {matrix.shape}",
            hint="drop or impute rows with missing values before querying",
        )
    return matrix


def align_columns(X: Any, features: Sequence[str] | None) -> Any:
    """Reorder a DataFrame's columns to ``features``; other inputs pass unchanged.

    Parameters
    ----------
    X : array-like or pandas.DataFrame
        Query objects.
    features : sequence of str or None
        The job's feature columns, in the members' order; ``None`` when no names
        are known, and then every input goes by position.

    Returns
    -------
    array-like
        ``X[features]`` for a DataFrame, else ``X``.

    Raises
    ------
    ConformalError
        If a DataFrame lacks one of ``features`` or holds other columns.
    """
    if features is None or not hasattr(X, "columns"):
        return X
    columns = [str(c) for c in X.columns]
    missing = [f for f in features if f not in columns]
    extra = [c for c in columns if c not in features]
    if missing or extra:
        raise ConformalError(
            f"the query's columns do not match the job's features: missing "
            f"{missing[:10]}, not features {extra[:10]}",
            hint=f"query with the columns {list(features)[:10]}"
            + (" ..." if len(features) > 10 else "")
            + ", or pass a plain array in that order",
        )
    return X[list(features)]
