"""A member's failure never carries its data values to the coordinator."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.coordinator.conftest import Running, start_coordinator
from workbench.api import connect
from workbench.errors import JobFailedError

SECRET = "SECRET-LABEL-123"


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Running]:
    server, thread, running = start_coordinator(tmp_path / "state")
    yield running
    server.should_exit = True
    thread.join(timeout=10)


def stored_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_label_value_never_reaches_the_coordinator(
    coordinator: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A label outside the job's classes fails the member; the label stays local."""
    caplog.set_level(logging.DEBUG)
    admin = coordinator.coordinator.create_federation("f1")
    with coordinator.client(admin) as client:
        invitations = {n: client.invite("f1", n) for n in ("lab", "researcher")}
    lab = connect(coordinator.url, invitation=invitations["lab"], name="lab")
    researcher = connect(
        coordinator.url, invitation=invitations["researcher"], name="researcher"
    )
    rng = np.random.default_rng(3)
    labels = ["no", "yes"] * 10 + [SECRET]
    data = pd.DataFrame({"x": rng.normal(size=len(labels)), "y": labels})
    try:
        lab.register_dataset("cohort", data, target="y")
        job = researcher.train(
            dataset="cohort",
            model="logistic_regression",
            rounds=1,
            classes=["no", "yes"],
            members=["lab"],
            key_bits=512,
            allow_insecure_keys=True,
            round_deadline=30.0,
        )
        with pytest.raises(JobFailedError, match="not among the job's classes") as err:
            job.wait(timeout=60)
        members = {m["name"]: m for m in job.status()["members"]}
    finally:
        lab.close()
        researcher.close()

    assert SECRET not in str(err.value)
    assert SECRET not in str(members["lab"]["reason"])
    assert SECRET.encode() not in stored_bytes(coordinator.data_dir)
    coordinator_log = [
        r.getMessage() for r in caplog.records if r.name.startswith("workbench.coord")
    ]
    assert coordinator_log and not any(SECRET in line for line in coordinator_log)
    member_log = [
        r.getMessage()
        for r in caplog.records
        if r.name == "workbench.member.agent" and r.levelno == logging.WARNING
    ]
    assert any(SECRET in line for line in member_log)
