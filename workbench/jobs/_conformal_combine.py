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
from workbench.jobs._conformal_core import ConformalWarning

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
