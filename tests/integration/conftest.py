"""Hospital datasets and local federations of real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.sim import DatasetFile, LocalFederation, split_demo_data

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")


@pytest.fixture(scope="session")
def hospital_files(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, list[DatasetFile]]:
    """Three hospitals' training parts of breast_cancer, as CSV files."""
    root = tmp_path_factory.mktemp("hospitals")
    _, parts = split_demo_data(3, HOSPITALS)
    files = {}
    for hospital, (train, _) in parts.items():
        path = root / f"{hospital}.csv"
        train.to_csv(path, index=False)
        files[hospital] = [DatasetFile("breast_cancer", path, "target")]
    return files


@pytest.fixture
def federation(
    hospital_files: dict[str, list[DatasetFile]], tmp_path: Path
) -> Iterator[LocalFederation]:
    """A coordinator process and one member process per hospital."""
    with LocalFederation(hospital_files, data_dir=tmp_path, poll_wait=2) as running:
        yield running


def train(  # type: ignore[no-untyped-def]
    federation: LocalFederation, **options: object
):
    """Submit a small-key FedAvg job from the researcher."""
    assert federation.researcher is not None
    settings: dict[str, object] = {
        "dataset": "breast_cancer",
        "model": "logistic_regression",
        "rounds": 3,
        "classes": [0, 1],
        "key_bits": 512,
        "allow_insecure_keys": True,
        "seed": 11,
        "round_deadline": 30.0,
    }
    settings.update(options)
    return federation.researcher.train(**settings)  # type: ignore[arg-type]
