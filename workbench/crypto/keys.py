"""Paillier key pairs: generation, fingerprints and serialization without pickle.

The key classes are python-paillier's own (:class:`phe.PaillierPublicKey` and
:class:`phe.PaillierPrivateKey`), so keys made here work with ``phe`` directly.
"""

from __future__ import annotations

import hashlib
import json
import logging

import phe

from workbench.errors import KeySerializationError, KeySizeError

__all__ = [
    "SECURE_KEY_SIZES",
    "TEST_KEY_SIZES",
    "generate_keypair",
    "key_fingerprint",
    "private_key_from_bytes",
    "private_key_to_bytes",
    "public_key_from_json",
    "public_key_to_json",
]

logger = logging.getLogger(__name__)

SECURE_KEY_SIZES = (2048, 3072)
"""Key sizes, in bits of ``n``, allowed for real federations."""

TEST_KEY_SIZES = (512, 1024)
"""Key sizes allowed only with ``allow_insecure=True``, to keep tests fast."""

_PUBLIC_KIND = "workbench.paillier.public"
_PRIVATE_KIND = "workbench.paillier.private"
_FORMAT_VERSION = 1


def generate_keypair(
    n_length: int = 2048, *, allow_insecure: bool = False
) -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    """Make a new Paillier key pair.

    Parameters
    ----------
    n_length : int, default=2048
        Bit length of the modulus ``n``: 2048 or 3072.
    allow_insecure : bool, default=False
        Also allow 512 and 1024 bits. Such keys can be factored and are meant only
        for tests.

    Returns
    -------
    public_key : phe.PaillierPublicKey
    private_key : phe.PaillierPrivateKey

    Raises
    ------
    KeySizeError
        If ``n_length`` is not an allowed size.
    """
    allowed = SECURE_KEY_SIZES + (TEST_KEY_SIZES if allow_insecure else ())
    if isinstance(n_length, bool) or n_length not in allowed:
        hint = "use 2048 or 3072 bits"
        if n_length in TEST_KEY_SIZES:
            hint = "pass allow_insecure=True, and only in tests"
        raise KeySizeError(
            f"a Paillier key of {n_length!r} bits is not allowed here; allowed sizes "
            f"are {', '.join(str(size) for size in allowed)}",
            hint=hint,
        )
    public_key, private_key = phe.generate_paillier_keypair(n_length=n_length)
    logger.info(
        "generated a %d-bit Paillier key %s", n_length, key_fingerprint(public_key)[:16]
    )
    return public_key, private_key


def _int_to_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def key_fingerprint(public_key: phe.PaillierPublicKey) -> str:
    """Return the identifier of a Paillier key.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey

    Returns
    -------
    str
        Hex SHA-256 of ``n`` written as big-endian bytes without leading zeros.
    """
    return hashlib.sha256(_int_to_bytes(int(public_key.n))).hexdigest()


def public_key_to_json(public_key: phe.PaillierPublicKey) -> str:
    """Serialize a public key to a JSON string.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey

    Returns
    -------
    str
        A JSON object with ``kind``, ``version``, ``n`` (hex) and ``fingerprint``.
    """
    return json.dumps(
        {
            "kind": _PUBLIC_KIND,
            "version": _FORMAT_VERSION,
            "n": format(int(public_key.n), "x"),
            "fingerprint": key_fingerprint(public_key),
        },
        sort_keys=True,
    )


def _load_object(text: str | bytes, kind: str) -> dict[str, object]:
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeySerializationError(
            f"a serialized key is not valid JSON: {exc}",
            hint="pass the exact text or bytes that serialization produced",
        ) from exc
    if not isinstance(body, dict) or body.get("kind") != kind:
        found = body.get("kind") if isinstance(body, dict) else type(body).__name__
        raise KeySerializationError(
            f"expected a serialized key of kind {kind!r}, found {found!r}",
            hint="check that a public key is not read as a private key or vice versa",
        )
    if body.get("version") != _FORMAT_VERSION:
        raise KeySerializationError(
            f"unsupported key format version {body.get('version')!r}; this version "
            f"of Workbench reads version {_FORMAT_VERSION}",
            hint="serialize the key again with this version of Workbench",
        )
    return body


def _hex_field(body: dict[str, object], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise KeySerializationError(
            f"field {name!r} of a serialized key is missing or not a hex string",
            hint="pass the exact text or bytes that serialization produced",
        )
    try:
        number = int(value, 16)
    except ValueError as exc:
        raise KeySerializationError(
            f"field {name!r} of a serialized key is not a hex number",
            hint="pass the exact text or bytes that serialization produced",
        ) from exc
    if number <= 1:
        raise KeySerializationError(
            f"field {name!r} of a serialized key must be greater than 1",
            hint="pass the exact text or bytes that serialization produced",
        )
    return number


def _check_size(n: int) -> None:
    if n.bit_length() not in SECURE_KEY_SIZES + TEST_KEY_SIZES:
        raise KeySerializationError(
            f"a serialized key has a modulus of {n.bit_length()} bits; expected one "
            f"of {SECURE_KEY_SIZES + TEST_KEY_SIZES}",
            hint="only keys made by generate_keypair can be read back",
        )


def public_key_from_json(text: str | bytes) -> phe.PaillierPublicKey:
    """Read back a public key written by :func:`public_key_to_json`.

    Parameters
    ----------
    text : str or bytes

    Returns
    -------
    phe.PaillierPublicKey

    Raises
    ------
    KeySerializationError
        If the text is not a serialized public key, or its fingerprint does not
        match its modulus.
    """
    body = _load_object(text, _PUBLIC_KIND)
    n = _hex_field(body, "n")
    _check_size(n)
    public_key = phe.PaillierPublicKey(n)
    if "fingerprint" in body and body["fingerprint"] != key_fingerprint(public_key):
        raise KeySerializationError(
            "the fingerprint stored with a public key does not match its modulus",
            hint="the key was altered; fetch it again from its owner",
        )
    return public_key


def private_key_to_bytes(private_key: phe.PaillierPrivateKey) -> bytes:
    """Serialize a private key to bytes (UTF-8 JSON of ``n``, ``p`` and ``q``).

    Parameters
    ----------
    private_key : phe.PaillierPrivateKey

    Returns
    -------
    bytes
        Secret material: seal it (:func:`workbench.crypto.seal`) before it leaves
        the member.
    """
    body = {
        "kind": _PRIVATE_KIND,
        "version": _FORMAT_VERSION,
        "n": format(int(private_key.public_key.n), "x"),
        "p": format(int(private_key.p), "x"),
        "q": format(int(private_key.q), "x"),
    }
    return json.dumps(body, sort_keys=True).encode("utf-8")


def private_key_from_bytes(data: bytes) -> phe.PaillierPrivateKey:
    """Read back a private key written by :func:`private_key_to_bytes`.

    Parameters
    ----------
    data : bytes

    Returns
    -------
    phe.PaillierPrivateKey

    Raises
    ------
    KeySerializationError
        If the bytes are not a serialized private key, or ``p * q != n``.
    """
    body = _load_object(data, _PRIVATE_KIND)
    n, p, q = (_hex_field(body, name) for name in ("n", "p", "q"))
    _check_size(n)
    if p * q != n or p == q:
        raise KeySerializationError(
            "a serialized private key is inconsistent: p * q does not equal n",
            hint="the key was altered or truncated; ask its owner to seal it again",
        )
    return phe.PaillierPrivateKey(phe.PaillierPublicKey(n), p, q)
