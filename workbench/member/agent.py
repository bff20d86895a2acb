"""The member agent: fetch tasks, compute locally, upload encrypted updates.

:class:`MemberAgent` long-polls the coordinator for tasks (members only make
outbound connections), runs the job kind's runner for each, and uploads the
result. It runs in a background thread inside a notebook kernel
(:meth:`MemberAgent.start`) or in the foreground as a daemon
(:meth:`MemberAgent.run_forever`, used by ``workbench member``).

An exception in local work is reported to the coordinator as a failed task and
the loop goes on. The report holds only the error's class, its code and a message
without data values (:func:`public_reason`); the full message, which may name
local values such as labels, stays in this member's log at WARNING. A coordinator
that cannot be reached is retried with backoff, so a restarted coordinator finds its
members again.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from workbench.client import CoordinatorClient
from workbench.crypto import (
    EncryptedVector,
    key_fingerprint,
    private_key_from_bytes,
    public_key_from_json,
    seal,
    unseal,
)
from workbench.errors import (
    AlreadyAnsweredError,
    ConflictError,
    CoordinatorUnavailableError,
    KeyMismatchError,
    PermissionDeniedError,
    WorkbenchError,
)
from workbench.jobs import JOB_KINDS, DatasetView, JobRunner, get_job_kind
from workbench.jobs.spec import JobSpec, parse_spec
from workbench.member.credentials import Credential
from workbench.member.datasets import DatasetRegistry
from workbench.wire import decode_bundle, encode_bundle

logger = logging.getLogger(__name__)

__all__ = ["MemberAgent", "MemberContext", "public_reason"]

T = TypeVar("T")

#: Longest single long-poll for tasks, in seconds: a stop request waits at most
#: this long. A shorter poll costs one small request more every few seconds.
POLL_SLICE = 5.0
Approval = Callable[[JobSpec], bool]


# Messages of the job kinds' own checks that may carry data values, and the same
# fact without them. Counts of columns are kept (they are the schema's size, which
# the querier needs to fix a query); labels, values and row counts are not.
_PUBLIC_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"the target holds labels"),
        "the target holds a label not among the job's classes",
    ),
    (
        re.compile(r"has (\d+) feature columns; the query objects have (\d+)"),
        "the dataset has {0} feature columns; the query objects have {1}",
    ),
    (
        re.compile(r"too few to split"),
        "the dataset has too few rows to split into training and validation parts",
    ),
    (
        re.compile(r"exceed the job's max_weight"),
        "the dataset's row count exceeds the job's encryption.max_weight",
    ),
    (
        re.compile(r"too far from zero"),
        "a feature lies too far from zero relative to its spread to be "
        "standardized under encryption",
    ),
    (
        re.compile(r"^no dataset named '([A-Za-z0-9._-]{1,64})' is registered"),
        "no dataset named '{0}' is registered on this member",
    ),
    (
        re.compile(r"^the query objects"),
        "the query objects do not match the job's spec",
    ),
)
_PRIVATE_HINT = "see the member's log"


def public_reason(exc: BaseException) -> str:
    """The failure report of ``exc`` that may be sent to the coordinator.

    It holds the error's class, its code and a message without data values: the
    error's ``public_message`` where our own checks set one, else a rewording of a
    known check's message, else only "see the member's log".

    Parameters
    ----------
    exc : BaseException
        The exception raised by local work.

    Returns
    -------
    str
        ``"DatasetError [dataset_error]: the target holds a label not among the
        job's classes"``, say.
    """
    name = type(exc).__name__
    public = getattr(exc, "public_message", None)
    if not isinstance(exc, WorkbenchError):
        return f"{name}: {public or _PRIVATE_HINT}"
    if public is None:
        for pattern, text in _PUBLIC_MESSAGES:
            found = pattern.search(exc.message)
            if found is not None:
                public = text.format(*found.groups())
                break
    return f"{name} [{exc.code}]: {public or _PRIVATE_HINT}"


class MemberContext:
    """The :class:`~workbench.jobs.JobContext` the agent gives a runner.

    Parameters
    ----------
    agent : MemberAgent
        The agent (its client, credential, datasets and stop flag).
    job_id : str
        The job.
    spec : JobSpec
        The job's spec.
    status : dict
        The job's status as the coordinator reported it.
    """

    def __init__(
        self, agent: MemberAgent, job_id: str, spec: JobSpec, status: dict[str, Any]
    ) -> None:
        self._agent = agent
        self.job_id = job_id
        self.spec = spec
        self.member = agent.credential.member
        self.submitter = str(status["submitter"])
        self.participants = [
            m["name"] for m in status["members"] if m["role"] == "participant"
        ]
        public_json, fingerprint, sealed = agent.retry(
            lambda: agent.client.job_key(job_id)
        )
        self.public_key = public_key_from_json(public_json)
        if key_fingerprint(self.public_key) != fingerprint:
            raise KeyMismatchError(
                f"the public key of job {job_id} does not match its fingerprint",
                hint="the coordinator served an altered key; do not take part",
            )
        secret = unseal(sealed, bytes.fromhex(agent.credential.sealing_private_key))
        self.private_key = private_key_from_bytes(secret)
        if self.private_key.public_key.n != self.public_key.n:
            raise KeyMismatchError(
                f"the sealed private key of job {job_id} belongs to another key",
                hint="ask the submitter to submit the job again",
            )
        self._aggregates: dict[int, dict[str, EncryptedVector]] = {}

    def dataset(self) -> DatasetView:
        """The local dataset the spec names."""
        return self._agent.datasets.get(self.spec.dataset)

    def upload(self, round: int, vectors: Mapping[str, EncryptedVector]) -> None:
        """Upload this member's update of ``round``; a repeated answer is fine."""
        bundle = encode_bundle({name: v.to_bytes() for name, v in vectors.items()})
        try:
            self._agent.retry(
                lambda: self._agent.client.upload_update(self.job_id, round, bundle)
            )
        except AlreadyAnsweredError:
            # A retry after a lost reply: the first upload was stored.
            logger.info(
                "job %s round %d: update was stored already", self.job_id, round
            )

    def aggregate(self, round: int) -> dict[str, EncryptedVector]:
        """The encrypted aggregate of ``round``, waiting for the round to close."""
        if round not in self._aggregates:
            while True:
                data = self._agent.retry(
                    lambda: self._agent.client.aggregate(
                        self.job_id, round, wait=POLL_SLICE
                    )
                )
                if data is not None:
                    break
                self._agent.check_running()
            self._aggregates[round] = {
                name: EncryptedVector.from_bytes(raw, self.public_key)
                for name, raw in decode_bundle(data).items()
            }
        return self._aggregates[round]

    def put_blob(
        self,
        round: int,
        name: str,
        data: bytes,
        *,
        recipient: str | None = None,
        format: str = "bytes",
    ) -> None:
        """Send a named blob of ``round``."""
        self._agent.retry(
            lambda: self._agent.client.put_blob(
                self.job_id, round, name, data, recipient=recipient, format=format
            )
        )

    def get_blob(self, round: int, name: str, *, sender: str | None = None) -> bytes:
        """A named blob of ``round``, waiting until it arrives."""
        while True:
            data = self._agent.retry(
                lambda: self._agent.client.get_blob(
                    self.job_id, round, name, sender=sender, wait=POLL_SLICE
                )
            )
            if data is not None:
                return data
            self._agent.check_running()

    def seal_for(self, member: str, data: bytes) -> bytes:
        """Seal ``data`` to ``member``'s X25519 public key."""
        return seal(data, self._agent.sealing_public_key(member))

    def unseal(self, data: bytes) -> bytes:
        """Open data sealed to this member."""
        return unseal(data, bytes.fromhex(self._agent.credential.sealing_private_key))


class MemberAgent:
    """Serve a member's datasets to the jobs of its federation.

    Parameters
    ----------
    credential : Credential
        Who this member is and where its coordinator runs.
    datasets : DatasetRegistry
        The member's local datasets.
    approve : callable or None, default=None
        ``approve(spec) -> bool``; a job it declines is reported as failed with the
        reason "declined by the data owner". ``None`` accepts every job on a
        registered dataset.
    poll_wait : float, default=20.0
        Seconds of each long-poll.
    retry_for : float, default=600.0
        Seconds to keep retrying an unreachable coordinator within one step.
    verify : bool or str, default=True
        TLS verification, see :class:`~workbench.client.CoordinatorClient`.
    """

    def __init__(
        self,
        credential: Credential,
        datasets: DatasetRegistry,
        *,
        approve: Approval | None = None,
        poll_wait: float = 20.0,
        retry_for: float = 600.0,
        verify: bool | str = True,
    ) -> None:
        self.credential = credential
        self.datasets = datasets
        self.approve = approve
        self.poll_wait = poll_wait
        self.retry_for = retry_for
        self._verify = verify
        self.client = CoordinatorClient(
            credential.coordinator, credential.token, verify=verify
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._runners: dict[str, tuple[JobRunner, MemberContext]] = {}
        self._keys: dict[str, bytes] = {}
        self.tasks_done = 0
        self.tasks_failed = 0
        #: Whether the loop is waiting for a task (and holds no work in progress).
        self.polling = False

    # Running ----------------------------------------------------------------------

    def start(self) -> None:
        """Run the loop in a background (daemon) thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        if self.client.closed:
            self.client = CoordinatorClient(
                self.credential.coordinator, self.credential.token, verify=self._verify
            )
        self._thread = threading.Thread(
            target=self.run_forever,
            name=f"workbench-member-{self.credential.member}",
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop and wait up to ``timeout`` seconds for it.

        A background loop in the middle of a long-poll ends when that poll does
        (within :data:`POLL_SLICE` seconds).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else POLL_SLICE + 5)

    @property
    def running(self) -> bool:
        """Whether the background loop is alive."""
        return self._thread is not None and self._thread.is_alive()

    def run_forever(self) -> None:
        """Fetch and answer tasks until :meth:`stop` is called."""
        logger.info(
            "member %s serving %s at %s",
            self.credential.member,
            self.datasets.names(),
            self.credential.coordinator,
        )
        self._warm_up()
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self.polling = True
                try:
                    task = self.client.next_task(wait=min(self.poll_wait, POLL_SLICE))
                finally:
                    self.polling = False
                backoff = 0.2
            except CoordinatorUnavailableError:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except WorkbenchError as exc:
                logger.error("fetching a task failed: %s", exc)
                self._stop.wait(2.0)
                continue
            if task is not None:
                self.handle(task)
        self.client.close()
        logger.info("member %s stopped", self.credential.member)

    def _warm_up(self) -> None:
        # Import the job kinds (and scikit-learn) before the first task arrives, so
        # that the first round's deadline is not spent on imports.
        for kind in JOB_KINDS:
            try:
                get_job_kind(kind)
            except Exception as exc:  # a kind missing here fails its own tasks
                logger.debug("job kind %s is not available: %s", kind, exc)

    def handle(self, task: dict[str, Any]) -> None:
        """Answer one task: run the job's runner, or report why it failed."""
        job_id, number = str(task["job_id"]), int(task["round"])
        logger.info("job %s round %d: task received", job_id, number)
        try:
            runner, context = self._runner(job_id, task)
            runner.run_round(context, number)
            self.tasks_done += 1
        except CoordinatorUnavailableError as exc:
            logger.warning("job %s round %d: coordinator lost: %s", job_id, number, exc)
        except (ConflictError, PermissionDeniedError) as exc:
            # The round closed or this member was dropped: nothing left to report.
            logger.warning("job %s round %d: %s", job_id, number, exc.message)
        except Exception as exc:
            self.tasks_failed += 1
            message = public_reason(exc)
            logger.warning(
                "job %s round %d: local work failed: %s: %s (reported as: %s)",
                job_id,
                number,
                type(exc).__name__,
                exc,
                message,
            )
            try:
                self.retry(lambda: self.client.report_failure(job_id, number, message))
            except WorkbenchError as report:
                logger.warning(
                    "job %s: the failure could not be reported: %s", job_id, report
                )

    def _runner(
        self, job_id: str, task: dict[str, Any]
    ) -> tuple[JobRunner, MemberContext]:
        if job_id not in self._runners:
            try:
                spec = parse_spec(task["spec"])
                kind = get_job_kind(spec.kind)
                if kind.check_options is not None:
                    kind.check_options(spec)
            except WorkbenchError as exc:
                # These checks read the spec only, which the coordinator holds.
                exc.public_message = exc.message  # type: ignore[attr-defined]
                raise
            if self.approve is not None and not self.approve(spec):
                declined = PermissionError(
                    f"declined by the data owner of {self.credential.member}"
                )
                declined.public_message = str(declined)  # type: ignore[attr-defined]
                raise declined
            self.datasets.get(spec.dataset)
            status = self.retry(lambda: self.client.job(job_id))
            context = MemberContext(self, job_id, spec, status)
            self._runners[job_id] = (kind.runner(spec), context)
        return self._runners[job_id]

    # Helpers ----------------------------------------------------------------------

    def retry(self, step: Callable[[], T]) -> T:
        """Run ``step``, retrying while the coordinator is unreachable.

        Raises
        ------
        CoordinatorUnavailableError
            If it stays unreachable for ``retry_for`` seconds, or the agent stops.
        """
        give_up = time.monotonic() + self.retry_for
        backoff = 0.2
        while True:
            try:
                return step()
            except CoordinatorUnavailableError:
                if time.monotonic() > give_up or self._stop.is_set():
                    raise
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def check_running(self) -> None:
        """Raise if the agent was asked to stop (ends waits inside a runner)."""
        if self._stop.is_set():
            raise CoordinatorUnavailableError(
                "the member agent is stopping", hint="start it again to go on"
            )

    def sealing_public_key(self, member: str) -> bytes:
        """The X25519 public key of a member of the federation."""
        if member not in self._keys:
            view = self.retry(self.client.federation)
            self._keys = {
                m["name"]: bytes.fromhex(m["sealing_public_key"])
                for m in view["members"]
            }
        if member not in self._keys:
            raise PermissionDeniedError(
                f"there is no member {member!r} in {self.credential.federation!r}"
            )
        return self._keys[member]
