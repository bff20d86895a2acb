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
        ({"edges": [[1.0], [1.0, 2.0]]}, "at least two"),
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

    def __init__(self, job_spec, frame, keys):
        self.spec = job_spec
        self.job_id = "local"
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
