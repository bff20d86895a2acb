"""Tests of invitations, credentials and federation boundaries."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from tests.coordinator.conftest import KeyPairs, Running, submit
from workbench.crypto import generate_sealing_keypair
from workbench.errors import (
    AuthenticationError,
    NotFoundError,
    ProtocolError,
)


def test_invitation_is_single_use(running: Running) -> None:
    """A redeemed invitation is refused the second time."""
    admin = running.coordinator.create_federation("f1")
    _, public = generate_sealing_keypair()
    with running.client(admin) as client:
        invitation = client.invite("f1", "a")
    with running.client() as anonymous:
        anonymous.join(invitation, "a", public)
        with pytest.raises(AuthenticationError, match="used already"):
            anonymous.join(invitation, "a", public)


def test_unknown_invitation_is_refused(running: Running) -> None:
    """An invitation the coordinator never issued gets 401."""
    _, public = generate_sealing_keypair()
    with running.client() as anonymous:
        with pytest.raises(AuthenticationError, match="not known"):
            anonymous.join("wbi_forged", "a", public)


def test_invitation_is_for_one_name(running: Running) -> None:
    """An invitation for ``a`` cannot be redeemed as ``b``."""
    admin = running.coordinator.create_federation("f1")
    _, public = generate_sealing_keypair()
    with running.client(admin) as client:
        invitation = client.invite("f1", "a")
    with running.client() as anonymous:
        with pytest.raises(ProtocolError, match="for the member 'a', not 'b'"):
            anonymous.join(invitation, "b", public)


def test_wrong_credential_gets_401(running: Running) -> None:
    """A wrong credential is refused with a message."""
    with running.client("wbm_wrong") as client:
        with pytest.raises(AuthenticationError, match="not known") as caught:
            client.federation()
    assert caught.value.hint is not None


def test_missing_credential_gets_401(running: Running) -> None:
    """A request without a credential is refused."""
    response = httpx.get(f"{running.url}/v1/federation", timeout=10)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_admin_token_of_another_federation_is_404(running: Running) -> None:
    """An admin token cannot issue invitations for another federation."""
    admin = running.coordinator.create_federation("f1")
    running.coordinator.create_federation("f2")
    with running.client(admin) as client:
        with pytest.raises(NotFoundError, match="no federation 'f2'"):
            client.invite("f2", "a")


def test_other_federations_job_is_404(running: Running, small_keys: KeyPairs) -> None:
    """A member of another federation cannot see a job, not even that it exists."""
    setup = submit(running, small_keys[0])
    other = running.federation("f2", ["x"])
    with running.client(str(other["x"][0])) as client:  # type: ignore[index]
        with pytest.raises(NotFoundError, match="no job"):
            client.job(setup.job_id)
        with pytest.raises(NotFoundError, match="no job"):
            client.aggregate(setup.job_id, 1, wait=0)
        assert client.jobs() == []
        assert client.next_task(wait=0) is None


def test_only_hashes_of_tokens_are_stored(running: Running) -> None:
    """The database holds no admin token, invitation or credential in clear."""
    tokens = running.federation("f1", ["a", "b"])
    with running.client(str(tokens["admin"])) as client:
        pending = client.invite("f1", "c")
    credentials = [str(tokens[m][0]) for m in "ab"]  # type: ignore[index]
    secrets = [str(tokens["admin"]), pending] + credentials
    database = running.data_dir / "coordinator.db"
    with sqlite3.connect(database) as connection:
        dump = "\n".join(connection.iterdump())
    raw = b"".join(p.read_bytes() for p in running.data_dir.glob("coordinator.db*"))
    for secret in secrets:
        assert secret not in dump
        assert secret.encode() not in raw
    assert dump.count('INSERT INTO "members"') == 2
