"""Tests of the strict wire format of encrypted vectors."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.crypto import EncryptedVector, PackedEncoding, encrypt_vector
from workbench.crypto.wire import HEADER_SIZE
from workbench.errors import (
    CiphertextRangeError,
    CryptoError,
    KeyMismatchError,
    WireFormatError,
)

ENCODING = PackedEncoding(clip=1.0, bits=16, max_contributions=10, max_weight=50)


@pytest.fixture(scope="module")
def message(public_key):
    """A weighted encrypted vector of 30 values on the wire."""
    values = np.linspace(-1, 1, 30)
    return encrypt_vector(public_key, values, ENCODING, weight=7).to_bytes()


def test_round_trip_keeps_every_field(public_key, message):
    """Reading back gives the same fields and ciphertexts."""
    vector = EncryptedVector.from_bytes(message, public_key)
    assert (vector.length, vector.contributions, vector.weighted) == (30, 1, True)
    assert vector.encoding == ENCODING
    assert vector.to_bytes() == message


def test_message_size_is_header_plus_fixed_width_ciphertexts(public_key, message):
    """A message is the header and count ciphertexts of the width of n**2."""
    width = -(-(public_key.n**2).bit_length() // 8)
    count = ENCODING.ciphertext_count(30, 512, weighted=True)
    assert len(message) == HEADER_SIZE + count * width


def test_truncated_message_is_refused(public_key, message):
    """A message missing its last byte is refused as truncated."""
    with pytest.raises(WireFormatError, match="truncated"):
        EncryptedVector.from_bytes(message[:-1], public_key)
    with pytest.raises(WireFormatError, match="truncated"):
        EncryptedVector.from_bytes(message[:10], public_key)


def test_padded_message_is_refused(public_key, message):
    """A message with extra bytes is refused as padded."""
    with pytest.raises(WireFormatError, match="padded"):
        EncryptedVector.from_bytes(message + b"\x00", public_key)


def test_foreign_key_is_refused(message, other_keypair):
    """A message of another key raises KeyMismatchError."""
    with pytest.raises(KeyMismatchError, match="encrypted under key"):
        EncryptedVector.from_bytes(message, other_keypair[0])


def _with_ciphertext(public_key, message, value):
    width = -(-(public_key.n**2).bit_length() // 8)
    body = value.to_bytes(width, "big")
    return message[:HEADER_SIZE] + body + message[HEADER_SIZE + width :]


@pytest.mark.parametrize("which", ["zero", "nsquare", "above"])
def test_ciphertext_out_of_range_is_refused(public_key, message, which):
    """Ciphertexts 0 and >= n**2 raise CiphertextRangeError."""
    value = {"zero": 0, "nsquare": public_key.n**2, "above": public_key.n**2 + 5}[which]
    with pytest.raises(CiphertextRangeError, match="ciphertext 0 is"):
        EncryptedVector.from_bytes(
            _with_ciphertext(public_key, message, value), public_key
        )


def _patched(message, fmt, offset, value):
    data = bytearray(message)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


@pytest.mark.parametrize(
    ("fmt", "offset", "value", "match"),
    [
        ("4s", 0, b"NOPE", "not an encrypted vector"),
        (">B", 4, 2, "version 2"),
        (">B", 5, 3, "unknown flags"),
        (">B", 7, 1, "reserved"),
        (">B", 6, 1, "encoding .* is invalid"),
        (">d", 8, float("nan"), "encoding .* is invalid"),
        (">I", 24, 0, "0 contributions"),
        (">I", 24, 11, "11 contributions"),
        (">Q", 28, 0, "length 0"),
        (">Q", 28, 10_000, "need"),
        (">I", 36, 99, "declares 99 ciphertexts"),
        (">H", 72, 64, "64 bytes wide"),
    ],
)
def test_inconsistent_header_is_refused(public_key, message, fmt, offset, value, match):
    """Each header field is checked; a wrong one raises WireFormatError."""
    with pytest.raises(WireFormatError, match=match):
        EncryptedVector.from_bytes(_patched(message, fmt, offset, value), public_key)


def test_non_bytes_are_refused(public_key):
    """Only bytes-like input is parsed."""
    with pytest.raises(WireFormatError, match="expected bytes"):
        EncryptedVector.from_bytes("text", public_key)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(position=st.integers(0, HEADER_SIZE - 1), mask=st.integers(1, 255))
def test_altered_header_bytes_raise_crypto_errors_only(
    public_key, message, position, mask
):
    """Altered header bytes raise a CryptoError, or parse to exactly what they say."""
    data = bytearray(message)
    data[position] ^= mask
    try:
        vector = EncryptedVector.from_bytes(bytes(data), public_key)
    except CryptoError:
        return
    assert vector.to_bytes() == bytes(data)
