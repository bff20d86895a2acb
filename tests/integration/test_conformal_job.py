"""Conformal jobs over a real coordinator process and real member processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from workbench.errors import ConformalError
from workbench.jobs.conformal import (
    ConformalQuerier,
    FederatedConformalClassifier,
    FederatedConformalRegressor,
    member_predictor,
    member_reply,
)
from workbench.sim import DatasetFile, LocalFederation, split_demo_data
from workbench.wire import encode_array

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LABS = ("lab-a", "lab-b", "lab-c")
SMALL_KEYS: dict[str, Any] = {"key_bits": 512, "allow_insecure_keys": True}
CANCER: dict[str, Any] = {"dataset": "cancer", "classes": [0, 1], **SMALL_KEYS}


@pytest.fixture(scope="module")
def lab_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each lab's CSV files, and the held-out objects of breast_cancer."""
    root = tmp_path_factory.mktemp("labs")
    _, parts = split_demo_data(5, LABS)
    diabetes = load_diabetes(as_frame=True).frame
    order = np.random.default_rng(7).permutation(len(diabetes))
    files: dict[str, list[DatasetFile]] = {}
    for index, (lab, (train, _)) in enumerate(parts.items()):
        cancer = root / f"{lab}-cancer.csv"
        train.to_csv(cancer, index=False)
        # The same rows again, but lab-c's copy lacks a column: it fails there.
        shifted = root / f"{lab}-shifted.csv"
        broken = train.drop(columns=["mean radius"]) if lab == "lab-c" else train
        broken.to_csv(shifted, index=False)
        rows = diabetes.iloc[order[index * 120 : (index + 1) * 120]]
        sugar = root / f"{lab}-diabetes.csv"
        rows.to_csv(sugar, index=False)
        files[lab] = [
            DatasetFile("cancer", cancer, "target"),
            DatasetFile("shifted", shifted, "target"),
            DatasetFile("diabetes", sugar, "target"),
        ]
    test = pd.concat([held_out for _, held_out in parts.values()])
    queries = test.drop(columns="target").to_numpy()[:40]
    labels = test["target"].to_numpy()[:40]
    diabetes_queries = diabetes.iloc[order[360:385]]
    return {
        "files": files,
        "X": queries,
        "y": labels,
        "X_reg": diabetes_queries.drop(columns="target").to_numpy(),
        "y_reg": diabetes_queries["target"].to_numpy(),
    }


@pytest.fixture(scope="module")
def federation(
    lab_files: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalFederation]:
    """A coordinator process and one member process per lab."""
    root = tmp_path_factory.mktemp("federation")
    with LocalFederation(lab_files["files"], data_dir=root, poll_wait=2) as running:
        yield running


def local_members(
    querier: ConformalQuerier, files: dict[str, list[DatasetFile]], dataset: str
) -> dict[str, Any]:
    """The members' predictors rebuilt in this process with the job's seeds."""
    spec = querier.last_job_.spec
    members = {}
    for lab, datasets in files.items():
        found = next(d for d in datasets if d.name == dataset)
        frame = pd.read_csv(found.path)
        X = frame.drop(columns="target").to_numpy()
        members[lab] = member_predictor(spec, lab, X, frame["target"].to_numpy())
    return members


def stored_bytes(federation: LocalFederation) -> bytes:
    """Everything the coordinator wrote: database, blob files and its log."""
    chunks = [p.read_bytes() for p in federation.state_dir.rglob("*") if p.is_file()]
    chunks.append(federation.coordinator_log.read_bytes())
    return b"\n".join(chunks)


def test_mean_rule_sets_equal_the_in_process_library(
    federation: LocalFederation, lab_files: dict[str, Any]
) -> None:
    """Prediction sets of the mean rule over processes equal the library's."""
    assert federation.researcher is not None
    querier = federation.researcher.conformal(rule="mean", seed=21, **CANCER)

    sets = querier.predict_set(lab_files["X"], confidence=0.9)

    members = local_members(querier, lab_files["files"], "cancer")
    expected = FederatedConformalClassifier(
        members, rule="mean", encrypted=True, key_size=512
    ).predict_set(lab_files["X"], confidence=0.9)
    assert querier.last_report_.answered == list(LABS)
    assert querier.classes_.tolist() == [0, 1]
    np.testing.assert_array_equal(sets, expected)
    assert 1.0 <= sets.sum(axis=1).mean() < 2.0


def test_encrypted_rules_keep_p_values_out_of_the_coordinator(
    federation: LocalFederation, lab_files: dict[str, Any]
) -> None:
    """No member's p-values appear in plaintext in the coordinator's storage."""
    assert federation.researcher is not None
    X = lab_files["X"]
    replies: dict[str, list[np.ndarray]] = {}
    for rule in ("mean", "weighted_mean", "twice_mean"):
        querier = federation.researcher.conformal(rule=rule, seed=33, **CANCER)
        combined = querier.predict_p(X, confidence=0.8)
        members = local_members(querier, lab_files["files"], "cancer")
        expected = FederatedConformalClassifier(
            members, rule=rule, encrypted=True, key_size=512
        ).predict_p(X, confidence=0.8)
        np.testing.assert_allclose(combined, expected, atol=1e-12)
        for lab, predictor in local_members(
            querier, lab_files["files"], "cancer"
        ).items():
            reply = member_reply(predictor, X, confidence=0.8, rule=rule)
            replies.setdefault(lab, []).append(reply.p_values)

    stored = stored_bytes(federation)
    # The query objects are disclosed by design: the scan must find them.
    assert encode_array(np.asarray(X, dtype=np.float64)) in stored
    for lab, matrices in replies.items():
        for p_values in matrices:
            assert encode_array(p_values) not in stored, lab
            assert p_values.tobytes()[:32] not in stored, lab
            assert p_values.T.copy().tobytes()[:32] not in stored, lab
            assert f"{p_values[0, 0]:.8f}".encode() not in stored, lab


def test_median_rule_uses_sealed_blobs(
    federation: LocalFederation, lab_files: dict[str, Any]
) -> None:
    """Under median each member's p-values reach the querier sealed, and only it."""
    assert federation.researcher is not None
    querier = federation.researcher.conformal(rule="median", seed=8, **CANCER)

    p_values = querier.predict_p(lab_files["X"])

    members = local_members(querier, lab_files["files"], "cancer")
    expected = FederatedConformalClassifier(
        members, rule="median", encrypted=False
    ).predict_p(lab_files["X"])
    np.testing.assert_array_equal(p_values, expected)
    job = querier.last_job_
    blobs = federation.researcher.client.list_blobs(job.id, 1)
    sealed = [b for b in blobs if b["name"] == "p_values"]
    assert sorted(b["sender"] for b in sealed) == list(LABS)
    assert {b["recipient"] for b in sealed} == {"researcher"}
    stored = stored_bytes(federation)
    for predictor in members.values():
        reply = member_reply(predictor, lab_files["X"], rule="median")
        assert encode_array(reply.p_values) not in stored


def test_failing_member_is_reported_and_the_others_combined(
    federation: LocalFederation, lab_files: dict[str, Any]
) -> None:
    """A member whose dataset lacks a column fails; the two others answer."""
    assert federation.researcher is not None
    querier = federation.researcher.conformal(
        dataset="shifted", rule="mean", classes=[0, 1], seed=4, **SMALL_KEYS
    )

    result = querier.evaluate(lab_files["X"], lab_files["y"], confidence=0.9)

    report = querier.last_report_
    assert report.answered == ["lab-a", "lab-b"]
    assert list(report.failures) == ["lab-c"]
    assert "29 feature columns" in report.failures["lab-c"]
    members = local_members(querier, lab_files["files"], "cancer")
    del members["lab-c"]
    expected = FederatedConformalClassifier(
        members, rule="mean", encrypted=True, key_size=512
    ).evaluate(lab_files["X"], lab_files["y"], confidence=0.9)
    assert result == expected


def test_regression_intervals_equal_the_in_process_library(
    federation: LocalFederation, lab_files: dict[str, Any]
) -> None:
    """Intervals of a regression job over processes equal the library's."""
    assert federation.researcher is not None
    grid = np.linspace(0.0, 400.0, 81)
    querier = federation.researcher.conformal(
        dataset="diabetes",
        task="regression",
        candidates=grid.tolist(),
        model_params={"n_estimators": 30},
        seed=2,
        **SMALL_KEYS,
    )

    intervals = querier.predict_int(lab_files["X_reg"], confidence=0.8)

    members = local_members(querier, lab_files["files"], "diabetes")
    expected = FederatedConformalRegressor(
        members, candidates=grid, rule="mean", key_size=512
    ).predict_int(lab_files["X_reg"], confidence=0.8)
    np.testing.assert_array_equal(intervals, expected)
    assert np.all(intervals[:, 1] - intervals[:, 0] > 0)


def test_bad_confidence_is_refused_before_any_job(
    federation: LocalFederation, lab_files: dict[str, Any]
) -> None:
    """A confidence outside (0, 1) is refused and no job is submitted."""
    assert federation.researcher is not None
    querier = federation.researcher.conformal(**CANCER)
    before = len(federation.researcher.jobs())

    with pytest.raises(ConformalError, match="confidence"):
        querier.predict_set(lab_files["X"], confidence=1.5)

    assert len(federation.researcher.jobs()) == before


def test_regression_handle_refuses_predict_set(federation: LocalFederation) -> None:
    """predict_set on a regression querier says which method to use."""
    assert federation.researcher is not None
    querier = federation.researcher.conformal(
        dataset="diabetes", task="regression", candidates=[0, 1, 2], **SMALL_KEYS
    )

    with pytest.raises(ConformalError, match="predict_int"):
        querier.predict_set(np.zeros((1, 10)), confidence=0.9)
