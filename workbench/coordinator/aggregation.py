"""Checking and adding encrypted updates, the coordinator's only use of crypto.

An update is a bundle (:mod:`workbench.wire`) of named encrypted vectors. The
coordinator reads each with the job's public key (which checks the key fingerprint,
the wire format and the ciphertext range), checks that it holds exactly one
contribution, and adds the vectors of the same name across members. It never holds
a private key, so it never sees a plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence

import phe

from workbench.crypto import EncryptedVector, aggregate
from workbench.errors import EncodingMismatchError, ProtocolError, WireFormatError
from workbench.wire import decode_bundle, encode_bundle

__all__ = ["add_updates", "check_update"]


def check_update(
    data: bytes, public_key: phe.PaillierPublicKey
) -> dict[str, EncryptedVector]:
    """Read and check one member's update.

    Parameters
    ----------
    data : bytes
        The uploaded bundle of encrypted vectors.
    public_key : phe.PaillierPublicKey
        The job's public key.

    Returns
    -------
    dict of str to EncryptedVector
        The vectors by name.

    Raises
    ------
    WireFormatError, KeyMismatchError, CiphertextRangeError
        If a vector is malformed, truncated or under another key.
    ProtocolError
        If the bundle holds no vector, or a vector holds more than one
        contribution.
    """
    bundle = decode_bundle(data)
    if not bundle:
        raise ProtocolError(
            "the update holds no vectors",
            hint="upload a bundle with the vectors the job's kind defines",
        )
    vectors: dict[str, EncryptedVector] = {}
    for name, raw in bundle.items():
        try:
            vector = EncryptedVector.from_bytes(raw, public_key)
        except WireFormatError as exc:
            raise WireFormatError(
                f"the vector {name!r} of the update is malformed: {exc.message}",
                hint=exc.hint,
            ) from exc
        if vector.contributions != 1:
            raise ProtocolError(
                f"the vector {name!r} holds {vector.contributions} contributions; "
                "an update must hold exactly one",
                hint="upload your own encrypted vector, not a sum",
            )
        vectors[name] = vector
    return vectors


def add_updates(
    updates: Sequence[dict[str, EncryptedVector]],
) -> bytes:
    """Add updates name by name under encryption and return the aggregate bundle.

    Parameters
    ----------
    updates : sequence of dict of str to EncryptedVector
        The checked updates of one round, at least one.

    Returns
    -------
    bytes
        A bundle with one summed vector per name.

    Raises
    ------
    EncodingMismatchError
        If the updates do not hold the same vector names.
    """
    names = sorted(updates[0])
    for update in updates[1:]:
        if sorted(update) != names:
            raise EncodingMismatchError(
                f"updates hold different vectors: {names} and {sorted(update)}",
                hint="every member of a round must upload the same vector names",
            )
    summed = {name: aggregate([u[name] for u in updates]).to_bytes() for name in names}
    return encode_bundle(summed)
