"""Paillier keys, packed vector encryption, and sealing secrets to members.

Everything other parts of Workbench need is importable from here; see
docs/crypto.md for the encoding and docs/security.md for what it protects.
"""

from __future__ import annotations

from workbench.crypto.keys import (
    generate_keypair,
    key_fingerprint,
    private_key_from_bytes,
    private_key_to_bytes,
    public_key_from_json,
    public_key_to_json,
)
from workbench.crypto.packing import PackedEncoding
from workbench.crypto.pool import RandomnessPool
from workbench.crypto.sealing import generate_sealing_keypair, seal, unseal
from workbench.crypto.slices import (
    DecryptedSlice,
    combine_slices,
    decrypt_slice,
    slice_bounds,
)
from workbench.crypto.vector import (
    DecryptedSum,
    EncryptedVector,
    aggregate,
    decrypt_vector,
    encrypt_vector,
)
from workbench.crypto.workers import shutdown_workers

__all__ = [
    "DecryptedSlice",
    "DecryptedSum",
    "EncryptedVector",
    "PackedEncoding",
    "RandomnessPool",
    "aggregate",
    "combine_slices",
    "decrypt_slice",
    "decrypt_vector",
    "encrypt_vector",
    "generate_keypair",
    "generate_sealing_keypair",
    "key_fingerprint",
    "private_key_from_bytes",
    "private_key_to_bytes",
    "public_key_from_json",
    "public_key_to_json",
    "seal",
    "shutdown_workers",
    "slice_bounds",
    "unseal",
]
