"""Tests of encryption and decryption in worker processes."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from workbench.crypto import (
    PackedEncoding,
    decrypt_vector,
    encrypt_vector,
    shutdown_workers,
)
from workbench.crypto.workers import resolve_processes
from workbench.errors import CryptoError

ENCODING = PackedEncoding(clip=1.0, bits=16, max_contributions=10)


@pytest.fixture(scope="module", autouse=True)
def _stop_workers():
    """Stop the worker processes once this module's tests are done."""
    yield
    shutdown_workers()


@pytest.mark.parametrize("mode", ["textbook", "crt", "short_exponent"])
def test_workers_encrypt_what_one_process_decrypts(keypair, mode):
    """Vectors encrypted by two workers decrypt, in one process, to their levels."""
    public_key, private_key = keypair
    values = np.random.default_rng(7).uniform(-1, 1, 2500)
    vector = encrypt_vector(
        public_key,
        values,
        ENCODING,
        processes=2,
        private_key=private_key if mode == "crt" else None,
        short_exponent=mode == "short_exponent",
    )
    decrypted = decrypt_vector(private_key, vector, processes=1)
    assert np.array_equal(
        decrypted.values, ENCODING.dequantize(ENCODING.quantize(values))
    )


def test_workers_decrypt_like_one_process(keypair):
    """Decryption in two workers gives the same sum as in one process."""
    public_key, private_key = keypair
    values = np.random.default_rng(8).uniform(-1, 1, 2500)
    vector = encrypt_vector(public_key, values, ENCODING, weight=1, processes=1)
    here = decrypt_vector(private_key, vector, processes=1)
    there = decrypt_vector(private_key, vector, processes=2)
    assert np.array_equal(here.values, there.values) and here.weight == there.weight


def test_shutdown_stops_every_worker(public_key):
    """After shutdown_workers no worker process is left."""
    encrypt_vector(public_key, np.zeros(300), ENCODING, processes=2)
    assert multiprocessing.active_children()
    shutdown_workers()
    assert not multiprocessing.active_children()


def test_resolve_processes_chooses_by_amount_of_work():
    """None uses one process below the threshold, a count is capped by the work."""
    assert resolve_processes(None, 10, threshold=100) == 1
    assert resolve_processes(None, 100, threshold=100) >= 1
    assert resolve_processes(8, 3, threshold=1) == 3
    with pytest.raises(CryptoError, match="at least 1 or None"):
        resolve_processes(0, 10, threshold=1)
