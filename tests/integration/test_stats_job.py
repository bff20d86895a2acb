"""Federated statistics over a real coordinator process and real member processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workbench.errors import JobFailedError, JobSpecError
from workbench.sim import DatasetFile, LocalFederation, split_demo_data

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LABS = ("lab-a", "lab-b", "lab-c")
SMALL_KEYS: dict[str, Any] = {"key_bits": 512, "allow_insecure_keys": True}
COLUMNS = ["mean radius", "mean texture", "worst area"]
RANGES = {
    "mean radius": (5.0, 30.0),
    "mean texture": (10.0, 35.0),
    "worst area": (200.0, 3000.0),
}


@pytest.fixture(scope="module")
def lab_frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each lab's CSV file of breast_cancer rows, and the frames themselves."""
    root = tmp_path_factory.mktemp("labs")
    _, parts = split_demo_data(3, LABS)
    files, frames = {}, {}
    for lab, (train, _) in parts.items():
        path = root / f"{lab}.csv"
        train.to_csv(path, index=False)
        files[lab] = [DatasetFile("cancer", path, "target")]
        frames[lab] = pd.read_csv(path)
    return {"files": files, "frames": frames}


@pytest.fixture(scope="module")
def federation(
    lab_frames: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalFederation]:
    """A coordinator process and one member process per lab."""
    root = tmp_path_factory.mktemp("federation")
    with LocalFederation(lab_frames["files"], data_dir=root, poll_wait=2) as running:
        yield running


def test_pooled_statistics_equal_those_of_the_pooled_rows(
    federation: LocalFederation, lab_frames: dict[str, Any]
) -> None:
    """Count, mean, std and histogram equal those computed on the pooled rows."""
    assert federation.researcher is not None

    result = federation.researcher.stats(
        dataset="cancer", columns=COLUMNS, bins=8, ranges=RANGES, **SMALL_KEYS
    )

    pooled = pd.concat(lab_frames["frames"].values())[COLUMNS]
    assert result.members == len(LABS)
    assert result.summary["count"].tolist() == [len(pooled)] * len(COLUMNS)
    np.testing.assert_allclose(result.summary["mean"], pooled.mean(), rtol=1e-7)
    np.testing.assert_allclose(result.summary["std"], pooled.std(ddof=1), rtol=1e-6)
    for name in COLUMNS:
        edges = np.linspace(*RANGES[name], 9)
        inner, _ = np.histogram(pooled[name], bins=edges)
        below = int((pooled[name] < edges[0]).sum())
        above = int((pooled[name] > edges[-1]).sum())
        expected = [below, *inner.tolist(), above]
        assert result.histograms[name]["count"].tolist() == expected
        assert sum(expected) == len(pooled)


def test_member_below_min_rows_refuses_and_the_others_are_pooled(
    federation: LocalFederation, lab_frames: dict[str, Any]
) -> None:
    """A member with fewer complete rows than min_rows is left out of the sums."""
    assert federation.researcher is not None
    sizes = {lab: len(frame) for lab, frame in lab_frames["frames"].items()}
    smallest = min(sizes, key=sizes.__getitem__)
    threshold = sizes[smallest] + 1
    if any(size < threshold for lab, size in sizes.items() if lab != smallest):
        pytest.skip("the demo split gave two labs the same smallest size")

    result = federation.researcher.stats(
        dataset="cancer",
        columns=COLUMNS[:1],
        ranges=RANGES,
        min_rows=threshold,
        min_members=2,
        round_deadline=20,
        **SMALL_KEYS,
    )

    others = [f for lab, f in lab_frames["frames"].items() if lab != smallest]
    pooled = pd.concat(others)[COLUMNS[:1]]
    assert result.members == 2
    assert int(result.summary["count"].iloc[0]) == len(pooled)
    np.testing.assert_allclose(result.summary["mean"], pooled.mean(), rtol=1e-7)


def test_stats_job_fails_when_too_few_members_answer(
    federation: LocalFederation,
) -> None:
    """With every member refusing, the job fails and says why."""
    assert federation.researcher is not None

    with pytest.raises(JobFailedError, match="min_members"):
        federation.researcher.stats(
            dataset="cancer",
            columns=COLUMNS[:1],
            ranges=RANGES,
            min_rows=10**5,
            min_members=2,
            round_deadline=10,
            **SMALL_KEYS,
        )


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"columns": "mean radius"},
            r"must be a list .*pass columns=\['mean radius'\]",
        ),
        ({"ranges": {"mean radius": 5}}, "must be two numbers"),
        ({"ranges": {"mean radius": (1.0, float("nan"))}}, "finite with low < high"),
        ({"ranges": {}}, "no \\(low, high\\) for column 'mean radius'"),
        ({"bins": 10**6}, "bins must be an integer from 1 to 10000"),
        ({"bounds": {"worst area": 1.0}}, "bounds must map some of the columns"),
        ({"bounds": {"mean radius": "x"}}, "must be a positive number"),
        ({"members": ["lab-a"]}, "at least two members besides the submitter"),
        ({"min_members": 5}, "min_members"),
        ({"round_deadline": float("nan")}, "round_deadline"),
    ],
)
def test_bad_arguments_are_refused_before_submitting(
    federation: LocalFederation, options: dict[str, Any], match: str
) -> None:
    """Each bad argument of stats() raises JobSpecError naming it."""
    assert federation.researcher is not None
    settings: dict[str, Any] = {
        "dataset": "cancer",
        "columns": ["mean radius"],
        "ranges": RANGES,
        **SMALL_KEYS,
    }
    settings.update(options)
    before = len(federation.researcher.jobs())

    with pytest.raises(JobSpecError, match=match):
        federation.researcher.stats(**settings)

    assert len(federation.researcher.jobs()) == before


def test_a_tight_bound_is_reported_as_clipped_values(
    federation: LocalFederation, lab_frames: dict[str, Any]
) -> None:
    """Values beyond a column's bound are counted in the result's summary."""
    assert federation.researcher is not None

    result = federation.researcher.stats(
        dataset="cancer",
        columns=["worst area"],
        ranges={"worst area": (200.0, 300.0)},
        **SMALL_KEYS,
    )

    pooled = pd.concat(lab_frames["frames"].values())["worst area"]
    expected = int((abs(pooled - 250.0) > 500.0).sum())
    assert expected > 0
    assert int(result.summary.loc["worst area", "clipped"]) == expected
