"""Tests of named blobs: round inputs for everyone and blobs sealed to one member."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.coordinator.conftest import KeyPairs, Running, submit
from tests.test_wire import pickled_npy
from workbench.crypto import seal, unseal
from workbench.errors import ConflictError, WireFormatError
from workbench.wire import decode_array, encode_array


def test_round_input_reaches_every_member(
    running: Running, small_keys: KeyPairs
) -> None:
    """A plaintext .npy blob from one member is read by the others."""
    setup = submit(running, small_keys[0])
    queries = np.random.default_rng(0).normal(size=(4, 3))
    with setup.client("a") as client:
        client.put_blob(setup.job_id, 1, "queries", encode_array(queries), format="npy")
    with setup.client("c") as client:
        data = client.get_blob(setup.job_id, 1, "queries", wait=1)
        listed = client.list_blobs(setup.job_id, 1)
    assert data is not None
    np.testing.assert_array_equal(decode_array(data), queries)
    assert listed[0]["sender"] == "a" and listed[0]["recipient"] is None


def test_sealed_blob_reaches_only_its_recipient(
    running: Running, small_keys: KeyPairs
) -> None:
    """A blob for ``b`` is relayed to ``b`` alone, and only ``b`` can open it."""
    setup = submit(running, small_keys[0])
    b_private = setup.tokens["b"][1]  # type: ignore[index]
    b_public = setup.tokens["b"][2]  # type: ignore[index]
    sealed = seal(b"for b only", b_public)
    with setup.client("a") as client:
        client.put_blob(setup.job_id, 1, "share", sealed, recipient="b")
    with setup.client("c") as client:
        assert client.get_blob(setup.job_id, 1, "share", wait=0) is None
        assert client.list_blobs(setup.job_id, 1) == []
    with setup.client("b") as client:
        data = client.get_blob(setup.job_id, 1, "share", sender="a")
    assert data is not None and unseal(data, b_private) == b"for b only"
    stored = (running.data_dir / "blobs").rglob("*")
    assert all(b"for b only" not in p.read_bytes() for p in stored if p.is_file())


def test_pickled_npy_blob_is_refused_unloaded(
    running: Running, small_keys: KeyPairs, tmp_path: Path
) -> None:
    """A numpy payload carrying a pickle is refused and never loaded."""
    setup = submit(running, small_keys[0])
    sentinel = tmp_path / "sentinel"
    with setup.client("a") as client:
        with pytest.raises(WireFormatError, match="carries a pickle"):
            client.put_blob(
                setup.job_id, 1, "queries", pickled_npy(sentinel), format="npy"
            )
        assert client.list_blobs(setup.job_id, 1) == []
    assert not sentinel.exists()


def test_blob_cannot_be_replaced(running: Running, small_keys: KeyPairs) -> None:
    """A member sends a blob of a given name once per round."""
    setup = submit(running, small_keys[0])
    with setup.client("a") as client:
        client.put_blob(setup.job_id, 1, "x", b"1")
        with pytest.raises(ConflictError, match="already"):
            client.put_blob(setup.job_id, 1, "x", b"2")
