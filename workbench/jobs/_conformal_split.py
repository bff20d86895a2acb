"""Federated split conformal prediction for one shared model.

Every member scores its own calibration examples with the shared model (for
instance the result of a FedAvg job) and counts the scores in the bins of a
histogram that all members agree on. The counts are encrypted, added by the
coordinator, and only the querier decrypts their sum, from which it reads the
global conformal quantile. No member's scores, counts or calibration size are
seen by anyone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from workbench.errors import CalibrationSizeError, ConformalError
from workbench.jobs._conformal_core import (
    _as_2d,
    _as_labels,
    check_confidence,
    evaluate_intervals,
    evaluate_sets,
    minimum_calibration_size,
)

logger = logging.getLogger(__name__)

TASKS = ("classification", "regression")


def histogram_encoding(*, max_members: int, max_calibration_size: int) -> Any:
    """The packed encoding of one member's histogram.

    Parameters
    ----------
    max_members : int
        Largest number of histograms to add.
    max_calibration_size : int
        Largest calibration set of one member.

    Returns
    -------
    workbench.crypto.PackedEncoding

    Notes
    -----
    A member with ``n`` scores sends ``2 * count / n - 1`` per bin with weight
    ``n``. The decoded sum is ``2 * C - N`` up to ``N * step / 2``; with
    ``2**bits > 2 * N`` rounding recovers the integer counts ``C`` exactly.
    """
    from workbench.crypto import PackedEncoding

    total = max_members * max_calibration_size
    bits = max(16, math.ceil(math.log2(total + 1)) + 3)
    if bits > 32:
        raise ConformalError(
            f"{total} calibration scores in all are too many for an exact "
            f"encrypted histogram",
            hint="calibrate on fewer examples per member",
        )
    return PackedEncoding(
        clip=1.0,
        bits=bits,
        max_contributions=max_members,
        max_weight=max_calibration_size,
    )


class FederatedSplitConformal:
    """Split conformal predictor of a shared model, calibrated across members.

    Parameters
    ----------
    model : fitted estimator
        The shared model; ``predict_proba`` for classification, ``predict`` for
        regression.
    task : {"classification", "regression"}, default="classification"
    bins : int, default=1000
        Equal-width bins over ``[0, score_max]``; one more bin holds the scores
        above ``score_max``.
    score_max : float, optional
        Upper end of the binned range: 1 for classification (scores are
        ``1 - p(y|x)``); for regression, a bound on the absolute residual, which
        is required.
    classes : array-like, optional
        Labels in the column order of ``model.predict_proba``; defaults to
        ``model.classes_``.
    encrypted : bool, default=True
        Add the histograms under Paillier.
    public_key, private_key : phe keys, optional
        The job's key pair, made on first use when absent.
    key_size : int, default=2048
    difficulty_offset : float, optional
        Regression only: use the normalized score ``|y - y_hat| / (d(x) + beta)``
        with ``beta = difficulty_offset`` and ``d(x)`` the model's
        ``predict_spread(X)`` (for :class:`MeanEnsemble`, the standard deviation
        of the members' predictions), so that intervals are wider where the
        members disagree. ``score_max`` then bounds the normalized score. Fix it
        before calibration (in the job spec), never from calibration data.

    Attributes
    ----------
    counts_ : ndarray of shape (bins + 1,)
        The global histogram.
    calibration_size_ : int
        Total calibration scores over the members.

    Notes
    -----
    With ``N`` scores and ``k = ceil((N + 1) c)``, the threshold is the upper
    edge of the bin holding the ``k``-th smallest score, so it lies between that
    score ``s_(k)`` and ``s_(k) + w`` with ``w = score_max / bins``. Coverage then
    satisfies ``c <= P(covered) <= c + 1 / (N + 1) + P(s_(k) < S <= s_(k) + w)``:
    the last term, the bin-width term, is at most ``w`` times the largest density
    of the scores near the quantile. If the ``k``-th score lies above
    ``score_max`` the threshold is infinite and every set is full.

    The guarantee needs one score function for every calibration example and
    query: a model (and a difficulty ``d``) trained on none of them, and an
    offset fixed in advance. The normalized score keeps it, since ``d`` comes
    from the same models. For p-values without the bin-width term, members can
    count their scores against the query's instead (:meth:`test_scores`,
    :func:`workbench.jobs.conformal.count_reply`); the summed counts are then
    exactly those of one inductive conformal predictor over every member's
    calibration set.
    """

    def __init__(
        self,
        model: Any,
        *,
        task: str = "classification",
        bins: int = 1000,
        score_max: float | None = None,
        classes: ArrayLike | None = None,
        encrypted: bool = True,
        public_key: Any | None = None,
        private_key: Any | None = None,
        key_size: int = 2048,
        difficulty_offset: float | None = None,
    ) -> None:
        if task not in TASKS:
            raise ConformalError(
                f"task must be one of {', '.join(TASKS)}; received {task!r}",
                hint="use task='classification' or task='regression'",
            )
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ConformalError(
                f"bins must be a positive integer; received {bins!r}",
                hint="use for instance bins=1000",
            )
        if score_max is None:
            if task == "regression":
                raise ConformalError(
                    "a regression split conformal predictor needs score_max, a bound "
                    "on the absolute residual",
                    hint="pass for instance the range of the target as score_max",
                )
            score_max = 1.0
        if not math.isfinite(score_max) or score_max <= 0:
            raise ConformalError(
                f"score_max must be a positive finite number; received {score_max!r}",
                hint="pass a bound on the nonconformity scores",
            )
        if difficulty_offset is not None:
            if task != "regression":
                raise ConformalError(
                    "difficulty_offset normalizes regression residuals; this "
                    "predictor classifies",
                    hint="leave difficulty_offset=None for classification",
                )
            if not math.isfinite(difficulty_offset) or difficulty_offset <= 0:
                raise ConformalError(
                    f"difficulty_offset must be a positive finite number; received "
                    f"{difficulty_offset!r}",
                    hint="pass for instance a tenth of the target's spread",
                )
            if not hasattr(model, "predict_spread"):
                raise ConformalError(
                    f"difficulty_offset needs a model with predict_spread(X); "
                    f"{type(model).__name__} has none",
                    hint="use a MeanEnsemble of the members' models",
                )
        self.difficulty_offset = difficulty_offset
        self.model = model
        self.task = task
        self.bins = bins
        self.score_max = float(score_max)
        if task == "classification":
            labels = model.classes_ if classes is None else classes
            self.classes_ = np.asarray(labels)
        self.encrypted = encrypted
        self.public_key = public_key
        self.private_key = private_key
        self.key_size = key_size

    # Member side ------------------------------------------------------------------

    def scores(self, X: ArrayLike, y: ArrayLike) -> NDArray[np.float64]:
        """Nonconformity scores of labelled examples under the shared model."""
        X_cal = _as_2d(X)
        truth = _as_labels(y, X_cal.shape[0])
        if self.task == "regression":
            predictions = np.asarray(self.model.predict(X_cal), dtype=np.float64)
            residuals = np.abs(truth.astype(np.float64) - predictions)
            return residuals / self._difficulty(X_cal)
        proba = np.asarray(self.model.predict_proba(X_cal), dtype=np.float64)
        return 1.0 - proba[np.arange(truth.size), self._columns(truth)]

    def _difficulty(self, X: NDArray[Any]) -> NDArray[np.float64]:
        if self.difficulty_offset is None:
            return np.ones(X.shape[0])
        spread = np.asarray(self.model.predict_spread(X), dtype=np.float64)
        return spread + self.difficulty_offset

    def test_scores(
        self, X: ArrayLike, candidates: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """Scores of every candidate label or target value of the query objects.

        Parameters
        ----------
        X : array-like of shape (n_objects, n_features)
        candidates : array-like of shape (n_candidates,), optional
            Target values to test; required for regression.

        Returns
        -------
        ndarray of shape (n_objects, n_classes) or (n_objects, n_candidates)
            On the scale of :meth:`scores`, so that members can count their
            calibration scores against them.
        """
        X_test = _as_2d(X)
        if self.task == "classification":
            return 1.0 - np.asarray(self.model.predict_proba(X_test), dtype=np.float64)
        if candidates is None:
            raise ConformalError(
                "regression test scores need the grid of candidate target values",
                hint="pass candidates=numpy.linspace(low, high, count)",
            )
        grid = np.asarray(candidates, dtype=np.float64).reshape(-1)
        predictions = np.asarray(self.model.predict(X_test), dtype=np.float64)
        residuals = np.abs(grid[None, :] - predictions[:, None])
        return residuals / self._difficulty(X_test)[:, None]

    def _columns(self, labels: NDArray[Any]) -> NDArray[np.intp]:
        index = {label: c for c, label in enumerate(self.classes_.tolist())}
        unknown = [label for label in labels.tolist() if label not in index]
        if unknown:
            raise ConformalError(
                f"label {unknown[0]!r} is not among the classes "
                f"{self.classes_.tolist()!r}",
                hint="pass classes=[...] with every label of the data",
            )
        return np.array([index[label] for label in labels.tolist()], dtype=np.intp)

    def histogram(self, X: ArrayLike, y: ArrayLike) -> NDArray[np.int64]:
        """Counts of one member's calibration scores per bin.

        Returns
        -------
        ndarray of shape (bins + 1,)
            The last entry counts the scores above ``score_max``.
        """
        scores = self.scores(X, y)
        width = self.score_max / self.bins
        index = np.minimum(np.floor(scores / width).astype(np.int64), self.bins - 1)
        index[scores > self.score_max] = self.bins
        return np.bincount(index, minlength=self.bins + 1).astype(np.int64)

    # Querier side -----------------------------------------------------------------

    def calibrate(self, parts: Sequence[tuple[ArrayLike, ArrayLike]]) -> Any:
        """Calibrate on the members' calibration data, one ``(X, y)`` per member.

        Each member's histogram is encrypted on its own, the ciphertexts are
        added, and only the sum is decrypted.

        Returns
        -------
        FederatedSplitConformal
            ``self``.
        """
        histograms = [self.histogram(X, y) for X, y in parts]
        if not histograms:
            raise ConformalError(
                "calibrate() needs at least one member's calibration data",
                hint="pass a list of (X, y) pairs, one per member",
            )
        if not self.encrypted:
            return self.calibrate_from_counts(np.sum(histograms, axis=0))
        from workbench.crypto import aggregate, decrypt_vector, generate_keypair

        if self.public_key is None or self.private_key is None:
            self.public_key, self.private_key = generate_keypair(
                self.key_size, allow_insecure=self.key_size < 2048
            )
        encoding = histogram_encoding(
            max_members=len(histograms),
            max_calibration_size=max(max(int(h.sum()) for h in histograms), 1),
        )
        vectors = [encrypt_histogram(self.public_key, h, encoding) for h in histograms]
        decrypted = decrypt_vector(self.private_key, aggregate(vectors))
        return self.calibrate_from_counts(histogram_from_sum(decrypted))

    def calibrate_from_counts(self, counts: ArrayLike) -> FederatedSplitConformal:
        """Calibrate from a global histogram already summed.

        Returns
        -------
        FederatedSplitConformal
            ``self``.
        """
        histogram = np.asarray(counts, dtype=np.int64).reshape(-1)
        if histogram.size != self.bins + 1 or histogram.min(initial=0) < 0:
            raise ConformalError(
                f"the histogram must hold {self.bins + 1} non-negative counts; "
                f"received {histogram.size}",
                hint="sum histograms made by histogram() with the same bins",
            )
        self.counts_ = histogram
        self.calibration_size_ = int(histogram.sum())
        logger.info(
            "calibrated a split conformal predictor on %d scores from a histogram",
            self.calibration_size_,
        )
        return self

    def threshold(self, confidence: float = 0.9) -> float:
        """Largest score admitted into a set or interval at ``confidence``.

        Raises
        ------
        CalibrationSizeError
            If the calibration scores are fewer than
            :func:`minimum_calibration_size`.
        """
        level = check_confidence(confidence)
        if not hasattr(self, "counts_"):
            raise ConformalError(
                "this split conformal predictor is not calibrated yet",
                hint="call calibrate() or calibrate_from_counts() first",
            )
        n = self.calibration_size_
        needed = minimum_calibration_size(level)
        if n < needed:
            raise CalibrationSizeError(
                f"confidence {level} needs at least {needed} calibration scores; "
                f"the members have {n} in all",
                hint="lower the confidence or calibrate on more examples",
            )
        rank = min(math.ceil((n + 1) * level - 1e-9), n)
        position = int(np.searchsorted(np.cumsum(self.counts_), rank))
        if position >= self.bins:
            return math.inf
        return (position + 1) * self.score_max / self.bins

    def predict_set(self, X: ArrayLike, confidence: float = 0.9) -> NDArray[np.bool_]:
        """Prediction sets at ``confidence``, objects by classes."""
        if self.task != "classification":
            raise ConformalError(
                "predict_set() is for classification; this predictor does regression",
                hint="call predict_int()",
            )
        limit = self.threshold(confidence)
        proba = np.asarray(self.model.predict_proba(_as_2d(X)), dtype=np.float64)
        return 1.0 - proba <= limit

    def predict_int(self, X: ArrayLike, confidence: float = 0.9) -> NDArray[np.float64]:
        """Prediction intervals at ``confidence``, shape (n_objects, 2)."""
        if self.task != "regression":
            raise ConformalError(
                "predict_int() is for regression; this predictor classifies",
                hint="call predict_set()",
            )
        limit = self.threshold(confidence)
        X_test = _as_2d(X)
        predictions = np.asarray(self.model.predict(X_test), dtype=np.float64)
        half_width = limit * self._difficulty(X_test)
        return np.column_stack([predictions - half_width, predictions + half_width])

    def evaluate(
        self, X: ArrayLike, y: ArrayLike, confidence: float = 0.9
    ) -> dict[str, Any]:
        """Coverage and sizes (classification) or widths (regression)."""
        X_test = _as_2d(X)
        truth = _as_labels(y, X_test.shape[0])
        if self.task == "regression":
            intervals = self.predict_int(X_test, confidence)
            return evaluate_intervals(intervals, truth.astype(np.float64))
        sets = self.predict_set(X_test, confidence)
        return evaluate_sets(sets, self._columns(truth), self.classes_)


def encrypt_histogram(public_key: Any, counts: ArrayLike, encoding: Any) -> Any:
    """Encrypt one member's histogram; its size travels encrypted as the weight.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey
    counts : array-like of int, shape (n_bins,)
    encoding : workbench.crypto.PackedEncoding
        From :func:`histogram_encoding`.

    Returns
    -------
    workbench.crypto.EncryptedVector
    """
    from workbench.crypto import encrypt_vector

    histogram = np.asarray(counts, dtype=np.int64)
    n = int(histogram.sum())
    if n < 1:
        raise ConformalError(
            "a member's histogram holds no score",
            hint="leave members without calibration data out of the calibration",
        )
    return encrypt_vector(public_key, 2.0 * histogram / n - 1.0, encoding, weight=n)


def histogram_from_sum(decrypted: Any) -> NDArray[np.int64]:
    """Integer counts from the decrypted sum of encrypted histograms.

    Parameters
    ----------
    decrypted : workbench.crypto.DecryptedSum

    Returns
    -------
    ndarray of int64
    """
    total = int(decrypted.weight)
    halves = (np.asarray(decrypted.values, dtype=np.float64) + total) / 2.0
    return np.rint(halves).astype(np.int64)


class MeanEnsemble:
    """The average of members' fitted models, used as one shared model.

    Parameters
    ----------
    models : sequence of fitted estimators
        Classifiers with ``predict_proba`` or regressors with ``predict``.
    classes : array-like, optional
        Labels of the probability columns; defaults to the sorted union of the
        models' ``classes_``. A model without some class gives it probability 0.

    Notes
    -----
    With :class:`FederatedSplitConformal` this is the ``ensemble`` rule: each
    member's calibration objects are scored by every member's model (so they are
    disclosed to the other members, their labels are not), each member bins the
    residuals of the averaged prediction on its own, and the histograms are added
    under Paillier. Every model is calibrated on examples none of them was
    trained on, so the split conformal guarantee holds for the average.
    """

    def __init__(self, models: Sequence[Any], *, classes: ArrayLike | None = None):
        if not models:
            raise ConformalError(
                "an ensemble needs at least one model",
                hint="pass the members' fitted models",
            )
        self.models = list(models)
        if classes is not None:
            self.classes_ = np.asarray(classes)
        elif all(hasattr(m, "classes_") for m in self.models):
            self.classes_ = np.unique(
                np.concatenate([np.asarray(m.classes_) for m in self.models])
            )

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:
        """Mean of the models' predictions, shape (n_objects,)."""
        return np.mean([np.asarray(m.predict(X), float) for m in self.models], axis=0)

    def predict_spread(self, X: ArrayLike) -> NDArray[np.float64]:
        """Standard deviation of the models' predictions, shape (n_objects,).

        A difficulty estimate for normalized scores: the members disagree most
        where their models are least sure.
        """
        return np.std([np.asarray(m.predict(X), float) for m in self.models], axis=0)

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Mean of the models' class probabilities, shape (n_objects, n_classes)."""
        index = {label: c for c, label in enumerate(self.classes_.tolist())}
        total = np.zeros((np.asarray(X).shape[0], self.classes_.size))
        for model in self.models:
            proba = np.asarray(model.predict_proba(X), dtype=np.float64)
            for column, label in enumerate(np.asarray(model.classes_).tolist()):
                total[:, index[label]] += proba[:, column]
        return total / len(self.models)
