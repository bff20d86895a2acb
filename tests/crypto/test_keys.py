"""Tests of Paillier key generation, fingerprints and serialization."""

from __future__ import annotations

import hashlib
import json

import pytest

from workbench.crypto import (
    generate_keypair,
    key_fingerprint,
    private_key_from_bytes,
    private_key_to_bytes,
    public_key_from_json,
    public_key_to_json,
)
from workbench.errors import KeySerializationError, KeySizeError


@pytest.mark.parametrize("size", [512, 1024])
def test_generate_keypair_refuses_test_sizes_without_flag(size):
    """Sizes below 2048 bits need allow_insecure=True."""
    with pytest.raises(KeySizeError, match="allow_insecure=True"):
        generate_keypair(size)


@pytest.mark.parametrize("size", [0, 777, 4096, True])
def test_generate_keypair_refuses_unknown_sizes(size):
    """Sizes outside the allowed list are refused, with the allowed list named."""
    with pytest.raises(KeySizeError, match="2048, 3072"):
        generate_keypair(size, allow_insecure=True)


def test_generate_keypair_makes_requested_size(keypair):
    """A 512-bit test key has a 512-bit modulus and matching factors."""
    public_key, private_key = keypair
    assert public_key.n.bit_length() == 512
    assert private_key.p * private_key.q == public_key.n


def test_fingerprint_is_sha256_of_n(public_key):
    """The fingerprint is the hex SHA-256 of n as big-endian bytes."""
    n = public_key.n
    expected = hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).hexdigest()
    assert key_fingerprint(public_key) == expected


def test_fingerprints_differ_between_keys(public_key, other_keypair):
    """Two keys have different fingerprints."""
    assert key_fingerprint(public_key) != key_fingerprint(other_keypair[0])


def test_public_key_json_round_trip(public_key):
    """A public key read back from JSON equals the original."""
    text = public_key_to_json(public_key)
    assert public_key_from_json(text) == public_key
    assert public_key_from_json(text.encode()) == public_key


def test_public_key_json_rejects_altered_modulus(public_key):
    """A modulus that does not match the stored fingerprint is refused."""
    body = json.loads(public_key_to_json(public_key))
    body["n"] = format(public_key.n + 2, "x")
    with pytest.raises(KeySerializationError, match="fingerprint"):
        public_key_from_json(json.dumps(body))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "kind"),
        ('{"kind": "workbench.paillier.public", "version": 9, "n": "ff"}', "version"),
        ('{"kind": "workbench.paillier.public", "version": 1, "n": "zz"}', "hex"),
        ('{"kind": "workbench.paillier.public", "version": 1, "n": "ff"}', "bits"),
    ],
)
def test_public_key_json_rejects_malformed_text(text, match):
    """Malformed JSON keys raise KeySerializationError saying what is wrong."""
    with pytest.raises(KeySerializationError, match=match):
        public_key_from_json(text)


def test_private_key_bytes_round_trip(private_key):
    """A private key read back from bytes equals the original and decrypts."""
    restored = private_key_from_bytes(private_key_to_bytes(private_key))
    assert restored == private_key
    assert restored.decrypt(private_key.public_key.encrypt(42)) == 42


def test_private_key_bytes_rejects_inconsistent_factors(private_key):
    """Reading back checks that p * q equals n."""
    body = json.loads(private_key_to_bytes(private_key))
    body["p"] = format(private_key.p + 2, "x")
    with pytest.raises(KeySerializationError, match="p \\* q"):
        private_key_from_bytes(json.dumps(body).encode())


def test_private_key_bytes_rejects_a_public_key(public_key):
    """A public key is not read as a private key."""
    with pytest.raises(KeySerializationError, match="kind"):
        private_key_from_bytes(public_key_to_json(public_key).encode())


def test_private_key_bytes_hold_no_pickle(private_key):
    """The serialized private key is plain JSON."""
    body = json.loads(private_key_to_bytes(private_key).decode("utf-8"))
    assert set(body) == {"kind", "version", "n", "p", "q"}
