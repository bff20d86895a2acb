"""Job kinds: what a member computes in each round of a job.

Each kind is one module (``workbench.jobs.fedavg``, ``workbench.jobs.conformal``,
...) that registers a runner factory with :func:`register_job_kind` when imported.
The member agent looks a kind up with :func:`get_job_kind`, which imports
``workbench.jobs.<kind>`` on first use, builds one runner per job and calls
``runner.run_round(context, round)`` for every task. A runner talks to the
federation only through the :class:`JobContext` it is given: encrypted updates,
aggregates and named blobs.

The coordinator knows nothing of kinds beyond their names: it checks, adds and
relays, whatever the kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import phe

from workbench.crypto import EncryptedVector
from workbench.errors import JobSpecError
from workbench.jobs.spec import JOB_KINDS, EncryptionSpec, JobSpec, parse_spec

__all__ = [
    "JOB_KINDS",
    "DatasetView",
    "EncryptionSpec",
    "JobContext",
    "JobKind",
    "JobRunner",
    "JobSpec",
    "get_job_kind",
    "parse_spec",
    "register_job_kind",
]


class DatasetView(Protocol):
    """A member's local dataset as a runner sees it."""

    name: str
    target: str

    @property
    def features(self) -> list[str]:
        """Feature columns."""
        ...

    @property
    def frame(self) -> pd.DataFrame:
        """The whole table."""
        ...

    def xy(
        self, features: Sequence[str] | None = None, target: str | None = None
    ) -> tuple[Any, Any]:
        """Numeric feature matrix and target vector, columns checked."""
        ...


class JobContext(Protocol):
    """What a runner may use in one round: keys, data and the coordinator.

    Attributes
    ----------
    job_id : str
    spec : JobSpec
    member : str
        This member's name.
    participants : list of str
        The job's participating members.
    submitter : str
    public_key : phe.PaillierPublicKey
    private_key : phe.PaillierPrivateKey
    """

    job_id: str
    spec: JobSpec
    member: str
    participants: list[str]
    submitter: str
    public_key: phe.PaillierPublicKey
    private_key: phe.PaillierPrivateKey

    def dataset(self) -> DatasetView:
        """The local dataset the spec names (raises DatasetError if missing)."""
        ...

    def upload(self, round: int, vectors: Mapping[str, EncryptedVector]) -> None:
        """Upload this member's encrypted update of ``round`` (its answer)."""
        ...

    def aggregate(self, round: int) -> dict[str, EncryptedVector]:
        """The encrypted aggregate of ``round``, waiting for the round to close."""
        ...

    def put_blob(
        self,
        round: int,
        name: str,
        data: bytes,
        *,
        recipient: str | None = None,
        format: str = "bytes",
    ) -> None:
        """Send a named blob of ``round`` to every member, or to ``recipient``."""
        ...

    def get_blob(self, round: int, name: str, *, sender: str | None = None) -> bytes:
        """A named blob of ``round``, waiting until it arrives."""
        ...

    def seal_for(self, member: str, data: bytes) -> bytes:
        """Seal ``data`` to ``member``'s X25519 key (only it can open it)."""
        ...

    def unseal(self, data: bytes) -> bytes:
        """Open data sealed to this member."""
        ...


class JobRunner(Protocol):
    """A member's side of one job; one instance per job, kept between rounds."""

    def run_round(self, context: JobContext, round: int) -> None:
        """Compute and upload this member's answer to ``round``."""
        ...


@dataclass(frozen=True)
class JobKind:
    """A registered job kind.

    Parameters
    ----------
    name : str
        One of :data:`JOB_KINDS`.
    runner : callable
        ``runner(spec) -> JobRunner``.
    check_options : callable or None
        ``check_options(spec)`` raises :class:`~workbench.errors.JobSpecError`
        when the spec's kind-specific options are wrong.
    """

    name: str
    runner: Callable[[JobSpec], JobRunner]
    check_options: Callable[[JobSpec], None] | None = None


_KINDS: dict[str, JobKind] = {}


def register_job_kind(
    name: str,
    runner: Callable[[JobSpec], JobRunner],
    *,
    check_options: Callable[[JobSpec], None] | None = None,
) -> None:
    """Register the runner factory of a job kind (called by the kind's module).

    Raises
    ------
    JobSpecError
        If ``name`` is not one of :data:`JOB_KINDS`.
    """
    if name not in JOB_KINDS:
        raise JobSpecError(
            f"{name!r} is not a job kind", hint=f"kinds are {', '.join(JOB_KINDS)}"
        )
    _KINDS[name] = JobKind(name, runner, check_options)


def get_job_kind(name: str) -> JobKind:
    """Return a registered kind, importing ``workbench.jobs.<name>`` on first use.

    Raises
    ------
    JobSpecError
        If no module registers the kind.
    """
    if name not in _KINDS and name in JOB_KINDS:
        try:
            importlib.import_module(f"workbench.jobs.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"workbench.jobs.{name}":
                raise
    if name not in _KINDS:
        raise JobSpecError(
            f"no runner is installed for the job kind {name!r}",
            hint="update workbench on this member to a version that has it",
        )
    return _KINDS[name]
