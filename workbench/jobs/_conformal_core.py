"""Inductive conformal predictors of one member: classification and regression.

The public names are re-exported by :mod:`workbench.jobs.conformal`; this module
holds the maths of a single member's predictor. Combination across members lives
in :mod:`workbench.jobs._conformal_combine`.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.model_selection import train_test_split

from workbench.errors import CalibrationSizeError, ConformalError

logger = logging.getLogger(__name__)

SCORES = ("inverse_probability", "margin")
"""Nonconformity measures of :class:`ConformalClassifier`."""


class ConformalWarning(UserWarning):
    """A conformal predictor goes on, but with less information than asked for."""


def check_confidence(confidence: object) -> float:
    """Return ``confidence`` as a float after checking it lies in (0, 1).

    Parameters
    ----------
    confidence : float
        The requested confidence, for example 0.9 for 90% prediction sets.

    Returns
    -------
    float

    Raises
    ------
    ConformalError
        If ``confidence`` is not a real number strictly between 0 and 1.
    """
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, numbers.Real)
        or not math.isfinite(float(confidence))
        or not 0.0 < float(confidence) < 1.0
    ):
        raise ConformalError(
            f"confidence must be a number strictly between 0 and 1; received "
            f"{confidence!r}",
            hint="pass for instance confidence=0.9 for 90% prediction sets",
        )
    return float(confidence)


def minimum_calibration_size(confidence: float) -> int:
    """Smallest calibration set that can exclude a label at ``confidence``.

    Parameters
    ----------
    confidence : float
        Requested confidence in (0, 1).

    Returns
    -------
    int
        The smallest ``n`` with ``1 / (n + 1) <= 1 - confidence``.

    Notes
    -----
    With ``n`` calibration scores the smallest p-value without the random tie-break
    is ``1 / (n + 1)``. Below this size a label is excluded only through the
    smoothing draw, so sets are no better than coin flips; Workbench refuses such
    requests instead of returning them.

    Examples
    --------
    >>> minimum_calibration_size(0.9)
    9
    >>> minimum_calibration_size(0.95)
    19
    """
    epsilon = 1 - Fraction(check_confidence(confidence)).limit_denominator(10**9)
    return max(math.ceil(1 / epsilon) - 1, 1)


def p_value_threshold(confidence: float) -> float:
    """Largest p-value excluded at ``confidence``: ``1 - confidence``, exactly.

    Parameters
    ----------
    confidence : float
        Requested confidence in (0, 1).

    Returns
    -------
    float
        ``1 - confidence`` computed on the decimal value of ``confidence``, so
        that 0.9 gives 0.1 and not 0.09999999999999998.

    Notes
    -----
    Unsmoothed p-values are fractions ``m / (n + 1)``; when ``(n + 1)(1 - c)`` is
    an integer one of them equals ``1 - c`` exactly, and the float ``1.0 - c``
    would keep a label (or candidate value) that the conformal quantile
    ``ceil((n + 1) c)`` excludes. A value is excluded when its p-value is at most
    this threshold.

    Examples
    --------
    >>> p_value_threshold(0.9), 1.0 - 0.9
    (0.1, 0.09999999999999998)
    """
    level = Fraction(repr(check_confidence(confidence)))
    return float(1 - level)


def conformal_p_values(
    calibration_scores: NDArray[np.float64],
    test_scores: NDArray[np.float64],
    *,
    tie_breaks: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """P-values of test scores against one set of calibration scores.

    Parameters
    ----------
    calibration_scores : ndarray of shape (n_calibration,)
        Nonconformity scores of the calibration examples; larger means stranger.
    test_scores : ndarray of any shape
        Nonconformity scores of the test candidates.
    tie_breaks : ndarray of the shape of ``test_scores``, optional
        Uniform draws in [0, 1) for smoothed p-values. Without them ties count
        fully, which makes the p-value conservative.

    Returns
    -------
    ndarray of the shape of ``test_scores``

    Notes
    -----
    With ``n`` calibration scores, ``gt`` of them greater than the test score and
    ``eq`` equal to it, the smoothed p-value is ``(gt + tau * (eq + 1)) / (n + 1)``
    and the plain one ``(gt + eq + 1) / (n + 1)``. With no calibration score at
    all the p-value is 1: nothing can be excluded.
    """
    ordered = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    test = np.asarray(test_scores, dtype=np.float64)
    n = ordered.size
    if n == 0:
        return np.ones_like(test)
    below_or_equal = np.searchsorted(ordered, test, side="right")
    below = np.searchsorted(ordered, test, side="left")
    greater = n - below_or_equal
    equal = below_or_equal - below
    if tie_breaks is None:
        return (greater + equal + 1) / (n + 1)
    return (greater + tie_breaks * (equal + 1)) / (n + 1)


def conformal_counts(
    calibration_scores: NDArray[np.float64],
    test_scores: NDArray[np.float64],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Counts of calibration scores above and equal to each test score.

    Parameters
    ----------
    calibration_scores : ndarray of shape (n_calibration,)
    test_scores : ndarray of any shape

    Returns
    -------
    greater, equal : ndarray of int64, each of the shape of ``test_scores``
        How many calibration scores are strictly greater than, and equal to, each
        test score.

    Notes
    -----
    These counts are all a p-value needs besides the calibration size: see
    :func:`p_values_from_counts`. Counts of several members add up, which is
    what lets them be summed under Paillier.
    """
    ordered = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    test = np.asarray(test_scores, dtype=np.float64)
    below_or_equal = np.searchsorted(ordered, test, side="right")
    below = np.searchsorted(ordered, test, side="left")
    greater = (ordered.size - below_or_equal).astype(np.int64)
    equal = (below_or_equal - below).astype(np.int64)
    return greater, equal


def p_values_from_counts(
    greater: ArrayLike,
    equal: ArrayLike,
    size: ArrayLike,
    *,
    tie_breaks: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """P-values from counts of calibration scores above and equal to test scores.

    Parameters
    ----------
    greater, equal : array-like of int
        Counts from :func:`conformal_counts`, or their sums over members.
    size : int or array-like of int
        Calibration scores behind the counts, broadcast against them.
    tie_breaks : ndarray of the shape of ``greater``, optional
        Uniform draws in [0, 1) for smoothed p-values; without them ties count
        fully.

    Returns
    -------
    ndarray of float64
        ``(greater + tau * (equal + 1)) / (size + 1)``, or with ``tau = 1``.

    Raises
    ------
    ConformalError
        If a count is negative or the counts exceed the size.
    """
    above = np.asarray(greater, dtype=np.int64)
    ties = np.asarray(equal, dtype=np.int64)
    total = np.asarray(size, dtype=np.int64)
    if above.min(initial=0) < 0 or ties.min(initial=0) < 0:
        raise ConformalError(
            "counts of calibration scores must be non-negative",
            hint="build the counts with conformal_counts()",
        )
    if np.any(above + ties > total):
        raise ConformalError(
            "more calibration scores are counted above or at a test score than "
            "there are calibration scores",
            hint="pass the calibration size that belongs to the counts",
        )
    weight = 1.0 if tie_breaks is None else np.asarray(tie_breaks, dtype=np.float64)
    return (above + weight * (ties + 1)) / (total + 1)


def _as_2d(X: ArrayLike, *, name: str = "X") -> NDArray[Any]:
    array = np.asarray(X)
    if array.ndim != 2:
        raise ConformalError(
            f"{name} must be a 2-D array of objects by features; received shape "
            f"{array.shape}",
            hint="reshape a single object with X.reshape(1, -1)",
        )
    return array


def _as_labels(y: ArrayLike, n_rows: int) -> NDArray[Any]:
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise ConformalError(
            f"y must be 1-D with one label per row of X ({n_rows}); received shape "
            f"{labels.shape}",
            hint="pass the target column as a 1-D array",
        )
    return labels


def _split(
    X: NDArray[Any],
    y: NDArray[Any],
    calibration_size: float,
    random_state: int | None,
    *,
    stratify: bool,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
    if not 0.0 < calibration_size < 1.0:
        raise ConformalError(
            f"calibration_size must lie strictly between 0 and 1; received "
            f"{calibration_size!r}",
            hint="use for instance calibration_size=0.3",
        )
    n_rows = X.shape[0]
    if n_rows < 2:
        raise ConformalError(
            f"a conformal predictor needs at least 2 rows, one to train on and one "
            f"to calibrate with; received {n_rows}",
            hint="give the member more data or leave it out of the job",
        )
    n_calibration = min(max(round(calibration_size * n_rows), 1), n_rows - 1)
    strata = None
    if stratify:
        _, counts = np.unique(y, return_counts=True)
        n_classes = counts.size
        if counts.min() >= 2 and n_classes <= n_calibration <= n_rows - n_classes:
            strata = y
    X_train, X_cal, y_train, y_cal = train_test_split(
        X, y, test_size=n_calibration, random_state=random_state, stratify=strata
    )
    return X_train, X_cal, y_train, y_cal


class ConformalClassifier:
    """Inductive conformal classifier of one member, optionally Mondrian.

    Parameters
    ----------
    estimator : classifier with ``predict_proba``, optional
        The underlying model; cloned before fitting. Defaults to a random forest
        of 100 trees.
    mondrian : bool, default=False
        Calibrate each class on its own examples (class-conditional validity).
    smoothing : bool, default=True
        Break ties between scores with seeded uniform draws, which makes the
        p-values exactly valid instead of conservative.
    score : {"inverse_probability", "margin"}, default="inverse_probability"
        Nonconformity measure: ``1 - p(y|x)``, or the largest other class
        probability minus ``p(y|x)``.
    calibration_size : float, default=0.3
        Fraction of the rows given to :meth:`fit` held out for calibration.
    classes : array-like, optional
        The full list of labels (strings or numbers) agreed in a federation; a
        member that lacks some of them in its data still reports a p-value for
        each. Defaults to the labels seen by :meth:`fit`.
    random_state : int, optional
        Seed of the split, of the default estimator and of the tie-breaks.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Labels, in the column order of :meth:`predict_p`.
    estimator_ : classifier
        The fitted model.
    calibration_scores_ : list of ndarray
        Sorted calibration scores; one array per class when Mondrian, else one.
    calibration_size_ : int
        Number of calibration examples.
    class_calibration_sizes_ : ndarray of shape (n_classes,)
        Calibration examples per class.

    Notes
    -----
    A class absent from the calibration data of a Mondrian predictor has no scores
    to compare with: its p-value is 1 (the label is never excluded) and
    :meth:`fit` warns with :class:`ConformalWarning`.

    References
    ----------
    .. [1] Vovk, Gammerman and Shafer, "Algorithmic Learning in a Random World",
       Springer, 2005.
    """

    def __init__(
        self,
        estimator: Any | None = None,
        *,
        mondrian: bool = False,
        smoothing: bool = True,
        score: str = "inverse_probability",
        calibration_size: float = 0.3,
        classes: ArrayLike | None = None,
        random_state: int | None = None,
    ) -> None:
        if score not in SCORES:
            raise ConformalError(
                f"score must be one of {', '.join(SCORES)}; received {score!r}",
                hint="use score='inverse_probability'",
            )
        self.estimator = estimator
        self.mondrian = mondrian
        self.smoothing = smoothing
        self.score = score
        self.calibration_size = calibration_size
        self.classes = classes
        self.random_state = random_state

    # Fitting ----------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: ArrayLike) -> ConformalClassifier:
        """Train the model on part of the rows and calibrate on the rest.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
        y : array-like of shape (n_rows,)
            Labels, strings or numbers.

        Returns
        -------
        ConformalClassifier
            ``self``.
        """
        X_all = _as_2d(X)
        y_all = _as_labels(y, X_all.shape[0])
        self._set_classes(y_all)
        X_train, X_cal, y_train, y_cal = _split(
            X_all, y_all, self.calibration_size, self.random_state, stratify=False
        )
        if self.estimator is None:
            model = RandomForestClassifier(
                n_estimators=100, random_state=self.random_state, n_jobs=1
            )
        else:
            model = clone(self.estimator)
        self.estimator_ = model.fit(X_train, y_train)
        return self.calibrate(X_cal, y_cal)

    def calibrate(self, X: ArrayLike, y: ArrayLike) -> ConformalClassifier:
        """Calibrate on examples the model was not trained on.

        Parameters
        ----------
        X : array-like of shape (n_calibration, n_features)
        y : array-like of shape (n_calibration,)

        Returns
        -------
        ConformalClassifier
            ``self``.

        Raises
        ------
        ConformalError
            If there is no fitted model, or a label is not among the classes.
        """
        if not hasattr(self, "estimator_"):
            if self.estimator is None or not hasattr(self.estimator, "classes_"):
                raise ConformalError(
                    "calibrate() needs a trained model; none was given or fitted",
                    hint="call fit(X, y), or pass a fitted estimator",
                )
            self.estimator_ = self.estimator
        X_cal = _as_2d(X)
        y_cal = _as_labels(y, X_cal.shape[0])
        if not hasattr(self, "classes_"):
            self._set_classes(y_cal)
        columns = self._label_columns(y_cal)
        scores = self._scores(X_cal)[np.arange(columns.size), columns]
        n_classes = self.classes_.size
        self.class_calibration_sizes_ = np.bincount(columns, minlength=n_classes)
        self.calibration_size_ = int(columns.size)
        if self.mondrian:
            self.calibration_scores_ = [
                np.sort(scores[columns == c]) for c in range(n_classes)
            ]
            missing = self.classes_[self.class_calibration_sizes_ == 0]
            if missing.size:
                warnings.warn(
                    f"no calibration example of class {', '.join(map(str, missing))}; "
                    f"its p-value is 1, so it is never excluded from a set",
                    ConformalWarning,
                    stacklevel=2,
                )
        else:
            self.calibration_scores_ = [np.sort(scores)]
        self._rng = np.random.default_rng(self.random_state)
        logger.info(
            "calibrated a conformal classifier on %d examples (%s)",
            self.calibration_size_,
            "Mondrian" if self.mondrian else "pooled over classes",
        )
        return self

    def _set_classes(self, y: NDArray[Any]) -> None:
        labels = np.unique(y) if self.classes is None else np.asarray(self.classes)
        if labels.ndim != 1 or labels.size < 2 or np.unique(labels).size != labels.size:
            raise ConformalError(
                f"a conformal classifier needs at least 2 distinct classes; received "
                f"{labels.tolist()!r}",
                hint="pass classes=[...] with the federation's full list of labels",
            )
        self.classes_ = labels

    def _label_columns(self, y: NDArray[Any]) -> NDArray[np.intp]:
        index = {label: column for column, label in enumerate(self.classes_.tolist())}
        try:
            return np.array([index[label] for label in y.tolist()], dtype=np.intp)
        except KeyError as exc:
            raise ConformalError(
                f"label {exc.args[0]!r} is not among the classes "
                f"{self.classes_.tolist()!r}",
                hint="pass classes=[...] with every label the data can hold",
            ) from exc

    def _probabilities(self, X: NDArray[Any]) -> NDArray[np.float64]:
        proba = np.asarray(self.estimator_.predict_proba(X), dtype=np.float64)
        model_classes = np.asarray(self.estimator_.classes_).tolist()
        full = np.zeros((X.shape[0], self.classes_.size))
        index = {label: column for column, label in enumerate(self.classes_.tolist())}
        for model_column, label in enumerate(model_classes):
            if label not in index:
                raise ConformalError(
                    f"the model predicts label {label!r}, which is not among the "
                    f"classes {self.classes_.tolist()!r}",
                    hint="pass classes=[...] with every label the model knows",
                )
            full[:, index[label]] = proba[:, model_column]
        return full

    def _scores(self, X: NDArray[Any]) -> NDArray[np.float64]:
        proba = self._probabilities(X)
        if self.score == "inverse_probability":
            return 1.0 - proba
        best_other = np.empty_like(proba)
        for c in range(proba.shape[1]):
            best_other[:, c] = np.delete(proba, c, axis=1).max(axis=1)
        return best_other - proba

    def _check_fitted(self) -> None:
        if not hasattr(self, "calibration_scores_"):
            raise ConformalError(
                "this conformal classifier is not calibrated yet",
                hint="call fit(X, y) or calibrate(X, y) first",
            )

    # Prediction -------------------------------------------------------------------

    def predict_p(self, X: ArrayLike) -> NDArray[np.float64]:
        """P-values of every class for every object.

        Parameters
        ----------
        X : array-like of shape (n_objects, n_features)

        Returns
        -------
        ndarray of shape (n_objects, n_classes)
            Columns follow :attr:`classes_`.

        Notes
        -----
        Smoothed p-values draw fresh tie-breaks from the seeded generator on each
        call; refit with the same ``random_state`` to reproduce a sequence of calls.
        """
        self._check_fitted()
        X_test = _as_2d(X)
        scores = self._scores(X_test)
        tie_breaks = self._rng.random(scores.shape) if self.smoothing else None
        p_values = np.empty_like(scores)
        for c in range(scores.shape[1]):
            reference = self.calibration_scores_[c if self.mondrian else 0]
            draws = None if tie_breaks is None else tie_breaks[:, c]
            p_values[:, c] = conformal_p_values(
                reference, scores[:, c], tie_breaks=draws
            )
        return p_values

    def calibration_counts(self) -> NDArray[np.int64]:
        """Calibration examples behind each class's p-values.

        Returns
        -------
        ndarray of shape (n_classes,)
            Per class when Mondrian; the whole calibration size for every class
            otherwise.
        """
        self._check_fitted()
        if self.mondrian:
            return self.class_calibration_sizes_.astype(np.int64)
        return np.full(self.classes_.size, self.calibration_size_, dtype=np.int64)

    def predict_counts(
        self, X: ArrayLike
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """Counts of calibration scores above and equal to each test score.

        Parameters
        ----------
        X : array-like of shape (n_objects, n_features)

        Returns
        -------
        greater, equal : ndarray of int64, shape (n_objects, n_classes)
        sizes : ndarray of int64, shape (n_classes,)
            Calibration scores behind each column (:meth:`calibration_counts`).

        Notes
        -----
        :func:`p_values_from_counts` turns them into this member's p-values; the
        counts of several members can also be added (under Paillier) before that,
        see :func:`workbench.jobs.conformal.add_counts`.
        """
        self._check_fitted()
        scores = self._scores(_as_2d(X))
        greater = np.empty(scores.shape, dtype=np.int64)
        equal = np.empty(scores.shape, dtype=np.int64)
        for c in range(scores.shape[1]):
            reference = self.calibration_scores_[c if self.mondrian else 0]
            greater[:, c], equal[:, c] = conformal_counts(reference, scores[:, c])
        return greater, equal, self.calibration_counts()

    def predict_set(self, X: ArrayLike, confidence: float = 0.9) -> NDArray[np.bool_]:
        """Prediction sets at ``confidence``.

        Parameters
        ----------
        X : array-like of shape (n_objects, n_features)
        confidence : float, default=0.9
            In (0, 1).

        Returns
        -------
        ndarray of bool, shape (n_objects, n_classes)
            True where the class is in the object's set.

        Raises
        ------
        ConformalError
            If ``confidence`` is outside (0, 1).
        CalibrationSizeError
            If the calibration set (of some class, when Mondrian) is smaller than
            :func:`minimum_calibration_size` for ``confidence``.
        """
        level = check_confidence(confidence)
        self._check_fitted()
        self._check_calibration_size(level)
        return self.predict_p(X) > p_value_threshold(level)

    def _check_calibration_size(self, confidence: float) -> None:
        needed = minimum_calibration_size(confidence)
        counts = self.calibration_counts()
        if counts.min() < needed:
            worst = int(np.argmin(counts))
            label = self.classes_.tolist()[worst]
            what = f"class {label!r}" if self.mondrian else "all classes"
            raise CalibrationSizeError(
                f"confidence {confidence} needs at least {needed} calibration "
                f"examples ({what}); this predictor has {int(counts[worst])}",
                hint="lower the confidence or calibrate on more examples",
            )

    def evaluate(
        self, X: ArrayLike, y: ArrayLike, confidence: float = 0.9
    ) -> dict[str, Any]:
        """Error rate, set sizes and coverage of the sets at ``confidence``.

        Parameters
        ----------
        X : array-like of shape (n_objects, n_features)
        y : array-like of shape (n_objects,)
            True labels.
        confidence : float, default=0.9

        Returns
        -------
        dict
            See :func:`evaluate_sets`.
        """
        X_test = _as_2d(X)
        labels = _as_labels(y, X_test.shape[0])
        sets = self.predict_set(X_test, confidence)
        return evaluate_sets(sets, self._label_columns(labels), self.classes_)


def evaluate_sets(
    prediction_sets: NDArray[np.bool_],
    columns: NDArray[np.intp],
    classes: NDArray[Any],
) -> dict[str, Any]:
    """Summarize prediction sets against the true labels.

    Parameters
    ----------
    prediction_sets : ndarray of bool, shape (n_objects, n_classes)
    columns : ndarray of int, shape (n_objects,)
        Column of each object's true label.
    classes : ndarray of shape (n_classes,)

    Returns
    -------
    dict
        ``error_rate`` (true label outside the set), ``coverage`` (one minus it),
        ``size`` (average number of labels per set), ``singleton_rate``,
        ``empty_rate`` and ``coverage_per_class`` (label to coverage; NaN for a
        class with no test object).
    """
    covered = prediction_sets[np.arange(columns.size), columns]
    sizes = prediction_sets.sum(axis=1)
    per_class: dict[Any, float] = {}
    for c, label in enumerate(classes.tolist()):
        rows = columns == c
        per_class[label] = float(covered[rows].mean()) if rows.any() else float("nan")
    return {
        "error_rate": float(1.0 - covered.mean()),
        "coverage": float(covered.mean()),
        "size": float(sizes.mean()),
        "singleton_rate": float((sizes == 1).mean()),
        "empty_rate": float((sizes == 0).mean()),
        "coverage_per_class": per_class,
    }


class ConformalRegressor:
    """Inductive conformal regressor of one member, absolute-residual scores.

    Parameters
    ----------
    estimator : regressor, optional
        The underlying model; cloned before fitting. Defaults to a random forest
        of 100 trees.
    calibration_size : float, default=0.3
        Fraction of the rows given to :meth:`fit` held out for calibration.
    random_state : int, optional
        Seed of the split and of the default estimator.

    Attributes
    ----------
    estimator_ : regressor
    residuals_ : ndarray of shape (n_calibration,)
        Sorted absolute calibration residuals.
    calibration_size_ : int

    Notes
    -----
    The interval at confidence ``c`` is ``y_hat +- r_(k)`` with ``r_(k)`` the
    ``k = ceil((n + 1) c)``-th smallest calibration residual; it covers with
    probability at least ``c`` and less than ``c + 1 / (n + 1)``.
    """

    def __init__(
        self,
        estimator: Any | None = None,
        *,
        calibration_size: float = 0.3,
        random_state: int | None = None,
    ) -> None:
        self.estimator = estimator
        self.calibration_size = calibration_size
        self.random_state = random_state

    def fit(self, X: ArrayLike, y: ArrayLike) -> ConformalRegressor:
        """Train on part of the rows and calibrate on the rest.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
        y : array-like of shape (n_rows,)

        Returns
        -------
        ConformalRegressor
            ``self``.
        """
        X_all = _as_2d(X)
        y_all = _as_labels(y, X_all.shape[0]).astype(np.float64)
        X_train, X_cal, y_train, y_cal = _split(
            X_all, y_all, self.calibration_size, self.random_state, stratify=False
        )
        if self.estimator is None:
            model = RandomForestRegressor(
                n_estimators=100, random_state=self.random_state, n_jobs=1
            )
        else:
            model = clone(self.estimator)
        self.estimator_ = model.fit(X_train, y_train)
        return self.calibrate(X_cal, y_cal)

    def calibrate(self, X: ArrayLike, y: ArrayLike) -> ConformalRegressor:
        """Calibrate on examples the model was not trained on.

        Parameters
        ----------
        X : array-like of shape (n_calibration, n_features)
        y : array-like of shape (n_calibration,)

        Returns
        -------
        ConformalRegressor
            ``self``.
        """
        if not hasattr(self, "estimator_"):
            if self.estimator is None:
                raise ConformalError(
                    "calibrate() needs a trained model; none was given or fitted",
                    hint="call fit(X, y), or pass a fitted estimator",
                )
            self.estimator_ = self.estimator
        X_cal = _as_2d(X)
        y_cal = _as_labels(y, X_cal.shape[0]).astype(np.float64)
        self.residuals_ = np.sort(np.abs(y_cal - self.estimator_.predict(X_cal)))
        self.calibration_size_ = int(self.residuals_.size)
        logger.info(
            "calibrated a conformal regressor on %d examples", self.calibration_size_
        )
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "residuals_"):
            raise ConformalError(
                "this conformal regressor is not calibrated yet",
                hint="call fit(X, y) or calibrate(X, y) first",
            )

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:
        """Point predictions of the underlying model, shape (n_objects,)."""
        self._check_fitted()
        return np.asarray(self.estimator_.predict(_as_2d(X)), dtype=np.float64)

    def predict_p(self, X: ArrayLike, candidates: ArrayLike) -> NDArray[np.float64]:
        """P-values of candidate target values for every object.

        Parameters
        ----------
        X : array-like of shape (n_objects, n_features)
        candidates : array-like of shape (n_candidates,)
            Target values to test, the same for every object (a grid).

        Returns
        -------
        ndarray of shape (n_objects, n_candidates)
            Plain (unsmoothed) p-values.
        """
        grid = np.asarray(candidates, dtype=np.float64).reshape(-1)
        predictions = self.predict(X)
        residuals = np.abs(grid[None, :] - predictions[:, None])
        return conformal_p_values(self.residuals_, residuals)

    def predict_counts(
        self, X: ArrayLike, candidates: ArrayLike
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
        """Counts of calibration residuals above and equal to candidates' residuals.

        Parameters
        ----------
        X : array-like of shape (n_objects, n_features)
        candidates : array-like of shape (n_candidates,)

        Returns
        -------
        greater, equal : ndarray of int64, shape (n_objects, n_candidates)
        size : int
            The calibration size.
        """
        grid = np.asarray(candidates, dtype=np.float64).reshape(-1)
        predictions = self.predict(X)
        residuals = np.abs(grid[None, :] - predictions[:, None])
        greater, equal = conformal_counts(self.residuals_, residuals)
        return greater, equal, self.calibration_size_

    def predict_int(self, X: ArrayLike, confidence: float = 0.9) -> NDArray[np.float64]:
        """Prediction intervals at ``confidence``.

        Parameters
        ----------
        X : array-like of shape (n_objects, n_features)
        confidence : float, default=0.9

        Returns
        -------
        ndarray of shape (n_objects, 2)
            Lower and upper bounds.

        Raises
        ------
        CalibrationSizeError
            If there are fewer calibration examples than
            :func:`minimum_calibration_size` for ``confidence``.
        """
        level = check_confidence(confidence)
        self._check_fitted()
        needed = minimum_calibration_size(level)
        n = self.calibration_size_
        if n < needed:
            raise CalibrationSizeError(
                f"confidence {level} needs at least {needed} calibration examples; "
                f"this predictor has {n}",
                hint="lower the confidence or calibrate on more examples",
            )
        rank = min(math.ceil((n + 1) * level - 1e-9), n)
        half_width = self.residuals_[rank - 1]
        predictions = self.predict(X)
        return np.column_stack([predictions - half_width, predictions + half_width])

    def evaluate(
        self, X: ArrayLike, y: ArrayLike, confidence: float = 0.9
    ) -> dict[str, float]:
        """Coverage and widths of the intervals at ``confidence``.

        Parameters
        ----------
        X : array-like of shape (n_objects, n_features)
        y : array-like of shape (n_objects,)
        confidence : float, default=0.9

        Returns
        -------
        dict
            See :func:`evaluate_intervals`.
        """
        X_test = _as_2d(X)
        truth = _as_labels(y, X_test.shape[0]).astype(np.float64)
        return evaluate_intervals(self.predict_int(X_test, confidence), truth)


def evaluate_intervals(
    intervals: NDArray[np.float64], y: NDArray[np.float64]
) -> dict[str, float]:
    """Summarize prediction intervals against the true values.

    Parameters
    ----------
    intervals : ndarray of shape (n_objects, 2)
    y : ndarray of shape (n_objects,)

    Returns
    -------
    dict
        ``coverage``, ``error_rate``, ``mean_width`` and ``median_width``; an
        empty interval (NaN bounds) counts as a miss of width 0, and an unbounded
        one has an infinite width.
    """
    covered = (intervals[:, 0] <= y) & (y <= intervals[:, 1])
    # An empty interval (NaN bounds) covers nothing and has width 0; an unbounded
    # one keeps its infinite width, so that a mean over it is infinite, not huge.
    widths = intervals[:, 1] - intervals[:, 0]
    widths = np.where(np.isnan(widths), 0.0, widths)
    return {
        "coverage": float(covered.mean()),
        "error_rate": float(1.0 - covered.mean()),
        "mean_width": float(widths.mean()),
        "median_width": float(np.median(widths)),
    }
