"""A conformal query with the wrong feature count fails clearly, at either end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.coordinator.conftest import start_coordinator
from workbench.api import Federation, connect
from workbench.errors import ConformalError, JobFailedError


@pytest.fixture
def labs(tmp_path: Path) -> Iterator[dict[str, Federation]]:
    server, thread, running = start_coordinator(tmp_path / "state")
    admin = running.coordinator.create_federation("f1")
    with running.client(admin) as client:
        invitations = {n: client.invite("f1", n) for n in ("a", "b", "querier")}
    federations = {
        n: connect(running.url, invitation=i, name=n) for n, i in invitations.items()
    }
    rng = np.random.default_rng(5)
    for name in ("a", "b"):
        X = rng.normal(size=(60, 2))
        frame = pd.DataFrame({"u": X[:, 0], "v": X[:, 1], "y": (X[:, 0] > 0) * 1})
        federations[name].register_dataset("d", frame, target="y")
    yield federations
    for federation in federations.values():
        federation.close()
    server.should_exit = True
    thread.join(timeout=10)


def test_querier_with_the_dataset_checks_the_width(
    labs: dict[str, Federation],
) -> None:
    """A querier holding the dataset refuses a query of the wrong width at once."""
    querier = labs["a"].conformal(
        dataset="d", classes=[0, 1], key_bits=512, allow_insecure_keys=True
    )
    with pytest.raises(ConformalError, match="have 3 feature columns; .* has 2"):
        querier.predict_set([[1.0, 2.0, 3.0]])
    assert querier.last_job_ is None


def test_member_failures_are_named_in_the_error(
    labs: dict[str, Federation],
) -> None:
    """A querier without the dataset learns each member's value-free reason."""
    querier = labs["querier"].conformal(
        dataset="d",
        classes=[0, 1],
        members=["a", "b"],
        key_bits=512,
        allow_insecure_keys=True,
        round_deadline=30.0,
    )
    with pytest.raises(JobFailedError, match="member failures: a: ") as caught:
        querier.predict_set([[1.0, 2.0, 3.0]])
    message = caught.value.message
    assert "the dataset has 2 feature columns; the query objects have 3" in message
    assert set(querier.last_report_.failures) == {"a", "b"}
