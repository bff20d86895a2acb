"""The Python API over a real coordinator: members in threads, a researcher."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.coordinator.conftest import Running, start_coordinator
from workbench.api import Federation, connect
from workbench.errors import AuthenticationError, JobFailedError, JobSpecError
from workbench.sim import split_demo_data


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Running]:
    server, thread, running = start_coordinator(tmp_path / "state")
    yield running
    server.should_exit = True
    thread.join(timeout=10)


def join_all(running: Running, names: list[str]) -> dict[str, Federation]:
    admin = running.coordinator.create_federation("f1")
    with running.client(admin) as client:
        invitations = {n: client.invite("f1", n) for n in names}
    return {
        n: connect(running.url, invitation=i, name=n) for n, i in invitations.items()
    }


def test_connect_with_credential_file(coordinator: Running, tmp_path: Path) -> None:
    """A saved credential connects again as the same member."""
    member = join_all(coordinator, ["a"])["a"]
    path = member.save_credential(tmp_path / "a.json")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = connect(coordinator.url, credential=path)
    assert again.member == "a" and again.name == "f1"
    assert [m["name"] for m in again.members()] == ["a"]
    member.close()
    again.close()


def test_connect_needs_one_way_in(coordinator: Running) -> None:
    """connect() refuses both or neither of invitation and credential."""
    with pytest.raises(JobSpecError, match="exactly one"):
        connect(coordinator.url)
    with pytest.raises(AuthenticationError, match="not known"):
        connect(coordinator.url, invitation="wbi_nothing", name="a")


def test_train_end_to_end(coordinator: Running) -> None:
    """Two members in threads train with a researcher; model and history come back."""
    federations = join_all(coordinator, ["hospital-a", "hospital-b", "researcher"])
    _, parts = split_demo_data(1, ["hospital-a", "hospital-b"])
    try:
        for name in ("hospital-a", "hospital-b"):
            federations[name].register_dataset(
                "cancer", parts[name][0], target="target", publish=True
            )
        researcher = federations["researcher"]
        with pytest.raises(JobSpecError, match="encrypt=False is not offered"):
            researcher.train(
                dataset="cancer",
                model="logistic_regression",
                rounds=1,
                classes=[0, 1],
                encrypt=False,
            )
        job = researcher.train(
            dataset="cancer",
            model="sgd_classifier",
            rounds=3,
            classes=[0, 1],
            key_bits=512,
            allow_insecure_keys=True,
            seed=4,
        )
        progress = io.StringIO()
        job.wait(progress=True, stream=progress, timeout=120)
        status = job.status()
        history = job.history
        model = job.model
        published = {m["name"]: m["datasets"] for m in researcher.members()}
    finally:
        for federation in federations.values():
            federation.close()
    assert "round 5/5 completed" in progress.getvalue()
    assert status["state"] == "completed"
    assert list(history["phase"]) == ["scale", "moments", "train", "train", "train"]
    assert history["n_train"].iloc[0] > 0
    assert 0.5 < status["metrics"]["val_accuracy"] <= 1.0
    test = pd.concat([parts[n][1] for n in parts])
    accuracy = np.mean(
        model.predict(test.drop(columns="target").to_numpy()) == test["target"]
    )
    assert accuracy > 0.85
    assert published["hospital-a"][0]["rows"] == len(parts["hospital-a"][0])
    assert "mean radius" in published["hospital-a"][0]["schema"]


def test_failed_job_raises_with_reason(coordinator: Running) -> None:
    """A job whose only member lacks the dataset fails, and wait() says why."""
    federations = join_all(coordinator, ["a", "researcher"])
    try:
        federations["a"].register_dataset(
            "other", pd.DataFrame({"x": [1.0], "y": [0]}), target="y"
        )
        job = federations["researcher"].train(
            dataset="cancer",
            model="logistic_regression",
            rounds=1,
            classes=[0, 1],
            key_bits=512,
            allow_insecure_keys=True,
        )
        with pytest.raises(JobFailedError, match="no dataset named 'cancer'"):
            job.wait(timeout=60)
    finally:
        for federation in federations.values():
            federation.close()
