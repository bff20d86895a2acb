"""Sealing secrets to a member's X25519 public key.

A sealed message is ``version || ephemeral public key || nonce || AES-GCM output``.
The sender makes a fresh X25519 key pair per message; the AES-256 key is derived
with HKDF-SHA256 from the shared secret, bound to both public keys. The coordinator
can relay a sealed message but cannot open it.
"""

from __future__ import annotations

import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from workbench.errors import SealingError

__all__ = ["generate_sealing_keypair", "seal", "unseal"]

logger = logging.getLogger(__name__)

_VERSION = b"\x01"
_INFO = b"workbench sealed secret v1"
_KEY_SIZE = 32
_NONCE_SIZE = 12
_TAG_SIZE = 16
_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw
_RAW_PRIVATE = serialization.PrivateFormat.Raw


def generate_sealing_keypair() -> tuple[bytes, bytes]:
    """Make an X25519 key pair for receiving sealed secrets.

    Returns
    -------
    private_key : bytes
        32 raw bytes; keep them on the member.
    public_key : bytes
        32 raw bytes; publish them with the member's registration.
    """
    private = X25519PrivateKey.generate()
    private_bytes = private.private_bytes(
        _RAW, _RAW_PRIVATE, serialization.NoEncryption()
    )
    return private_bytes, private.public_key().public_bytes(_RAW, _RAW_PUBLIC)


def _key_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != _KEY_SIZE:
        size = len(value) if isinstance(value, bytes | bytearray) else None
        raise SealingError(
            f"{what} must be {_KEY_SIZE} raw bytes, got "
            f"{type(value).__name__}{'' if size is None else f' of {size} bytes'}",
            hint="pass the bytes returned by generate_sealing_keypair",
        )
    return bytes(value)


def _derive(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_INFO + ephemeral_public + recipient_public,
    ).derive(shared)


def seal(secret: bytes, recipient_public_key: bytes) -> bytes:
    """Encrypt ``secret`` so that only the holder of the matching private key reads it.

    Parameters
    ----------
    secret : bytes
    recipient_public_key : bytes
        32-byte X25519 public key of the recipient.

    Returns
    -------
    bytes
        ``61 + len(secret)`` bytes.

    Raises
    ------
    SealingError
        If the public key is not 32 bytes or not a valid X25519 key.
    """
    recipient = _key_bytes(recipient_public_key, "the recipient public key")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(_RAW, _RAW_PUBLIC)
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    except ValueError as exc:
        raise SealingError(
            "the recipient public key is not a usable X25519 key",
            hint="ask the member to register its sealing key again",
        ) from exc
    key = _derive(shared, ephemeral_public, recipient)
    nonce = os.urandom(_NONCE_SIZE)
    header = _VERSION + ephemeral_public
    return header + nonce + AESGCM(key).encrypt(nonce, bytes(secret), header)


def unseal(sealed: bytes, private_key: bytes) -> bytes:
    """Open a message made by :func:`seal`.

    Parameters
    ----------
    sealed : bytes
    private_key : bytes
        32-byte X25519 private key of the recipient.

    Returns
    -------
    bytes
        The secret.

    Raises
    ------
    SealingError
        If the message was sealed to another key, was altered or truncated, or is
        of an unknown version.
    """
    private = X25519PrivateKey.from_private_bytes(
        _key_bytes(private_key, "the private sealing key")
    )
    minimum = 1 + _KEY_SIZE + _NONCE_SIZE + _TAG_SIZE
    if not isinstance(sealed, bytes | bytearray) or len(sealed) < minimum:
        raise SealingError(
            f"a sealed message has at least {minimum} bytes, got "
            f"{len(sealed) if isinstance(sealed, bytes | bytearray) else sealed!r}",
            hint="the message was truncated; ask its sender to seal it again",
        )
    sealed = bytes(sealed)
    if sealed[:1] != _VERSION:
        raise SealingError(
            f"unknown sealed-message version {sealed[0]}",
            hint="seal with the same version of Workbench on every member",
        )
    ephemeral_public = sealed[1 : 1 + _KEY_SIZE]
    nonce = sealed[1 + _KEY_SIZE : 1 + _KEY_SIZE + _NONCE_SIZE]
    body = sealed[1 + _KEY_SIZE + _NONCE_SIZE :]
    recipient = private.public_key().public_bytes(_RAW, _RAW_PUBLIC)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        key = _derive(shared, ephemeral_public, recipient)
        return AESGCM(key).decrypt(nonce, body, sealed[: 1 + _KEY_SIZE])
    except (InvalidTag, ValueError) as exc:
        raise SealingError(
            "a sealed message could not be opened: it was sealed to another key or "
            "altered on the way",
            hint="check that this member's sealing key is the one it registered",
        ) from exc
