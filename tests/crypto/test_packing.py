"""Tests of the packed encoding: quantization, slots and the error bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from workbench.crypto import PackedEncoding
from workbench.crypto.packing import pack_slots, unpack_slots
from workbench.errors import (
    EncodingParameterError,
    EncodingRangeError,
    NonFiniteValueError,
    VectorLengthError,
)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip": 0.0}, "positive finite"),
        ({"clip": -1.0}, "positive finite"),
        ({"clip": float("nan")}, "positive finite"),
        ({"clip": float("inf")}, "positive finite"),
        ({"clip": "one"}, "positive finite"),
        ({"clip": 1.0, "bits": 1}, "between 2 and 32"),
        ({"clip": 1.0, "bits": 33}, "between 2 and 32"),
        ({"clip": 1.0, "bits": 2.5}, "positive integer"),
        ({"clip": 1.0, "max_contributions": 0}, "at least 1"),
        ({"clip": 1.0, "max_weight": True}, "bool"),
        ({"clip": 1.0, "bits": 32, "max_weight": 2**31}, "at most 62"),
    ],
)
def test_encoding_refuses_invalid_parameters(kwargs, match):
    """Invalid encoding parameters raise EncodingParameterError naming the problem."""
    with pytest.raises(EncodingParameterError, match=match):
        PackedEncoding(**kwargs)


def test_slot_width_covers_the_headroom():
    """16 bits with headroom for 10 members need 20-bit slots, 102 per 2048-bit key."""
    encoding = PackedEncoding(clip=1.0, bits=16, max_contributions=10)
    assert encoding.slot_bits == 20
    assert 10 * (2**16 - 1) < 2**encoding.slot_bits
    assert encoding.slots_per_ciphertext(2048) == 102


def test_numpy_integers_are_accepted_as_parameters():
    """numpy integer parameters become plain ints."""
    encoding = PackedEncoding(clip=np.float32(2), bits=np.int64(8))
    assert type(encoding.bits) is int and type(encoding.clip) is float
    assert encoding == PackedEncoding(clip=2.0, bits=8)


def test_quantize_maps_bounds_and_zero_to_exact_levels():
    """-clip, 0 and +clip are levels, so they come back exactly."""
    encoding = PackedEncoding(clip=3.0, bits=10)
    levels = encoding.quantize([-3.0, 0.0, 3.0])
    assert levels.tolist() == [0, 511, 1022]
    assert encoding.dequantize(levels).tolist() == [-3.0, 0.0, 3.0]


def test_quantize_clips_instead_of_wrapping():
    """Values past the clip bound saturate at the extreme levels."""
    encoding = PackedEncoding(clip=1.0, bits=8)
    levels = encoding.quantize([1e300, -1e300, 1.0000001, -5.0])
    assert levels.tolist() == [254, 0, 254, 0]


def test_quantize_reads_numpy_int64_exactly():
    """numpy.int64 inputs are converted to float, not overflowed in integer maths."""
    encoding = PackedEncoding(clip=1000.0, bits=16)
    as_int = encoding.quantize(np.array([-1000, -7, 0, 999], dtype=np.int64))
    as_float = encoding.quantize(np.array([-1000.0, -7.0, 0.0, 999.0]))
    assert as_int.tolist() == as_float.tolist()
    big = encoding.quantize(np.array([np.iinfo(np.int64).max], dtype=np.int64))
    assert big.tolist() == [encoding.max_level]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_quantize_refuses_non_finite_values(bad):
    """NaN and infinities raise NonFiniteValueError with their index."""
    encoding = PackedEncoding(clip=1.0)
    with pytest.raises(NonFiniteValueError, match="first at index 2"):
        encoding.quantize([0.0, 1.0, bad, 0.5])


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        (np.zeros((2, 2)), VectorLengthError, "1-D"),
        (np.zeros(0), VectorLengthError, "empty"),
        (np.array([1 + 2j]), EncodingRangeError, "real numbers"),
        (np.array(["a"]), EncodingRangeError, "real numbers"),
    ],
)
def test_quantize_refuses_malformed_vectors(values, error, match):
    """Vectors that are not 1-D real and non-empty are refused."""
    with pytest.raises(error, match=match):
        PackedEncoding(clip=1.0).quantize(values)


def test_dict_round_trip():
    """to_dict and from_dict give back an equal encoding."""
    encoding = PackedEncoding(clip=0.25, bits=12, max_contributions=7, max_weight=300)
    assert PackedEncoding.from_dict(encoding.to_dict()) == encoding


def test_from_dict_refuses_unknown_keys():
    """An encoding dict with unknown keys is refused."""
    with pytest.raises(EncodingParameterError, match="needs the keys"):
        PackedEncoding.from_dict({"clip": 1.0, "scale": 3})


def test_unpack_refuses_bits_above_the_last_slot():
    """A plaintext wider than its slots means a malformed operand."""
    with pytest.raises(EncodingRangeError, match="more than its 2 slots"):
        unpack_slots([1 << 8], 4, 2)


@settings(max_examples=60, deadline=None)
@given(
    slot_bits=st.integers(1, 62),
    per_ciphertext=st.integers(1, 40),
    data=st.data(),
)
def test_pack_unpack_round_trip(slot_bits, per_ciphertext, data):
    """Packing then unpacking gives back every slot, padded with zeros."""
    count = data.draw(st.integers(1, 3 * per_ciphertext + 1))
    slots = data.draw(
        hnp.arrays(
            np.uint64,
            count,
            elements=st.integers(0, 2**slot_bits - 1),
        )
    )
    plaintexts = pack_slots(slots, slot_bits, per_ciphertext)
    assert len(plaintexts) == -(-count // per_ciphertext)
    assert all(p.bit_length() <= slot_bits * per_ciphertext for p in plaintexts)
    back = unpack_slots(plaintexts, slot_bits, per_ciphertext)
    assert back[:count].tolist() == slots.tolist()
    assert not back[count:].any()


def test_pack_places_first_slot_most_significant():
    """The first slot holds the highest bits of a plaintext."""
    slots = np.array([3, 0, 1], dtype=np.uint64)
    assert pack_slots(slots, 5, 3) == [(3 << 10) | 1]


_finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=80, deadline=None)
@given(
    clip=st.floats(1e-3, 1e3),
    bits=st.integers(2, 24),
    values=hnp.arrays(np.float64, st.integers(1, 50), elements=_finite),
)
def test_quantization_error_is_at_most_half_a_step(clip, bits, values):
    """Each value within the clip comes back within step / 2."""
    encoding = PackedEncoding(clip=clip, bits=bits)
    levels = encoding.quantize(values)
    assert int(levels.max()) <= encoding.max_level
    back = encoding.dequantize(levels)
    clipped = np.clip(values, -clip, clip)
    assert np.all(np.abs(back - clipped) <= encoding.error_bound(1) * (1 + 1e-9))
