"""Tests of sharing decryption among members in slices."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from workbench.crypto import (
    DecryptedSlice,
    PackedEncoding,
    aggregate,
    combine_slices,
    decrypt_slice,
    decrypt_vector,
    encrypt_vector,
    slice_bounds,
)
from workbench.errors import CryptoError, KeyMismatchError, WireFormatError

ENCODING = PackedEncoding(clip=1.0, bits=8, max_contributions=3, max_weight=9)


@pytest.fixture(scope="module")
def total(keypair):
    """An aggregate of three weighted vectors over several ciphertexts."""
    public_key, _ = keypair
    rng = np.random.default_rng(9)
    return aggregate(
        [
            encrypt_vector(public_key, rng.uniform(-1, 1, 200), ENCODING, weight=w)
            for w in (2, 5, 9)
        ]
    )


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_slice_bounds_cover_every_index_once(parts):
    """Bounds are contiguous, cover 0 to count, and differ in size by at most one."""
    bounds = slice_bounds(20, parts)
    assert bounds[0][0] == 0 and bounds[-1][1] == 20
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = {stop - start for start, stop in bounds}
    assert max(sizes) - min(sizes) <= 1


def test_combined_slices_equal_full_decryption(keypair, total):
    """Slices decrypted apart, sent as bytes and combined in any order give the sum."""
    public_key, private_key = keypair
    parts = [
        DecryptedSlice.from_bytes(
            decrypt_slice(private_key, total, a, b).to_bytes(public_key), public_key
        )
        for a, b in slice_bounds(total.ciphertext_count, 3)
    ]
    combined = combine_slices(total, parts[::-1])
    whole = decrypt_vector(private_key, total)
    assert np.array_equal(combined.values, whole.values)
    assert combined.weight == whole.weight == 16


def test_missing_or_repeated_slices_are_refused(private_key, total):
    """A gap or an overlap between slices is refused."""
    a, b, c = (
        decrypt_slice(private_key, total, s, e)
        for s, e in slice_bounds(total.ciphertext_count, 3)
    )
    with pytest.raises(CryptoError, match="cover ciphertexts 0 to"):
        combine_slices(total, [a, b])
    with pytest.raises(CryptoError, match="once each"):
        combine_slices(total, [a, c])
    with pytest.raises(CryptoError, match="once each"):
        combine_slices(total, [a, a, b, c])


def test_slice_of_another_aggregate_is_refused(keypair, total):
    """A slice decrypted from another round's aggregate is refused."""
    public_key, private_key = keypair
    other = aggregate(
        [
            encrypt_vector(public_key, np.zeros(200), ENCODING, weight=1)
            for _ in range(3)
        ]
    )
    bounds = slice_bounds(total.ciphertext_count, 2)
    parts = [
        decrypt_slice(private_key, total, *bounds[0]),
        decrypt_slice(private_key, other, *bounds[1]),
    ]
    with pytest.raises(CryptoError, match="another aggregate"):
        combine_slices(total, parts)


def test_slice_outside_the_vector_is_refused(private_key, total):
    """Slice indices must lie within the vector."""
    with pytest.raises(CryptoError, match="outside the"):
        decrypt_slice(private_key, total, 0, total.ciphertext_count + 1)
    with pytest.raises(CryptoError, match="outside the"):
        decrypt_slice(private_key, total, 2, 2)


def test_slice_bytes_are_strict(keypair, other_keypair, total):
    """Truncated, padded or foreign slice bytes are refused."""
    public_key, private_key = keypair
    data = decrypt_slice(private_key, total, 0, 1).to_bytes(public_key)
    with pytest.raises(WireFormatError, match="takes"):
        DecryptedSlice.from_bytes(data[:-1], public_key)
    with pytest.raises(WireFormatError, match="takes"):
        DecryptedSlice.from_bytes(data + b"\0", public_key)
    with pytest.raises(WireFormatError, match="not a decrypted slice"):
        DecryptedSlice.from_bytes(b"XXXX" + data[4:], public_key)
    with pytest.raises(KeyMismatchError, match="belongs to key"):
        DecryptedSlice.from_bytes(data, other_keypair[0])


def test_slice_of_another_key_is_refused_when_combining(total):
    """combine_slices checks each slice's key fingerprint."""
    part = DecryptedSlice("00" * 32, b"\0" * 32, 0, 1, (0,))
    with pytest.raises(KeyMismatchError, match="belongs to key"):
        combine_slices(total, [dataclasses.replace(part)])
