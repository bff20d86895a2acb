"""Property tests: sums of encrypted vectors equal sums of their quantized values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from workbench.crypto import (
    EncryptedVector,
    PackedEncoding,
    aggregate,
    decrypt_vector,
    encrypt_vector,
    generate_keypair,
)

_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@st.composite
def _case(draw):
    bits = draw(st.integers(2, 24))
    max_contributions = draw(st.integers(1, 12))
    max_weight = draw(st.sampled_from([1, 1, 7, 1000]))
    clip = draw(st.floats(1e-3, 1e4))
    encoding = PackedEncoding(
        clip=clip, bits=bits, max_contributions=max_contributions, max_weight=max_weight
    )
    length = draw(st.integers(1, 60))
    count = draw(st.integers(1, max_contributions))
    edge = st.sampled_from([-clip, clip, 0.0, -2 * clip, 2 * clip])
    values = st.one_of(st.floats(-2 * clip, 2 * clip), edge)
    vectors = [
        draw(hnp.arrays(np.float64, length, elements=values)) for _ in range(count)
    ]
    weighted = max_weight > 1 or draw(st.booleans())
    weights = [
        draw(st.integers(1, max_weight)) if weighted else None for _ in range(count)
    ]
    return encoding, vectors, weights


@_SETTINGS
@given(case=_case())
def test_sum_equals_sum_of_quantized_values(keypair, case):
    """Decrypting a sum gives the exact sum of weighted quantized values."""
    public_key, private_key = keypair
    encoding, vectors, weights = case
    encrypted = [
        encrypt_vector(public_key, v, encoding, weight=w)
        for v, w in zip(vectors, weights, strict=True)
    ]
    total = decrypt_vector(private_key, aggregate(encrypted))
    factors = [1 if w is None else w for w in weights]
    levels = sum(
        f * encoding.quantize(v).astype(np.int64)
        for v, f in zip(vectors, factors, strict=True)
    )
    total_weight = sum(factors)
    assert np.array_equal(total.values, encoding.dequantize(levels, total_weight))
    assert total.weight == (None if weights[0] is None else total_weight)
    clipped = sum(
        f * np.clip(v, -encoding.clip, encoding.clip)
        for v, f in zip(vectors, factors, strict=True)
    )
    slack = encoding.error_bound(total_weight) + 1e-9 * encoding.clip * total_weight
    assert np.all(np.abs(total.values - clipped) <= slack)


@_SETTINGS
@given(case=_case())
def test_wire_round_trip_keeps_the_sum(keypair, case):
    """Writing and reading every operand leaves the decrypted sum unchanged."""
    public_key, private_key = keypair
    encoding, vectors, weights = case
    encrypted = [
        encrypt_vector(public_key, v, encoding, weight=w, private_key=private_key)
        for v, w in zip(vectors, weights, strict=True)
    ]
    received = [EncryptedVector.from_bytes(e.to_bytes(), public_key) for e in encrypted]
    direct = decrypt_vector(private_key, aggregate(encrypted))
    via_wire = decrypt_vector(private_key, aggregate(received))
    assert np.array_equal(direct.values, via_wire.values)


@pytest.mark.slow
def test_real_key_size_round_trip():
    """A 2048-bit key packs 102 values of 16 bits per ciphertext and sums exactly."""
    public_key, private_key = generate_keypair(2048)
    encoding = PackedEncoding(clip=1.0, bits=16, max_contributions=10, max_weight=1)
    rng = np.random.default_rng(10)
    vectors = [rng.uniform(-1.2, 1.2, 500) for _ in range(10)]
    modes = [{}, {"private_key": private_key}, {"short_exponent": True}] * 4
    encrypted = [
        encrypt_vector(public_key, v, encoding, processes=1, **mode)
        for v, mode in zip(vectors, modes, strict=False)
    ]
    assert encrypted[0].ciphertext_count == 5
    assert len(encrypted[0].to_bytes()) / 500 < 6
    total = decrypt_vector(private_key, aggregate(encrypted))
    levels = sum(encoding.quantize(v).astype(np.int64) for v in vectors)
    assert np.array_equal(total.values, encoding.dequantize(levels, 10))
