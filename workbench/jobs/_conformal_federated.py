"""Aggregated conformal predictors over members that share only p-values.

:class:`FederatedConformalClassifier` and :class:`FederatedConformalRegressor` run
a query through members held in this process, with the same steps as the
distributed job: every member computes its reply, the mean rules are encrypted
and only added, and the querier decrypts the sum. A member that fails is left out
and reported in :attr:`last_report_`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from workbench.errors import CalibrationSizeError, ConformalError
from workbench.jobs._conformal_combine import (
    ENCRYPTED_RULES,
    MemberReply,
    check_rule,
    combine_p_values,
    decrypt_combination,
    encrypt_reply,
    reply_encoding,
    rule_confidence,
)
from workbench.jobs._conformal_core import (
    ConformalClassifier,
    ConformalRegressor,
    ConformalWarning,
    _as_2d,
    _as_labels,
    check_confidence,
    evaluate_intervals,
    evaluate_sets,
    minimum_calibration_size,
    p_value_threshold,
)

logger = logging.getLogger(__name__)


def member_reply(
    predictor: ConformalClassifier | ConformalRegressor,
    X: ArrayLike,
    *,
    confidence: float | None = None,
    rule: str = "mean",
    candidates: ArrayLike | None = None,
) -> MemberReply:
    """Compute one member's reply to a query.

    Parameters
    ----------
    predictor : ConformalClassifier or ConformalRegressor
        The member's calibrated predictor.
    X : array-like of shape (n_objects, n_features)
        The query objects.
    confidence : float, optional
        The confidence the querier will ask for. A member abstains on the columns
        whose calibration examples are too few for it under ``rule``; without a
        confidence it abstains only on columns with no calibration example.
    rule : str, default="mean"
    candidates : array-like of shape (n_candidates,), optional
        The grid of target values; required for a regressor.

    Returns
    -------
    MemberReply
    """
    needed = 1
    if confidence is not None:
        level = rule_confidence(check_rule(rule), check_confidence(confidence))
        needed = minimum_calibration_size(level)
    if isinstance(predictor, ConformalRegressor):
        if candidates is None:
            raise ConformalError(
                "a regression query needs the grid of candidate target values",
                hint="pass candidates=numpy.linspace(low, high, count)",
            )
        p_values = predictor.predict_p(X, candidates)
        counts = np.full(p_values.shape[1], predictor.calibration_size_)
        size = predictor.calibration_size_
    else:
        p_values = predictor.predict_p(X)
        counts = predictor.calibration_counts()
        size = predictor.calibration_size_
    return MemberReply(p_values=p_values, mask=counts >= needed, calibration_size=size)


@dataclass
class QueryReport:
    """What happened to one query.

    Attributes
    ----------
    answered : list of str
        Members whose replies were combined.
    failures : dict of str to str
        Members that failed, with the reason.
    abstentions : dict of str to int
        Members that abstained on some columns, with how many.
    """

    answered: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    abstentions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_status(cls, status: Mapping[str, Any], what: str) -> QueryReport:
        """The report of a one-round job from its status, logging each failure.

        Parameters
        ----------
        status : mapping
            ``Job.status()`` of the finished job.
        what : str
            What the job did, for the log line ("query", "calibration").
        """
        report = cls()
        rounds = status.get("rounds") or []
        if rounds:
            report.answered = list(rounds[0]["updates"])
        for member in status["members"]:
            if member["role"] == "participant" and member["state"] != "active":
                report.failures[member["name"]] = str(member["reason"])
        for name, reason in report.failures.items():
            logger.warning("member %s failed during the %s: %s", name, what, reason)
        return report


class _Federated:
    """Shared machinery: member bookkeeping, keys, the encrypted round trip."""

    def __init__(
        self,
        members: Mapping[str, Any] | Sequence[Any],
        *,
        rule: str,
        encrypted: bool,
        public_key: Any | None,
        private_key: Any | None,
        key_size: int,
    ) -> None:
        if isinstance(members, Mapping):
            self.members = dict(members)
        else:
            self.members = {f"member-{i + 1}": m for i, m in enumerate(members)}
        if not self.members:
            raise ConformalError(
                "an aggregated conformal predictor needs at least one member",
                hint="pass the calibrated predictors of the members",
            )
        self.rule = check_rule(rule)
        if encrypted and rule not in ENCRYPTED_RULES:
            raise ConformalError(
                f"rule {rule!r} discloses each member's p-values to the querier and "
                f"cannot run encrypted",
                hint="pass encrypted=False, or use one of "
                + ", ".join(ENCRYPTED_RULES),
            )
        self.encrypted = encrypted
        self.public_key = public_key
        self.private_key = private_key
        self.key_size = key_size
        self.last_report_ = QueryReport()

    def _keys(self) -> tuple[Any, Any]:
        if self.public_key is None or self.private_key is None:
            from workbench.crypto import generate_keypair

            self.public_key, self.private_key = generate_keypair(
                self.key_size, allow_insecure=self.key_size < 2048
            )
        return self.public_key, self.private_key

    def _replies(
        self, X: NDArray[Any], confidence: float | None, candidates: Any | None
    ) -> dict[str, MemberReply]:
        report = QueryReport()
        replies: dict[str, MemberReply] = {}
        for name, predictor in self.members.items():
            try:
                reply = member_reply(
                    predictor,
                    X,
                    confidence=confidence,
                    rule=self.rule,
                    candidates=candidates,
                )
            except Exception as exc:  # a member's failure is reported, not fatal
                report.failures[name] = f"{type(exc).__name__}: {exc}"
                logger.warning("member %s failed during the query: %s", name, exc)
                continue
            replies[name] = reply
            report.answered.append(name)
            if not reply.mask.all():
                report.abstentions[name] = int((~reply.mask).sum())
        self.last_report_ = report
        if not replies:
            raise ConformalError(
                f"every member failed during the query: {report.failures}",
                hint="fix the members' failures and query again",
            )
        if not any(reply.mask.any() for reply in replies.values()):
            level = rule_confidence(self.rule, confidence or 0.0)
            needed = minimum_calibration_size(level) if confidence else 1
            raise CalibrationSizeError(
                f"no member has the {needed} calibration examples needed for "
                f"confidence {confidence} under the {self.rule} rule",
                hint="lower the confidence or calibrate the members on more examples",
            )
        logger.info(
            "query answered by %d of %d members", len(replies), len(self.members)
        )
        return replies

    def _combine(self, replies: dict[str, MemberReply]) -> NDArray[np.float64]:
        ordered = list(replies.values())
        if not self.encrypted:
            return combine_p_values(ordered, self.rule)
        from workbench.crypto import aggregate

        public_key, private_key = self._keys()
        encoding = reply_encoding(
            self.rule,
            max_members=len(self.members),
            max_calibration_size=max(r.calibration_size for r in ordered),
        )
        vectors = [
            encrypt_reply(public_key, reply, rule=self.rule, encoding=encoding)
            for reply in ordered
        ]
        total = aggregate(vectors)
        return decrypt_combination(private_key, total, ordered[0].shape, rule=self.rule)


class FederatedConformalClassifier(_Federated):
    """Aggregated conformal classifier over members' own predictors.

    Parameters
    ----------
    members : mapping of str to ConformalClassifier, or sequence
        Calibrated predictors, one per member, with the same ``classes_``.
    rule : {"mean", "weighted_mean", "median", "twice_mean"}, default="mean"
        How p-values are combined; see :func:`combine_p_values`.
    encrypted : bool, default=True
        Compute the mean rules under Paillier. ``median`` needs
        ``encrypted=False``: each member's p-values are then disclosed to the
        querier.
    public_key, private_key : phe keys, optional
        The job's key pair; made on first use when absent.
    key_size : int, default=2048
        Size of a key made here; below 2048 only for tests.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    last_report_ : QueryReport
        Who answered, who failed and who abstained in the latest query.

    References
    ----------
    .. [1] O. Spjuth, L. Carlsson, N. Gauraha, "Aggregating predictions on
       multiple non-disclosed datasets using conformal prediction",
       arXiv:1806.04000, 2018.
    .. [2] L. Carlsson, M. Eklund, U. Norinder, "Aggregated conformal
       prediction", AIAI 2014.
    """

    def __init__(
        self,
        members: Mapping[str, ConformalClassifier] | Sequence[ConformalClassifier],
        *,
        rule: str = "mean",
        encrypted: bool = True,
        public_key: Any | None = None,
        private_key: Any | None = None,
        key_size: int = 2048,
    ) -> None:
        super().__init__(
            members,
            rule=rule,
            encrypted=encrypted,
            public_key=public_key,
            private_key=private_key,
            key_size=key_size,
        )
        classes = [np.asarray(m.classes_).tolist() for m in self.members.values()]
        if any(c != classes[0] for c in classes):
            raise ConformalError(
                f"members disagree on the classes: {classes}",
                hint="calibrate every member with the same classes=[...]",
            )
        self.classes_ = np.asarray(next(iter(self.members.values())).classes_)

    def predict_p(
        self, X: ArrayLike, *, confidence: float | None = None
    ) -> NDArray[np.float64]:
        """Combined p-values of every class for every object.

        Parameters
        ----------
        X : array-like of shape (n_objects, n_features)
        confidence : float, optional
            Members abstain on classes with too few calibration examples for it.

        Returns
        -------
        ndarray of shape (n_objects, n_classes)
        """
        replies = self._replies(_as_2d(X), confidence, None)
        return self._combine(replies)

    def predict_set(self, X: ArrayLike, confidence: float = 0.9) -> NDArray[np.bool_]:
        """Prediction sets at ``confidence``, objects by classes.

        Raises
        ------
        ConformalError
            If ``confidence`` is outside (0, 1), or every member failed.
        CalibrationSizeError
            If no member has enough calibration examples for ``confidence``.
        """
        level = check_confidence(confidence)
        return self.predict_p(X, confidence=level) > p_value_threshold(level)

    def evaluate(
        self, X: ArrayLike, y: ArrayLike, confidence: float = 0.9
    ) -> dict[str, Any]:
        """Error rate, set sizes and coverage per class at ``confidence``.

        Returns
        -------
        dict
            See :func:`evaluate_sets`.
        """
        X_test = _as_2d(X)
        labels = _as_labels(y, X_test.shape[0])
        sets = self.predict_set(X_test, confidence)
        index = {label: c for c, label in enumerate(self.classes_.tolist())}
        unknown = [label for label in labels.tolist() if label not in index]
        if unknown:
            raise ConformalError(
                f"label {unknown[0]!r} is not among the classes "
                f"{self.classes_.tolist()!r}",
                hint="evaluate on labels the members were calibrated with",
            )
        columns = np.array([index[label] for label in labels.tolist()], dtype=np.intp)
        return evaluate_sets(sets, columns, self.classes_)


def warn_open_intervals(intervals: NDArray[np.float64], candidates: ArrayLike) -> None:
    """Warn with a ConformalWarning when intervals reach the grid's edge.

    Parameters
    ----------
    intervals : ndarray of shape (n_objects, 2)
        Output of :func:`intervals_from_grid`.
    candidates : array-like
        The grid the intervals were read from.
    """
    if np.isinf(intervals).any():
        grid = np.asarray(candidates)
        warnings.warn(
            f"{int(np.isinf(intervals).any(axis=1).sum())} intervals reach the "
            f"edge of the grid [{grid[0]}, {grid[-1]}] and are open there",
            ConformalWarning,
            stacklevel=3,
        )


def intervals_from_grid(
    p_values: NDArray[np.float64],
    candidates: NDArray[np.float64],
    confidence: float,
) -> NDArray[np.float64]:
    """Turn p-values over a grid of target values into intervals.

    Parameters
    ----------
    p_values : ndarray of shape (n_objects, n_candidates)
    candidates : ndarray of shape (n_candidates,)
        Increasing grid.
    confidence : float

    Returns
    -------
    ndarray of shape (n_objects, 2)
        For each object, from the last excluded candidate below the set to the
        first excluded candidate above it, so that the interval holds every
        value between grid points that the set could hold. An end is infinite
        when the set reaches the edge of the grid, and both are NaN when the set
        is empty.
    """
    inside = p_values > p_value_threshold(confidence)
    n_candidates = candidates.size
    any_inside = inside.any(axis=1)
    first = np.argmax(inside, axis=1)
    last = n_candidates - 1 - np.argmax(inside[:, ::-1], axis=1)
    low = np.where(first > 0, candidates[np.maximum(first - 1, 0)], -np.inf)
    high = np.where(
        last < n_candidates - 1,
        candidates[np.minimum(last + 1, n_candidates - 1)],
        np.inf,
    )
    intervals = np.column_stack([low, high])
    intervals[~any_inside] = np.nan
    return intervals


class FederatedConformalRegressor(_Federated):
    """Aggregated conformal regressor: members' p-values over a grid of targets.

    Parameters
    ----------
    members : mapping of str to ConformalRegressor, or sequence
    candidates : array-like of shape (n_candidates,)
        Increasing grid of target values, the same for every member; it must
        span the target's range and the widest interval expected.
    rule : {"mean", "weighted_mean", "median", "twice_mean"}, default="mean"
    encrypted : bool, default=True
    public_key, private_key : phe keys, optional
    key_size : int, default=2048

    Notes
    -----
    Each member tests every candidate ``y`` with its own absolute-residual
    predictor; the combined p-value of ``y`` is the rule applied to the members'
    p-values, and the interval spans the candidates whose combined p-value
    exceeds ``1 - confidence``, widened to the neighbouring excluded candidates.
    The grid step adds at most two steps to each width.
    """

    def __init__(
        self,
        members: Mapping[str, ConformalRegressor] | Sequence[ConformalRegressor],
        *,
        candidates: ArrayLike,
        rule: str = "mean",
        encrypted: bool = True,
        public_key: Any | None = None,
        private_key: Any | None = None,
        key_size: int = 2048,
    ) -> None:
        super().__init__(
            members,
            rule=rule,
            encrypted=encrypted,
            public_key=public_key,
            private_key=private_key,
            key_size=key_size,
        )
        grid = np.asarray(candidates, dtype=np.float64).reshape(-1)
        if grid.size < 3 or not np.all(np.diff(grid) > 0):
            raise ConformalError(
                f"candidates must be an increasing grid of at least 3 values; "
                f"received {grid.size} values",
                hint="pass candidates=numpy.linspace(low, high, count)",
            )
        self.candidates = grid

    def predict_p(
        self, X: ArrayLike, *, confidence: float | None = None
    ) -> NDArray[np.float64]:
        """Combined p-values of every candidate for every object.

        Returns
        -------
        ndarray of shape (n_objects, n_candidates)
        """
        replies = self._replies(_as_2d(X), confidence, self.candidates)
        return self._combine(replies)

    def predict_int(self, X: ArrayLike, confidence: float = 0.9) -> NDArray[np.float64]:
        """Prediction intervals at ``confidence``.

        Returns
        -------
        ndarray of shape (n_objects, 2)
            See :func:`intervals_from_grid`.
        """
        level = check_confidence(confidence)
        p_values = self.predict_p(X, confidence=level)
        intervals = intervals_from_grid(p_values, self.candidates, level)
        warn_open_intervals(intervals, self.candidates)
        return intervals

    def evaluate(
        self, X: ArrayLike, y: ArrayLike, confidence: float = 0.9
    ) -> dict[str, float]:
        """Coverage and widths of the intervals at ``confidence``.

        Returns
        -------
        dict
            See :func:`evaluate_intervals`.
        """
        X_test = _as_2d(X)
        truth = _as_labels(y, X_test.shape[0]).astype(np.float64)
        return evaluate_intervals(self.predict_int(X_test, confidence), truth)
