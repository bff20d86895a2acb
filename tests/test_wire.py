"""Tests of the safe array and bundle formats."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import WireFormatError
from workbench.wire import decode_array, decode_bundle, encode_array, encode_bundle


class _Sentinel:
    """Unpickling this writes a file: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (Path(self.path), "loaded"))


def pickled_npy(path: Path) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Sentinel(str(path))], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def test_array_round_trip() -> None:
    """Numeric arrays come back equal, dtype and shape included."""
    rng = np.random.default_rng(0)
    array = rng.normal(size=(3, 4)).astype(np.float32)
    back = decode_array(encode_array(array))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, array)


def test_pickled_npy_is_refused_unloaded(tmp_path: Path) -> None:
    """A .npy payload carrying a pickle is refused and its pickle never runs."""
    sentinel = tmp_path / "sentinel"
    data = pickled_npy(sentinel)
    with pytest.raises(WireFormatError, match="carries a pickle"):
        decode_array(data)
    assert not sentinel.exists()
    # The control: loading it the unsafe way does run the pickle.
    np.load(io.BytesIO(data), allow_pickle=True)
    assert sentinel.read_text() == "loaded"


def test_truncated_npy_is_refused() -> None:
    """A .npy payload shorter than its header says is refused."""
    data = encode_array(np.arange(10.0))
    with pytest.raises(WireFormatError, match="truncated"):
        decode_array(data[:-8])


def test_not_npy_is_refused() -> None:
    """Bytes without the .npy magic are refused."""
    with pytest.raises(WireFormatError, match="magic"):
        decode_array(b"PK\x03\x04 zip file")


def test_bundle_round_trip() -> None:
    """Named entries come back unchanged."""
    entries = {"params": b"\x00\x01" * 50, "metrics": b"", "a.b-c_d": b"x"}
    assert decode_bundle(encode_bundle(entries)) == entries


@pytest.mark.parametrize("cut", [3, 7, 20])
def test_truncated_bundle_is_refused(cut: int) -> None:
    """A bundle cut short anywhere is refused."""
    data = encode_bundle({"params": b"y" * 30})
    with pytest.raises(WireFormatError, match="not a bundle|truncated"):
        decode_bundle(data[:cut])


def test_bundle_with_trailing_bytes_is_refused() -> None:
    """Bytes after the last entry are refused."""
    with pytest.raises(WireFormatError, match="after its last entry"):
        decode_bundle(encode_bundle({"p": b"1"}) + b"extra")


def test_bundle_name_is_checked() -> None:
    """Entry names outside the allowed characters are refused."""
    with pytest.raises(WireFormatError, match="not allowed"):
        encode_bundle({"../etc": b""})


def test_pickle_is_not_a_bundle() -> None:
    """A pickle sent as an update is not read as one."""
    with pytest.raises(WireFormatError, match="not a bundle"):
        decode_bundle(pickle.dumps({"params": [1.0]}))
