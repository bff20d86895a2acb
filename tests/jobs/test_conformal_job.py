"""Conformal job specs, models and sealed replies, without processes."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import ConformalError, JobSpecError
from workbench.jobs import get_job_kind
from workbench.jobs._conformal_job import (
    build_estimator,
    decode_sealed_reply,
    encode_sealed_reply,
    member_random_state,
)
from workbench.jobs.conformal import MemberReply, conformal_spec


def spec(**options):  # type: ignore[no-untyped-def]
    """A valid classification spec, with some options replaced."""
    settings = {"dataset": "d", "n_objects": 4, "n_features": 3, "classes": ["a", "b"]}
    settings.update(options)
    return conformal_spec(**settings)  # type: ignore[arg-type]


def test_spec_states_the_disclosure_of_query_objects() -> None:
    """The spec says the query objects are disclosed, and one round is asked."""
    made = spec()

    assert made.options["disclose_query_objects"] is True
    assert made.rounds == 1
    assert get_job_kind("conformal").check_options is not None


def test_spec_without_the_disclosure_is_refused() -> None:
    """A spec that does not state the disclosure fails the kind's check."""
    options = dict(spec().options, disclose_query_objects=False)
    bad = spec().model_copy(update={"options": options})

    with pytest.raises(JobSpecError, match="disclose_query_objects"):
        get_job_kind("conformal").check_options(bad)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rule": "max"}, "rule must be one of"),
        ({"task": "ranking"}, "task must be one of"),
        ({"classes": ["a"]}, "at least 2 distinct labels"),
        ({"confidence": 1.0}, "confidence must be a number in"),
        ({"model": "gradient_boosting"}, "cannot use the model"),
        ({"model_params": {"depth": 3}}, "takes no hyperparameter 'depth'"),
        ({"n_objects": 0}, "n_objects and n_features must be positive"),
        ({"task": "regression", "classes": None}, "candidates"),
    ],
)
def test_bad_options_are_refused_with_their_name(
    options: dict[str, object], message: str
) -> None:
    """Each bad option is refused with a message naming it."""
    with pytest.raises(JobSpecError, match=message):
        spec(**options)


def test_regression_spec_takes_a_grid_and_an_svr() -> None:
    """A regression spec keeps its grid and builds the named regressor."""
    made = spec(
        task="regression",
        classes=None,
        candidates=[0.0, 1.0, 2.5],
        model="svr",
        model_params={"C": 2.0},
    )

    estimator = build_estimator(made, 1)
    assert made.options["candidates"] == [0.0, 1.0, 2.5]
    assert type(estimator).__name__ == "SVR"
    assert estimator.C == 2.0


def test_member_seeds_differ_by_member_and_job_seed() -> None:
    """Members of one job, and one member in two jobs, get different seeds."""
    first, second = spec(seed=1), spec(seed=2)

    seeds = {
        member_random_state(first, "lab-a"),
        member_random_state(first, "lab-b"),
        member_random_state(second, "lab-a"),
    }
    assert len(seeds) == 3
    assert member_random_state(first, "lab-a") == member_random_state(
        spec(seed=1), "lab-a"
    )


def test_sealed_reply_round_trips() -> None:
    """A reply written for sealing reads back equal."""
    rng = np.random.default_rng(3)
    reply = MemberReply(
        p_values=rng.random((4, 2)), mask=np.array([True, False]), calibration_size=9
    )

    back = decode_sealed_reply(encode_sealed_reply(reply), (4, 2))

    np.testing.assert_array_equal(back.p_values, reply.p_values)
    np.testing.assert_array_equal(back.mask, reply.mask)
    assert back.calibration_size == 9


def test_sealed_reply_of_another_shape_is_refused() -> None:
    """A reply to another query is refused, naming both shapes."""
    reply = MemberReply(
        p_values=np.full((3, 2), 0.5), mask=np.ones(2, bool), calibration_size=5
    )

    with pytest.raises(ConformalError, match=r"shape \(3, 2\).*\(4, 2\)"):
        decode_sealed_reply(encode_sealed_reply(reply), (4, 2))
