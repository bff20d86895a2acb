"""Tests of the member agent's failure reports: no data values leave the member."""

from __future__ import annotations

import pytest

from workbench.errors import DatasetError, JobSpecError
from workbench.member.agent import public_reason
from workbench.member.datasets import public_error


def test_label_values_are_left_out() -> None:
    """A label check's message is reworded without the labels."""
    exc = DatasetError(
        "the target holds labels ['SECRET-LABEL-123'] that the job does not list "
        "(classes=[0, 1])"
    )
    reason = public_reason(exc)
    assert "SECRET" not in reason
    assert reason == (
        "DatasetError [dataset_error]: the target holds a label not among the "
        "job's classes"
    )


def test_public_message_is_used() -> None:
    """An error made with public_error reports its public text only."""
    exc = public_error("the target 'y' has 7 missing values", "the target has gaps")
    assert public_reason(exc) == "DatasetError [dataset_error]: the target has gaps"


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("could not convert string to float: 'SECRET-ROW-9'"),
        KeyError("SECRET-ROW-9"),
        JobSpecError("a value SECRET-ROW-9 the agent never saw"),
    ],
)
def test_unknown_errors_say_only_their_class(exc: Exception) -> None:
    """Any other error is reported by class (and code) and a pointer to the log."""
    reason = public_reason(exc)
    assert "SECRET" not in reason
    assert reason.startswith(type(exc).__name__)
    assert reason.endswith("see the member's log")


def test_feature_counts_are_kept() -> None:
    """The feature-count mismatch keeps its counts, which the querier needs."""
    exc = DatasetError(
        "the dataset has 29 feature columns; the query objects have 30",
        hint="name the job's features",
    )
    assert public_reason(exc).endswith(
        "the dataset has 29 feature columns; the query objects have 30"
    )
