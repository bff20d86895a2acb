"""Combining members' conformal p-values, in plaintext or under Paillier.

A query's answer from one member is a :class:`MemberReply`: a matrix of p-values
(objects by columns, where a column is a class or a candidate target value) and a
mask of the columns the member speaks for. A member abstains on a column when it
has too few calibration examples behind it (Mondrian classes it has not seen, or
a calibration set too small for the requested confidence).

Under Paillier each member encrypts one vector: ``2 * p * mask - 1`` for every
p-value and ``2 * mask - 1`` for every column, so that the values fill the whole
range ``[-1, 1]`` of a ``clip=1`` encoding (``-1``, ``0`` and ``1`` are exact
levels). The coordinator adds the vectors; the querier decrypts the sum and
recovers, per column, ``sum_k w_k m_k p_k`` and ``sum_k w_k m_k``, whose ratio is
the (weighted) mean over the members that speak for the column.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from workbench.errors import CalibrationSizeError, ConformalError
from workbench.jobs._conformal_core import (
    ConformalWarning,
    conformal_counts,
    p_values_from_counts,
)

logger = logging.getLogger(__name__)

RULES = ("mean", "weighted_mean", "median", "twice_mean")
"""Combination rules of members' p-values."""

ENCRYPTED_RULES = ("mean", "weighted_mean", "twice_mean")
"""Rules computed under Paillier: the querier sees only the combined p-values."""

CONSERVATIVE_RULES = ("twice_mean",)
"""Rules valid under any dependence between members' p-values (Vovk and Wang)."""

DEFAULT_BITS = 20
"""Quantization bits of p-values under Paillier: an error below 1e-6 per value."""


def check_rule(rule: str) -> str:
    """Return ``rule`` after checking it is one of :data:`RULES`.

    Raises
    ------
    ConformalError
        If the rule is unknown.
    """
    if rule not in RULES:
        raise ConformalError(
            f"unknown combination rule {rule!r}; the rules are {', '.join(RULES)}",
            hint="use rule='mean' for p-values averaged under encryption",
        )
    return rule


def rule_confidence(rule: str, confidence: float) -> float:
    """Confidence each member must reach for ``rule`` to exclude at ``confidence``.

    Twice the mean excludes a column only when the mean is at most half of
    ``1 - confidence``, so each member needs calibration sets for that level.
    """
    if rule == "twice_mean":
        return 1.0 - (1.0 - confidence) / 2.0
    return confidence


@dataclass(frozen=True)
class MemberReply:
    """One member's answer to a query.

    Parameters
    ----------
    p_values : ndarray of shape (n_objects, n_columns)
        P-values in [0, 1]; columns are classes or candidate target values.
    mask : ndarray of bool, shape (n_columns,)
        Columns the member speaks for; it abstains on the others.
    calibration_size : int
        The member's calibration examples, the weight of ``weighted_mean``.
    """

    p_values: NDArray[np.float64]
    mask: NDArray[np.bool_]
    calibration_size: int

    def __post_init__(self) -> None:
        p_values = np.asarray(self.p_values, dtype=np.float64)
        mask = np.asarray(self.mask, dtype=bool)
        if p_values.ndim != 2 or mask.shape != (p_values.shape[1],):
            raise ConformalError(
                f"a reply needs p-values of shape (objects, columns) and one mask "
                f"entry per column; received {p_values.shape} and {mask.shape}",
                hint="build replies with member_reply()",
            )
        if not np.all(np.isfinite(p_values)) or p_values.min(initial=0) < 0:
            raise ConformalError(
                "p-values must be finite numbers in [0, 1]",
                hint="build replies with member_reply()",
            )
        if p_values.max(initial=0) > 1:
            raise ConformalError(
                f"p-values must lie in [0, 1]; the largest is {p_values.max()}",
                hint="build replies with member_reply()",
            )
        if int(self.calibration_size) < 0:
            raise ConformalError(
                f"calibration_size must be non-negative; received "
                f"{self.calibration_size}",
                hint="pass the member's number of calibration examples",
            )
        object.__setattr__(self, "p_values", p_values)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "calibration_size", int(self.calibration_size))

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the p-value matrix."""
        return (int(self.p_values.shape[0]), int(self.p_values.shape[1]))


def _check_shapes(replies: Sequence[MemberReply]) -> tuple[int, int]:
    if not replies:
        raise ConformalError(
            "no member replied to the query, so there is nothing to combine",
            hint="check the failures reported for the members",
        )
    shapes = {reply.shape for reply in replies}
    if len(shapes) != 1:
        raise ConformalError(
            f"members replied with p-values of different shapes {sorted(shapes)}",
            hint="every member must answer the same objects and columns",
        )
    return replies[0].shape


def _weights(replies: Sequence[MemberReply], rule: str) -> list[int]:
    if rule != "weighted_mean":
        return [1] * len(replies)
    weights = [reply.calibration_size for reply in replies]
    if min(weights) < 1:
        raise ConformalError(
            f"weighted_mean needs a positive calibration size from every member; "
            f"received {weights}",
            hint="leave members without calibration data out of the query",
        )
    return weights


def _finish(
    numerator: NDArray[np.float64],
    denominator: NDArray[np.float64],
    rule: str,
) -> NDArray[np.float64]:
    speaking = denominator > 0
    if not speaking.any():
        raise CalibrationSizeError(
            "no member has enough calibration examples for any column of the query",
            hint="lower the confidence, or calibrate the members on more examples",
        )
    if not speaking.all():
        warnings.warn(
            f"{int((~speaking).sum())} of {speaking.size} columns have no member "
            f"with enough calibration examples; their p-values are 1",
            ConformalWarning,
            stacklevel=3,
        )
    safe = np.where(speaking, denominator, 1.0)
    combined = np.where(speaking[None, :], numerator / safe[None, :], 1.0)
    if rule == "twice_mean":
        combined = 2.0 * combined
    return np.clip(combined, 0.0, 1.0)


def reply_vector(reply: MemberReply) -> NDArray[np.float64]:
    """The vector a member encrypts: ``2 p m - 1`` then ``2 m - 1``, flattened.

    Parameters
    ----------
    reply : MemberReply

    Returns
    -------
    ndarray of shape (n_objects * n_columns + n_columns,)
    """
    mask = reply.mask.astype(np.float64)
    p_part = 2.0 * reply.p_values * mask[None, :] - 1.0
    return np.concatenate([p_part.ravel(), 2.0 * mask - 1.0])


def _split_sum(
    values: NDArray[np.float64], total_weight: int, shape: tuple[int, int]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    n_objects, n_columns = shape
    expected = n_objects * n_columns + n_columns
    if values.shape != (expected,):
        raise ConformalError(
            f"the aggregate holds {values.size} values; a query of shape {shape} "
            f"needs {expected}",
            hint="decrypt with the shape of the query that was sent",
        )
    halves = (values + total_weight) / 2.0
    numerator = halves[: n_objects * n_columns].reshape(shape)
    # The mask sums are integers by construction; rounding removes the
    # quantization error, which is far below one half.
    denominator = np.rint(halves[n_objects * n_columns :])
    return numerator, denominator


def combine_p_values(
    replies: Sequence[MemberReply],
    rule: str = "mean",
    *,
    encoding: Any | None = None,
) -> NDArray[np.float64]:
    """Combine members' replies in plaintext.

    Parameters
    ----------
    replies : sequence of MemberReply
    rule : {"mean", "weighted_mean", "median", "twice_mean"}, default="mean"
    encoding : workbench.crypto.PackedEncoding, optional
        For the mean rules, quantize exactly as the Paillier path does, so that
        both give the same floats. Without it the mean is taken in float64.

    Returns
    -------
    ndarray of shape (n_objects, n_columns)
        Combined p-values; 1 in columns no member speaks for.

    Raises
    ------
    ConformalError
        If the replies disagree in shape, or the rule is unknown.
    CalibrationSizeError
        If no member speaks for any column.

    Notes
    -----
    ``mean`` and ``weighted_mean`` average over the members that speak for a
    column (weights: calibration sizes); ``median`` takes their median;
    ``twice_mean`` is ``min(1, 2 * mean)``, a valid p-value whatever the
    dependence between members [1]_.

    References
    ----------
    .. [1] V. Vovk and R. Wang, "Combining p-values via averaging", Biometrika
       107(4), 2020.
    """
    check_rule(rule)
    shape = _check_shapes(replies)
    if rule == "median":
        stack = np.stack([reply.p_values for reply in replies])
        masks = np.stack([reply.mask for reply in replies])
        masked = np.where(masks[:, None, :], stack, np.nan)
        denominator = masks.sum(axis=0).astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(masked, axis=0)
        return _finish(np.nan_to_num(median, nan=1.0), np.minimum(denominator, 1), "")

    weights = _weights(replies, rule)
    if encoding is None:
        numerator = sum(
            w * reply.p_values * reply.mask[None, :]
            for w, reply in zip(weights, replies, strict=True)
        )
        denominator = sum(
            w * reply.mask.astype(np.float64)
            for w, reply in zip(weights, replies, strict=True)
        )
        return _finish(np.asarray(numerator), np.asarray(denominator), rule)

    levels = sum(
        np.int64(w) * encoding.quantize(reply_vector(reply)).astype(np.int64)
        for w, reply in zip(weights, replies, strict=True)
    )
    total_weight = int(sum(weights))
    values = encoding.dequantize(levels, total_weight)
    numerator, denominator = _split_sum(values, total_weight, shape)
    return _finish(numerator, denominator, rule)


def reply_encoding(
    rule: str,
    *,
    max_members: int,
    max_calibration_size: int = 1,
    bits: int = DEFAULT_BITS,
) -> Any:
    """The packed encoding of replies for an encrypted rule.

    Parameters
    ----------
    rule : {"mean", "weighted_mean", "twice_mean"}
    max_members : int
        Largest number of replies to be added.
    max_calibration_size : int, default=1
        Largest weight of one reply under ``weighted_mean``.
    bits : int, default=20
        Quantization bits: the error of one combined p-value is at most
        ``2**-bits``.

    Returns
    -------
    workbench.crypto.PackedEncoding
    """
    from workbench.crypto import PackedEncoding

    if rule not in ENCRYPTED_RULES:
        raise ConformalError(
            f"rule {rule!r} is not computed under encryption; the encrypted rules "
            f"are {', '.join(ENCRYPTED_RULES)}",
            hint="use encrypted=False with the median rule",
        )
    max_weight = max(int(max_calibration_size), 1) if rule == "weighted_mean" else 1
    return PackedEncoding(
        clip=1.0, bits=bits, max_contributions=max_members, max_weight=max_weight
    )


def encrypt_reply(
    public_key: Any,
    reply: MemberReply,
    *,
    rule: str,
    encoding: Any,
    **options: Any,
) -> Any:
    """Encrypt one member's reply for an encrypted rule.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey
        The job's key.
    reply : MemberReply
    rule : {"mean", "weighted_mean", "twice_mean"}
    encoding : workbench.crypto.PackedEncoding
        From :func:`reply_encoding`.
    **options
        Passed on to :func:`workbench.crypto.encrypt_vector` (``processes``, ...).

    Returns
    -------
    workbench.crypto.EncryptedVector
    """
    from workbench.crypto import encrypt_vector

    check_rule(rule)
    weight = _weights([reply], rule)[0] if rule == "weighted_mean" else None
    return encrypt_vector(
        public_key, reply_vector(reply), encoding, weight=weight, **options
    )


def decrypt_combination(
    private_key: Any,
    aggregate: Any,
    shape: tuple[int, int],
    *,
    rule: str,
    **options: Any,
) -> NDArray[np.float64]:
    """Decrypt the sum of replies and turn it into combined p-values.

    Parameters
    ----------
    private_key : phe.PaillierPrivateKey
    aggregate : workbench.crypto.EncryptedVector
        The sum of the members' encrypted replies.
    shape : tuple of int
        ``(n_objects, n_columns)`` of the query.
    rule : {"mean", "weighted_mean", "twice_mean"}
    **options
        Passed on to :func:`workbench.crypto.decrypt_vector`.

    Returns
    -------
    ndarray of shape ``shape``
    """
    from workbench.crypto import decrypt_vector

    check_rule(rule)
    decrypted = decrypt_vector(private_key, aggregate, **options)
    total = (
        decrypted.weight if decrypted.weight is not None else decrypted.contributions
    )
    numerator, denominator = _split_sum(
        np.asarray(decrypted.values, dtype=np.float64), int(total), shape
    )
    logger.info(
        "decrypted the combination of %d replies (%s)", decrypted.contributions, rule
    )
    return _finish(numerator, denominator, rule)


# Pooled counts ---------------------------------------------------------------------


@dataclass(frozen=True)
class CountReply:
    """Counts of one member's calibration scores against a query's test scores.

    Parameters
    ----------
    greater : ndarray of int, shape (n_objects, n_columns)
        Calibration scores strictly greater than each test score.
    equal : ndarray of int, shape (n_objects, n_columns)
        Calibration scores equal to each test score.
    sizes : ndarray of int, shape (n_columns,)
        Calibration scores behind each column (0 where the member abstains).

    Notes
    -----
    Replies of several members add up entry by entry (:func:`add_counts`), and
    the sum gives the p-values of one inductive conformal predictor over the
    union of the members' calibration sets (:func:`count_p_values`). When that
    is exact, and when it is not, is said in docs/conformal.md: the scores must
    come from one score function shared by every member.
    """

    greater: NDArray[np.int64]
    equal: NDArray[np.int64]
    sizes: NDArray[np.int64]

    def __post_init__(self) -> None:
        greater = np.asarray(self.greater, dtype=np.int64)
        equal = np.asarray(self.equal, dtype=np.int64)
        sizes = np.asarray(self.sizes, dtype=np.int64).reshape(-1)
        if (
            greater.ndim != 2
            or equal.shape != greater.shape
            or sizes.shape != (greater.shape[1],)
        ):
            raise ConformalError(
                f"a count reply needs two count matrices of one shape (objects, "
                f"columns) and one size per column; received {greater.shape}, "
                f"{equal.shape} and {sizes.shape}",
                hint="build count replies with count_reply() or predict_counts()",
            )
        if min(greater.min(initial=0), equal.min(initial=0), sizes.min(initial=0)) < 0:
            raise ConformalError(
                "counts and sizes must be non-negative",
                hint="build count replies with count_reply() or predict_counts()",
            )
        if np.any(greater + equal > sizes[None, :]):
            raise ConformalError(
                "a count reply counts more calibration scores than its size",
                hint="pass the calibration size that belongs to the counts",
            )
        object.__setattr__(self, "greater", greater)
        object.__setattr__(self, "equal", equal)
        object.__setattr__(self, "sizes", sizes)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the count matrices."""
        return (int(self.greater.shape[0]), int(self.greater.shape[1]))


def count_reply(
    calibration_scores: NDArray[np.float64], test_scores: NDArray[np.float64]
) -> CountReply:
    """One member's counts of its calibration scores against test scores.

    Parameters
    ----------
    calibration_scores : ndarray of shape (n_calibration,)
        The member's calibration scores under the shared score function.
    test_scores : ndarray of shape (n_objects, n_columns)
        Scores of the query's candidates (classes or target values) under the
        same function.

    Returns
    -------
    CountReply
    """
    test = np.asarray(test_scores, dtype=np.float64)
    if test.ndim != 2:
        raise ConformalError(
            f"test scores must be a 2-D array of objects by columns; received "
            f"shape {test.shape}",
            hint="pass one score per object and candidate",
        )
    greater, equal = conformal_counts(calibration_scores, test)
    size = int(np.asarray(calibration_scores).size)
    return CountReply(greater, equal, np.full(test.shape[1], size, dtype=np.int64))


def add_counts(replies: Sequence[CountReply]) -> CountReply:
    """Sum members' count replies in plaintext, as the coordinator does encrypted.

    Raises
    ------
    ConformalError
        If there is no reply or the replies disagree in shape.
    """
    if not replies:
        raise ConformalError(
            "no member replied to the query, so there is nothing to add",
            hint="check the failures reported for the members",
        )
    shapes = {reply.shape for reply in replies}
    if len(shapes) != 1:
        raise ConformalError(
            f"members replied with counts of different shapes {sorted(shapes)}",
            hint="every member must answer the same objects and columns",
        )
    return CountReply(
        np.sum([reply.greater for reply in replies], axis=0),
        np.sum([reply.equal for reply in replies], axis=0),
        np.sum([reply.sizes for reply in replies], axis=0),
    )


def count_p_values(
    counts: CountReply, *, tie_breaks: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """P-values of the pooled inductive conformal predictor behind summed counts.

    Parameters
    ----------
    counts : CountReply
        Usually the sum of every member's reply.
    tie_breaks : ndarray of shape ``counts.shape``, optional
        Uniform draws in [0, 1) for smoothed p-values, drawn by the querier.

    Returns
    -------
    ndarray of shape ``counts.shape``
        1 in columns with no calibration score, with a :class:`ConformalWarning`.

    Raises
    ------
    CalibrationSizeError
        If no column has a calibration score.
    """
    if not (counts.sizes > 0).any():
        raise CalibrationSizeError(
            "no member has a calibration score for any column of the query",
            hint="calibrate the members before querying",
        )
    if not (counts.sizes > 0).all():
        warnings.warn(
            f"{int((counts.sizes == 0).sum())} of {counts.sizes.size} columns have no "
            f"calibration score; their p-values are 1",
            ConformalWarning,
            stacklevel=2,
        )
    p_values = p_values_from_counts(
        counts.greater, counts.equal, counts.sizes[None, :], tie_breaks=tie_breaks
    )
    return np.where(counts.sizes[None, :] > 0, p_values, 1.0)


def count_encoding(*, max_members: int, max_calibration_size: int) -> Any:
    """The packed encoding of count replies: exact integers after decryption.

    Parameters
    ----------
    max_members : int
        Largest number of replies to add.
    max_calibration_size : int
        Largest calibration set of one member.

    Returns
    -------
    workbench.crypto.PackedEncoding

    Notes
    -----
    The same encoding as the encrypted histograms: a member with ``n``
    calibration scores sends ``2 * count / n - 1`` per count with weight ``n``,
    and rounding the decoded sum recovers the summed integers exactly.
    """
    from workbench.jobs._conformal_split import histogram_encoding

    return histogram_encoding(
        max_members=max_members, max_calibration_size=max_calibration_size
    )


def encrypt_counts(
    public_key: Any, reply: CountReply, *, encoding: Any, **options: Any
) -> Any:
    """Encrypt one member's count reply; its size travels encrypted as the weight.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey
    reply : CountReply
    encoding : workbench.crypto.PackedEncoding
        From :func:`count_encoding`.
    **options
        Passed on to :func:`workbench.crypto.encrypt_vector`.

    Returns
    -------
    workbench.crypto.EncryptedVector
    """
    from workbench.crypto import encrypt_vector

    n = int(reply.sizes.max(initial=0))
    if n < 1:
        raise ConformalError(
            "a member's count reply has no calibration score behind it",
            hint="leave members without calibration data out of the query",
        )
    values = np.concatenate(
        [reply.greater.ravel(), reply.equal.ravel(), reply.sizes]
    ).astype(np.float64)
    return encrypt_vector(
        public_key, 2.0 * values / n - 1.0, encoding, weight=n, **options
    )


def decrypt_counts(
    private_key: Any, aggregate: Any, shape: tuple[int, int], **options: Any
) -> CountReply:
    """Decrypt the sum of encrypted count replies into integer counts.

    Parameters
    ----------
    private_key : phe.PaillierPrivateKey
    aggregate : workbench.crypto.EncryptedVector
        The sum of the members' encrypted count replies.
    shape : tuple of int
        ``(n_objects, n_columns)`` of the query.
    **options
        Passed on to :func:`workbench.crypto.decrypt_vector`.

    Returns
    -------
    CountReply
        The summed counts; :func:`count_p_values` turns them into p-values.
    """
    from workbench.crypto import decrypt_vector

    decrypted = decrypt_vector(private_key, aggregate, **options)
    n_objects, n_columns = shape
    cells = n_objects * n_columns
    values = np.asarray(decrypted.values, dtype=np.float64)
    if values.shape != (2 * cells + n_columns,):
        raise ConformalError(
            f"the aggregate holds {values.size} values; a query of shape {shape} "
            f"needs {2 * cells + n_columns}",
            hint="decrypt with the shape of the query that was sent",
        )
    if decrypted.weight is None:
        raise ConformalError(
            "the aggregate carries no weight, so it is not a sum of count replies",
            hint="encrypt count replies with encrypt_counts()",
        )
    total = int(decrypted.weight)
    counts = np.rint((values + total) / 2.0).astype(np.int64)
    logger.info("decrypted the pooled counts of %d replies", decrypted.contributions)
    return CountReply(
        counts[:cells].reshape(shape),
        counts[cells : 2 * cells].reshape(shape),
        counts[2 * cells :],
    )


def intervals_from_sets(
    inside: NDArray[np.bool_], candidates: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Turn sets of candidate target values into intervals.

    Parameters
    ----------
    inside : ndarray of bool, shape (n_objects, n_candidates)
        True where a candidate is in the object's set, for instance
        ``count_p_values(...) > p_value_threshold(confidence)``.
    candidates : ndarray of shape (n_candidates,)
        Increasing grid.

    Returns
    -------
    ndarray of shape (n_objects, 2)
        From the last excluded candidate below the set to the first excluded one
        above it; an end is infinite where the set reaches the grid's edge, and
        both are NaN for an empty set (as ``intervals_from_grid``).
    """
    grid = np.asarray(candidates, dtype=np.float64).reshape(-1)
    kept = np.asarray(inside, dtype=bool)
    if kept.ndim != 2 or kept.shape[1] != grid.size:
        raise ConformalError(
            f"sets must have one column per candidate ({grid.size}); received "
            f"shape {kept.shape}",
            hint="pass the sets of the same grid of candidates",
        )
    n_candidates = grid.size
    first = np.argmax(kept, axis=1)
    last = n_candidates - 1 - np.argmax(kept[:, ::-1], axis=1)
    low = np.where(first > 0, grid[np.maximum(first - 1, 0)], -np.inf)
    high = np.where(
        last < n_candidates - 1, grid[np.minimum(last + 1, n_candidates - 1)], np.inf
    )
    intervals = np.column_stack([low, high])
    intervals[~kept.any(axis=1)] = np.nan
    return intervals
