"""Safe byte formats for what travels between members and the coordinator.

Two formats live here:

* arrays as ``.npy`` bytes, written and read with ``allow_pickle=False`` so that a
  payload carrying a pickle is refused before anything in it is loaded;
* bundles: a few named byte strings in one body, used for the encrypted vectors a
  member uploads in a round and for the aggregate the coordinator hands back.

A bundle is ``b"WBB1"``, a big-endian ``uint16`` count, then per entry a ``uint16``
name length, the UTF-8 name, a ``uint64`` data length and the data. Names are
unique, 1 to 64 characters of ``[A-Za-z0-9_.-]``. Reading is strict: trailing bytes,
duplicate names and truncated entries are errors.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from workbench.errors import WireFormatError

__all__ = [
    "BUNDLE_MAGIC",
    "NPY_MAGIC",
    "decode_array",
    "decode_bundle",
    "encode_array",
    "encode_bundle",
    "validate_name",
]

NPY_MAGIC = b"\x93NUMPY"
BUNDLE_MAGIC = b"WBB1"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MAX_ENTRIES = 256


def validate_name(name: str) -> str:
    """Check that ``name`` may name a bundle entry or a blob.

    Parameters
    ----------
    name : str
        The candidate name.

    Returns
    -------
    str
        ``name`` unchanged.

    Raises
    ------
    WireFormatError
        If the name is empty, longer than 64 characters or holds other characters
        than letters, digits, ``_``, ``.`` and ``-``.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise WireFormatError(
            f"the name {name!r} is not allowed",
            hint="use 1 to 64 characters of letters, digits, '_', '.' and '-'",
        )
    return name


def encode_array(array: NDArray[np.generic]) -> bytes:
    """Write a numeric array as ``.npy`` bytes.

    Parameters
    ----------
    array : numpy.ndarray
        An array of a numeric or boolean dtype; object arrays are refused.

    Returns
    -------
    bytes
        The ``.npy`` file contents.

    Raises
    ------
    WireFormatError
        If the array's dtype holds Python objects.
    """
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise WireFormatError(
            f"an array of dtype {array.dtype} holds Python objects and cannot be sent",
            hint="convert it to a numeric dtype first",
        )
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def decode_array(data: bytes, *, max_elements: int = 50_000_000) -> NDArray[np.generic]:
    """Read ``.npy`` bytes without ever loading a pickle.

    Parameters
    ----------
    data : bytes
        The ``.npy`` file contents.
    max_elements : int, default=50_000_000
        Largest number of elements accepted.

    Returns
    -------
    numpy.ndarray
        The array.

    Raises
    ------
    WireFormatError
        If the bytes are not a ``.npy`` file, carry a pickle (an object dtype),
        are truncated, hold trailing bytes or too many elements.
    """
    if not data.startswith(NPY_MAGIC):
        raise WireFormatError(
            f"the payload does not start with the .npy magic (got {data[:6]!r})",
            hint="send arrays written by numpy.save(..., allow_pickle=False)",
        )
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(buffer)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(buffer)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as exc:
        raise WireFormatError(
            f"the .npy header could not be read: {exc}",
            hint="send arrays written by numpy.save(..., allow_pickle=False)",
        ) from exc
    if dtype.hasobject:
        raise WireFormatError(
            f"the .npy payload declares dtype {dtype}, which carries a pickle; "
            "it was refused without being loaded",
            hint="send numeric arrays only",
        )
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count > max_elements:
        raise WireFormatError(
            f"the .npy payload holds {count} elements, more than {max_elements}",
            hint="send smaller arrays",
        )
    expected = buffer.tell() + count * dtype.itemsize
    if len(data) != expected:
        raise WireFormatError(
            f"the .npy payload is {len(data)} bytes long but its header describes "
            f"{expected} bytes",
            hint="the upload was truncated or altered; send it again",
        )
    buffer.seek(0)
    try:
        return np.load(buffer, allow_pickle=False)
    except ValueError as exc:  # pragma: no cover - header checks come first
        raise WireFormatError(f"the .npy payload was refused: {exc}") from exc


def encode_bundle(entries: Mapping[str, bytes]) -> bytes:
    """Pack named byte strings into one bundle.

    Parameters
    ----------
    entries : mapping of str to bytes
        Entry names (see :func:`validate_name`) and their contents.

    Returns
    -------
    bytes
        The bundle.
    """
    if len(entries) > _MAX_ENTRIES:
        raise WireFormatError(
            f"a bundle may hold at most {_MAX_ENTRIES} entries, got {len(entries)}"
        )
    parts = [BUNDLE_MAGIC, struct.pack(">H", len(entries))]
    for name in sorted(entries):
        raw = validate_name(name).encode("ascii")
        data = bytes(entries[name])
        parts += [struct.pack(">H", len(raw)), raw, struct.pack(">Q", len(data)), data]
    return b"".join(parts)


def decode_bundle(data: bytes) -> dict[str, bytes]:
    """Read a bundle written by :func:`encode_bundle`.

    Parameters
    ----------
    data : bytes
        The bundle.

    Returns
    -------
    dict of str to bytes
        Entry names and contents.

    Raises
    ------
    WireFormatError
        If the magic is wrong, an entry is truncated, a name is not allowed or
        repeated, or bytes follow the last entry.
    """
    view = memoryview(data)
    if bytes(view[:4]) != BUNDLE_MAGIC or len(view) < 6:
        raise WireFormatError(
            f"the body is not a bundle (it starts with {bytes(view[:4])!r}, "
            f"expected {BUNDLE_MAGIC!r})",
            hint="upload the bytes made by workbench.wire.encode_bundle",
        )
    (count,) = struct.unpack(">H", view[4:6])
    if count > _MAX_ENTRIES:
        raise WireFormatError(f"the bundle declares {count} entries, more than 256")
    position = 6
    entries: dict[str, bytes] = {}
    for index in range(count):
        position, name = _read_field(view, position, ">H", f"entry {index} name")
        try:
            text = validate_name(bytes(name).decode("ascii"))
        except UnicodeDecodeError as exc:
            raise WireFormatError(
                f"entry {index} has a name that is not ASCII"
            ) from exc
        if text in entries:
            raise WireFormatError(f"the bundle names the entry {text!r} twice")
        position, content = _read_field(view, position, ">Q", f"entry {text!r}")
        entries[text] = bytes(content)
    if position != len(view):
        raise WireFormatError(
            f"the bundle has {len(view) - position} bytes after its last entry",
            hint="the upload was altered; send it again",
        )
    return entries


def _read_field(
    view: memoryview, position: int, length_format: str, what: str
) -> tuple[int, memoryview]:
    size = struct.calcsize(length_format)
    if position + size > len(view):
        raise WireFormatError(f"the bundle is truncated in the length of {what}")
    (length,) = struct.unpack(length_format, view[position : position + size])
    position += size
    if position + length > len(view):
        raise WireFormatError(
            f"the bundle is truncated in {what}: {length} bytes declared, "
            f"{len(view) - position} present",
            hint="the upload was cut short; send it again",
        )
    return position + length, view[position : position + length]
