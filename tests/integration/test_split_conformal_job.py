"""Split conformal jobs on a FedAvg model over real coordinator and member processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workbench.jobs.conformal import FederatedSplitConformal
from workbench.jobs.split_conformal import calibration_part, model_parameters
from workbench.sim import DatasetFile, LocalFederation, split_demo_data
from workbench.wire import encode_array

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LABS = ("lab-a", "lab-b", "lab-c")
SMALL_KEYS: dict[str, Any] = {"key_bits": 512, "allow_insecure_keys": True}


def _xy(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return frame.drop(columns="target").to_numpy(), frame["target"].to_numpy()


@pytest.fixture(scope="module")
def lab_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each lab's training rows, a calibration dataset from half its held-out rows.

    ``held_out`` holds every lab's held-out rows, ``test`` those not in a
    calibration dataset.
    """
    root = tmp_path_factory.mktemp("labs")
    _, parts = split_demo_data(2, LABS)
    files: dict[str, list[DatasetFile]] = {}
    frames: dict[str, dict[str, pd.DataFrame]] = {}
    tests, held_outs = [], []
    for lab, (train, held_out) in parts.items():
        half = len(held_out) // 2
        calibration = held_out.iloc[:half].reset_index(drop=True)
        tests.append(held_out.iloc[half:])
        held_outs.append(held_out)
        broken = (
            calibration.drop(columns="mean area") if lab == "lab-c" else calibration
        )
        paths = {
            "cancer": train,
            "cancer_calibration": calibration,
            "broken_calibration": broken,
        }
        files[lab] = []
        for name, frame in paths.items():
            path = root / f"{lab}-{name}.csv"
            frame.to_csv(path, index=False)
            files[lab].append(DatasetFile(name, path, "target"))
        frames[lab] = {name: pd.read_csv(root / f"{lab}-{name}.csv") for name in paths}
    return {
        "files": files,
        "frames": frames,
        "held_out": _xy(pd.concat(held_outs)),
        "test": _xy(pd.concat(tests)),
    }


@pytest.fixture(scope="module")
def federation(
    lab_data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalFederation]:
    """A coordinator process and one member process per lab."""
    root = tmp_path_factory.mktemp("federation")
    with LocalFederation(lab_data["files"], data_dir=root, poll_wait=2) as running:
        yield running


@pytest.fixture(scope="module")
def fedavg(federation: LocalFederation) -> Any:
    """A finished FedAvg job on the labs' training rows (20% held out)."""
    assert federation.researcher is not None
    job = federation.researcher.train(
        dataset="cancer",
        model="logistic_regression",
        rounds=3,
        classes=[0, 1],
        seed=5,
        round_deadline=60.0,
        **SMALL_KEYS,
    )
    return job.wait(timeout=240)


def stored_bytes(federation: LocalFederation) -> bytes:
    """Everything the coordinator wrote: database, blob files and its log."""
    chunks = [p.read_bytes() for p in federation.state_dir.rglob("*") if p.is_file()]
    chunks.append(federation.coordinator_log.read_bytes())
    return b"\n".join(chunks)


def test_validation_threshold_equals_the_library_and_covers(
    federation: LocalFederation, lab_data: dict[str, Any], fedavg: Any
) -> None:
    """The job's threshold is the library's on the held-out rows; coverage is near."""
    assert federation.researcher is not None

    predictor = federation.researcher.split_conformal(fedavg, bins=200, **SMALL_KEYS)

    parts = [
        calibration_part(fedavg.spec, lab, *_xy(lab_data["frames"][lab]["cancer"]))
        for lab in LABS
    ]
    library = FederatedSplitConformal(fedavg.model, bins=200, key_size=512)
    library.calibrate(parts)
    assert predictor.last_report_.answered == list(LABS)
    assert predictor.calibration_size_ == sum(len(y) for _, y in parts)
    np.testing.assert_array_equal(predictor.counts_, library.counts_)
    for level in (0.8, 0.9, 0.95):
        assert predictor.threshold(level).tolist() == [library.threshold(level)] * 2
    X_test, y_test = lab_data["held_out"]
    np.testing.assert_array_equal(
        predictor.predict_set(X_test, 0.9), library.predict_set(X_test, 0.9)
    )
    # About 85 calibration and 143 test rows: the coverage of one split has a
    # standard deviation near 0.04 around the confidence.
    result = predictor.evaluate(X_test, y_test, confidence=0.9)
    assert abs(result["coverage"] - 0.9) < 0.1
    assert result["size"] < 1.5

    stored = stored_bytes(federation)
    parameters = model_parameters(fedavg.spec, fedavg.model)["parameters"]
    assert encode_array(parameters) not in stored
    assert parameters.tobytes()[:32] not in stored
    for X_cal, y_cal in parts:
        scores = library.scores(X_cal, y_cal)
        assert encode_array(scores) not in stored
        assert scores.tobytes()[:32] not in stored
        assert np.sort(scores).tobytes()[:32] not in stored
        assert f"{scores[0]:.8f}".encode() not in stored
        assert encode_array(library.histogram(X_cal, y_cal)) not in stored


def test_mondrian_thresholds_equal_the_library_per_class(
    federation: LocalFederation, lab_data: dict[str, Any], fedavg: Any
) -> None:
    """Under Mondrian each class's threshold is the library's on that class's rows."""
    assert federation.researcher is not None

    predictor = federation.researcher.split_conformal(
        fedavg.id,
        calibration="dataset",
        dataset="cancer_calibration",
        mondrian=True,
        bins=100,
        **SMALL_KEYS,
    )

    frames = [_xy(lab_data["frames"][lab]["cancer_calibration"]) for lab in LABS]
    thresholds = []
    for label in (0, 1):
        parts = [(X[y == label], y[y == label]) for X, y in frames]
        library = FederatedSplitConformal(fedavg.model, bins=100, key_size=512)
        library.calibrate(parts)
        assert predictor.class_sizes_[label] == library.calibration_size_
        thresholds.append(library.threshold(0.8))
    assert predictor.threshold(0.8).tolist() == thresholds
    X_test, y_test = lab_data["test"]
    result = predictor.evaluate(X_test, y_test, confidence=0.8)
    assert set(result["coverage_per_class"]) == {0, 1}


def test_failing_member_is_reported_and_the_others_pooled(
    federation: LocalFederation, lab_data: dict[str, Any], fedavg: Any
) -> None:
    """A member whose calibration dataset lacks a column fails; two are pooled."""
    assert federation.researcher is not None

    predictor = federation.researcher.split_conformal(
        fedavg,
        calibration="dataset",
        dataset="broken_calibration",
        bins=50,
        **SMALL_KEYS,
    )

    report = predictor.last_report_
    assert report.answered == ["lab-a", "lab-b"]
    assert list(report.failures) == ["lab-c"]
    assert "29 feature columns" in report.failures["lab-c"]
    parts = [_xy(lab_data["frames"][lab]["broken_calibration"]) for lab in LABS[:2]]
    library = FederatedSplitConformal(fedavg.model, bins=50, encrypted=False)
    library.calibrate(parts)
    np.testing.assert_array_equal(predictor.counts_, library.counts_)
