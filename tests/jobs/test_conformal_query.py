"""Tests of matching a conformal query's columns to the job's features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.errors import ConformalError
from workbench.jobs._conformal_query import align_columns


def test_dataframe_is_put_in_the_job_order() -> None:
    """Reordered columns come back in the job's order; arrays pass unchanged."""
    frame = pd.DataFrame({"b": [1.0, 2.0], "a": [3.0, 4.0]})
    aligned = align_columns(frame, ["a", "b"])
    assert list(aligned.columns) == ["a", "b"]
    np.testing.assert_array_equal(aligned.to_numpy(), [[3.0, 1.0], [4.0, 2.0]])
    matrix = frame.to_numpy()
    assert align_columns(matrix, ["a", "b"]) is matrix
    assert align_columns(frame, None) is frame


def test_missing_and_extra_columns_are_named() -> None:
    """A DataFrame without a job feature, or with another column, is refused."""
    frame = pd.DataFrame({"a": [1.0], "c": [2.0]})
    with pytest.raises(ConformalError, match=r"missing \['b'\], not features \['c'\]"):
        align_columns(frame, ["a", "b"])
