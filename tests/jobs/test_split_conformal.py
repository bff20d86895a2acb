"""Tests of the split conformal job kind: its spec, the shared model, the rows."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import JobSpecError
from workbench.jobs import get_job_kind
from workbench.jobs.fedavg import fedavg_spec, member_seed
from workbench.jobs.split_conformal import (
    calibration_histogram,
    calibration_part,
    decode_model,
    encode_model,
    model_parameters,
    shared_model,
    split_conformal_spec,
)
from workbench.wire import encode_array, encode_bundle

MEMBERS = ["lab-a", "lab-b"]


def _fedavg(**options: object):  # type: ignore[no-untyped-def]
    settings: dict[str, object] = {
        "dataset": "cancer",
        "model": "logistic_regression",
        "rounds": 3,
        "classes": [0, 1],
        "members": MEMBERS,
        "seed": 3,
    }
    settings.update(options)
    return fedavg_spec(**settings)  # type: ignore[arg-type]


def _parameters(seed: int, n_features: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "mean": rng.normal(size=n_features),
        "scale": rng.uniform(0.5, 2.0, size=n_features),
        "parameters": rng.normal(size=n_features + 1),
    }


def test_spec_is_registered_and_names_the_fedavg_job() -> None:
    """The spec carries the FedAvg spec and id, and the kind's check accepts it."""
    trained = _fedavg()

    spec = split_conformal_spec(fedavg_job="f1", fedavg_spec=trained, bins=50)

    assert spec.kind == "split_conformal"
    assert spec.members == MEMBERS
    assert spec.options["fedavg_job"] == "f1"
    assert spec.options["fedavg_spec"] == trained.to_json()
    get_job_kind("split_conformal").check_options(spec)  # type: ignore[misc]


def test_validation_calibration_needs_held_out_rows() -> None:
    """A FedAvg job that trained on every row cannot calibrate on its validation."""
    trained = _fedavg(validation_fraction=0.0)

    with pytest.raises(JobSpecError, match="validation_fraction=0"):
        split_conformal_spec(fedavg_job="f1", fedavg_spec=trained)

    spec = split_conformal_spec(
        fedavg_job="f1", fedavg_spec=trained, calibration="dataset", dataset="fresh"
    )
    assert spec.dataset == "fresh"


def test_members_outside_the_fedavg_job_are_refused() -> None:
    """The model is sent only to members that trained it."""
    with pytest.raises(JobSpecError, match=r"members \['lab-z'\] took no part"):
        split_conformal_spec(
            fedavg_job="f1", fedavg_spec=_fedavg(), members=["lab-a", "lab-z"]
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bins": 0}, "bins must be a whole number from 1"),
        ({"bins": 2.5}, "bins must be a whole number from 1"),
        ({"calibration": "training"}, "calibration must be one of"),
        ({"calibration": "dataset"}, "needs the name of the calibration dataset"),
        ({"dataset": "other"}, "reads the FedAvg job's dataset 'cancer'"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    """Bad bins, calibrations and datasets raise JobSpecError naming the value."""
    with pytest.raises(JobSpecError, match=message):
        split_conformal_spec(
            fedavg_job="f1",
            fedavg_spec=_fedavg(),
            **options,  # type: ignore[arg-type]
        )


def test_calibration_part_is_the_fedavg_validation_split() -> None:
    """The rows are those the FedAvg seed held out, and no training row."""
    trained = _fedavg(validation_fraction=0.25)
    X = np.arange(80.0).reshape(40, 2)
    y = np.tile([0, 1], 20)

    X_cal, y_cal = calibration_part(trained, "lab-b", X, y)

    order = np.random.default_rng(member_seed(trained, "lab-b")).permutation(40)
    np.testing.assert_array_equal(X_cal, X[order[:10]])
    np.testing.assert_array_equal(y_cal, y[order[:10]])
    other, _ = calibration_part(trained, "lab-a", X, y)
    assert not np.array_equal(np.sort(other[:, 0]), np.sort(X_cal[:, 0]))


def test_shared_model_round_trips_through_the_sealed_bundle() -> None:
    """Parameters rebuild the same pipeline after encoding and decoding."""
    trained = _fedavg()
    parameters = _parameters(0)

    model = shared_model(trained, decode_model(encode_model(parameters)))

    back = model_parameters(trained, model)
    for name, values in parameters.items():
        np.testing.assert_array_equal(back[name], values)
    X = np.random.default_rng(1).normal(size=(5, 4))
    logits = ((X - parameters["mean"]) / parameters["scale"]) @ parameters[
        "parameters"
    ][:4] + parameters["parameters"][4]
    np.testing.assert_allclose(
        model.predict_proba(X)[:, 1], 1.0 / (1.0 + np.exp(-logits)), rtol=1e-12
    )


def test_sealed_bundle_with_bad_arrays_is_refused() -> None:
    """A bundle lacking an array, or holding NaN, raises JobSpecError."""
    parameters = _parameters(2)
    partial = encode_bundle({"mean": encode_array(parameters["mean"])})
    with pytest.raises(JobSpecError, match=r"lacks the arrays \['parameters', 'scale'"):
        decode_model(partial)
    parameters["scale"][0] = np.nan
    with pytest.raises(JobSpecError, match="scale holds NaN"):
        decode_model(encode_model(parameters))


def test_mondrian_histogram_counts_each_class_apart() -> None:
    """Per-class histograms follow one another and add up to the plain one."""
    trained = _fedavg()
    model = shared_model(trained, _parameters(3))
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 4))
    y = rng.integers(0, 2, size=60)

    plain = calibration_histogram(model, X, y, classes=[0, 1], bins=20, mondrian=False)
    split = calibration_histogram(model, X, y, classes=[0, 1], bins=20, mondrian=True)

    assert plain.shape == (21,)
    assert split.shape == (42,)
    np.testing.assert_array_equal(split[:21] + split[21:], plain)
    assert split[:21].sum() == int(np.sum(y == 0))
