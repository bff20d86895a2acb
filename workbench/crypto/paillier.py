"""Paillier arithmetic through gmpy2: randomness sources, encryption, decryption.

Encryption is ``c = (1 + m * n) * r**n mod n**2``; nearly all of its cost is the
random factor ``r**n``. Three sources make that factor:

* :class:`TextbookRandomness`: a uniform unit ``r`` raised to ``n`` modulo ``n**2``;
* :class:`CrtRandomness`: the same value, computed modulo ``p**2`` and ``q**2``
  with reduced exponents when the private key is at hand (about 4 times faster);
* :class:`ShortExponentRandomness`: the variant of Damgård, Jurik and Nielsen,
  ``(h**n)**a mod n**2`` with ``h = -y**2 mod n`` and a short random ``a``, through a
  fixed-base table (about 15 times faster; see docs/security.md for its assumption).

No function here accepts a random value from its caller.

References
----------
.. [1] P. Paillier, "Public-key cryptosystems based on composite degree residuosity
   classes", EUROCRYPT 1999.
.. [2] I. Damgård, M. Jurik, J. B. Nielsen, "A generalization of Paillier's
   public-key system with applications to electronic voting", International
   Journal of Information Security 9, 2010.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence

import gmpy2
import phe

from workbench.errors import CryptoError, KeyMismatchError

__all__ = [
    "CrtRandomness",
    "PrivateKeyContext",
    "RandomnessSource",
    "ShortExponentRandomness",
    "TextbookRandomness",
    "decrypt_raw",
    "encrypt_raw",
    "make_source",
]

mpz = gmpy2.mpz


def _random_unit(n: int) -> int:
    """Draw ``r`` uniformly from the units of ``Z_n`` (1 <= r < n, gcd(r, n) = 1)."""
    while True:
        r = secrets.randbelow(n - 1) + 1
        if gmpy2.gcd(r, n) == 1:
            return r


class RandomnessSource:
    """Base of the sources of the random factor ``r**n mod n**2``.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey
    """

    kind = "abstract"

    def __init__(self, public_key: phe.PaillierPublicKey) -> None:
        self.public_key = public_key
        self.n = mpz(public_key.n)
        self.nsquare = self.n * self.n

    def next(self) -> gmpy2.mpz:
        """Return one fresh random factor."""
        raise NotImplementedError

    def take(self, count: int) -> list[gmpy2.mpz]:
        """Return ``count`` fresh random factors."""
        return [self.next() for _ in range(count)]


class TextbookRandomness(RandomnessSource):
    """``r**n mod n**2`` for a uniform unit ``r``, with the public key only."""

    kind = "textbook"

    def next(self) -> gmpy2.mpz:
        """Return one fresh random factor."""
        return gmpy2.powmod(mpz(_random_unit(int(self.n))), self.n, self.nsquare)


class CrtRandomness(RandomnessSource):
    """``r**n mod n**2`` through the Chinese remainder theorem.

    The value is the same as :class:`TextbookRandomness` gives, computed modulo
    ``p**2`` and ``q**2`` with the exponent reduced modulo the group orders
    ``p * (p - 1)`` and ``q * (q - 1)``.

    Parameters
    ----------
    private_key : phe.PaillierPrivateKey
    """

    kind = "crt"

    def __init__(self, private_key: phe.PaillierPrivateKey) -> None:
        super().__init__(private_key.public_key)
        p, q = mpz(private_key.p), mpz(private_key.q)
        self._psquare, self._qsquare = p * p, q * q
        self._exp_p = self.n % (p * (p - 1))
        self._exp_q = self.n % (q * (q - 1))
        self._qsquare_inverse = gmpy2.invert(self._qsquare, self._psquare)

    def next(self) -> gmpy2.mpz:
        """Return one fresh random factor."""
        return self._power(mpz(_random_unit(int(self.n))))

    def _power(self, r: gmpy2.mpz) -> gmpy2.mpz:
        xp = gmpy2.powmod(r, self._exp_p, self._psquare)
        xq = gmpy2.powmod(r, self._exp_q, self._qsquare)
        u = ((xp - xq) * self._qsquare_inverse) % self._psquare
        return xq + u * self._qsquare


class ShortExponentRandomness(RandomnessSource):
    """Random factors ``hs**a mod n**2`` with a short exponent ``a``.

    ``hs = h**n mod n**2`` for ``h = -y**2 mod n`` and a uniform unit ``y`` drawn
    here; ``a`` is uniform below ``2**exponent_bits``. A table of
    ``hs**(d * 2**(window * j))`` for every digit ``d`` makes each factor a product
    of ``exponent_bits / window`` table entries.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey
    exponent_bits : int, optional
        Length of ``a``; by default half the bit length of ``n``, rounded up to a
        multiple of ``window``, as Damgård, Jurik and Nielsen propose.
    window : int, default=8
        Bits per table digit: 8 makes a table of ``exponent_bits / 8 * 255``
        entries (about 16 MiB for a 2048-bit key) and 127 products per factor.

    Notes
    -----
    The factors are not uniform n-th residues; semantic security rests on an
    assumption beyond decisional composite residuosity, written down in
    docs/security.md.
    """

    kind = "short_exponent"

    def __init__(
        self,
        public_key: phe.PaillierPublicKey,
        *,
        exponent_bits: int | None = None,
        window: int = 8,
    ) -> None:
        super().__init__(public_key)
        if exponent_bits is None:
            exponent_bits = -(-int(self.n).bit_length() // 2)
        if not 1 <= window <= 16:
            raise CryptoError(
                f"window must be between 1 and 16 bits, got {window}",
                hint="keep the default of 8 bits",
            )
        self.window = int(window)
        self.digits = -(-int(exponent_bits) // self.window)
        self.exponent_bits = self.digits * self.window
        y = mpz(_random_unit(int(self.n)))
        h = (-(y * y)) % self.n
        self._base = gmpy2.powmod(h, self.n, self.nsquare)
        self._table = self._build_table(self._base)

    def _build_table(self, base: gmpy2.mpz) -> list[list[gmpy2.mpz]]:
        table = []
        radix = 1 << self.window
        for _ in range(self.digits):
            row = [mpz(1), base]
            for _ in range(radix - 2):
                row.append((row[-1] * base) % self.nsquare)
            table.append(row)
            base = (row[-1] * base) % self.nsquare
        return table

    def next(self) -> gmpy2.mpz:
        """Return one fresh random factor."""
        return self._power(secrets.randbits(self.exponent_bits))

    def _power(self, exponent: int) -> gmpy2.mpz:
        mask = (1 << self.window) - 1
        acc = None
        for row in self._table:
            digit = exponent & mask
            exponent >>= self.window
            if digit:
                acc = row[digit] if acc is None else (acc * row[digit]) % self.nsquare
        return mpz(1) if acc is None else acc


_SHORT_CACHE: dict[int, ShortExponentRandomness] = {}
_SHORT_CACHE_LOCK = threading.Lock()
_SHORT_CACHE_SIZE = 4


def _short_exponent_source(
    public_key: phe.PaillierPublicKey,
) -> ShortExponentRandomness:
    # The table costs about 0.15 s to build for a 2048-bit key; keep a few.
    n = int(public_key.n)
    with _SHORT_CACHE_LOCK:
        source = _SHORT_CACHE.get(n)
        if source is None:
            source = ShortExponentRandomness(public_key)
            while len(_SHORT_CACHE) >= _SHORT_CACHE_SIZE:
                _SHORT_CACHE.pop(next(iter(_SHORT_CACHE)))
            _SHORT_CACHE[n] = source
        return source


def make_source(
    public_key: phe.PaillierPublicKey,
    *,
    private_key: phe.PaillierPrivateKey | None = None,
    short_exponent: bool = False,
) -> RandomnessSource:
    """Return the fastest allowed source of random factors for a key.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey
    private_key : phe.PaillierPrivateKey, optional
        Enables :class:`CrtRandomness`.
    short_exponent : bool, default=False
        Use :class:`ShortExponentRandomness` (explicit opt-in).

    Raises
    ------
    KeyMismatchError
        If ``private_key`` belongs to another public key.
    """
    if private_key is not None and int(private_key.public_key.n) != int(public_key.n):
        raise KeyMismatchError(
            "the private key given does not belong to the public key used to encrypt",
            hint="pass the job's own private key, or none",
        )
    if short_exponent:
        return _short_exponent_source(public_key)
    if private_key is not None:
        return CrtRandomness(private_key)
    return TextbookRandomness(public_key)


def encrypt_raw(
    n: gmpy2.mpz, nsquare: gmpy2.mpz, plaintexts: Sequence[int], factors: Sequence
) -> list[gmpy2.mpz]:
    """Encrypt integers ``0 <= m < n`` with given random factors ``r**n mod n**2``.

    The factors come from a :class:`RandomnessSource`, never from a caller.
    """
    return [
        ((1 + mpz(m) * n) * factor) % nsquare
        for m, factor in zip(plaintexts, factors, strict=True)
    ]


class PrivateKeyContext:
    """Precomputed values for CRT decryption through gmpy2.

    Parameters
    ----------
    private_key : phe.PaillierPrivateKey
    """

    def __init__(self, private_key: phe.PaillierPrivateKey) -> None:
        self.n = mpz(private_key.public_key.n)
        p, q = mpz(private_key.p), mpz(private_key.q)
        self.p, self.q = p, q
        self.psquare, self.qsquare = p * p, q * q
        self.p_inverse = gmpy2.invert(p, q)
        g = self.n + 1
        self.hp = gmpy2.invert((gmpy2.powmod(g, p - 1, self.psquare) - 1) // p, p)
        self.hq = gmpy2.invert((gmpy2.powmod(g, q - 1, self.qsquare) - 1) // q, q)

    def decrypt(self, ciphertext: int) -> int:
        """Return the plaintext ``0 <= m < n`` of one ciphertext."""
        c = mpz(ciphertext)
        p, q = self.p, self.q
        mp = ((gmpy2.powmod(c, p - 1, self.psquare) - 1) // p * self.hp) % p
        mq = ((gmpy2.powmod(c, q - 1, self.qsquare) - 1) // q * self.hq) % q
        u = ((mq - mp) * self.p_inverse) % q
        return int(mp + u * p)


def decrypt_raw(
    private_key: phe.PaillierPrivateKey, ciphertexts: Sequence[int]
) -> list[int]:
    """Decrypt raw ciphertexts with the CRT."""
    context = PrivateKeyContext(private_key)
    return [context.decrypt(c) for c in ciphertexts]
