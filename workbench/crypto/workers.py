"""Worker processes for encrypting and decrypting large vectors on every core.

Workers are started with the ``spawn`` method (safe beside threads such as the
randomness pool's), kept for reuse, and shut down at exit or by
:func:`shutdown_workers`. Each worker keeps its own randomness source and decryption
context per key, so a key's set-up cost is paid once per worker.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import gmpy2
import phe

from workbench.crypto.paillier import PrivateKeyContext, encrypt_raw, make_source
from workbench.errors import CryptoError

__all__ = ["available_cores", "map_chunks", "resolve_processes", "shutdown_workers"]

logger = logging.getLogger(__name__)

_EXECUTORS: dict[int, ProcessPoolExecutor] = {}
_LOCK = threading.Lock()


def available_cores() -> int:
    """Return the number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def resolve_processes(processes: int | None, work_items: int, threshold: int) -> int:
    """Decide how many processes to use.

    Parameters
    ----------
    processes : int or None
        Asked for: None chooses (every core when ``work_items >= threshold``),
        1 keeps the work in this process.
    work_items : int
        Number of ciphertexts to process.
    threshold : int
        Smallest amount of work worth the processes' overhead.
    """
    if processes is None:
        return available_cores() if work_items >= threshold else 1
    processes = int(processes)
    if processes < 1:
        raise CryptoError(
            f"processes must be at least 1 or None, got {processes}",
            hint="pass None to use every core for large vectors",
        )
    return min(processes, max(1, work_items))


def _executor(processes: int) -> ProcessPoolExecutor:
    with _LOCK:
        executor = _EXECUTORS.get(processes)
        if executor is None:
            executor = ProcessPoolExecutor(
                max_workers=processes, mp_context=multiprocessing.get_context("spawn")
            )
            _EXECUTORS[processes] = executor
            logger.info("started %d crypto worker processes", processes)
        return executor


def shutdown_workers() -> None:
    """Stop every worker process started by this module."""
    with _LOCK:
        executors = list(_EXECUTORS.values())
        _EXECUTORS.clear()
    for executor in executors:
        executor.shutdown(wait=True, cancel_futures=True)
    if executors:
        logger.info("stopped %d crypto worker pools", len(executors))


atexit.register(shutdown_workers)


def map_chunks(
    function: Callable[..., list[Any]],
    items: Sequence[Any],
    processes: int,
    *args: Any,
) -> list[Any]:
    """Apply ``function(*args, chunk)`` to chunks of ``items`` in worker processes.

    Returns the concatenated results in order.
    """
    chunks = max(processes * 4, 1)
    size = -(-len(items) // chunks)
    pieces = [list(items[i : i + size]) for i in range(0, len(items), size)]
    executor = _executor(processes)
    out: list[Any] = []
    try:
        futures = [executor.submit(function, *args, piece) for piece in pieces]
        for future in futures:
            out.extend(future.result())
    except BrokenProcessPool:
        # Spawned workers re-import the main module; that fails when the program
        # was read from standard input. The work is still done, on one core.
        with _LOCK:
            if _EXECUTORS.get(processes) is executor:
                del _EXECUTORS[processes]
        executor.shutdown(wait=True, cancel_futures=True)
        logger.warning(
            "crypto worker processes stopped unexpectedly; going on in this process "
            "(pass processes=1 to skip them)"
        )
        out = []
        for piece in pieces:
            out.extend(function(*args, piece))
    return out


# Worker side ----------------------------------------------------------------------

_WORKER_SOURCES: dict[tuple[int, str], Any] = {}
_WORKER_CONTEXTS: dict[int, PrivateKeyContext] = {}
_WORKER_CACHE_SIZE = 4


def _remember(cache: dict, key: Any, value: Any) -> None:
    while len(cache) >= _WORKER_CACHE_SIZE:
        cache.pop(next(iter(cache)))
    cache[key] = value


def encrypt_chunk(
    n: int, factors: tuple[int, int] | None, short_exponent: bool, plaintexts: list[int]
) -> list[int]:
    """Encrypt plaintexts in a worker; ``factors`` is ``(p, q)`` for the CRT source."""
    kind = "short" if short_exponent else ("crt" if factors else "textbook")
    source = _WORKER_SOURCES.get((n, kind))
    if source is None:
        public_key = phe.PaillierPublicKey(n)
        private_key = None
        if factors is not None and not short_exponent:
            private_key = phe.PaillierPrivateKey(public_key, *factors)
        source = make_source(
            public_key, private_key=private_key, short_exponent=short_exponent
        )
        _remember(_WORKER_SOURCES, (n, kind), source)
    big_n = gmpy2.mpz(n)
    ciphertexts = encrypt_raw(
        big_n, big_n * big_n, plaintexts, source.take(len(plaintexts))
    )
    return [int(c) for c in ciphertexts]


def decrypt_chunk(
    n: int, factors: tuple[int, int], ciphertexts: list[int]
) -> list[int]:
    """Decrypt ciphertexts in a worker."""
    context = _WORKER_CONTEXTS.get(n)
    if context is None:
        public_key = phe.PaillierPublicKey(n)
        context = PrivateKeyContext(phe.PaillierPrivateKey(public_key, *factors))
        _remember(_WORKER_CONTEXTS, n, context)
    return [context.decrypt(c) for c in ciphertexts]
