"""A pool of random factors ``r**n mod n**2`` computed ahead of time.

With a filled pool, encrypting one plaintext costs one multiplication modulo
``n**2``. The pool fills in a background thread (gmpy2 lets go of the interpreter
lock during its long operations) or on demand with :meth:`RandomnessPool.fill`.
Every factor is handed out once and then forgotten.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from types import TracebackType

import gmpy2
import phe

from workbench.crypto.keys import key_fingerprint
from workbench.crypto.paillier import RandomnessSource, make_source
from workbench.errors import KeyMismatchError, RandomnessPoolError

__all__ = ["RandomnessPool"]

logger = logging.getLogger(__name__)


class RandomnessPool:
    """Random factors for one Paillier key, precomputed in the background.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey
    private_key : phe.PaillierPrivateKey, optional
        Compute factors through the CRT (about 4 times faster).
    short_exponent : bool, default=False
        Compute factors with short exponents (see docs/security.md).
    target : int, default=1024
        Number of factors the background thread keeps ready.
    background : bool, default=True
        Start the background thread now. Without it, call :meth:`fill`.

    Notes
    -----
    Use the pool as a context manager, or call :meth:`close`, so that the thread
    stops. A pool never hands out a factor twice. When it runs dry, :meth:`take`
    computes the missing factors at once, so encryption never waits on the thread.

    Examples
    --------
    >>> from workbench.crypto import generate_keypair
    >>> public_key, _ = generate_keypair(512, allow_insecure=True)
    >>> with RandomnessPool(public_key, background=False) as pool:
    ...     pool.fill(3)
    ...     pool.available
    3
    """

    def __init__(
        self,
        public_key: phe.PaillierPublicKey,
        *,
        private_key: phe.PaillierPrivateKey | None = None,
        short_exponent: bool = False,
        target: int = 1024,
        background: bool = True,
    ) -> None:
        self.public_key = public_key
        self.fingerprint = key_fingerprint(public_key)
        self.target = int(target)
        self._source: RandomnessSource = make_source(
            public_key, private_key=private_key, short_exponent=short_exponent
        )
        self._ready: deque[gmpy2.mpz] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None
        self.computed = 0
        self.computed_on_demand = 0
        if background:
            self.start()

    @property
    def kind(self) -> str:
        """Which source computes the factors: textbook, crt or short_exponent."""
        return self._source.kind

    @property
    def available(self) -> int:
        """Number of factors ready now."""
        with self._lock:
            return len(self._ready)

    def start(self) -> None:
        """Start the background thread, if it is not running."""
        self._check_open()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="workbench-randomness-pool", daemon=True
            )
            self._thread.start()
            logger.info(
                "randomness pool for key %s started (%s, target %d)",
                self.fingerprint[:16],
                self.kind,
                self.target,
            )

    def _run(self) -> None:
        gmpy2.get_context().allow_release_gil = True
        while True:
            with self._wake:
                while not self._closed and len(self._ready) >= self.target:
                    self._wake.wait()
                if self._closed:
                    return
            factor = self._source.next()
            with self._lock:
                if self._closed:
                    return
                self._ready.append(factor)
                self.computed += 1

    def fill(self, count: int | None = None) -> None:
        """Compute factors in this thread until ``count`` (default target) are ready."""
        self._check_open()
        wanted = self.target if count is None else int(count)
        while self.available < wanted:
            factor = self._source.next()
            with self._lock:
                self._ready.append(factor)
                self.computed += 1

    def take(self, count: int) -> list[gmpy2.mpz]:
        """Hand out ``count`` factors, computing any that are not ready.

        Parameters
        ----------
        count : int

        Returns
        -------
        list of gmpy2.mpz
            Factors that no one else will receive.

        Raises
        ------
        RandomnessPoolError
            If the pool was closed.
        """
        self._check_open()
        with self._wake:
            served = min(count, len(self._ready))
            factors = [self._ready.popleft() for _ in range(served)]
            self._wake.notify()
        missing = count - served
        if missing:
            factors.extend(self._source.take(missing))
            with self._lock:
                self.computed_on_demand += missing
                self.computed += missing
        return factors

    def check_key(self, public_key: phe.PaillierPublicKey) -> None:
        """Raise :class:`KeyMismatchError` unless the pool serves ``public_key``."""
        if int(public_key.n) != int(self.public_key.n):
            raise KeyMismatchError(
                f"the randomness pool serves key {self.fingerprint[:16]}, not key "
                f"{key_fingerprint(public_key)[:16]}",
                hint="make one pool per job key",
            )

    def _check_open(self) -> None:
        if self._closed:
            raise RandomnessPoolError(
                f"the randomness pool for key {self.fingerprint[:16]} is closed",
                hint="make a new RandomnessPool",
            )

    def close(self) -> None:
        """Stop the background thread and forget every factor not handed out."""
        with self._wake:
            self._closed = True
            self._ready.clear()
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            logger.info("randomness pool for key %s closed", self.fingerprint[:16])

    def __enter__(self) -> RandomnessPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
