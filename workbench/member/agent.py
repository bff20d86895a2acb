"""The member agent: fetch tasks, compute locally, upload encrypted updates.

:class:`MemberAgent` long-polls the coordinator for tasks (members only make
outbound connections), runs the job kind's runner for each, and uploads the
result. It runs in a background thread inside a notebook kernel
(:meth:`MemberAgent.start`) or in the foreground as a daemon
(:meth:`MemberAgent.run_forever`, used by ``workbench member``).

An exception in local work is reported to the coordinator as a failed task, with
its message, and the loop goes on. A coordinator that cannot be reached is retried
with backoff, so a restarted coordinator finds its members again.
"""

from __future__ import annotations

import logging
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

__all__ = ["MemberAgent", "MemberContext"]

T = TypeVar("T")
Approval = Callable[[JobSpec], bool]


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
                    lambda: self._agent.client.aggregate(self.job_id, round, wait=20)
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
                    self.job_id, round, name, sender=sender, wait=20
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
        self.client = CoordinatorClient(
            credential.coordinator, credential.token, verify=verify
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._runners: dict[str, tuple[JobRunner, MemberContext]] = {}
        self._keys: dict[str, bytes] = {}
        self.tasks_done = 0
        self.tasks_failed = 0

    # Running ----------------------------------------------------------------------

    def start(self) -> None:
        """Run the loop in a background (daemon) thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run_forever,
            name=f"workbench-member-{self.credential.member}",
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.poll_wait + 5)

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
                task = self.client.next_task(wait=self.poll_wait)
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
            message = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "job %s round %d: local work failed: %s", job_id, number, message
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
            spec = parse_spec(task["spec"])
            if self.approve is not None and not self.approve(spec):
                raise PermissionError(
                    f"declined by the data owner of {self.credential.member}"
                )
            self.datasets.get(spec.dataset)
            kind = get_job_kind(spec.kind)
            if kind.check_options is not None:
                kind.check_options(spec)
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
