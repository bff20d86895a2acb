"""Tests of uploads, round closing, deadlines and aggregates."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.coordinator.conftest import (
    KeyPairs,
    Running,
    start_coordinator,
    submit,
    update,
)
from workbench.crypto import EncryptedVector, decrypt_vector
from workbench.errors import (
    AlreadyAnsweredError,
    ConflictError,
    KeyMismatchError,
    PayloadTooLargeError,
    WireFormatError,
)
from workbench.wire import decode_bundle, encode_bundle


def wait_state(setup, predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    with setup.client("a") as client:
        while True:
            status = client.job(setup.job_id)
            if predicate(status):
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.05)


def test_round_closes_when_everyone_answered(
    running: Running, small_keys: KeyPairs
) -> None:
    """The aggregate decrypts to the weighted sum of every member's update."""
    setup = submit(running, small_keys[0], rounds=1)
    values = {"a": [1.0, -2.0], "b": [0.5, 0.25], "c": [-3.0, 4.0]}
    weights = {"a": 3, "b": 5, "c": 2}
    for member in "abc":
        with setup.client(member) as client:
            task = client.next_task(wait=1)
            assert task is not None and task["round"] == 1
            client.upload_update(
                setup.job_id, 1, update(setup, values[member], weights[member])
            )
    with setup.client("b") as client:
        data = client.aggregate(setup.job_id, 1, wait=5)
        status = client.job(setup.job_id)
    assert data is not None
    vector = EncryptedVector.from_bytes(
        decode_bundle(data)["p"],
        setup.public_key,  # type: ignore[arg-type]
    )
    total = decrypt_vector(setup.private_key, vector)  # type: ignore[arg-type]
    expected = sum(np.array(values[m]) * weights[m] for m in "abc")
    np.testing.assert_allclose(total.values, expected, atol=10 * 8.0 / 32767)
    assert total.weight == 10
    assert status["state"] == "completed"
    assert status["rounds"][0]["updates"] == ["a", "b", "c"]


def test_open_round_has_no_aggregate(running: Running, small_keys: KeyPairs) -> None:
    """While a round is open, its aggregate is not served."""
    setup = submit(running, small_keys[0])
    with setup.client("a") as client:
        client.upload_update(setup.job_id, 1, update(setup, [1.0]))
        assert client.aggregate(setup.job_id, 1, wait=0.2) is None


def test_malformed_upload_is_refused(running: Running, small_keys: KeyPairs) -> None:
    """Bytes that are not a bundle of vectors are refused with a message."""
    setup = submit(running, small_keys[0])
    with setup.client("a") as client:
        with pytest.raises(WireFormatError, match="not a bundle"):
            client.upload_update(setup.job_id, 1, b"garbage")
        with pytest.raises(WireFormatError, match="malformed"):
            client.upload_update(setup.job_id, 1, encode_bundle({"p": b"\x00" * 40}))


def test_truncated_upload_is_refused(running: Running, small_keys: KeyPairs) -> None:
    """An update cut short is refused, and the member may send it again whole."""
    setup = submit(running, small_keys[0])
    good = update(setup, [1.0, 2.0])
    with setup.client("a") as client:
        with pytest.raises(WireFormatError, match="truncated"):
            client.upload_update(setup.job_id, 1, good[:-10])
        client.upload_update(setup.job_id, 1, good)


def test_upload_under_wrong_key_is_refused(
    running: Running, small_keys: KeyPairs
) -> None:
    """A vector encrypted under another key than the job's is refused."""
    setup = submit(running, small_keys[0])
    setup.public_key = small_keys[1][0]
    with setup.client("a") as client:
        with pytest.raises(KeyMismatchError):
            client.upload_update(setup.job_id, 1, update(setup, [1.0]))


def test_update_of_a_minority_layout_is_left_out(
    running: Running, small_keys: KeyPairs
) -> None:
    """An update unlike most of the round's is left out, even when it came first."""
    setup = submit(running, small_keys[0], rounds=1, min_members=2)
    with setup.client("a") as client:
        client.upload_update(setup.job_id, 1, update(setup, [1.0, 2.0, 3.0]))
    for member in "bc":
        with setup.client(member) as client:
            client.upload_update(setup.job_id, 1, update(setup, [1.0, -2.0]))

    status = wait_state(setup, lambda s: s["state"] != "running")

    members = {m["name"]: m for m in status["members"]}
    assert status["state"] == "completed"
    assert members["a"]["state"] == "failed"
    assert "differ from those most members" in members["a"]["reason"]
    with setup.client("b") as client:
        data = client.aggregate(setup.job_id, 1, wait=5)
    assert data is not None
    vector = EncryptedVector.from_bytes(
        decode_bundle(data)["p"],
        setup.public_key,  # type: ignore[arg-type]
    )
    total = decrypt_vector(setup.private_key, vector)  # type: ignore[arg-type]
    assert total.contributions == 2
    np.testing.assert_allclose(total.values, [2.0, -4.0], atol=2 * 8.0 / 32767)


def test_round_fails_when_layouts_tie(running: Running, small_keys: KeyPairs) -> None:
    """With no layout shared by most members, no update is added."""
    setup = submit(running, small_keys[0], rounds=1, min_members=1)
    for member, values in zip("abc", ([1.0], [1.0, 2.0], [1.0, 2.0, 3.0]), strict=True):
        with setup.client(member) as client:
            client.upload_update(setup.job_id, 1, update(setup, values))

    status = wait_state(setup, lambda s: s["state"] != "running")

    assert status["state"] == "failed"
    assert "disagree on their vectors" in status["reason"]


def test_second_answer_is_refused(running: Running, small_keys: KeyPairs) -> None:
    """A member answers a round once."""
    setup = submit(running, small_keys[0])
    with setup.client("a") as client:
        client.upload_update(setup.job_id, 1, update(setup, [1.0]))
        with pytest.raises(AlreadyAnsweredError, match="already"):
            client.upload_update(setup.job_id, 1, update(setup, [1.0]))


def test_oversized_body_gets_413(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A body over the limit is refused with 413 naming the limit."""
    server, thread, running = start_coordinator(tmp_path, max_body_bytes=1000)
    try:
        tokens = running.federation("f1", ["a"])
        with running.client(str(tokens["a"][0])) as client:  # type: ignore[index]
            with pytest.raises(PayloadTooLargeError, match="limit of 1000 bytes"):
                client.upload_update("0" * 32, 1, b"x" * 5000)
        chunks = (b"y" * 500 for _ in range(10))
        response = httpx.post(
            f"{running.url}/v1/join",
            content=chunks,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 413
        assert "1000 bytes" in response.json()["message"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_deadline_closes_round_with_those_who_answered(
    running: Running, small_keys: KeyPairs
) -> None:
    """A silent member is dropped at the deadline; the others go on; late is 409."""
    setup = submit(running, small_keys[0], rounds=2, min_members=2, deadline=1.0)
    for member in "ab":
        with setup.client(member) as client:
            client.upload_update(setup.job_id, 1, update(setup, [1.0]))
    status = wait_state(setup, lambda s: s["current_round"] == 2)
    dropped = {m["name"]: m for m in status["members"]}["c"]
    assert dropped["state"] == "dropped"
    assert "deadline of round 1" in dropped["reason"]
    with setup.client("c") as client:
        with pytest.raises(ConflictError, match="dropped"):
            client.upload_update(setup.job_id, 1, update(setup, [1.0]))
        assert client.next_task(wait=0) is None


def test_late_upload_after_close_is_409(running: Running, small_keys: KeyPairs) -> None:
    """An upload for a round that closed is refused and says why."""
    setup = submit(running, small_keys[0], members=("a", "b"), rounds=3)
    for member in "ab":
        with setup.client(member) as client:
            client.upload_update(setup.job_id, 1, update(setup, [1.0]))
    with setup.client("a") as client:
        client.upload_update(setup.job_id, 2, update(setup, [1.0]))
        with pytest.raises(ConflictError, match="too late"):
            client.upload_update(setup.job_id, 1, update(setup, [1.0]))


def test_too_few_updates_fail_the_job(running: Running, small_keys: KeyPairs) -> None:
    """A round that closes under min_members fails the job with the reason."""
    setup = submit(running, small_keys[0], min_members=2, deadline=0.5)
    with setup.client("a") as client:
        client.upload_update(setup.job_id, 1, update(setup, [1.0]))
    status = wait_state(setup, lambda s: s["state"] != "running")
    assert status["state"] == "failed"
    assert "1 update(s), fewer than min_members=2" in status["reason"]


def test_failure_report_drops_member(running: Running, small_keys: KeyPairs) -> None:
    """A member that reports a failure is dropped; its message is in the reason."""
    setup = submit(running, small_keys[0], rounds=2, min_members=2)
    for member in "ab":
        with setup.client(member) as client:
            client.upload_update(setup.job_id, 1, update(setup, [1.0]))
    with setup.client("c") as client:
        client.report_failure(setup.job_id, 1, "DatasetError: no column 'age'")
    status = wait_state(setup, lambda s: s["current_round"] == 2)
    member = {m["name"]: m for m in status["members"]}["c"]
    assert member["state"] == "failed"
    assert "no column 'age'" in member["reason"]
    assert status["rounds"][0]["failed"] == ["c"]


def test_restart_resumes_open_round(tmp_path: Path, small_keys: KeyPairs) -> None:
    """A coordinator restarted on the same folder keeps jobs, uploads and tokens."""
    server, thread, running = start_coordinator(tmp_path)
    setup = submit(running, small_keys[0], members=("a", "b"), rounds=1, deadline=60)
    with setup.client("a") as client:
        client.upload_update(setup.job_id, 1, update(setup, [2.0]))
    server.should_exit = True
    thread.join(timeout=10)

    server, thread, again = start_coordinator(tmp_path)
    try:
        setup.running = again
        with setup.client("b") as client:
            task = client.next_task(wait=1)
            assert task is not None and task["round"] == 1
            client.upload_update(setup.job_id, 1, update(setup, [4.0]))
            data = client.aggregate(setup.job_id, 1, wait=5)
            events = client.job_events(setup.job_id)
        vector = EncryptedVector.from_bytes(
            decode_bundle(data)["p"],
            setup.public_key,  # type: ignore[arg-type]
        )
        total = decrypt_vector(setup.private_key, vector)  # type: ignore[arg-type]
        np.testing.assert_allclose(total.values, [6.0], atol=1e-3)
        assert "deadline_reset" in [e["kind"] for e in events]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_errors_are_json_with_code_message_hint(running: Running) -> None:
    """Unknown routes and invalid bodies answer JSON errors a person can act on."""
    missing = httpx.get(f"{running.url}/v1/nothing", timeout=10)
    assert missing.status_code == 404
    assert set(missing.json()) == {"code", "message", "hint"}
    extra = httpx.post(
        f"{running.url}/v1/join",
        json={"invitation": "x", "name": "a", "sealing_public_key": "0", "more": 1},
        timeout=10,
    )
    assert extra.status_code == 422
    assert extra.json()["code"] == "invalid_request"
    assert "more" in extra.json()["message"]
