"""Sharing the decryption of an aggregate among members, one slice each.

Decryption costs about 2.6 ms per ciphertext with a 2048-bit key, so a 1M-value
aggregate (about 9 800 ciphertexts) takes 25 s on one core. Every member of a job
holds the private key, so each may decrypt a slice of the ciphertext indices
(:func:`slice_bounds`, :func:`decrypt_slice`), seal the slice's plaintexts to the
other members, and any member can put the slices together
(:func:`combine_slices`). The plaintexts of a slice are packed sums: the aggregate
every member learns anyway, never an individual update. The coordinator relays
them sealed and learns nothing.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import phe

from workbench.crypto.keys import key_fingerprint
from workbench.crypto.vector import (
    DecryptedSum,
    EncryptedVector,
    decode_plaintexts,
    decrypt_ciphertexts,
)
from workbench.crypto.wire import ciphertext_width
from workbench.errors import CryptoError, KeyMismatchError, WireFormatError

__all__ = ["DecryptedSlice", "combine_slices", "decrypt_slice", "slice_bounds"]

_MAGIC = b"WBPS"
_VERSION = 1
_HEADER = struct.Struct(">4sB32s32sIIH")
_HINT = "send the exact bytes that DecryptedSlice.to_bytes() produced"


def slice_bounds(count: int, parts: int) -> list[tuple[int, int]]:
    """Split ``count`` ciphertext indices into ``parts`` contiguous slices.

    Examples
    --------
    >>> slice_bounds(10, 3)
    [(0, 4), (4, 7), (7, 10)]
    """
    if count < 1 or parts < 1:
        raise CryptoError(
            f"cannot split {count} ciphertexts into {parts} slices",
            hint="pass a positive count and number of parts",
        )
    parts = min(parts, count)
    base, extra = divmod(count, parts)
    bounds, start = [], 0
    for index in range(parts):
        stop = start + base + (1 if index < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _digest(vector: EncryptedVector, start: int, stop: int) -> bytes:
    width = ciphertext_width(vector.public_key)
    digest = hashlib.sha256()
    for c in vector._ciphertexts[start:stop]:
        digest.update(int(c).to_bytes(width, "big"))
    return digest.digest()


@dataclass(frozen=True)
class DecryptedSlice:
    """The plaintexts of ciphertexts ``start`` to ``stop`` of one aggregate.

    Attributes
    ----------
    fingerprint : str
        Key fingerprint.
    digest : bytes
        SHA-256 of the slice's ciphertexts, binding it to one aggregate.
    start, stop : int
        Ciphertext indices, ``stop`` excluded.
    plaintexts : tuple of int
        Packed slot sums, below ``n``.
    """

    fingerprint: str
    digest: bytes
    start: int
    stop: int
    plaintexts: tuple[int, ...]

    def to_bytes(self, public_key: phe.PaillierPublicKey) -> bytes:
        """Write the slice as a header and fixed-width big-endian plaintexts.

        The bytes hold part of the aggregate: seal them before they leave.
        """
        width = (int(public_key.n).bit_length() + 7) // 8
        header = _HEADER.pack(
            _MAGIC,
            _VERSION,
            bytes.fromhex(self.fingerprint),
            self.digest,
            self.start,
            self.stop,
            width,
        )
        return header + b"".join(m.to_bytes(width, "big") for m in self.plaintexts)

    @classmethod
    def from_bytes(
        cls, data: bytes, public_key: phe.PaillierPublicKey
    ) -> DecryptedSlice:
        """Read a slice written by :meth:`to_bytes`, strictly.

        Raises
        ------
        WireFormatError
            If the bytes are truncated, padded, or inconsistent.
        KeyMismatchError
            If the slice belongs to another key.
        """
        data = bytes(data)
        if len(data) < _HEADER.size:
            raise WireFormatError(
                f"a decrypted slice needs {_HEADER.size} bytes of header, got "
                f"{len(data)}",
                hint=_HINT,
            )
        magic, version, fingerprint, digest, start, stop, width = _HEADER.unpack_from(
            data
        )
        if magic != _MAGIC or version != _VERSION:
            raise WireFormatError(
                f"not a decrypted slice of version {_VERSION}: header {magic!r}, "
                f"version {version}",
                hint=_HINT,
            )
        if fingerprint.hex() != key_fingerprint(public_key):
            raise KeyMismatchError(
                f"the slice belongs to key {fingerprint.hex()[:16]}, not to key "
                f"{key_fingerprint(public_key)[:16]}",
                hint="read it with the public key of its job",
            )
        n = int(public_key.n)
        expected_width = (n.bit_length() + 7) // 8
        count = stop - start
        if width != expected_width or count < 1:
            raise WireFormatError(
                f"a decrypted slice declares width {width} (expected {expected_width}) "
                f"and indices {start} to {stop}",
                hint=_HINT,
            )
        if len(data) != _HEADER.size + count * width:
            raise WireFormatError(
                f"a slice of {count} plaintexts takes {_HEADER.size + count * width} "
                f"bytes, got {len(data)}",
                hint=_HINT,
            )
        plaintexts = []
        for index in range(count):
            offset = _HEADER.size + index * width
            value = int.from_bytes(data[offset : offset + width], "big")
            if value >= n:
                raise WireFormatError(
                    f"plaintext {start + index} of a slice is not below n",
                    hint=_HINT,
                )
            plaintexts.append(value)
        return cls(fingerprint.hex(), digest, start, stop, tuple(plaintexts))


def decrypt_slice(
    private_key: phe.PaillierPrivateKey,
    vector: EncryptedVector,
    start: int,
    stop: int,
    *,
    processes: int | None = None,
) -> DecryptedSlice:
    """Decrypt ciphertexts ``start`` to ``stop`` (excluded) of an aggregate.

    Parameters
    ----------
    private_key : phe.PaillierPrivateKey
    vector : EncryptedVector
    start, stop : int
        Ciphertext indices, from :func:`slice_bounds`.
    processes : int, optional
        Worker processes; every core by default for long slices.

    Returns
    -------
    DecryptedSlice

    Raises
    ------
    KeyMismatchError
        If the private key belongs to another key.
    CryptoError
        If the indices are outside the vector.
    """
    if int(private_key.public_key.n) != int(vector.public_key.n):
        raise KeyMismatchError(
            f"the private key does not belong to key {vector.fingerprint[:16]}",
            hint="decrypt with the private key of the job the vector belongs to",
        )
    if not 0 <= start < stop <= vector.ciphertext_count:
        raise CryptoError(
            f"slice {start} to {stop} is outside the {vector.ciphertext_count} "
            "ciphertexts of the vector",
            hint="take the bounds from slice_bounds(vector.ciphertext_count, parts)",
        )
    plaintexts = decrypt_ciphertexts(
        private_key, vector._ciphertexts[start:stop], processes=processes
    )
    return DecryptedSlice(
        vector.fingerprint,
        _digest(vector, start, stop),
        start,
        stop,
        tuple(int(m) for m in plaintexts),
    )


def combine_slices(
    vector: EncryptedVector, slices: Sequence[DecryptedSlice]
) -> DecryptedSum:
    """Put decrypted slices of an aggregate together and decode them.

    Parameters
    ----------
    vector : EncryptedVector
        The aggregate the slices were decrypted from.
    slices : sequence of DecryptedSlice
        Covering every ciphertext index exactly once, in any order.

    Returns
    -------
    DecryptedSum

    Raises
    ------
    KeyMismatchError
        If a slice belongs to another key.
    CryptoError
        If the slices leave a gap, overlap, or belong to another aggregate.
    """
    ordered = sorted(slices, key=lambda part: part.start)
    position = 0
    plaintexts: list[int] = []
    for part in ordered:
        if part.fingerprint != vector.fingerprint:
            raise KeyMismatchError(
                f"a slice belongs to key {part.fingerprint[:16]}, not to key "
                f"{vector.fingerprint[:16]}",
                hint="combine only slices of this aggregate",
            )
        if part.start != position or part.stop > vector.ciphertext_count:
            raise CryptoError(
                f"slices must cover ciphertexts 0 to {vector.ciphertext_count} once "
                f"each; found slice {part.start} to {part.stop} after index {position}",
                hint="decrypt the missing slice, or drop the duplicate",
            )
        if part.digest != _digest(vector, part.start, part.stop):
            raise CryptoError(
                f"slice {part.start} to {part.stop} was decrypted from another "
                "aggregate",
                hint="combine slices of the same round's aggregate only",
            )
        plaintexts.extend(part.plaintexts)
        position = part.stop
    if position != vector.ciphertext_count:
        raise CryptoError(
            f"slices cover ciphertexts 0 to {position} of {vector.ciphertext_count}",
            hint="wait for the missing slices",
        )
    return decode_plaintexts(vector, plaintexts)
