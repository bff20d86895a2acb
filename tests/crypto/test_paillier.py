"""Tests of the Paillier arithmetic: randomness sources and CRT decryption."""

from __future__ import annotations

import random

import gmpy2
import pytest

from workbench.crypto.paillier import (
    CrtRandomness,
    PrivateKeyContext,
    ShortExponentRandomness,
    TextbookRandomness,
    decrypt_raw,
    encrypt_raw,
    make_source,
)
from workbench.errors import CryptoError, KeyMismatchError


@pytest.fixture(scope="module")
def short_source(public_key):
    """A short-exponent source with a small window, to check the table."""
    return ShortExponentRandomness(public_key, window=4)


def test_crt_factor_equals_textbook_power(keypair):
    """r**n computed through the CRT equals r**n mod n**2."""
    public_key, private_key = keypair
    source = CrtRandomness(private_key)
    rng = random.Random(4)
    n = public_key.n
    for _ in range(20):
        r = gmpy2.mpz(rng.randrange(1, n))
        assert source._power(r) == pow(int(r), n, n * n)


def test_short_exponent_table_computes_powers(public_key, short_source):
    """The fixed-base table gives hs**a mod n**2 for any exponent a."""
    rng = random.Random(5)
    nsquare = public_key.n**2
    base = int(short_source._base)
    for exponent in [0, 1, 15, 16, 2**short_source.exponent_bits - 1] + [
        rng.getrandbits(short_source.exponent_bits) for _ in range(20)
    ]:
        assert short_source._power(exponent) == pow(base, exponent, nsquare)


def test_short_exponent_defaults_to_half_the_modulus(public_key):
    """By default the exponent is half as long as n."""
    assert ShortExponentRandomness(public_key).exponent_bits == 256


def test_short_exponent_refuses_odd_window(public_key):
    """Windows outside 1 to 16 bits are refused."""
    with pytest.raises(CryptoError, match="between 1 and 16"):
        ShortExponentRandomness(public_key, window=0)


@pytest.mark.parametrize("kind", ["textbook", "crt", "short_exponent"])
def test_every_factor_encrypts_zero(keypair, kind):
    """A random factor is an encryption of zero, and factors do not repeat."""
    public_key, private_key = keypair
    source = make_source(
        public_key,
        private_key=private_key if kind == "crt" else None,
        short_exponent=kind == "short_exponent",
    )
    assert source.kind == kind
    factors = source.take(10)
    assert len({int(f) for f in factors}) == 10
    assert decrypt_raw(private_key, factors) == [0] * 10


def test_make_source_refuses_foreign_private_key(public_key, other_keypair):
    """The CRT source needs the private key of the same key pair."""
    with pytest.raises(KeyMismatchError, match="does not belong"):
        make_source(public_key, private_key=other_keypair[1])


def test_decryption_matches_phe(keypair):
    """CRT decryption through gmpy2 agrees with phe's raw_decrypt."""
    public_key, private_key = keypair
    rng = random.Random(6)
    n = gmpy2.mpz(public_key.n)
    plaintexts = [0, 1, int(n) - 1] + [rng.randrange(int(n)) for _ in range(20)]
    factors = TextbookRandomness(public_key).take(len(plaintexts))
    ciphertexts = encrypt_raw(n, n * n, plaintexts, factors)
    context = PrivateKeyContext(private_key)
    for m, c in zip(plaintexts, ciphertexts, strict=True):
        assert context.decrypt(c) == m
        assert private_key.raw_decrypt(int(c)) == m
