"""Tests of sealing secrets to X25519 keys."""

from __future__ import annotations

import pytest

from workbench.crypto import generate_sealing_keypair, seal, unseal
from workbench.errors import SealingError


@pytest.fixture(scope="module")
def sealing_keys():
    """Two sealing key pairs."""
    return generate_sealing_keypair(), generate_sealing_keypair()


def test_sealing_keypair_is_raw_bytes(sealing_keys):
    """Private and public sealing keys are 32 raw bytes each."""
    (private, public), _ = sealing_keys
    assert len(private) == 32 and len(public) == 32 and private != public


@pytest.mark.parametrize("secret", [b"", b"x", bytes(range(256)) * 40])
def test_seal_round_trip(sealing_keys, secret):
    """The recipient opens what was sealed to it."""
    (private, public), _ = sealing_keys
    sealed = seal(secret, public)
    assert len(sealed) == 61 + len(secret)
    assert unseal(sealed, private) == secret


def test_seal_is_randomized(sealing_keys):
    """Sealing the same secret twice gives different bytes."""
    (_, public), _ = sealing_keys
    assert seal(b"secret", public) != seal(b"secret", public)


def test_seal_hides_the_secret(sealing_keys):
    """The sealed bytes do not contain the secret."""
    (_, public), _ = sealing_keys
    secret = b"a private key that must not show" * 3
    assert secret[:16] not in seal(secret, public)


def test_unseal_refuses_another_key(sealing_keys):
    """A message sealed to one member cannot be opened by another."""
    (_, public), (other_private, _) = sealing_keys
    with pytest.raises(SealingError, match="another key or altered"):
        unseal(seal(b"secret", public), other_private)


@pytest.mark.parametrize("position", [0, 1, 20, 40, 50, -1])
def test_unseal_refuses_altered_bytes(sealing_keys, position):
    """Flipping any byte makes unsealing fail."""
    (private, public), _ = sealing_keys
    sealed = bytearray(seal(b"secret", public))
    sealed[position] ^= 0x01
    with pytest.raises(SealingError, match="version|another key or altered"):
        unseal(bytes(sealed), private)


def test_unseal_refuses_truncated_bytes(sealing_keys):
    """A truncated message raises SealingError naming the minimum size."""
    (private, public), _ = sealing_keys
    with pytest.raises(SealingError, match="at least 61 bytes"):
        unseal(seal(b"", public)[:-1], private)


@pytest.mark.parametrize("key", [b"short", "a" * 32, None])
def test_seal_refuses_malformed_public_key(key):
    """A recipient key that is not 32 raw bytes is refused."""
    with pytest.raises(SealingError, match="32 raw bytes"):
        seal(b"secret", key)
