"""The coordinator's state: SQLAlchemy tables and the blob store.

SQLite under the data folder is the default; any SQLAlchemy URL (PostgreSQL through
psycopg) works the same. Every change of a job's or round's state is a row of its
own in ``events``, and deadlines are wall-clock timestamps, so a coordinator
restarted after a crash reads back where each job stood and goes on.

Blobs (ciphertext bundles, sealed keys, relayed blobs) are files named by their
SHA-256 under ``<data-dir>/blobs``; the database stores only their names.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from workbench.errors import NotFoundError, StartupError

__all__ = [
    "Answer",
    "Base",
    "Blob",
    "BlobStore",
    "Event",
    "Federation",
    "Invitation",
    "Job",
    "JobMember",
    "Member",
    "PublishedDataset",
    "Round",
    "Storage",
    "hash_token",
]


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of a token, the only form in which tokens are stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def now() -> float:
    """Return the wall-clock time in seconds since the epoch."""
    return time.time()


class Base(DeclarativeBase):
    """Declarative base of the coordinator's tables."""


class Federation(Base):
    """A federation: a named group of members with one admin token."""

    __tablename__ = "federations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    admin_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Invitation(Base):
    """A single-use invitation for one member name."""

    __tablename__ = "invitations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    federation_id: Mapped[int] = mapped_column(ForeignKey("federations.id"))
    member_name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Member(Base):
    """A member of a federation, known by the hash of its credential."""

    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("federation_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    federation_id: Mapped[int] = mapped_column(ForeignKey("federations.id"))
    name: Mapped[str] = mapped_column(String(64))
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True)
    sealing_public_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=now)


class PublishedDataset(Base):
    """The schema and row count of a dataset, published by its owner's choice."""

    __tablename__ = "published_datasets"
    __table_args__ = (UniqueConstraint("member_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    name: Mapped[str] = mapped_column(String(128))
    schema_json: Mapped[str] = mapped_column(Text)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    published_at: Mapped[float] = mapped_column(Float, default=now)


class Job(Base):
    """A submitted job: its spec, public key and state."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    federation_id: Mapped[int] = mapped_column(ForeignKey("federations.id"))
    submitter_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(32))
    spec_json: Mapped[str] = mapped_column(Text)
    public_key_json: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    total_rounds: Mapped[int] = mapped_column(Integer)
    current_round: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class JobMember(Base):
    """A member's part in a job: its role, state and sealed private key."""

    __tablename__ = "job_members"
    __table_args__ = (UniqueConstraint("job_id", "member_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    role: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    sealed_key_sha: Mapped[str] = mapped_column(String(64))


class Round(Base):
    """One round of a job."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("job_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[float] = mapped_column(Float)
    deadline_at: Mapped[float] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    aggregate_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    aggregate_size: Mapped[int] = mapped_column(Integer, default=0)
    updates: Mapped[int] = mapped_column(Integer, default=0)
    bytes_up: Mapped[int] = mapped_column(Integer, default=0)
    bytes_down: Mapped[int] = mapped_column(Integer, default=0)


class Answer(Base):
    """A member's answer in a round: an encrypted update, or a failure report."""

    __tablename__ = "answers"
    __table_args__ = (UniqueConstraint("job_id", "round", "member_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    round: Mapped[int] = mapped_column(Integer)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    status: Mapped[str] = mapped_column(String(16))
    blob_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[float] = mapped_column(Float, default=now)


class Blob(Base):
    """A named blob of a round, for every participant or sealed to one member."""

    __tablename__ = "blobs"
    __table_args__ = (
        UniqueConstraint("job_id", "round", "name", "sender_id", "recipient_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    round: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    sender_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    recipient_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id"), nullable=True
    )
    format: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Event(Base):
    """One life-cycle event of a job: a row per state change."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[float] = mapped_column(Float, default=now)


class BlobStore:
    """Content-addressed files under one folder.

    Parameters
    ----------
    root : path
        Folder of the blobs; made if missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its hex SHA-256, which is also its file name."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            partial = path.with_name(f"{digest}.{os.getpid()}.partial")
            partial.write_bytes(data)
            os.replace(partial, path)
        return digest

    def get(self, digest: str) -> bytes:
        """Return the blob named ``digest``.

        Raises
        ------
        NotFoundError
            If no such blob is stored.
        """
        path = self._path(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"the blob {digest[:12]}... is missing from {self.root}",
                hint="the coordinator's blob folder was altered; restore it",
            ) from exc

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise NotFoundError(f"{digest!r} is not a blob name")
        return self.root / digest[:2] / digest


class Storage:
    """The database engine, a session factory and the blob store.

    Parameters
    ----------
    data_dir : path
        The coordinator's data folder: SQLite database and blobs.
    database_url : str or None, default=None
        A SQLAlchemy URL; ``None`` means ``sqlite:///<data_dir>/coordinator.db``.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], database_url: str | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        # The state is the coordinator's alone: folders 0700, files 0600.
        os.umask(0o077)
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.blobs = BlobStore(self.data_dir / "blobs")
        except OSError as exc:
            raise StartupError(
                f"cannot use {str(self.data_dir)!r} as the data folder: "
                f"{exc.strerror or exc}",
                hint="pass --data-dir a folder this user may create and write",
            ) from exc
        url = database_url or f"sqlite:///{self.data_dir / 'coordinator.db'}"
        self.url = url
        try:
            self.engine = _make_engine(url)
            Base.metadata.create_all(self.engine)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StartupError(
                f"cannot open the database {_safe_url(url)}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                hint="check --database (e.g. postgresql://user@127.0.0.1:5432/db) "
                "and that the database is running and reachable",
            ) from exc
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        restrict_permissions(self.data_dir)

    def session(self) -> Session:
        """Return a new session (use it as a context manager)."""
        return self.sessions()

    def dispose(self) -> None:
        """Close every pooled database connection."""
        self.engine.dispose()


def _safe_url(url: str) -> str:
    """The URL without its password, fit for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "given by --database"


def restrict_permissions(root: str | os.PathLike[str]) -> None:
    """Make ``root`` and the folders under it 0700 and the files under it 0600."""
    top = Path(root)
    top.chmod(0o700)
    for path in top.rglob("*"):
        if path.is_symlink():
            continue
        path.chmod(0o700 if path.is_dir() else 0o600)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):  # type: ignore[no-untyped-def]
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)
