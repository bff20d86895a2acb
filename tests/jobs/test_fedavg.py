"""Tests of the FedAvg job's options, pooled standardization and results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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
    FedAvgRunner,
    build_model,
    fedavg_spec,
    history,
    newton_parameters,
    phase,
    pooled_scaler,
)
from workbench.jobs.spec import EncryptionSpec
from workbench.member.datasets import LocalDataset
from workbench.models.logistic import logistic_derivatives, pack_hessian


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
def test_bad_options_are_named(  # type: ignore[no-untyped-def]
    options, message
) -> None:
    """Each wrong option is refused with its name."""
    made = spec().model_copy(update={"options": options})
    with pytest.raises(JobSpecError, match=message):
        FedAvgOptions.from_spec(made)


def test_unknown_model_is_refused() -> None:
    """A model outside the registry is refused with the known names."""
    with pytest.raises(Exception, match="no model 'xgboost'.*logistic_regression"):
        spec(model="xgboost")


def test_pooled_scaler_matches_pooled_data(  # type: ignore[no-untyped-def]
    keys,
) -> None:
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


def test_model_and_history_from_aggregates(  # type: ignore[no-untyped-def]
    keys,
) -> None:
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


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strategy": "scaffold"}, "strategy must be one of"),
        ({"strategy": "newton", "model": "sgd_classifier"}, "logistic_regression only"),
        ({"strategy": "newton", "classes": [0, 1, 2]}, "takes two classes, got 3"),
        ({"strategy": "newton", "model_params": {"C": -1.0}}, "C must be a positive"),
    ],
)
def test_bad_newton_settings_are_named(  # type: ignore[no-untyped-def]
    changes, message
) -> None:
    """A strategy the job cannot run is refused, saying why."""
    with pytest.raises(JobSpecError, match=message):
        spec(**changes)


def _newton_sums(keys, parts, made, steps):  # type: ignore[no-untyped-def]
    """Run ``steps`` encrypted Newton rounds over ``parts`` as the members would."""
    public_key, private_key = keys
    encoding = PackedEncoding(clip=64.0, bits=32, max_contributions=3, max_weight=1000)
    sums: dict[int, dict[str, object]] = {}
    n_features = parts[0][0].shape[1]
    for number in range(1, steps + 1):
        start = newton_parameters(made, sums, n_features)
        uploads = {"gradient": [], "hessian": []}
        for X, y in parts:
            gradient, hessian = logistic_derivatives(start, X, y)
            uploads["gradient"].append(
                encrypt_vector(public_key, gradient, encoding, weight=len(y))
            )
            uploads["hessian"].append(
                encrypt_vector(
                    public_key, pack_hessian(hessian), encoding, weight=len(y)
                )
            )
        sums[number] = {
            name: decrypt_vector(private_key, aggregate(vectors))
            for name, vectors in uploads.items()
        }
    return sums


def test_newton_reaches_the_pooled_optimum(  # type: ignore[no-untyped-def]
    keys,
) -> None:
    """Encrypted Newton steps on label-skewed members match a pooled fit."""
    rng = np.random.default_rng(7)
    weights = np.array([1.5, -2.0, 0.7])
    parts = []
    for n, shift in ((60, -1.0), (90, 0.5), (40, 1.5)):
        X = rng.normal(loc=shift, size=(n, 3))
        y = (rng.random(n) < 1 / (1 + np.exp(-(X @ weights + 0.3)))).astype(float)
        parts.append((X, y))
    made = spec(standardize=False, rounds=8, strategy="newton", model_params={"C": 0.5})
    sums = _newton_sums(keys, parts, made, 8)
    model = build_model(made, sums)
    X_all = np.vstack([X for X, _ in parts])
    y_all = np.concatenate([y for _, y in parts])
    pooled = LogisticRegression(C=0.5, tol=1e-10, max_iter=1000).fit(X_all, y_all)
    np.testing.assert_allclose(model[-1].coef_, pooled.coef_, atol=1e-4)
    np.testing.assert_allclose(model[-1].intercept_, pooled.intercept_, atol=1e-4)
    one_step = build_model(made, {1: sums[1]})
    assert np.max(np.abs(one_step[-1].coef_ - pooled.coef_)) > 1e-3
    table = history(made, sums)
    assert list(table["n_train"]) == [190] * 8


def test_newton_needs_every_training_round(  # type: ignore[no-untyped-def]
    keys,
) -> None:
    """A gap in the training rounds is refused instead of giving a wrong model."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 2))
    y = (X[:, 0] > 0).astype(float)
    made = spec(standardize=False, rounds=3, strategy="newton")
    sums = _newton_sums(keys, [(X, y)], made, 3)
    del sums[2]
    with pytest.raises(JobSpecError, match=r"every training round from 1 on.*\[1, 3\]"):
        build_model(made, sums)


class _Context:
    """One member's side of a job whose rounds live in a dictionary."""

    def __init__(  # type: ignore[no-untyped-def]
        self, made, member, frame, uploads, keys
    ):
        self.job_id, self.spec, self.member = "test", made, member
        self.participants, self.submitter = list(made.members), "a"
        self.public_key, self.private_key = keys
        self._dataset = LocalDataset("d", frame, target="y")
        self._uploads = uploads

    def dataset(self):  # type: ignore[no-untyped-def]
        return self._dataset

    def upload(self, round, vectors):  # type: ignore[no-untyped-def]
        self._uploads.setdefault(round, {})[self.member] = dict(vectors)

    def aggregate(self, round):  # type: ignore[no-untyped-def]
        updates = list(self._uploads[round].values())
        return {name: aggregate([u[name] for u in updates]) for name in updates[0]}


@pytest.mark.parametrize("fraction", [0.0, 0.25])
def test_newton_runner_matches_pooled_fit(  # type: ignore[no-untyped-def]
    keys, fraction
) -> None:
    """Members running the Newton strategy end at the pooled fit of their rows."""
    rng = np.random.default_rng(11)
    frames = {}
    for member, (n, shift) in {"a": (70, -0.8), "b": (50, 1.2)}.items():
        X = rng.normal(loc=shift, scale=[1.0, 30.0], size=(n, 2)) + [0.0, 200.0]
        margin = 1.2 * X[:, 0] - 0.05 * (X[:, 1] - 200.0) + 0.2
        y = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(int)
        frames[member] = pd.DataFrame({"f0": X[:, 0], "f1": X[:, 1], "y": y})
    made = spec(rounds=6, strategy="newton", validation_fraction=fraction)
    uploads: dict = {}
    contexts = {m: _Context(made, m, f, uploads, keys) for m, f in frames.items()}
    runners = {m: FedAvgRunner(made) for m in frames}
    for number in range(1, made.rounds + 1):
        for member in frames:
            runners[member].run_round(contexts[member], number)
    sums = {
        number: {
            name: decrypt_vector(keys[1], vector)
            for name, vector in contexts["a"].aggregate(number).items()
        }
        for number in uploads
    }
    model = build_model(made, sums)
    trained = [runners[m]._split for m in frames]
    X_all = np.vstack([part[0] for part in trained])
    y_all = np.concatenate([part[1] for part in trained])
    assert len(y_all) == (120 if fraction == 0 else 90)
    pooled = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-10))
    pooled.fit(X_all, y_all)
    probe = rng.normal(loc=[0.0, 200.0], scale=[1.0, 30.0], size=(40, 2))
    np.testing.assert_allclose(
        model.predict_proba(probe), pooled.predict_proba(probe), atol=1e-4
    )
    table = history(made, sums)
    training = table[table["phase"] == "train"]
    assert list(training["n_train"]) == [len(y_all)] * 6
    measured, empty = ("train", "val") if fraction == 0 else ("val", "train")
    assert training[f"{measured}_accuracy"].notna().all()
    losses = training[f"{measured}_loss"]
    assert losses.iloc[0] == pytest.approx(np.log(2), abs=1e-3)
    assert losses.iloc[-1] != pytest.approx(losses.iloc[0], abs=1e-2)
    if fraction == 0:
        assert losses.iloc[-1] < losses.iloc[0] - 0.1
    assert training[f"{empty}_accuracy"].isna().all()


def _one_round(keys, made):  # type: ignore[no-untyped-def]
    public_key, private_key = keys
    encoding = PackedEncoding(clip=16.0, bits=16, max_contributions=2, max_weight=1000)
    params = encrypt_vector(public_key, [2.0, -1.0, 0.5, 0.0], encoding, weight=30)
    metrics = encrypt_vector(public_key, [0.3, 0.9], encoding, weight=7)
    return {
        1: {
            "params": decrypt_vector(private_key, aggregate([params])),
            "metrics": decrypt_vector(private_key, aggregate([metrics])),
        }
    }


def test_model_matches_dataframe_columns_by_name(  # type: ignore[no-untyped-def]
    keys,
) -> None:
    """A model of named features refuses reordered columns and takes plain arrays."""
    import warnings

    made = spec(standardize=False, rounds=1, features=["a", "b", "c"])
    model = build_model(made, _one_round(keys, made))
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(20, 3)), columns=["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        by_name = model.predict_proba(frame)
        by_position = model.predict_proba(frame.to_numpy())
    np.testing.assert_array_equal(by_name, by_position)
    assert list(model.feature_names_in_) == ["a", "b", "c"]
    assert model.n_features_in_ == 3
    with pytest.raises(ValueError, match="feature names"):
        model.predict(frame[["c", "b", "a"]])


def test_history_counts_are_whole_numbers(keys) -> None:  # type: ignore[no-untyped-def]
    """members, n_train and n_validation come back as integers, not floats."""
    made = spec(standardize=False, rounds=1)
    table = history(made, _one_round(keys, made))
    for column in ("members", "n_train", "n_validation"):
        assert pd.api.types.is_integer_dtype(table[column]), column
    assert table.loc[0, "n_validation"] == 7


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"features": "mean radius"}, r"features=\['mean radius'\]"),
        ({"features": ["a", 3]}, "list of column names"),
        ({"features": ["a", "a"]}, "a column twice"),
        ({"model_params": {"nope": 1}}, "no hyperparameter 'nope'"),
    ],
)
def test_bad_features_and_model_params_fail_at_submit(  # type: ignore[no-untyped-def]
    changes, message
) -> None:
    """A string of features or an unknown hyperparameter is refused by the spec."""
    with pytest.raises(JobSpecError, match=message):
        spec(**changes)
    good = spec()
    bad = good.model_copy(update=changes)
    with pytest.raises(JobSpecError, match=message):
        get_job_kind("fedavg").check_options(bad)  # type: ignore[misc]
