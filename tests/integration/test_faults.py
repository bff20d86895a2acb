"""Faults over real processes: a member killed, the coordinator killed."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.integration.conftest import train
from workbench.sim import DatasetFile, LocalFederation

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wait_round(  # type: ignore[no-untyped-def]
    job, number: int, timeout: float = 40.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = job.federation.client.job(job.id)
        assert status["state"] == "running", status["reason"]
        if status["current_round"] >= number:
            return
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_member_killed_mid_job(federation: LocalFederation) -> None:
    """The round closes at its deadline with the others and the job completes."""
    # The deadline leaves room for members that are slow to start on a busy machine;
    # only the round after the kill waits it out.
    job = train(federation, rounds=4, min_members=2, round_deadline=20.0)
    wait_round(job, 3)
    federation.kill_member("hospital-c", signal.SIGKILL)
    job.wait(timeout=180)
    status = job.status()
    members = {m["name"]: m for m in status["members"]}
    assert status["state"] == "completed"
    assert members["hospital-c"]["state"] == "dropped"
    assert "missed the deadline" in members["hospital-c"]["reason"]
    assert status["rounds"][-1]["updates"] == ["hospital-a", "hospital-b"]
    assert job.model.predict(np.zeros((1, 30))).shape == (1,)


def test_member_failure_is_reported_and_loop_goes_on(
    hospital_files: dict[str, list[DatasetFile]], tmp_path: Path
) -> None:
    """A member whose data lacks a column reports it; the others finish the job."""
    files = dict(hospital_files)
    broken = tmp_path / "broken.csv"
    frame = __import__("pandas").read_csv(files["hospital-c"][0].path)
    frame.drop(columns=["mean radius"]).to_csv(broken, index=False)
    files["hospital-c"] = [DatasetFile("breast_cancer", broken, "target")]
    with LocalFederation(files, data_dir=tmp_path / "f", poll_wait=2) as running:
        job = train(
            running,
            rounds=2,
            min_members=2,
            features=list(frame.columns.drop("target")),
        )
        job.wait(timeout=120)
        second = train(running, rounds=1, min_members=2, seed=12)
        second.wait(timeout=120)
        status = job.status()
        assert running.members["hospital-c"].poll() is None
    members = {m["name"]: m for m in status["members"]}
    assert members["hospital-c"]["state"] == "failed"
    assert "no column 'mean radius'" in members["hospital-c"]["reason"]


def test_coordinator_sigkill_and_restart_gives_same_model(
    hospital_files: dict[str, list[DatasetFile]], tmp_path: Path
) -> None:
    """A job whose coordinator is SIGKILLed and restarted ends as an unbroken one."""
    with LocalFederation(hospital_files, data_dir=tmp_path / "a", poll_wait=2) as first:
        unbroken = train(first, rounds=4).wait(timeout=180).model
    with LocalFederation(
        hospital_files, data_dir=tmp_path / "b", poll_wait=2
    ) as second:
        job = train(second, rounds=4)
        wait_round(job, 4)
        second.kill_coordinator(signal.SIGKILL)
        second.start_coordinator()
        restarted = job.wait(timeout=180).model
        researcher = second.researcher.client  # type: ignore[union-attr]
        events = [e["kind"] for e in researcher.job_events(job.id)]
    assert "deadline_reset" in events
    for name in ("coef_", "intercept_"):
        np.testing.assert_array_equal(
            getattr(restarted[-1], name), getattr(unbroken[-1], name)
        )
    np.testing.assert_array_equal(restarted[0].mean_, unbroken[0].mean_)
