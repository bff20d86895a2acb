"""Tests of the coordinator against bad input: specs, bundles, names, limits."""

from __future__ import annotations

import socket
import stat
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.coordinator.conftest import JobSetup, KeyPairs, Running, submit, update
from workbench.cli import main
from workbench.coordinator.storage import Job, PublishedDataset
from workbench.errors import (
    InvalidNameError,
    NotFoundError,
    ProtocolError,
)
from workbench.wire import encode_bundle


def _headers(setup: JobSetup, member: str = "a") -> dict[str, str]:
    credential = setup.tokens[member][0]  # type: ignore[index]
    return {"Authorization": f"Bearer {credential}"}


def test_non_finite_spec_is_refused_with_the_field(
    running: Running, small_keys: KeyPairs
) -> None:
    """A raw spec holding NaN gets 422 naming the field."""
    setup = submit(running, small_keys[0])
    body = (
        '{"spec": {"kind": "stats", "dataset": "d", "rounds": 1, "members": ["a"],'
        ' "options": {"x": NaN}}, "public_key": "{}", "sealed_keys": {}}'
    )
    response = httpx.post(
        f"{running.url}/v1/jobs",
        content=body,
        headers={**_headers(setup), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "spec.options.x" in response.json()["message"]


def test_unbuildable_task_fails_its_job_only(
    running: Running, small_keys: KeyPairs
) -> None:
    """A stored job whose task cannot be built fails; /v1/tasks still answers."""
    setup = submit(running, small_keys[0])
    with running.coordinator.storage.session() as db:
        job = db.get(Job, setup.job_id)
        job.spec_json = job.spec_json.replace('"options": {}', '"options": {"x": NaN}')
        db.commit()
    with setup.client("b") as client:
        assert client.next_task(wait=0) is None
        status = client.job(setup.job_id)
    assert status["state"] == "failed"
    assert "task cannot be built" in status["reason"]


def test_empty_bundle_is_refused(running: Running, small_keys: KeyPairs) -> None:
    """An update without vectors is refused and the honest update still fits."""
    setup = submit(running, small_keys[0])
    with setup.client("a") as client:
        with pytest.raises(ProtocolError, match="holds no vectors"):
            client.upload_update(setup.job_id, 1, encode_bundle({}))
    with setup.client("b") as client:
        client.upload_update(setup.job_id, 1, update(setup, [1.0]))


def test_long_polls_per_member_are_limited(
    running: Running, small_keys: KeyPairs
) -> None:
    """Beyond the limit, a long-poll answers at once with 429; others go on."""
    setup = submit(running, small_keys[0], members=("a", "b"))
    with setup.client("a") as client:
        client.upload_update(setup.job_id, 1, update(setup, [1.0]))
    codes: list[int] = []

    def poll() -> None:
        response = httpx.get(
            f"{running.url}/v1/tasks",
            params={"wait": 3},
            headers=_headers(setup),
            timeout=20,
        )
        codes.append(response.status_code)

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes.count(429) == 4
    assert codes.count(204) == 4
    with setup.client("b") as client:
        assert client.next_task(wait=0) is not None


@pytest.mark.parametrize(
    "body",
    [
        {"schema": {"a": "int"}, "rows": 10**30},
        {"schema": {"a": "int"}, "rows": "5"},
        {"schema": {"a": "int"}, "rows": True},
        {"schema": {"a": "int"}, "rows": 5.0},
        {"schema": {"a": "int"}, "rows": -1},
        {"schema": {"a": "x" * 65}},
        {"schema": {f"c{i}": "int" for i in range(1001)}},
    ],
)
def test_bad_dataset_bodies_get_422(
    running: Running, small_keys: KeyPairs, body: dict[str, object]
) -> None:
    """Row counts and schemas are parsed strictly."""
    setup = submit(running, small_keys[0])
    response = httpx.put(
        f"{running.url}/v1/datasets/big", json=body, headers=_headers(setup)
    )
    assert response.status_code == 422, response.text
    good = httpx.put(
        f"{running.url}/v1/datasets/big",
        json={"schema": {"a": "int"}, "rows": 5},
        headers=_headers(setup),
    )
    assert good.status_code == 200


@pytest.mark.parametrize("name", ["..%2F..%2Fx", "d%C3%A4t%C3%A4", "x" * 3000, ".x"])
def test_bad_dataset_names_are_refused(
    running: Running, small_keys: KeyPairs, name: str
) -> None:
    """Dataset names follow the one naming rule."""
    setup = submit(running, small_keys[0])
    response = httpx.put(
        f"{running.url}/v1/datasets/{name}",
        json={"schema": {"a": "int"}},
        headers=_headers(setup),
    )
    assert response.status_code in (404, 422)
    assert response.json()["code"] in ("invalid_name", "not_found")
    with running.coordinator.storage.session() as db:
        assert db.scalars(select(PublishedDataset)).all() == []


def test_bad_spec_dataset_and_member_names_are_refused(
    running: Running, small_keys: KeyPairs
) -> None:
    """spec.dataset and invited member names follow the naming rule."""
    from workbench.errors import JobSpecError
    from workbench.jobs.spec import parse_spec

    with pytest.raises(JobSpecError, match="dataset name '../x' is not allowed"):
        parse_spec({"kind": "stats", "dataset": "../x", "rounds": 1})
    admin = running.coordinator.create_federation("f9")
    with running.client(admin) as client:
        with pytest.raises(InvalidNameError, match="member name 'dätä'"):
            client.invite("f9", "dätä")


def test_data_folder_is_private(running: Running, small_keys: KeyPairs) -> None:
    """The data folder and blobs are 0700, the database and blobs 0600."""
    submit(running, small_keys[0])
    root = running.data_dir
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "blobs").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "coordinator.db").stat().st_mode) == 0o600
    blobs = [p for p in (root / "blobs").rglob("*") if p.is_file()]
    assert blobs and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in blobs)


def test_empty_sealed_key_is_refused(running: Running, small_keys: KeyPairs) -> None:
    """A sealed key of zero bytes is refused at submit."""
    from workbench.crypto import public_key_to_json
    from workbench.errors import JobSpecError

    setup = submit(running, small_keys[0])
    spec = {
        "kind": "stats",
        "dataset": "d",
        "rounds": 1,
        "members": ["a"],
        "encryption": {"key_bits": 512, "allow_insecure_keys": True},
    }
    with setup.client("a") as client:
        with pytest.raises(JobSpecError, match=r"sealed keys of \['a'\] are empty"):
            client.submit_job(spec, public_key_to_json(setup.public_key), {"a": b""})


def test_blob_to_outsider_names_the_recipient(
    running: Running, small_keys: KeyPairs
) -> None:
    """A blob for a member outside the job names that recipient."""
    from workbench.crypto import generate_sealing_keypair

    setup = submit(running, small_keys[0], members=("a", "b"))
    with running.client(str(setup.tokens["admin"])) as admin:
        invitation = admin.invite("f1", "c")
    with running.client() as anonymous:
        anonymous.join(invitation, "c", generate_sealing_keypair()[1])
    with setup.client("a") as client:
        with pytest.raises(NotFoundError, match="the recipient 'c' takes no part"):
            client.put_blob(setup.job_id, 1, "n", b"x", recipient="c")


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["federation", "create", "x", "--data-dir", "/proc/nonexist"], "data folder"),
        (["coordinator", "--data-dir", "/proc/nope"], "data folder"),
        (
            ["coordinator", "--data-dir", "{tmp}", "--database", "nosuch://x"],
            "database",
        ),
        (
            [
                "coordinator",
                "--data-dir",
                "{tmp}",
                "--database",
                "postgresql://u@127.0.0.1:1/db",
            ],
            "database",
        ),
        (["coordinator", "--data-dir", "{tmp}", "--port", "99999"], "out of range"),
        (
            ["coordinator", "--data-dir", "{tmp}", "--certfile", "x.pem"]
            + ["--keyfile", "y.pem"],
            "does not exist",
        ),
        (["coordinator", "--data-dir", "{tmp}", "--port", "{taken}"], "cannot listen"),
    ],
)
def test_cli_startup_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    """Bad coordinator settings print a message and exit 1, without a traceback."""
    taken = _taken_port()
    try:
        port = str(taken.getsockname()[1])
        args = [
            a.replace("{tmp}", str(tmp_path)).replace("{taken}", port) for a in argv
        ]
        assert main(args) == 1
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert "coordinator started" not in err
