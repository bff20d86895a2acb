"""Tests of encrypted vectors: encryption modes, sums, weights and bad input."""

from __future__ import annotations

import inspect

import gmpy2
import numpy as np
import pytest

from workbench.crypto import (
    EncryptedVector,
    PackedEncoding,
    RandomnessPool,
    aggregate,
    decrypt_vector,
    encrypt_vector,
)
from workbench.crypto.paillier import encrypt_raw
from workbench.errors import (
    EncodingMismatchError,
    EncodingRangeError,
    KeyMismatchError,
    NonFiniteValueError,
    TooManyContributionsError,
    VectorLengthError,
)

ENCODING = PackedEncoding(clip=1.0, bits=16, max_contributions=10)
WEIGHTED = PackedEncoding(clip=2.0, bits=12, max_contributions=5, max_weight=1000)


def _quantized(encoding, values, weight=1):
    return weight * encoding.quantize(values).astype(np.int64)


@pytest.mark.parametrize("mode", ["textbook", "crt", "short_exponent", "pool"])
def test_round_trip_gives_the_quantized_values(keypair, mode):
    """Each encryption mode decrypts to exactly the quantized values."""
    public_key, private_key = keypair
    values = np.random.default_rng(1).uniform(-1.5, 1.5, 57)
    if mode == "pool":
        with RandomnessPool(public_key, background=False) as pool:
            pool.fill(5)
            vector = encrypt_vector(public_key, values, ENCODING, pool=pool)
    else:
        vector = encrypt_vector(
            public_key,
            values,
            ENCODING,
            private_key=private_key if mode == "crt" else None,
            short_exponent=mode == "short_exponent",
        )
    decrypted = decrypt_vector(private_key, vector)
    expected = ENCODING.dequantize(_quantized(ENCODING, values))
    assert np.array_equal(decrypted.values, expected)
    assert decrypted.weight is None and decrypted.contributions == 1


def test_sum_of_max_contributions_equals_sum_of_quantized(keypair):
    """Ten vectors, the headroom's limit, sum exactly to their quantized values."""
    public_key, private_key = keypair
    rng = np.random.default_rng(2)
    vectors = [rng.uniform(-1, 1, 40) for _ in range(10)]
    encrypted = [encrypt_vector(public_key, v, ENCODING) for v in vectors]
    total = decrypt_vector(private_key, aggregate(encrypted))
    levels = sum(_quantized(ENCODING, v) for v in vectors)
    assert np.array_equal(total.values, ENCODING.dequantize(levels, 10))
    assert total.contributions == 10
    assert np.all(np.abs(total.values - sum(vectors)) <= ENCODING.error_bound(10))


@pytest.mark.parametrize("bound", [1.0, -1.0])
def test_sums_at_the_clip_bounds_do_not_carry(keypair, bound):
    """Extreme values in every slot of every contribution do not carry over."""
    public_key, private_key = keypair
    values = np.full(30, bound * 5.0)
    encrypted = [encrypt_vector(public_key, values, ENCODING) for _ in range(10)]
    total = decrypt_vector(private_key, aggregate(encrypted))
    assert np.array_equal(total.values, np.full(30, bound * 10.0))


def test_weighted_sum_carries_the_total_weight(keypair):
    """Weighted vectors give the weighted sum and the total weight."""
    public_key, private_key = keypair
    rng = np.random.default_rng(3)
    vectors = [rng.uniform(-2, 2, 25) for _ in range(5)]
    weights = [1, 1000, 17, 250, np.int64(999)]
    encrypted = [
        encrypt_vector(public_key, v, WEIGHTED, weight=w)
        for v, w in zip(vectors, weights, strict=True)
    ]
    total = decrypt_vector(private_key, aggregate(encrypted))
    levels = sum(
        _quantized(WEIGHTED, v, int(w)) for v, w in zip(vectors, weights, strict=True)
    )
    assert total.weight == sum(int(w) for w in weights)
    assert np.array_equal(total.values, WEIGHTED.dequantize(levels, total.weight))
    expected_mean = (
        sum(w * v for v, w in zip(vectors, weights, strict=True)) / total.weight
    )
    assert np.allclose(total.mean(), expected_mean, atol=WEIGHTED.step)


def test_weighted_slots_at_max_weight_do_not_carry(keypair):
    """The largest weight with extreme values fills slots without carrying."""
    public_key, private_key = keypair
    encrypted = [
        encrypt_vector(public_key, np.full(9, 2.0), WEIGHTED, weight=1000)
        for _ in range(5)
    ]
    total = decrypt_vector(private_key, aggregate(encrypted))
    assert total.weight == 5000
    assert np.array_equal(total.values, np.full(9, 2.0 * 5000))
    assert np.array_equal(total.mean(), np.full(9, 2.0))


def test_unweighted_mean_divides_by_contributions(keypair):
    """mean() of an unweighted sum divides by the number of contributions."""
    public_key, private_key = keypair
    a = encrypt_vector(public_key, [0.5, -1.0], ENCODING)
    b = encrypt_vector(public_key, [-0.5, 0.0], ENCODING)
    assert decrypt_vector(private_key, a + b).mean().tolist() == [0.0, -0.5]


def test_too_many_contributions_are_refused(public_key):
    """Adding past max_contributions raises instead of overflowing."""
    vectors = [encrypt_vector(public_key, [0.1], ENCODING) for _ in range(11)]
    total = aggregate(vectors[:10])
    with pytest.raises(TooManyContributionsError, match="11 contributions"):
        total + vectors[10]
    with pytest.raises(TooManyContributionsError, match="headroom for 10"):
        aggregate(vectors)


def test_vectors_of_another_key_are_refused(public_key, other_keypair):
    """Operands of different keys raise KeyMismatchError."""
    a = encrypt_vector(public_key, [0.1], ENCODING)
    b = encrypt_vector(other_keypair[0], [0.1], ENCODING)
    with pytest.raises(KeyMismatchError, match="same job key"):
        a + b


@pytest.mark.parametrize(
    ("values", "encoding", "weight"),
    [
        ([0.1, 0.2], ENCODING, None),
        ([0.1], PackedEncoding(clip=2.0), None),
        ([0.1], WEIGHTED, 3),
    ],
)
def test_vectors_of_another_encoding_are_refused(public_key, values, encoding, weight):
    """Operands of other lengths, encodings or weighting raise EncodingMismatchError."""
    a = encrypt_vector(public_key, [0.1], ENCODING)
    b = encrypt_vector(public_key, values, encoding, weight=weight)
    with pytest.raises(EncodingMismatchError, match="cannot add"):
        aggregate([a, b])


def test_aggregate_refuses_empty_and_foreign_input(public_key):
    """aggregate needs EncryptedVector objects, at least one."""
    with pytest.raises(VectorLengthError, match="at least one"):
        aggregate([])
    with pytest.raises(EncodingMismatchError, match="EncryptedVector objects"):
        aggregate([encrypt_vector(public_key, [0.1], ENCODING), b"bytes"])


@pytest.mark.parametrize("weight", [0, 1001, -3, 2.5, True, "7"])
def test_invalid_weights_are_refused(public_key, weight):
    """Weights must be integers in [1, max_weight]."""
    with pytest.raises(EncodingRangeError, match="weight"):
        encrypt_vector(public_key, [0.1], WEIGHTED, weight=weight)


def test_non_finite_values_are_refused(public_key):
    """NaN in an update raises before anything is encrypted."""
    with pytest.raises(NonFiniteValueError, match="1 of 3 values"):
        encrypt_vector(public_key, [0.0, np.nan, 1.0], ENCODING)


def test_vectors_longer_than_declared_are_refused(public_key):
    """A declared length is enforced."""
    with pytest.raises(VectorLengthError, match="expected a vector of 3 values, got 4"):
        encrypt_vector(public_key, [0.0] * 4, ENCODING, length=3)


def test_private_key_of_another_key_is_refused(public_key, other_keypair):
    """Encrypting or decrypting with a foreign private key raises KeyMismatchError."""
    with pytest.raises(KeyMismatchError, match="does not belong"):
        encrypt_vector(public_key, [0.1], ENCODING, private_key=other_keypair[1])
    vector = encrypt_vector(public_key, [0.1], ENCODING)
    with pytest.raises(KeyMismatchError, match="does not belong"):
        decrypt_vector(other_keypair[1], vector)


def test_pool_of_another_key_is_refused(public_key, other_keypair):
    """A randomness pool serves only its own key."""
    with RandomnessPool(other_keypair[0], background=False) as pool:
        with pytest.raises(KeyMismatchError, match="randomness pool serves"):
            encrypt_vector(public_key, [0.1], ENCODING, pool=pool)


def test_no_caller_chosen_randomness(public_key):
    """encrypt_vector takes no random value, and encrypting twice differs."""
    names = set(inspect.signature(encrypt_vector).parameters)
    assert not names & {"r", "r_value", "randomness", "nonce", "seed"}
    with pytest.raises(TypeError):
        encrypt_vector(public_key, [0.1], ENCODING, r_value=5)
    first = encrypt_vector(public_key, [0.1, 0.2], ENCODING)
    second = encrypt_vector(public_key, [0.1, 0.2], ENCODING)
    assert first.ciphertexts != second.ciphertexts


def test_sums_are_not_rerandomized(public_key):
    """A sum is the plain product of its operands' ciphertexts modulo n**2."""
    a = encrypt_vector(public_key, np.linspace(-1, 1, 300), ENCODING)
    b = encrypt_vector(public_key, np.linspace(1, -1, 300), ENCODING)
    nsquare = public_key.n**2
    expected = tuple(
        x * y % nsquare for x, y in zip(a.ciphertexts, b.ciphertexts, strict=True)
    )
    assert (a + b).ciphertexts == expected


def test_magnitudes_do_not_show_on_the_wire(public_key):
    """Tiny and huge values give messages of one size and one header."""
    tiny = encrypt_vector(public_key, np.full(50, 1e-9), ENCODING).to_bytes()
    huge = encrypt_vector(public_key, np.full(50, 1e9), ENCODING).to_bytes()
    header = 74
    assert len(tiny) == len(huge)
    assert tiny[:header] == huge[:header]


def test_malformed_operand_is_detected_at_decryption(keypair):
    """A ciphertext that overflows a slot makes decryption refuse the aggregate."""
    public_key, private_key = keypair
    vector = encrypt_vector(public_key, [0.0] * 5, ENCODING)
    n = gmpy2.mpz(public_key.n)
    overflow = 1 << (ENCODING.slots_per_ciphertext(512) * ENCODING.slot_bits - 1)
    bad = encrypt_raw(n, n * n, [overflow], [gmpy2.mpz(1)])[0]
    forged = EncryptedVector(
        public_key,
        ENCODING,
        5,
        1,
        False,
        [vector.ciphertexts[0] * int(bad) % public_key.n**2],
    )
    with pytest.raises(EncodingRangeError, match="exceeds|not zero|more than"):
        decrypt_vector(private_key, forged)


def test_phe_decrypts_our_ciphertexts(keypair):
    """Ciphertexts are plain Paillier: phe's own decryption reads the packed integer."""
    public_key, private_key = keypair
    vector = encrypt_vector(public_key, [1.0, -1.0], ENCODING)
    plaintext = private_key.raw_decrypt(vector.ciphertexts[0])
    per = ENCODING.slots_per_ciphertext(512)
    top = 2 * ENCODING.half
    expected = (top << ((per - 1) * 20)) | (0 << ((per - 2) * 20))
    assert plaintext == expected
