"""The packed encoding: clip, quantize, offset and place many values in one plaintext.

See docs/crypto.md for the derivation of the error bound and of the headroom.
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from workbench.errors import (
    EncodingParameterError,
    EncodingRangeError,
    NonFiniteValueError,
    VectorLengthError,
)

__all__ = ["MAX_SLOT_BITS", "PackedEncoding", "pack_slots", "unpack_slots"]

MAX_SLOT_BITS = 62
"""Widest slot allowed, so that every slot sum fits a signed 64-bit integer."""

_CHUNK_ROWS = 1024


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise EncodingParameterError(
            f"{name} must be a positive integer, got the bool {value!r}",
            hint=f"pass {name} as an int",
        )
    try:
        number = operator.index(value)
    except TypeError as exc:
        raise EncodingParameterError(
            f"{name} must be a positive integer, got {value!r}",
            hint=f"pass {name} as an int",
        ) from exc
    if number < 1:
        raise EncodingParameterError(
            f"{name} must be at least 1, got {number}",
            hint=f"pass a positive {name}",
        )
    return int(number)


@dataclass(frozen=True)
class PackedEncoding:
    """How a float vector becomes slots of a Paillier plaintext.

    Each value is clipped to ``[-clip, clip]``, rounded to the nearest of
    ``2**bits - 1`` evenly spaced levels (``0`` and ``±clip`` are levels), and
    offset to a non-negative integer below ``2**bits - 1``. A weighted vector
    multiplies every quantized value by an integer weight ``w`` and carries ``w``
    in a slot of its own. Each slot is wide enough to hold the sum of
    ``max_contributions`` such values without carrying into its neighbour.

    Parameters
    ----------
    clip : float
        Bound on the absolute value; larger values are clipped to it.
    bits : int, default=16
        Quantization bits, from 2 to 32.
    max_contributions : int, default=10
        Largest number of vectors that may be summed.
    max_weight : int, default=1
        Largest weight of one weighted vector (for instance a sample count).

    Raises
    ------
    EncodingParameterError
        If a parameter is out of range, or the slots would be wider than
        :data:`MAX_SLOT_BITS` bits.

    Notes
    -----
    With ``half = 2**(bits - 1) - 1`` and ``step = clip / half``, a value ``x``
    becomes ``q = rint(clip(x) / step) + half`` with ``0 <= q <= 2 * half``.
    Rounding is to the nearest level, ties to even: it is deterministic, needs no
    randomness, and its error is at most ``step / 2`` for every value within the
    clip bound. A sum of ``k`` contributions of total weight ``W`` is decoded as
    ``(S - W * half) * step`` where ``S`` is the slot sum; this equals the sum of
    the quantized values exactly (up to one float rounding of the product), and
    differs from the weighted float sum of the clipped values by at most
    ``W * step / 2``.

    Examples
    --------
    >>> encoding = PackedEncoding(clip=1.0, bits=8, max_contributions=4)
    >>> encoding.slot_bits
    10
    >>> encoding.quantize([-1.0, 0.0, 0.5, 1.0, 7.0]).tolist()
    [0, 127, 191, 254, 254]
    >>> encoding.dequantize([0, 127, 254]).tolist()
    [-1.0, 0.0, 1.0]
    >>> encoding.slots_per_ciphertext(2048)
    204
    """

    clip: float
    bits: int = 16
    max_contributions: int = 10
    max_weight: int = 1

    def __post_init__(self) -> None:
        try:
            clip = float(self.clip)
        except (TypeError, ValueError) as exc:
            raise EncodingParameterError(
                f"clip must be a positive finite number, got {self.clip!r}",
                hint="pass the bound on absolute values as a float, e.g. clip=1.0",
            ) from exc
        if isinstance(self.clip, bool) or not math.isfinite(clip) or clip <= 0:
            raise EncodingParameterError(
                f"clip must be a positive finite number, got {self.clip!r}",
                hint="pass the bound on absolute values as a float, e.g. clip=1.0",
            )
        bits = _positive_int("bits", self.bits)
        if not 2 <= bits <= 32:
            raise EncodingParameterError(
                f"bits must be between 2 and 32, got {bits}",
                hint="16 bits suit model updates",
            )
        max_contributions = _positive_int("max_contributions", self.max_contributions)
        max_weight = _positive_int("max_weight", self.max_weight)
        object.__setattr__(self, "clip", clip)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "max_contributions", max_contributions)
        object.__setattr__(self, "max_weight", max_weight)
        if self.slot_bits > MAX_SLOT_BITS:
            raise EncodingParameterError(
                f"slots would be {self.slot_bits} bits wide (bits={bits}, "
                f"max_contributions={max_contributions}, max_weight={max_weight}); "
                f"at most {MAX_SLOT_BITS} are supported",
                hint="lower bits, max_contributions or max_weight",
            )

    @property
    def half(self) -> int:
        """Offset added to every rounded value: ``2**(bits - 1) - 1``."""
        return (1 << (self.bits - 1)) - 1

    @property
    def step(self) -> float:
        """Distance between two quantization levels: ``clip / half``."""
        return self.clip / self.half

    @property
    def max_level(self) -> int:
        """Largest quantized value of one entry: ``2 * half = 2**bits - 2``."""
        return 2 * self.half

    @property
    def slot_bits(self) -> int:
        """Slot width: holds for ``max_contributions * max_weight * (2**bits-1)``."""
        bound = self.max_contributions * self.max_weight * ((1 << self.bits) - 1)
        return bound.bit_length()

    def slots_per_ciphertext(self, n_bits: int) -> int:
        """Return how many slots fit in one plaintext of a key of ``n_bits`` bits.

        The packed plaintext stays below ``2**(n_bits - 1) <= n``.
        """
        return (int(n_bits) - 1) // self.slot_bits

    def ciphertext_count(self, length: int, n_bits: int, *, weighted: bool) -> int:
        """Return how many ciphertexts hold a vector of ``length`` values."""
        slots = int(length) + (1 if weighted else 0)
        return -(-slots // self.slots_per_ciphertext(n_bits))

    def error_bound(self, total_weight: int) -> float:
        """Return the largest error of a decoded sum of total weight ``total_weight``.

        It bounds ``|decoded - sum(w_i * clip(x_i))|``, the rounding error of the
        quantization; float rounding of the result adds a relative ``2**-52``.
        """
        return total_weight * self.step / 2

    def quantize(self, values: ArrayLike) -> NDArray[np.uint64]:
        """Clip and round a 1-D vector to integers in ``[0, 2**bits - 2]``.

        Parameters
        ----------
        values : array-like of shape (length,)
            Real numbers (floats, integers of any numpy width, or bools).

        Returns
        -------
        numpy.ndarray of shape (length,), dtype uint64

        Raises
        ------
        VectorLengthError
            If the vector is not 1-D or is empty.
        NonFiniteValueError
            If it holds NaN or an infinite value.
        EncodingRangeError
            If it holds values that are not real numbers.
        """
        array = np.asarray(values)
        if array.dtype.kind not in "biuf":
            raise EncodingRangeError(
                f"values must be real numbers, got an array of dtype {array.dtype}",
                hint="convert the vector to float64 first",
            )
        if array.ndim != 1:
            raise VectorLengthError(
                f"expected a 1-D vector, got an array of shape {array.shape}",
                hint="flatten the parameters first, e.g. with numpy.ravel",
            )
        if array.size == 0:
            raise VectorLengthError(
                "cannot encode an empty vector",
                hint="pass at least one value",
            )
        floats = array.astype(np.float64)
        finite = np.isfinite(floats)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise NonFiniteValueError(
                f"{bad.size} of {floats.size} values are NaN or infinite (first at "
                f"index {int(bad[0])}: {floats[bad[0]]!r})",
                hint="fix the update before encrypting; nothing was encrypted",
            )
        clipped = np.clip(floats, -self.clip, self.clip)
        levels = np.rint(clipped / self.step) + self.half
        return np.clip(levels, 0, self.max_level).astype(np.uint64)

    def dequantize(
        self, levels: ArrayLike, total_weight: int = 1
    ) -> NDArray[np.float64]:
        """Map integer slot sums back to floats.

        Parameters
        ----------
        levels : array-like of int
            Sums of quantized values (one quantized value when ``total_weight`` is 1).
        total_weight : int, default=1
            Total weight (or number of contributions) in each sum.

        Returns
        -------
        numpy.ndarray of float64
        """
        centred = np.asarray(levels, dtype=np.int64) - np.int64(
            total_weight * self.half
        )
        return centred.astype(np.float64) * self.step

    def to_dict(self) -> dict[str, Any]:
        """Return the encoding as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PackedEncoding:
        """Build an encoding from :meth:`to_dict` output.

        Raises
        ------
        EncodingParameterError
            If keys are missing or unknown, or values are invalid.
        """
        expected = {"clip", "bits", "max_contributions", "max_weight"}
        if not isinstance(data, dict) or set(data) - expected or "clip" not in data:
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise EncodingParameterError(
                f"an encoding dict needs the keys {sorted(expected)}, got {found}",
                hint="pass the output of PackedEncoding.to_dict()",
            )
        return cls(**data)


def pack_slots(
    slots: NDArray[np.uint64], slot_bits: int, per_ciphertext: int
) -> list[int]:
    """Place slot values side by side in big integers.

    Slot ``j`` of a plaintext holds bits ``(per_ciphertext - 1 - j) * slot_bits``
    upwards: the first slot is the most significant. The last plaintext is padded
    with zero slots.

    Parameters
    ----------
    slots : numpy.ndarray of uint64, shape (count,)
        Values, each below ``2**slot_bits``.
    slot_bits : int
        Width of one slot.
    per_ciphertext : int
        Slots per plaintext.

    Returns
    -------
    list of int
        ``ceil(count / per_ciphertext)`` plaintexts.

    Examples
    --------
    >>> import numpy as np
    >>> pack_slots(np.array([1, 2, 3], dtype=np.uint64), 4, 2)
    [18, 48]
    """
    slots = np.asarray(slots, dtype=np.uint64)
    rows = -(-slots.size // per_ciphertext)
    padded = np.zeros(rows * per_ciphertext, dtype=np.uint64)
    padded[: slots.size] = slots
    row_bits = per_ciphertext * slot_bits
    lead = (-row_bits) % 8
    out: list[int] = []
    for start in range(0, rows, _CHUNK_ROWS):
        stop = min(rows, start + _CHUNK_ROWS)
        chunk = padded[start * per_ciphertext : stop * per_ciphertext]
        bits = np.unpackbits(chunk.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
        bits = bits[:, 64 - slot_bits :].reshape(stop - start, row_bits)
        if lead:
            bits = np.concatenate(
                [np.zeros((stop - start, lead), dtype=np.uint8), bits], axis=1
            )
        packed = np.packbits(bits, axis=1)
        out.extend(int.from_bytes(row.tobytes(), "big") for row in packed)
    return out


def unpack_slots(
    plaintexts: list[int], slot_bits: int, per_ciphertext: int
) -> NDArray[np.uint64]:
    """Split big integers made by :func:`pack_slots` back into slot values.

    Parameters
    ----------
    plaintexts : list of int
    slot_bits : int
    per_ciphertext : int

    Returns
    -------
    numpy.ndarray of uint64, shape (len(plaintexts) * per_ciphertext,)

    Raises
    ------
    EncodingRangeError
        If a plaintext has bits set above its last slot, which no sum within the
        encoding's headroom can produce.

    Examples
    --------
    >>> unpack_slots([18, 48], 4, 2).tolist()
    [1, 2, 3, 0]
    """
    row_bits = per_ciphertext * slot_bits
    row_bytes = -(-row_bits // 8)
    lead = row_bytes * 8 - row_bits
    out = np.empty(len(plaintexts) * per_ciphertext, dtype=np.uint64)
    for start in range(0, len(plaintexts), _CHUNK_ROWS):
        chunk = plaintexts[start : start + _CHUNK_ROWS]
        for offset, value in enumerate(chunk):
            if int(value).bit_length() > row_bits:
                raise EncodingRangeError(
                    f"plaintext {start + offset} has {int(value).bit_length()} bits, "
                    f"more than its {per_ciphertext} slots of {slot_bits} bits",
                    hint="an operand was not made with this encoding or key; "
                    "discard the aggregate",
                )
        raw = b"".join(int(value).to_bytes(row_bytes, "big") for value in chunk)
        flat = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
        rows = flat.reshape(len(chunk), row_bytes * 8)[:, lead:]
        bits = rows.reshape(len(chunk) * per_ciphertext, slot_bits)
        wide = np.zeros((bits.shape[0], 64), dtype=np.uint8)
        wide[:, 64 - slot_bits :] = bits
        values = np.packbits(wide, axis=1).view(">u8").reshape(-1)
        out[start * per_ciphertext : (start + len(chunk)) * per_ciphertext] = values
    return out
