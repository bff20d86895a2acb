"""Stats job specs and the decoding of their aggregates, in one process."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.crypto import aggregate, decrypt_vector, generate_keypair
from workbench.errors import JobSpecError
from workbench.jobs.spec import EncryptionSpec
from workbench.jobs.stats import StatsRunner, stats_spec, summarize

SMALL = EncryptionSpec(key_bits=512, allow_insecure_keys=True)


def spec(**changes):
    """A valid two-column stats spec, with some options changed."""
    options = {
        "dataset": "cohort",
        "columns": ["age", "chol"],
        "edges": [[20.0, 40.0, 60.0, 80.0], [100.0, 200.0, 300.0]],
        "members": ["a", "b"],
        "encryption": SMALL,
    }
    options.update(changes)
    return stats_spec(**options)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"columns": []}, "non-empty list"),
        ({"columns": ["age", "age"], "edges": [[0.0, 1.0], [0.0, 1.0]]}, "twice"),
        ({"edges": [[20.0, 40.0]]}, "one list of bin edges per column"),
        ({"edges": [[40.0, 20.0], [1.0, 2.0]]}, "strictly increasing"),
        ({"edges": [[1.0], [1.0, 2.0]]}, "must be 2 to"),
        ({"bounds": [1.0, -2.0]}, "must be a positive number"),
        ({"min_rows": 0}, "positive integer"),
    ],
)
def test_invalid_options_are_refused(changes, match):
    """Each invalid option raises JobSpecError naming it."""
    with pytest.raises(JobSpecError, match=match):
        spec(**changes)


class _Context:
    """What the runner needs of a job context, over in-memory data."""

    def __init__(self, job_spec, frame, keys, submitter="q"):
        self.spec = job_spec
        self.job_id = "local"
        self.submitter = submitter
        self.participants = list(job_spec.members)
        self.public_key, self.private_key = keys
        self._frame = frame
        self.uploaded = None

    def dataset(self):
        frame = self._frame

        class View:
            pass

        view = View()
        view.frame = frame
        return view

    def upload(self, round, vectors):
        self.uploaded = vectors


def test_runner_updates_sum_to_the_pooled_statistics():
    """Two members' encrypted updates decode to the pooled count, mean and std."""
    import pandas as pd

    rng = np.random.default_rng(3)
    keys = generate_keypair(512, allow_insecure=True)
    job_spec = spec()
    frames = [
        pd.DataFrame({"age": rng.uniform(18, 90, n), "chol": rng.normal(220, 40, n)})
        for n in (37, 61)
    ]
    frames[1].loc[3, "age"] = np.nan
    updates = []
    for frame in frames:
        context = _Context(job_spec, frame, keys)
        StatsRunner(job_spec).run_round(context, 1)
        updates.append(context.uploaded)

    sums = {
        name: decrypt_vector(keys[1], aggregate([u[name] for u in updates]))
        for name in updates[0]
    }
    result = summarize(job_spec, sums)

    pooled = pd.concat(frames).dropna()
    assert result.summary["count"].tolist() == [len(pooled)] * 2
    np.testing.assert_allclose(result.summary["mean"], pooled.mean(), rtol=1e-8)
    np.testing.assert_allclose(result.summary["std"], pooled.std(ddof=1), rtol=1e-7)
    counts = result.histograms["chol"]["count"].tolist()
    assert counts[0] == int((pooled["chol"] < 100).sum())
    assert sum(counts) == len(pooled)


def test_runner_refuses_sums_that_one_other_member_could_fill():
    """A participating submitter with one other member summed is refused."""
    import pandas as pd

    keys = generate_keypair(512, allow_insecure=True)
    job_spec = spec(members=["a", "b"])
    frame = pd.DataFrame({"age": [30.0] * 8, "chol": [180.0] * 8})
    context = _Context(job_spec, frame, keys, submitter="a")

    with pytest.raises(JobSpecError, match="only 1 member"):
        StatsRunner(job_spec).run_round(context, 1)
    assert context.uploaded is None


def test_runner_refuses_fewer_rows_than_its_own_floor():
    """A member answers with at least MIN_ROWS rows, whatever min_rows says."""
    import pandas as pd

    from workbench.errors import DatasetError
    from workbench.jobs.stats import MIN_ROWS

    keys = generate_keypair(512, allow_insecure=True)
    job_spec = spec(min_rows=1)
    frame = pd.DataFrame({"age": [30.0] * (MIN_ROWS - 1), "chol": [1.0] * 4})
    context = _Context(job_spec, frame, keys)

    with pytest.raises(DatasetError, match=f"fewer than the job's min_rows={MIN_ROWS}"):
        StatsRunner(job_spec).run_round(context, 1)


def test_clipped_values_are_counted_in_the_result():
    """Values beyond a column's bound are clipped and counted per column."""
    import pandas as pd

    keys = generate_keypair(512, allow_insecure=True)
    job_spec = spec(bounds=[10.0, 1000.0])
    frame = pd.DataFrame(
        {"age": [50.0, 55.0, 90.0, 95.0, 48.0, 52.0], "chol": [200.0] * 6}
    )
    context = _Context(job_spec, frame, keys)
    StatsRunner(job_spec).run_round(context, 1)

    sums = {
        name: decrypt_vector(keys[1], vector)
        for name, vector in context.uploaded.items()
    }
    result = summarize(job_spec, sums)

    assert result.summary["clipped"].tolist() == [2, 0]
    assert result.summary.loc["age", "mean"] == pytest.approx(
        np.mean([50, 55, 60, 60, 48, 52]), abs=1e-6
    )


def test_too_many_bins_are_refused():
    """More than MAX_BINS bins per column is refused at submit."""
    from workbench.jobs.stats import MAX_BINS

    edges = [list(np.linspace(0, 1, MAX_BINS + 2)), [0.0, 1.0]]
    with pytest.raises(JobSpecError, match=f"2 to {MAX_BINS + 1}"):
        spec(edges=edges)
