"""What the coordinator does, apart from HTTP: federations, jobs and rounds.

:class:`Coordinator` holds every rule of the protocol. The FastAPI routes in
:mod:`workbench.coordinator.app` only parse requests and call it. State changes run
under one lock, each in one database transaction, and wake the long-polls waiting
on a condition variable. A background thread closes rounds whose deadline passed.

Round rules: a round closes when every active participant answered (an update or a
failure report), or when its deadline passed. It succeeds when at least
``min_members`` updates arrived; members that reported a failure or missed the
deadline are dropped from the job's later rounds. A round that closes with fewer
updates fails the job with the reason.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from workbench.coordinator.storage import (
    Answer,
    Blob,
    Event,
    Federation,
    Invitation,
    Job,
    JobMember,
    Member,
    PublishedDataset,
    Round,
    Storage,
    hash_token,
    now,
)
from workbench.errors import (
    AlreadyAnsweredError,
    AuthenticationError,
    ConflictError,
    JobSpecError,
    KeyMismatchError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    WorkbenchError,
)
from workbench.jobs.spec import JobSpec, parse_spec
from workbench.names import validate_name as validate_entity_name
from workbench.wire import decode_array, validate_name

logger = logging.getLogger(__name__)

__all__ = ["Coordinator", "MemberIdentity", "check_member_name"]

T = TypeVar("T")

MAX_WAIT = 30.0


@dataclass(frozen=True)
class MemberIdentity:
    """Who is calling: a member of one federation."""

    member_id: int
    name: str
    federation_id: int
    federation: str


def _layout(vectors: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        (
            name,
            vector.length,
            vector.weighted,
            tuple(sorted(vector.encoding.to_dict().items())),
        )
        for name, vector in sorted(vectors.items())
    )


def _layout_text(vectors: dict[str, Any]) -> str:
    return ", ".join(
        f"{name}: {vector.length} values" for name, vector in sorted(vectors.items())
    )


def check_member_name(name: str, what: str = "member name") -> str:
    """Check a federation or member name against :mod:`workbench.names`."""
    return validate_entity_name(what.removesuffix(" name"), name)


class Coordinator:
    """The protocol's rules over a :class:`~workbench.coordinator.storage.Storage`.

    Parameters
    ----------
    storage : Storage
        Database and blob store.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # Life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Resume after a restart and start closing rounds at their deadlines.

        Open rounds get a fresh deadline, so that time the coordinator was down
        does not count against members.
        """
        with self.lock, self.storage.session() as db:
            for job in db.scalars(select(Job).where(Job.state == "running")):
                current = self._round(db, job.id, job.current_round)
                if current is not None and current.state == "open":
                    spec = parse_spec(job.spec_json)
                    current.deadline_at = now() + spec.round_deadline
                    self._event(db, job, current.number, "deadline_reset", "restart")
                    logger.info(
                        "job %s: resumed at round %d after a restart",
                        job.id,
                        current.number,
                    )
            db.commit()
        self.close_due_rounds()
        self._stop.clear()
        self._watcher = threading.Thread(
            target=self._watch, name="workbench-deadlines", daemon=True
        )
        self._watcher.start()

    def stop(self) -> None:
        """Stop the deadline thread and wake every long-poll."""
        self._stop.set()
        with self.changed:
            self.changed.notify_all()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self.storage.dispose()

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.close_due_rounds()
            except Exception:  # the watcher must outlive a failed pass
                logger.exception("closing rounds at their deadline failed")

    # Federations, invitations, members ---------------------------------------------

    def create_federation(self, name: str) -> str:
        """Create a federation and return its admin token (shown once)."""
        check_member_name(name, "federation name")
        token = "wba_" + secrets.token_urlsafe(32)
        with self.lock, self.storage.session() as db:
            if db.scalar(select(Federation).where(Federation.name == name)):
                raise ConflictError(
                    f"a federation named {name!r} exists already",
                    hint="choose another name",
                )
            db.add(Federation(name=name, admin_token_hash=hash_token(token)))
            db.commit()
        logger.info("federation %s created", name)
        return token

    def authenticate_admin(self, token: str | None, federation: str) -> Federation:
        """Return the federation whose admin token is ``token``.

        Raises
        ------
        AuthenticationError
            If the token is missing or unknown.
        NotFoundError
            If the token belongs to another federation.
        """
        if not token:
            raise AuthenticationError(
                "no admin token was sent",
                hint="send 'Authorization: Bearer <admin token>'",
            )
        with self.storage.session() as db:
            found = db.scalar(
                select(Federation).where(
                    Federation.admin_token_hash == hash_token(token)
                )
            )
        if found is None:
            raise AuthenticationError(
                "the admin token is not known to this coordinator",
                hint="use the token printed by 'workbench federation create'",
            )
        if found.name != federation:
            raise NotFoundError(
                f"there is no federation {federation!r} for this admin token",
                hint=f"this token administers {found.name!r}",
            )
        return found

    def create_invitation(self, federation: Federation, member_name: str) -> str:
        """Return a single-use invitation for ``member_name`` (shown once)."""
        check_member_name(member_name)
        token = "wbi_" + secrets.token_urlsafe(32)
        with self.lock, self.storage.session() as db:
            taken = db.scalar(
                select(Member).where(
                    Member.federation_id == federation.id, Member.name == member_name
                )
            )
            if taken is not None:
                raise ConflictError(
                    f"{federation.name!r} has a member named {member_name!r} already",
                    hint="invite the new member under another name",
                )
            db.add(
                Invitation(
                    federation_id=federation.id,
                    member_name=member_name,
                    token_hash=hash_token(token),
                )
            )
            db.commit()
        logger.info("federation %s: invitation issued", federation.name)
        return token

    def join(
        self, invitation: str, name: str, sealing_public_key: str
    ) -> tuple[str, MemberIdentity]:
        """Redeem an invitation and return a new credential and the identity.

        Raises
        ------
        AuthenticationError
            If the invitation is unknown or was used already.
        ProtocolError
            If the name differs from the invited one, or the key is not 32 bytes of
            hex.
        """
        check_member_name(name)
        try:
            if len(bytes.fromhex(sealing_public_key)) != 32:
                raise ValueError
        except ValueError as exc:
            raise ProtocolError(
                "the sealing public key must be 32 bytes written as 64 hex digits, "
                f"got {len(sealing_public_key)} characters",
                hint="send the X25519 public key from generate_sealing_keypair()",
            ) from exc
        credential = "wbm_" + secrets.token_urlsafe(32)
        with self.lock, self.storage.session() as db:
            invite = db.scalar(
                select(Invitation).where(
                    Invitation.token_hash == hash_token(invitation)
                )
            )
            if invite is None:
                raise AuthenticationError(
                    "the invitation is not known to this coordinator",
                    hint="check it was copied whole; ask the admin for a new one",
                )
            if invite.used_at is not None:
                raise AuthenticationError(
                    "the invitation was used already; invitations are single-use",
                    hint="ask the federation admin for a new invitation",
                )
            if invite.member_name != name:
                raise ProtocolError(
                    f"the invitation is for the member {invite.member_name!r}, "
                    f"not {name!r}",
                    hint=f"join with name={invite.member_name!r}",
                )
            federation = db.get(Federation, invite.federation_id)
            assert federation is not None
            invite.used_at = now()
            member = Member(
                federation_id=federation.id,
                name=name,
                credential_hash=hash_token(credential),
                sealing_public_key=sealing_public_key.lower(),
            )
            db.add(member)
            try:
                db.commit()
            except IntegrityError as exc:
                raise ConflictError(
                    f"{federation.name!r} has a member named {name!r} already"
                ) from exc
            identity = MemberIdentity(member.id, name, federation.id, federation.name)
        logger.info("federation %s: member %s joined", federation.name, name)
        return credential, identity

    def authenticate(self, token: str | None) -> MemberIdentity:
        """Return the member whose credential is ``token``.

        Raises
        ------
        AuthenticationError
            If the credential is missing or unknown.
        """
        if not token:
            raise AuthenticationError(
                "no member credential was sent",
                hint="send 'Authorization: Bearer <credential>'",
            )
        with self.storage.session() as db:
            member = db.scalar(
                select(Member).where(Member.credential_hash == hash_token(token))
            )
            if member is None:
                raise AuthenticationError(
                    "the member credential is not known to this coordinator",
                    hint="check the credential file, or join again with a new "
                    "invitation",
                )
            federation = db.get(Federation, member.federation_id)
            assert federation is not None
            return MemberIdentity(
                member.id, member.name, federation.id, federation.name
            )

    def federation_view(self, who: MemberIdentity) -> dict[str, Any]:
        """Describe the caller's federation: members, public keys and datasets."""
        with self.storage.session() as db:
            members = db.scalars(
                select(Member)
                .where(Member.federation_id == who.federation_id)
                .order_by(Member.id)
            ).all()
            published = db.scalars(
                select(PublishedDataset).where(
                    PublishedDataset.member_id.in_([m.id for m in members])
                )
            ).all()
        datasets: dict[int, list[dict[str, Any]]] = {}
        for item in published:
            datasets.setdefault(item.member_id, []).append(
                {
                    "name": item.name,
                    "schema": json.loads(item.schema_json),
                    "rows": item.rows,
                }
            )
        return {
            "name": who.federation,
            "member": who.name,
            "members": [
                {
                    "name": m.name,
                    "sealing_public_key": m.sealing_public_key,
                    "joined_at": m.created_at,
                    "datasets": datasets.get(m.id, []),
                }
                for m in members
            ],
        }

    def publish_dataset(
        self,
        who: MemberIdentity,
        name: str,
        schema: dict[str, str],
        rows: int | None,
    ) -> None:
        """Record the schema (and row count, if given) of a caller's dataset."""
        validate_entity_name("dataset", name)
        with self.lock, self.storage.session() as db:
            existing = db.scalar(
                select(PublishedDataset).where(
                    PublishedDataset.member_id == who.member_id,
                    PublishedDataset.name == name,
                )
            )
            if existing is None:
                existing = PublishedDataset(member_id=who.member_id, name=name)
                db.add(existing)
            existing.schema_json = json.dumps(schema, sort_keys=True)
            existing.rows = rows
            existing.published_at = now()
            db.commit()
        logger.info("member %s published the schema of a dataset", who.name)

    # Jobs ---------------------------------------------------------------------------

    def submit_job(
        self,
        who: MemberIdentity,
        spec: JobSpec,
        public_key_json: str,
        sealed_keys: dict[str, bytes],
    ) -> dict[str, Any]:
        """Create a job and open its first round.

        Parameters
        ----------
        who : MemberIdentity
            The submitter.
        spec : JobSpec
            The validated spec; ``spec.members`` must be given.
        public_key_json : str
            The job's Paillier public key.
        sealed_keys : dict of str to bytes
            The job's private key sealed to each participant, and optionally to the
            submitter.

        Raises
        ------
        JobSpecError
            If members are missing or unknown, a sealed key is missing, or the public
            key does not match ``spec.encryption.key_bits``.
        """
        from workbench.crypto import key_fingerprint, public_key_from_json

        try:
            public_key = public_key_from_json(public_key_json)
        except WorkbenchError as exc:
            raise JobSpecError(
                f"the job's public key is unreadable: {exc.message}",
                hint="send public_key_to_json(public_key)",
            ) from exc
        if public_key.n.bit_length() != spec.encryption.key_bits:
            raise JobSpecError(
                f"the public key has {public_key.n.bit_length()} bits but the spec "
                f"declares key_bits={spec.encryption.key_bits}",
                hint="make the key pair with the size the spec declares",
            )
        if not spec.members:
            raise JobSpecError(
                "the spec names no members",
                hint="list the participating members in spec.members",
            )
        fingerprint = key_fingerprint(public_key)
        job_id = uuid.uuid4().hex
        with self.lock, self.storage.session() as db:
            members = {
                m.name: m
                for m in db.scalars(
                    select(Member).where(Member.federation_id == who.federation_id)
                )
            }
            unknown = [name for name in spec.members if name not in members]
            if unknown:
                raise JobSpecError(
                    f"the spec names members that are not in {who.federation!r}: "
                    f"{unknown}",
                    hint=f"members are {sorted(members)}",
                )
            holders = list(spec.members)
            if who.name not in holders and who.name in sealed_keys:
                holders.append(who.name)
            empty = sorted(name for name, key in sealed_keys.items() if not key)
            if empty:
                raise JobSpecError(
                    f"the sealed keys of {empty} are empty",
                    hint="seal the job's private key to each listed member with "
                    "seal_secret()",
                )
            missing = [name for name in holders if name not in sealed_keys]
            extra = [name for name in sealed_keys if name not in holders]
            if missing or extra:
                raise JobSpecError(
                    f"sealed keys do not match the members: missing {missing}, "
                    f"not taking part {extra}",
                    hint="seal the job's private key to each listed member",
                )
            job = Job(
                id=job_id,
                federation_id=who.federation_id,
                submitter_id=who.member_id,
                kind=spec.kind,
                spec_json=spec.to_json(),
                public_key_json=public_key_json,
                fingerprint=fingerprint,
                state="running",
                total_rounds=spec.rounds,
                current_round=1,
            )
            db.add(job)
            db.flush()
            for name in holders:
                role = "participant" if name in spec.members else "submitter"
                db.add(
                    JobMember(
                        job_id=job_id,
                        member_id=members[name].id,
                        role=role,
                        state="active",
                        sealed_key_sha=self.storage.blobs.put(sealed_keys[name]),
                    )
                )
            self._event(db, job, None, "submitted", f"by {who.name}")
            self._open_round(db, job, spec, 1)
            db.commit()
            self.changed.notify_all()
        logger.info(
            "job %s (%s) submitted by %s: %d members, %d rounds",
            job_id,
            spec.kind,
            who.name,
            len(spec.members),
            spec.rounds,
        )
        return self.job_status(who, job_id)

    def list_jobs(self, who: MemberIdentity) -> list[dict[str, Any]]:
        """Summaries of the jobs of the caller's federation, newest first."""
        with self.storage.session() as db:
            jobs = db.scalars(
                select(Job)
                .where(Job.federation_id == who.federation_id)
                .order_by(Job.created_at.desc())
            ).all()
            return [
                {
                    "id": job.id,
                    "kind": job.kind,
                    "state": job.state,
                    "current_round": job.current_round,
                    "total_rounds": job.total_rounds,
                    "created_at": job.created_at,
                }
                for job in jobs
            ]

    def job_status(
        self,
        who: MemberIdentity,
        job_id: str,
        *,
        after_event: int | None = None,
        wait: float = 0.0,
    ) -> dict[str, Any]:
        """Describe a job; with ``wait``, first wait for an event newer than one."""
        if wait > 0 and after_event is not None:
            with self.storage.session() as db:
                self._visible_job(db, who, job_id)
            self._wait_for(
                lambda: self._last_event(job_id) > after_event, min(wait, MAX_WAIT)
            )
        with self.storage.session() as db:
            job = self._visible_job(db, who, job_id)
            names = self._member_names(db, who.federation_id)
            parts = db.scalars(
                select(JobMember).where(JobMember.job_id == job.id)
            ).all()
            submitter = names.get(job.submitter_id)
            rounds = db.scalars(
                select(Round).where(Round.job_id == job.id).order_by(Round.number)
            ).all()
            answers = db.scalars(select(Answer).where(Answer.job_id == job.id)).all()
            last = self._last_event(job.id, db)
            round_views = []
            for item in rounds:
                mine = [a for a in answers if a.round == item.number]
                round_views.append(
                    {
                        "number": item.number,
                        "state": item.state,
                        "opened_at": item.opened_at,
                        "deadline_at": item.deadline_at,
                        "closed_at": item.closed_at,
                        "updates": sorted(
                            names[a.member_id] for a in mine if a.status == "update"
                        ),
                        "failed": sorted(
                            names[a.member_id] for a in mine if a.status == "failed"
                        ),
                        "bytes_up": item.bytes_up,
                        "bytes_down": item.bytes_down,
                        "aggregate_size": item.aggregate_size,
                    }
                )
            return {
                "id": job.id,
                "kind": job.kind,
                "state": job.state,
                "reason": job.reason,
                "spec": json.loads(job.spec_json),
                "fingerprint": job.fingerprint,
                "submitter": submitter,
                "current_round": job.current_round,
                "total_rounds": job.total_rounds,
                "created_at": job.created_at,
                "finished_at": job.finished_at,
                "members": [
                    {
                        "name": names[p.member_id],
                        "role": p.role,
                        "state": p.state,
                        "reason": p.reason,
                    }
                    for p in parts
                ],
                "rounds": round_views,
                "last_event": last,
            }

    def job_events(self, who: MemberIdentity, job_id: str) -> list[dict[str, Any]]:
        """The job's life-cycle events, oldest first."""
        with self.storage.session() as db:
            job = self._visible_job(db, who, job_id)
            rows = db.scalars(
                select(Event).where(Event.job_id == job.id).order_by(Event.id)
            ).all()
            return [
                {
                    "id": e.id,
                    "round": e.round,
                    "kind": e.kind,
                    "detail": e.detail,
                    "at": e.at,
                }
                for e in rows
            ]

    def job_key(self, who: MemberIdentity, job_id: str) -> dict[str, Any]:
        """The job's public key and the caller's sealed private key."""
        with self.storage.session() as db:
            job = self._visible_job(db, who, job_id)
            part = self._part(db, job, who)
            sealed = self.storage.blobs.get(part.sealed_key_sha)
            return {
                "public_key": job.public_key_json,
                "fingerprint": job.fingerprint,
                "sealed_key": sealed,
            }

    # Tasks and updates ------------------------------------------------------------

    def next_task(
        self, who: MemberIdentity, wait: float = 0.0
    ) -> dict[str, Any] | None:
        """The next round the caller must answer, waiting up to ``wait`` seconds."""
        found: list[dict[str, Any]] = []

        def ready() -> bool:
            task = self._find_task(who)
            if task is not None:
                found.append(task)
            return task is not None

        self._wait_for(ready, min(wait, MAX_WAIT))
        return found[0] if found else None

    def _find_task(self, who: MemberIdentity) -> dict[str, Any] | None:
        with self.storage.session() as db:
            rows = db.execute(
                select(Job, Round)
                .join(JobMember, JobMember.job_id == Job.id)
                .join(
                    Round,
                    (Round.job_id == Job.id) & (Round.number == Job.current_round),
                )
                .where(
                    JobMember.member_id == who.member_id,
                    JobMember.role == "participant",
                    JobMember.state == "active",
                    Job.state == "running",
                    Round.state == "open",
                )
                .order_by(Job.created_at)
            ).all()
            broken: list[tuple[str, str]] = []
            task: dict[str, Any] | None = None
            for job, item in rows:
                answered = db.scalar(
                    select(Answer.id).where(
                        Answer.job_id == job.id,
                        Answer.round == item.number,
                        Answer.member_id == who.member_id,
                    )
                )
                if answered is not None:
                    continue
                try:
                    task = self._task_view(job, item)
                    break
                except (ValueError, WorkbenchError) as exc:
                    broken.append((job.id, str(exc)))
        for job_id, problem in broken:
            self._fail_unbuildable(job_id, problem)
        return task

    def _task_view(self, job: Job, item: Round) -> dict[str, Any]:
        spec = parse_spec(job.spec_json)
        task = {
            "job_id": job.id,
            "kind": job.kind,
            "round": item.number,
            "total_rounds": job.total_rounds,
            "spec": spec.model_dump(mode="json"),
            "fingerprint": job.fingerprint,
            "deadline_at": item.deadline_at,
        }
        # Whatever is stored, a task goes out only if it is strict JSON.
        json.dumps(task, allow_nan=False)
        return task

    def _fail_unbuildable(self, job_id: str, problem: str) -> None:
        with self.lock, self.storage.session() as db:
            job = db.get(Job, job_id)
            if job is None or job.state != "running":
                return
            self._finish(
                db, job, "failed", f"its task cannot be built: {problem[:500]}"
            )
            db.commit()
            self.changed.notify_all()

    def accept_update(
        self, who: MemberIdentity, job_id: str, number: int, data: bytes
    ) -> dict[str, Any]:
        """Check and store one member's encrypted update for a round.

        Raises
        ------
        ConflictError
            If the round is not open (late, early, or the job ended).
        AlreadyAnsweredError
            If the caller already answered this round.
        WireFormatError, KeyMismatchError, CiphertextRangeError, ProtocolError
            If the update is malformed or under another key.

        Notes
        -----
        Updates are not compared with one another on arrival; when the round
        closes, only the updates of the layout most members share are added, and
        the members whose update differs are marked failed.
        """
        from workbench.coordinator.aggregation import check_update
        from workbench.crypto import public_key_from_json

        # State first, so that a late upload hears it is late whatever its bytes.
        with self.storage.session() as db:
            job = self._visible_job(db, who, job_id)
            part = self._participant(db, job, who)
            self._answerable_round(db, job, part, who, number)
            public_key = public_key_from_json(job.public_key_json)
        vectors = check_update(data, public_key)
        for name, vector in vectors.items():
            if vector.fingerprint != job.fingerprint:
                raise KeyMismatchError(
                    f"the vector {name!r} is under the key "
                    f"{vector.fingerprint[:12]}..., "
                    f"the job's key is {job.fingerprint[:12]}...",
                    hint="encrypt with the job's public key from GET /v1/jobs/{id}/key",
                )

        with self.lock, self.storage.session() as db:
            job = self._visible_job(db, who, job_id)
            part = self._participant(db, job, who)
            item = self._answerable_round(db, job, part, who, number)
            # Updates are not compared with each other here: whoever uploads first
            # must not decide what the round's updates look like. The round adds
            # the updates whose layout most members share when it closes.
            sha = self.storage.blobs.put(data)
            db.add(
                Answer(
                    job_id=job.id,
                    round=number,
                    member_id=who.member_id,
                    status="update",
                    blob_sha=sha,
                    size=len(data),
                )
            )
            item.updates += 1
            item.bytes_up += len(data)
            self._event(db, job, number, "update", who.name)
            db.commit()
            received, expected = self._progress(db, job, number)
            logger.info(
                "job %s round %d: %d of %d updates received",
                job.id,
                number,
                received,
                expected,
            )
            self._maybe_close(db, job.id)
            self.changed.notify_all()
        return {"job_id": job_id, "round": number, "accepted": True}

    def report_failure(
        self, who: MemberIdentity, job_id: str, number: int, message: str
    ) -> None:
        """Record that the caller could not compute its update for a round."""
        with self.lock, self.storage.session() as db:
            job = self._visible_job(db, who, job_id)
            part = self._participant(db, job, who)
            self._answerable_round(db, job, part, who, number)
            db.add(
                Answer(
                    job_id=job.id,
                    round=number,
                    member_id=who.member_id,
                    status="failed",
                    message=message[:2000],
                )
            )
            self._event(db, job, number, "failure", who.name)
            db.commit()
            logger.warning(
                "job %s round %d: member %s reported a failure",
                job.id,
                number,
                who.name,
            )
            self._maybe_close(db, job.id)
            self.changed.notify_all()

    def aggregate(
        self, who: MemberIdentity, job_id: str, number: int, wait: float = 0.0
    ) -> bytes | None:
        """The encrypted aggregate of a round, or ``None`` while the round is open."""

        def closed() -> bool:
            with self.storage.session() as db:
                item = self._round(db, job_id, number)
                return item is not None and item.state != "open"

        with self.storage.session() as db:
            job = self._visible_job(db, who, job_id)
            self._part(db, job, who)
            if self._round(db, job.id, number) is None and not (
                1 <= number <= job.total_rounds
            ):
                raise NotFoundError(
                    f"job {job_id} has no round {number}",
                    hint=f"rounds are numbered 1 to {job.total_rounds}",
                )
        self._wait_for(closed, min(wait, MAX_WAIT))
        with self.lock, self.storage.session() as db:
            item = self._round(db, job_id, number)
            if item is None or item.state == "open":
                return None
            if item.aggregate_sha is None:
                raise ConflictError(
                    f"round {number} of job {job_id} closed without an aggregate",
                    hint="see the job's reason in its status",
                )
            data = self.storage.blobs.get(item.aggregate_sha)
            item.bytes_down += len(data)
            db.commit()
            return data

    # Blobs --------------------------------------------------------------------------

    def put_blob(
        self,
        who: MemberIdentity,
        job_id: str,
        number: int,
        name: str,
        data: bytes,
        *,
        recipient: str | None = None,
        format: str = "bytes",
    ) -> dict[str, Any]:
        """Store a named blob of a round, for all participants or for one recipient.

        ``format="npy"`` blobs are checked to be plain numeric ``.npy`` bytes (a
        pickle is refused unread); ``"bytes"`` blobs are relayed as they are.
        """
        validate_name(name)
        if format == "npy":
            decode_array(data)
        elif format != "bytes":
            raise ProtocolError(
                f"unknown blob format {format!r}", hint="use 'npy' or 'bytes'"
            )
        with self.lock, self.storage.session() as db:
            job = self._visible_job(db, who, job_id)
            self._part(db, job, who)
            self._check_round_number(job, number)
            if job.state != "running":
                raise ConflictError(
                    f"job {job_id} is {job.state}; it takes no more blobs",
                    hint="blobs may be sent while a job runs",
                )
            recipient_id = None
            if recipient is not None:
                names = {
                    v: k for k, v in self._member_names(db, who.federation_id).items()
                }
                if recipient not in names:
                    raise NotFoundError(
                        f"there is no member {recipient!r} in {who.federation!r}"
                    )
                recipient_id = names[recipient]
                taking_part = db.scalar(
                    select(JobMember.id).where(
                        JobMember.job_id == job.id, JobMember.member_id == recipient_id
                    )
                )
                if taking_part is None:
                    raise NotFoundError(
                        f"the recipient {recipient!r} takes no part in job {job.id}",
                        hint="send blobs only to the job's members",
                    )
            # NULL recipients do not collide in a unique index: check by hand.
            taken = db.scalar(
                select(Blob.id).where(
                    Blob.job_id == job.id,
                    Blob.round == number,
                    Blob.name == name,
                    Blob.sender_id == who.member_id,
                    Blob.recipient_id.is_(None)
                    if recipient_id is None
                    else Blob.recipient_id == recipient_id,
                )
            )
            if taken is not None:
                raise ConflictError(
                    f"{who.name} sent a blob {name!r} in round {number} already",
                    hint="blobs cannot be replaced; use another name",
                )
            sha = self.storage.blobs.put(data)
            db.add(
                Blob(
                    job_id=job.id,
                    round=number,
                    name=name,
                    sender_id=who.member_id,
                    recipient_id=recipient_id,
                    format=format,
                    sha256=sha,
                    size=len(data),
                )
            )
            try:
                self._event(db, job, number, "blob", f"{name} from {who.name}")
                db.commit()
            except IntegrityError as exc:
                raise ConflictError(
                    f"{who.name} sent a blob {name!r} in round {number} already",
                    hint="blobs cannot be replaced; use another name",
                ) from exc
            self.changed.notify_all()
        logger.info("job %s round %d: blob received from %s", job_id, number, who.name)
        return {"name": name, "round": number, "size": len(data), "sha256": sha}

    def list_blobs(
        self, who: MemberIdentity, job_id: str, number: int
    ) -> list[dict[str, Any]]:
        """The blobs of a round the caller may read."""
        with self.storage.session() as db:
            job = self._visible_job(db, who, job_id)
            self._part(db, job, who)
            names = self._member_names(db, who.federation_id)
            rows = db.scalars(
                select(Blob).where(Blob.job_id == job.id, Blob.round == number)
            ).all()
            return [
                {
                    "name": b.name,
                    "sender": names[b.sender_id],
                    "recipient": None
                    if b.recipient_id is None
                    else names[b.recipient_id],
                    "format": b.format,
                    "size": b.size,
                    "sha256": b.sha256,
                }
                for b in rows
                if b.recipient_id in (None, who.member_id)
                or b.sender_id == who.member_id
            ]

    def get_blob(
        self,
        who: MemberIdentity,
        job_id: str,
        number: int,
        name: str,
        *,
        sender: str | None = None,
        wait: float = 0.0,
    ) -> tuple[bytes, dict[str, Any]] | None:
        """A blob of a round, waiting up to ``wait`` seconds for it to arrive."""
        validate_name(name)

        def matches() -> list[dict[str, Any]]:
            return [
                b
                for b in self.list_blobs(who, job_id, number)
                if b["name"] == name
                and (sender is None or b["sender"] == sender)
                and (b["recipient"] in (None, who.name))
            ]

        self._wait_for(lambda: bool(matches()), min(wait, MAX_WAIT))
        found = matches()
        if not found:
            return None
        if len(found) > 1:
            raise ConflictError(
                f"{len(found)} members sent a blob {name!r} in round {number}",
                hint="name the sender: ?sender=<member>",
            )
        return self.storage.blobs.get(found[0]["sha256"]), found[0]

    # Rounds -------------------------------------------------------------------------

    def close_due_rounds(self) -> None:
        """Close every open round whose deadline passed, and rounds fully answered."""
        with self.lock, self.storage.session() as db:
            ids = db.scalars(select(Job.id).where(Job.state == "running")).all()
            for job_id in ids:
                self._maybe_close(db, job_id)
            self.changed.notify_all()

    def _maybe_close(self, db: Session, job_id: str) -> None:
        job = db.get(Job, job_id)
        if job is None or job.state != "running":
            return
        item = self._round(db, job.id, job.current_round)
        if item is None or item.state != "open":
            return
        parts = list(
            db.scalars(
                select(JobMember).where(
                    JobMember.job_id == job.id,
                    JobMember.role == "participant",
                    JobMember.state == "active",
                )
            )
        )
        answers = {
            a.member_id: a
            for a in db.scalars(
                select(Answer).where(
                    Answer.job_id == job.id, Answer.round == item.number
                )
            )
        }
        everyone = all(p.member_id in answers for p in parts)
        overdue = now() >= item.deadline_at
        if not (everyone or overdue):
            return
        self._close_round(db, job, item, parts, answers)
        db.commit()

    def _close_round(
        self,
        db: Session,
        job: Job,
        item: Round,
        parts: list[JobMember],
        answers: dict[int, Answer],
    ) -> None:
        from workbench.coordinator.aggregation import add_updates, check_update
        from workbench.crypto import public_key_from_json

        spec = parse_spec(job.spec_json)
        names = self._member_names(db, job.federation_id)
        for part in parts:
            answer = answers.get(part.member_id)
            if answer is None:
                part.state = "dropped"
                part.reason = f"missed the deadline of round {item.number}"
            elif answer.status == "failed":
                part.state = "failed"
                part.reason = f"round {item.number}: {answer.message}"
            else:
                continue
            self._event(db, job, item.number, "dropped", names[part.member_id])
            logger.warning(
                "job %s round %d: member %s dropped (%s)",
                job.id,
                item.number,
                names[part.member_id],
                "failure" if answer is not None else "deadline",
            )
        updates = [a for a in answers.values() if a.status == "update"]
        item.closed_at = now()
        if len(updates) < spec.min_members:
            item.state = "failed"
            failures = [
                f"{names[a.member_id]}: {a.message}"
                for a in answers.values()
                if a.status == "failed"
            ]
            reason = (
                f"round {item.number} closed with {len(updates)} update(s), fewer "
                f"than min_members={spec.min_members}"
            )
            if failures:
                reason += "; failures: " + "; ".join(failures)
            self._finish(db, job, "failed", reason)
            return
        public_key = public_key_from_json(job.public_key_json)
        ordered = sorted(updates, key=lambda a: a.member_id)
        checked = [
            check_update(self.storage.blobs.get(str(a.blob_sha)), public_key)
            for a in ordered
        ]
        kept = self._majority_layout(checked)
        by_member = {p.member_id: p for p in parts}
        for index, answer in enumerate(ordered):
            if index in kept:
                continue
            outvoted = by_member.get(answer.member_id)
            if outvoted is not None:
                outvoted.state = "failed"
                outvoted.reason = (
                    f"round {item.number}: its update's vectors "
                    f"({_layout_text(checked[index])}) differ from those most "
                    "members of the round uploaded"
                )
            self._event(db, job, item.number, "dropped", names[answer.member_id])
            logger.warning(
                "job %s round %d: member %s dropped (update layout)",
                job.id,
                item.number,
                names[answer.member_id],
            )
        if len(kept) < spec.min_members:
            item.state = "failed"
            self._finish(
                db,
                job,
                "failed",
                f"round {item.number} closed with {len(kept)} update(s) of one "
                f"layout, fewer than min_members={spec.min_members}; the members' "
                "updates disagree on their vectors (run the same version of "
                "workbench at every member, with the same dataset columns)",
            )
            return
        updates = [ordered[i] for i in sorted(kept)]
        bundle = add_updates([checked[i] for i in sorted(kept)])
        item.aggregate_sha = self.storage.blobs.put(bundle)
        item.aggregate_size = len(bundle)
        item.state = "closed"
        self._event(db, job, item.number, "closed", f"{len(updates)} updates")
        logger.info(
            "job %s round %d: closed with %d updates", job.id, item.number, len(updates)
        )
        if item.number >= job.total_rounds:
            self._finish(db, job, "completed", None)
            return
        job.current_round = item.number + 1
        self._open_round(db, job, spec, item.number + 1)

    @staticmethod
    def _majority_layout(checked: list[dict[str, Any]]) -> set[int]:
        """Indices of the updates of the layout shared by most members.

        A layout is the vector names with each vector's length, weighting and
        encoding. When two layouts are shared by equally many members, none is
        chosen: the coordinator cannot tell which is honest.
        """
        groups: dict[tuple[Any, ...], set[int]] = {}
        for index, vectors in enumerate(checked):
            groups.setdefault(_layout(vectors), set()).add(index)
        sizes = sorted((len(g) for g in groups.values()), reverse=True)
        if len(sizes) > 1 and sizes[0] == sizes[1]:
            return set()
        return max(groups.values(), key=len)

    def _open_round(self, db: Session, job: Job, spec: JobSpec, number: int) -> None:
        opened = now()
        db.add(
            Round(
                job_id=job.id,
                number=number,
                state="open",
                opened_at=opened,
                deadline_at=opened + spec.round_deadline,
            )
        )
        self._event(db, job, number, "opened", "")
        logger.info("job %s round %d: opened", job.id, number)

    def _finish(self, db: Session, job: Job, state: str, reason: str | None) -> None:
        job.state = state
        job.reason = reason
        job.finished_at = now()
        self._event(db, job, None, state, reason or "")
        if state == "failed":
            logger.warning("job %s failed: %s", job.id, reason)
        else:
            logger.info("job %s %s", job.id, state)

    # Helpers ------------------------------------------------------------------------

    def _wait_for(self, ready: Callable[[], bool], wait: float) -> None:
        deadline = time.monotonic() + max(0.0, wait)
        with self.changed:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return
                self.changed.wait(min(left, 1.0))

    def _event(
        self, db: Session, job: Job, number: int | None, kind: str, detail: str
    ) -> None:
        db.add(Event(job_id=job.id, round=number, kind=kind, detail=detail))

    def _last_event(self, job_id: str, db: Session | None = None) -> int:
        if db is None:
            with self.storage.session() as own:
                return self._last_event(job_id, own)
        query = select(Event.id).where(Event.job_id == job_id).order_by(Event.id.desc())
        return int(db.scalar(query.limit(1)) or 0)

    def _member_names(self, db: Session, federation_id: int) -> dict[int, str]:
        rows = db.execute(
            select(Member.id, Member.name).where(Member.federation_id == federation_id)
        ).all()
        return {row[0]: row[1] for row in rows}

    def _visible_job(self, db: Session, who: MemberIdentity, job_id: str) -> Job:
        job = db.get(Job, job_id) if len(job_id) <= 32 else None
        if job is None or job.federation_id != who.federation_id:
            raise NotFoundError(
                f"there is no job {job_id!r} in the federation {who.federation!r}",
                hint="list the jobs you can see with GET /v1/jobs",
            )
        return job

    def _part(self, db: Session, job: Job, who: MemberIdentity) -> JobMember:
        part = db.scalar(
            select(JobMember).where(
                JobMember.job_id == job.id, JobMember.member_id == who.member_id
            )
        )
        if part is None:
            raise PermissionDeniedError(
                f"{who.name or 'the member'} takes no part in job {job.id}",
                hint="only the job's members and its submitter may do this",
            )
        return part

    def _participant(self, db: Session, job: Job, who: MemberIdentity) -> JobMember:
        part = self._part(db, job, who)
        if part.role != "participant":
            raise PermissionDeniedError(
                f"{who.name} submitted job {job.id} but holds no data in it",
                hint="only participants upload updates",
            )
        return part

    def _check_round_number(self, job: Job, number: int) -> None:
        if not 1 <= number <= job.total_rounds:
            raise NotFoundError(
                f"job {job.id} has no round {number}",
                hint=f"rounds are numbered 1 to {job.total_rounds}",
            )

    def _answerable_round(
        self, db: Session, job: Job, part: JobMember, who: MemberIdentity, number: int
    ) -> Round:
        self._check_round_number(job, number)
        if part.state != "active":
            raise ConflictError(
                f"{who.name} was dropped from job {job.id}: {part.reason}",
                hint="a dropped member takes no part in later rounds",
            )
        if job.state != "running":
            raise ConflictError(
                f"job {job.id} is {job.state}; round {number} takes no more answers",
                hint="see the job's status for its result or reason",
            )
        item = self._round(db, job.id, number)
        if item is None:
            raise ConflictError(
                f"round {number} of job {job.id} is not open yet (the job is at "
                f"round {job.current_round})",
                hint="fetch your task with GET /v1/tasks",
            )
        if item.state != "open":
            raise ConflictError(
                f"round {number} of job {job.id} closed at its deadline or when every "
                "member had answered; the update came too late",
                hint=f"the job is at round {job.current_round}",
            )
        answered = db.scalar(
            select(Answer).where(
                Answer.job_id == job.id,
                Answer.round == number,
                Answer.member_id == who.member_id,
            )
        )
        if answered is not None:
            raise AlreadyAnsweredError(
                f"{who.name} answered round {number} of job {job.id} already "
                f"({answered.status})",
                hint="each member answers a round once",
            )
        return item

    def _round(self, db: Session, job_id: str, number: int) -> Round | None:
        return db.scalar(
            select(Round).where(Round.job_id == job_id, Round.number == number)
        )

    def _progress(self, db: Session, job: Job, number: int) -> tuple[int, int]:
        received = len(
            db.scalars(
                select(Answer.id).where(
                    Answer.job_id == job.id,
                    Answer.round == number,
                    Answer.status == "update",
                )
            ).all()
        )
        expected = len(
            db.scalars(
                select(JobMember.id).where(
                    JobMember.job_id == job.id,
                    JobMember.role == "participant",
                    JobMember.state == "active",
                )
            ).all()
        )
        return received, expected
