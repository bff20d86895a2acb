"""Keys shared by the crypto tests: made once, 512 bits so that tests stay fast."""

from __future__ import annotations

import phe
import pytest

from workbench.crypto import generate_keypair


@pytest.fixture(scope="session")
def keypair() -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    """A 512-bit key pair, for tests only."""
    return generate_keypair(512, allow_insecure=True)


@pytest.fixture(scope="session")
def other_keypair() -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    """A second 512-bit key pair, to test key mismatches."""
    return generate_keypair(512, allow_insecure=True)


@pytest.fixture(scope="session")
def public_key(keypair):
    """The public half of :func:`keypair`."""
    return keypair[0]


@pytest.fixture(scope="session")
def private_key(keypair):
    """The private half of :func:`keypair`."""
    return keypair[1]
