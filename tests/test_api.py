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
from workbench.errors import (
    AuthenticationError,
    ConfigurationError,
    CredentialFileError,
    InvalidNameError,
    JobFailedError,
    JobSpecError,
)
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


def test_train_newton_reaches_the_pooled_model(coordinator: Running) -> None:
    """strategy="newton" on every row predicts as a pooled logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    federations = join_all(coordinator, ["hospital-a", "hospital-b", "researcher"])
    _, parts = split_demo_data(2, ["hospital-a", "hospital-b"])
    try:
        for name in ("hospital-a", "hospital-b"):
            federations[name].register_dataset(
                "cancer", parts[name][0], target="target"
            )
        job = federations["researcher"].train(
            dataset="cancer",
            model="logistic_regression",
            rounds=8,
            classes=[0, 1],
            strategy="newton",
            validation_fraction=0.0,
            key_bits=512,
            allow_insecure_keys=True,
        )
        model = job.wait(timeout=180).model
    finally:
        for federation in federations.values():
            federation.close()

    train = pd.concat([parts[n][0] for n in parts])
    test = pd.concat([parts[n][1] for n in parts])
    X_train, X_test = (f.drop(columns="target").to_numpy() for f in (train, test))
    pooled = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    pooled.fit(X_train, train["target"])
    # Gradients and Hessians travel as 16-bit fixed-point values, so the federated
    # optimum sits within the packing error of the pooled one, not on it.
    federated_p = model.predict_proba(X_test)[:, 1]
    pooled_p = pooled.predict_proba(X_test)[:, 1]
    np.testing.assert_allclose(federated_p, pooled_p, atol=1e-2)
    assert np.mean((federated_p >= 0.5) == (pooled_p >= 0.5)) >= 0.99


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
    with pytest.raises(ConfigurationError, match="exactly one"):
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


def invite(running: Running, names: list[str]) -> dict[str, str]:
    admin = running.coordinator.create_federation("f1")
    with running.client(admin) as client:
        return {n: client.invite("f1", n) for n in names}


def test_join_refuses_to_overwrite_a_credential(
    coordinator: Running, tmp_path: Path
) -> None:
    """save_to= an existing file is refused before the invitation is used."""
    invitations = invite(coordinator, ["a", "b"])
    path = tmp_path / "a.json"
    first = connect(
        coordinator.url, invitation=invitations["a"], name="a", save_to=path
    )
    first.close()
    with pytest.raises(CredentialFileError, match="exists already"):
        connect(coordinator.url, invitation=invitations["b"], name="b", save_to=path)
    assert connect(coordinator.url, credential=path).member == "a"
    again = connect(
        coordinator.url,
        invitation=invitations["b"],
        name="b",
        save_to=path,
        overwrite=True,
    )
    again.close()
    assert connect(coordinator.url, credential=path).member == "b"


def test_join_checks_the_path_before_redeeming(
    coordinator: Running, tmp_path: Path
) -> None:
    """A folder as save_to is refused and the invitation stays usable."""
    invitations = invite(coordinator, ["a"])
    with pytest.raises(CredentialFileError, match="is a folder"):
        connect(
            coordinator.url, invitation=invitations["a"], name="a", save_to=tmp_path
        )
    joined = connect(coordinator.url, invitation=invitations["a"], name="a")
    assert joined.member == "a"
    joined.close()


def test_join_saves_a_fallback_when_the_write_fails(
    coordinator: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails after joining puts the credential beside the path."""
    invitations = invite(coordinator, ["a"])
    target = tmp_path / "taken"
    target.mkdir()
    # The path turns into a folder between the check and the write.
    monkeypatch.setattr("workbench.api.check_writable", lambda *a, **k: None)
    with pytest.raises(CredentialFileError, match="saved to .*instead") as caught:
        connect(coordinator.url, invitation=invitations["a"], name="a", save_to=target)
    spares = [p for p in tmp_path.iterdir() if p.name.startswith("taken.")]
    assert len(spares) == 1 and str(spares[0]) in caught.value.message
    assert oct(spares[0].stat().st_mode & 0o777) == "0o600"
    assert connect(coordinator.url, credential=spares[0]).member == "a"


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"url": 18471, "credential": "a.json"}, ConfigurationError, "url must"),
        ({"credential": {"member": "a"}}, ConfigurationError, "got a dict"),
        ({"invitation": "wbi_x"}, ConfigurationError, "needs name="),
        ({"invitation": "wbi_x", "name": "../x"}, InvalidNameError, "member name"),
    ],
)
def test_connect_arguments_are_checked(
    coordinator: Running,
    arguments: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    """Arguments of the wrong type or form raise a WorkbenchError saying why."""
    given = {"url": coordinator.url, **arguments}
    with pytest.raises(error, match=match):
        connect(**given)  # type: ignore[arg-type]


def test_connect_with_a_folder_as_credential(
    coordinator: Running, tmp_path: Path
) -> None:
    """A folder passed as credential= is refused as a folder."""
    with pytest.raises(CredentialFileError, match="is a folder"):
        connect(coordinator.url, credential=tmp_path)


@pytest.fixture
def pair(coordinator: Running) -> Iterator[dict[str, Federation]]:
    federations = join_all(coordinator, ["a", "b"])
    yield federations
    for federation in federations.values():
        federation.close()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"key_bits": 1024}, "key_bits=1024"),
        ({"key_bits": 100}, "key_bits must be 2048 or 3072"),
        ({"rounds": 10**6}, "rounds must be a whole number from 1 to 9998, got"),
        ({"rounds": 2.5}, "rounds must be a whole number .* got 2.5"),
        ({"rounds": "3"}, "rounds must be a whole number .* got '3'"),
        ({"rounds": 0}, "rounds must be at least 1, got 0"),
        ({"min_members": 0}, "min_members must be .* got 0"),
        ({"min_members": 5}, "from 1 to the 1 participant.* got 5"),
        ({"round_deadline": -1}, "round_deadline must .* got -1"),
        ({"round_deadline": float("nan")}, "round_deadline must .* got nan"),
        ({"seed": -1}, "seed must be .* got -1"),
        ({"members": []}, r"members=\[\] names no member"),
        ({"members": ["nobody"]}, r"\['nobody'\], not members of 'f1'"),
        ({"members": "b"}, r"members must be a list .* got 'b'"),
        ({"model_params": {"C": [1]}}, "model_params"),
        ({"strategy": "bogus"}, "strategy must be one of .* got 'bogus'"),
        (
            {"strategy": "newton", "model": "sgd_classifier"},
            "trains logistic_regression only",
        ),
    ],
)
def test_train_options_are_checked(
    pair: dict[str, Federation], options: dict[str, object], match: str
) -> None:
    """A bad option of train() raises JobSpecError naming it, its value, the rule."""
    settings: dict[str, object] = {
        "dataset": "cancer",
        "model": "logistic_regression",
        "rounds": 1,
        "classes": [0, 1],
        "members": ["b"],
    }
    settings.update(options)
    with pytest.raises(JobSpecError, match=match):
        pair["a"].train(**settings)  # type: ignore[arg-type]


def test_submit_refuses_a_string(pair: dict[str, Federation]) -> None:
    """submit() of something that is not a spec says what to pass."""
    with pytest.raises(ConfigurationError, match="JobSpec or a dict .* got a str"):
        pair["a"].submit("spec")  # type: ignore[arg-type]


def test_conformal_refuses_unknown_options(pair: dict[str, Federation]) -> None:
    """An unknown keyword of conformal() is named, with the allowed ones."""
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) \['evil'\]"):
        pair["a"].conformal(dataset="cancer", classes=[0, 1], evil=3)


def test_register_dataset_refuses_rows_as_lists(pair: dict[str, Federation]) -> None:
    """Rows given as a list of lists are refused with what to pass."""
    with pytest.raises(ConfigurationError, match="must be a pandas DataFrame"):
        pair["a"].register_dataset("c", [[1, 2]], target="y")  # type: ignore[arg-type]
    with pytest.raises(InvalidNameError, match="dataset name"):
        pair["a"].register_dataset("../../x", pd.DataFrame({"y": [1]}), target="y")


def test_jobs_ask_publishers_and_pin_their_features(coordinator: Running) -> None:
    """Default participants publish the dataset; the model matches columns by name."""
    federations = join_all(coordinator, ["a", "b", "idle", "researcher"])
    _, parts = split_demo_data(1, ["a", "b"])
    try:
        for name in ("a", "b"):
            federations[name].register_dataset(
                "cancer", parts[name][0], target="target", publish=True
            )
        researcher = federations["researcher"]
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
        model = job.wait(progress=True, stream=progress, timeout=120).model
    finally:
        for federation in federations.values():
            federation.close()
    assert job.spec.members == ["a", "b"]
    test = pd.concat([parts[n][1] for n in parts])
    X = test.drop(columns="target")
    assert job.spec.features == list(X.columns)
    assert list(model.feature_names_in_) == list(X.columns)
    accuracy = np.mean(model.predict(X) == test["target"])
    assert accuracy > 0.85
    with pytest.raises(ValueError, match="feature names"):
        model.predict(X[X.columns[::-1]])
    lines = progress.getvalue().splitlines()
    assert "\r" not in progress.getvalue() and "round 5/5 completed" in lines[-1]


def test_without_publishers_every_member_is_asked(
    coordinator: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """With no dataset name published, every other member is asked, with a warning."""
    federations = join_all(coordinator, ["a", "b", "researcher"])
    try:
        with caplog.at_level("WARNING", logger="workbench.api"):
            chosen = federations["researcher"]._participants("cancer", None)
    finally:
        for federation in federations.values():
            federation.close()
    assert chosen == ["a", "b"]
    assert "no other member published a dataset 'cancer'" in caplog.text


def test_train_refuses_a_string_of_features(coordinator: Running) -> None:
    """features='mean radius' is refused before anything is sent."""
    federations = join_all(coordinator, ["a"])
    try:
        with pytest.raises(JobSpecError, match=r"features=\['mean radius'\]"):
            federations["a"].train(
                dataset="cancer",
                model="logistic_regression",
                rounds=1,
                classes=[0, 1],
                features="mean radius",  # type: ignore[arg-type]
            )
    finally:
        federations["a"].close()
