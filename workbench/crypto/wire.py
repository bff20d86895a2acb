"""The wire format of encrypted vectors: a fixed header, then fixed-width integers.

Layout (all big-endian)::

    offset  size  field
    0       4     magic b"WBPV"
    4       1     format version (1)
    5       1     flags: bit 0 set for a weighted vector, other bits zero
    6       1     quantization bits
    7       1     reserved, zero
    8       8     clip bound, IEEE 754 double
    16      4     max_contributions
    20      4     max_weight
    24      4     contributions summed in this vector
    28      8     length: number of values
    36      4     count: number of ciphertexts
    40      32    key fingerprint: SHA-256 of n
    72      2     width: bytes per ciphertext, the byte length of n**2
    74            count ciphertexts of width bytes each

Parsing is strict: every field is checked against the key and the encoding, the
total length must match exactly, and every ciphertext must satisfy
``0 < c < n**2``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import gmpy2
import phe

from workbench.crypto.keys import key_fingerprint
from workbench.crypto.packing import PackedEncoding
from workbench.errors import (
    CiphertextRangeError,
    EncodingParameterError,
    KeyMismatchError,
    WireFormatError,
)

__all__ = ["FORMAT_VERSION", "HEADER_SIZE", "MAGIC", "WireVector", "dump", "load"]

MAGIC = b"WBPV"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">4sBBBBdIIIQI32sH")
HEADER_SIZE = _HEADER.size
_FLAG_WEIGHTED = 0x01
_HINT = "send the exact bytes that EncryptedVector.to_bytes() produced"


@dataclass(frozen=True)
class WireVector:
    """The fields of one encrypted vector on the wire."""

    encoding: PackedEncoding
    length: int
    contributions: int
    weighted: bool
    ciphertexts: list[gmpy2.mpz]


def ciphertext_width(public_key: phe.PaillierPublicKey) -> int:
    """Return the bytes of one ciphertext: the byte length of ``n**2``."""
    nsquare = int(public_key.n) ** 2
    return (nsquare.bit_length() + 7) // 8


def dump(public_key: phe.PaillierPublicKey, vector: WireVector) -> bytes:
    """Write an encrypted vector in the wire format."""
    width = ciphertext_width(public_key)
    encoding = vector.encoding
    header = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        _FLAG_WEIGHTED if vector.weighted else 0,
        encoding.bits,
        0,
        encoding.clip,
        encoding.max_contributions,
        encoding.max_weight,
        vector.contributions,
        vector.length,
        len(vector.ciphertexts),
        bytes.fromhex(key_fingerprint(public_key)),
        width,
    )
    body = b"".join(int(c).to_bytes(width, "big") for c in vector.ciphertexts)
    return header + body


def load(data: bytes, public_key: phe.PaillierPublicKey) -> WireVector:
    """Read an encrypted vector written by :func:`dump`, checking every field.

    Raises
    ------
    WireFormatError
        If the bytes are truncated, padded, of another format or version, or their
        fields are inconsistent.
    KeyMismatchError
        If the vector was encrypted under another key.
    CiphertextRangeError
        If a ciphertext is not in ``0 < c < n**2``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireFormatError(f"expected bytes, got {type(data).__name__}", hint=_HINT)
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise WireFormatError(
            f"an encrypted vector needs at least {HEADER_SIZE} bytes of header, "
            f"got {len(data)} bytes",
            hint="the message was truncated; " + _HINT,
        )
    (
        magic,
        version,
        flags,
        bits,
        reserved,
        clip,
        max_contributions,
        max_weight,
        contributions,
        length,
        count,
        fingerprint,
        width,
    ) = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireFormatError(
            f"not an encrypted vector: the first bytes are {magic!r}, not {MAGIC!r}",
            hint=_HINT,
        )
    if version != FORMAT_VERSION:
        raise WireFormatError(
            f"unsupported encrypted-vector format version {version}; this version "
            f"of Workbench reads version {FORMAT_VERSION}",
            hint="encrypt with the same version of Workbench on every member",
        )
    if flags & ~_FLAG_WEIGHTED or reserved:
        raise WireFormatError(
            f"unknown flags 0x{flags:02x} or reserved byte 0x{reserved:02x} set in "
            "an encrypted vector header",
            hint=_HINT,
        )
    if fingerprint.hex() != key_fingerprint(public_key):
        raise KeyMismatchError(
            f"the vector was encrypted under key {fingerprint.hex()[:16]}, not under "
            f"key {key_fingerprint(public_key)[:16]}",
            hint="read it with the public key of the job it belongs to",
        )
    try:
        encoding = PackedEncoding(
            clip=clip,
            bits=bits,
            max_contributions=max_contributions,
            max_weight=max_weight,
        )
    except EncodingParameterError as exc:
        raise WireFormatError(
            f"the encoding in an encrypted vector header is invalid: {exc.message}",
            hint=_HINT,
        ) from exc
    expected_width = ciphertext_width(public_key)
    if width != expected_width:
        raise WireFormatError(
            f"ciphertexts are {width} bytes wide in the header, but {expected_width} "
            "bytes for this key",
            hint=_HINT,
        )
    if length < 1 or not 1 <= contributions <= max_contributions:
        raise WireFormatError(
            f"an encrypted vector header declares length {length} and "
            f"{contributions} contributions (at most {max_contributions} allowed)",
            hint=_HINT,
        )
    weighted = bool(flags & _FLAG_WEIGHTED)
    n_bits = int(public_key.n).bit_length()
    expected_count = encoding.ciphertext_count(length, n_bits, weighted=weighted)
    if count != expected_count:
        raise WireFormatError(
            f"the header declares {count} ciphertexts, but {length} values need "
            f"{expected_count} with this encoding and key",
            hint=_HINT,
        )
    expected_size = HEADER_SIZE + count * width
    if len(data) != expected_size:
        problem = "truncated" if len(data) < expected_size else "padded"
        raise WireFormatError(
            f"an encrypted vector of {count} ciphertexts takes {expected_size} bytes, "
            f"got {len(data)} bytes ({problem})",
            hint=_HINT,
        )
    nsquare = gmpy2.mpz(public_key.n) ** 2
    ciphertexts = []
    for index in range(count):
        start = HEADER_SIZE + index * width
        value = gmpy2.mpz(int.from_bytes(data[start : start + width], "big"))
        if not 0 < value < nsquare:
            raise CiphertextRangeError(
                f"ciphertext {index} is {'zero' if value == 0 else 'not below n**2'}; "
                "every ciphertext must satisfy 0 < c < n**2",
                hint="the message was altered; ask its sender to upload it again",
            )
        ciphertexts.append(value)
    return WireVector(
        encoding=encoding,
        length=length,
        contributions=contributions,
        weighted=weighted,
        ciphertexts=ciphertexts,
    )
