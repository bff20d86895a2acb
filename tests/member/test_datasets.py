"""Tests of the local dataset registry and credential files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from workbench.errors import AuthenticationError, DatasetError
from workbench.member import Credential, DatasetRegistry


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"age": [50.0, 61.0, 47.0], "site": ["x", "y", "x"], "label": [0, 1, 0]}
    )


def test_missing_column_is_named() -> None:
    """A job's feature that the table lacks is named in the error."""
    registry = DatasetRegistry()
    dataset = registry.register("d", frame(), target="label", features=["age"])
    with pytest.raises(DatasetError, match="no column 'weight'"):
        dataset.xy(["age", "weight"])


def test_non_numeric_column_is_named() -> None:
    """A feature that is not numeric is named with its dtype."""
    dataset = DatasetRegistry().register("d", frame(), target="label")
    with pytest.raises(DatasetError, match="column 'site' .* is not numeric"):
        dataset.xy()


def test_xy_from_csv(tmp_path: Path) -> None:
    """A CSV path is read on first use; the schema holds no values."""
    path = tmp_path / "d.csv"
    frame().to_csv(path, index=False)
    dataset = DatasetRegistry().register("d", path, target="label", features=["age"])
    X, y = dataset.xy()
    assert X.shape == (3, 1) and list(y) == [0, 1, 0]
    schema = dataset.schema()
    assert set(schema) == {"age", "site", "label"} and schema["age"] == "float64"
    assert "50" not in str(dataset.schema())


def test_unknown_dataset_lists_registered() -> None:
    """Asking for an unregistered name lists the registered ones."""
    registry = DatasetRegistry()
    registry.register("cancer", frame(), target="label")
    with pytest.raises(DatasetError, match=r"no dataset named 'heart'.*\['cancer'\]"):
        registry.get("heart")


def test_missing_target_is_refused() -> None:
    """Registering with a target the table lacks fails at once."""
    with pytest.raises(DatasetError, match="no target column 'outcome'"):
        DatasetRegistry().register("d", frame(), target="outcome")


def test_credential_round_trip(tmp_path: Path) -> None:
    """A credential file is written 0600 and read back; repr hides the token."""
    credential = Credential(
        "http://127.0.0.1:1", "f", "a", "wbm_secret", "00" * 32, "11" * 32
    )
    path = credential.save(tmp_path / "c.json")
    assert path.stat().st_mode & 0o777 == 0o600
    assert Credential.load(path) == credential
    assert "wbm_secret" not in repr(credential)
    path.write_text("{}")
    with pytest.raises(AuthenticationError, match="not a Workbench credential file"):
        Credential.load(path)
