"""Tests of the FedAvg job's options, pooled standardization and results."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.crypto import (
    PackedEncoding,
    aggregate,
    decrypt_vector,
    encrypt_vector,
    generate_keypair,
)
from workbench.errors import JobSpecError
from workbench.jobs import get_job_kind
from workbench.jobs.fedavg import (
    FedAvgOptions,
    build_model,
    fedavg_spec,
    history,
    phase,
    pooled_scaler,
)
from workbench.jobs.spec import EncryptionSpec


@pytest.fixture(scope="module")
def keys():  # type: ignore[no-untyped-def]
    return generate_keypair(512, allow_insecure=True)


def spec(**changes):  # type: ignore[no-untyped-def]
    options = {
        "dataset": "d",
        "model": "logistic_regression",
        "rounds": 3,
        "classes": [0, 1],
        "members": ["a", "b"],
        "encryption": EncryptionSpec(key_bits=512, allow_insecure_keys=True),
    }
    options.update(changes)
    return fedavg_spec(**options)


def test_spec_adds_setup_rounds() -> None:
    """Standardization adds a scale and a moments round before training."""
    made = spec()
    assert made.rounds == 5
    assert [phase(made, r) for r in range(1, 6)] == ["scale", "moments"] + ["train"] * 3
    plain = spec(standardize=False)
    assert plain.rounds == 3 and phase(plain, 1) == "train"


def test_fedavg_kind_is_registered() -> None:
    """The member agent finds the FedAvg runner by its kind."""
    assert get_job_kind("fedavg").check_options is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"classes": [1]}, "two or more labels"),
        ({"classes": [0, 1], "local_epochs": 0}, "positive integer"),
        ({"classes": [0, 1], "seed_everything": True}, "takes no options"),
        ({"classes": [0, 1], "validation_fraction": 0.95}, "between 0 and 0.9"),
    ],
)
def test_bad_options_are_named(options, message) -> None:  # type: ignore[no-untyped-def]
    """Each wrong option is refused with its name."""
    made = spec().model_copy(update={"options": options})
    with pytest.raises(JobSpecError, match=message):
        FedAvgOptions.from_spec(made)


def test_unknown_model_is_refused() -> None:
    """A model outside the registry is refused with the known names."""
    with pytest.raises(Exception, match="no model 'xgboost'.*logistic_regression"):
        spec(model="xgboost")


def test_pooled_scaler_matches_pooled_data(keys) -> None:  # type: ignore[no-untyped-def]
    """Moments computed under encryption give the pooled mean and std."""
    public_key, private_key = keys
    rng = np.random.default_rng(3)
    parts = [
        rng.normal(loc=[0.01, 500.0, -3.0], scale=[0.002, 120.0, 1.0], size=(n, 3))
        for n in (40, 75, 22)
    ]
    pooled = np.vstack(parts)
    scale_encoding = PackedEncoding(
        clip=64.0, bits=16, max_contributions=3, max_weight=100
    )
    moment_encoding = PackedEncoding(
        clip=1e6, bits=32, max_contributions=3, max_weight=100
    )
    scales = [
        encrypt_vector(public_key, np.log(p.std(axis=0)), scale_encoding, weight=len(p))
        for p in parts
    ]
    scale = decrypt_vector(private_key, aggregate(scales))
    g = np.exp(scale.mean())
    moments = [
        encrypt_vector(
            public_key,
            np.concatenate([(p / g).mean(axis=0), ((p / g) ** 2).mean(axis=0)]),
            moment_encoding,
            weight=len(p),
        )
        for p in parts
    ]
    mean, std = pooled_scaler(scale, decrypt_vector(private_key, aggregate(moments)))
    np.testing.assert_allclose(mean, pooled.mean(axis=0), rtol=1e-3)
    np.testing.assert_allclose(std, pooled.std(axis=0), rtol=1e-3)


def test_model_and_history_from_aggregates(keys) -> None:  # type: ignore[no-untyped-def]
    """The global model is the weighted mean of the members' parameters."""
    public_key, private_key = keys
    made = spec(standardize=False, rounds=1)
    encoding = PackedEncoding(clip=16.0, bits=16, max_contributions=2, max_weight=1000)
    params = [np.linspace(-1, 1, 4), np.linspace(1, -1, 4) * 0.5]
    weights = [30, 10]
    summed = aggregate(
        [
            encrypt_vector(public_key, p, encoding, weight=w)
            for p, w in zip(params, weights, strict=True)
        ]
    )
    metrics = aggregate(
        [
            encrypt_vector(public_key, [0.3, 0.9], encoding, weight=8),
            encrypt_vector(public_key, [0.5, 0.7], encoding, weight=2),
        ]
    )
    sums = {
        1: {
            "params": decrypt_vector(private_key, summed),
            "metrics": decrypt_vector(private_key, metrics),
        }
    }
    model = build_model(made, sums)
    expected = (params[0] * 30 + params[1] * 10) / 40
    np.testing.assert_allclose(model[-1].coef_.ravel(), expected[:3], atol=1e-3)
    np.testing.assert_allclose(model[-1].intercept_, expected[3:], atol=1e-3)
    assert model.predict(np.zeros((2, 3))).shape == (2,)
    table = history(made, sums)
    assert table.loc[0, "n_train"] == 40 and table.loc[0, "n_validation"] == 10
    assert table.loc[0, "val_loss"] == pytest.approx(0.34, abs=1e-3)
    assert table.loc[0, "val_accuracy"] == pytest.approx(0.86, abs=1e-3)
