"""Tests of the local dataset registry and credential files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from workbench.errors import (
    AuthenticationError,
    ConfigurationError,
    DatasetError,
    InvalidNameError,
)
from workbench.member import Credential, DatasetRegistry
from workbench.member.datasets import published_features


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
    assert schema == {"age": "float64; column 0", "label": "int64; target"}
    assert published_features(schema) == (["age"], "label")
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


@pytest.mark.parametrize("name", ["../../x", "", ".hidden", "a/b", "x" * 65, 7])
def test_bad_dataset_names_are_refused(name: object) -> None:
    """A name that breaks the naming rule is refused at registration."""
    with pytest.raises(InvalidNameError, match="dataset name"):
        DatasetRegistry().register(
            name,  # type: ignore[arg-type]
            frame(),
            target="label",
        )


def test_missing_target_in_a_file_is_refused_at_registration(tmp_path: Path) -> None:
    """A CSV without the target column is refused when registered, naming it."""
    path = tmp_path / "d.csv"
    frame().to_csv(path, index=False)
    registry = DatasetRegistry()
    with pytest.raises(DatasetError, match="no target column 'nocol'"):
        registry.register("d", path, target="nocol")
    assert registry.names() == []


def test_unknown_feature_is_refused_at_registration() -> None:
    """features=[...] naming a column the table lacks is refused, naming it."""
    with pytest.raises(DatasetError, match="no feature column 'zzz'"):
        DatasetRegistry().register("d", frame(), target="label", features=["zzz"])


def test_non_numeric_feature_is_refused_at_registration() -> None:
    """A named feature that is not numeric is refused with its dtype."""
    with pytest.raises(DatasetError, match="'site' .* not numeric"):
        DatasetRegistry().register("d", frame(), target="label", features=["site"])


def test_all_missing_column_is_refused() -> None:
    """A column with no value at all is refused, naming it."""
    data = frame().assign(empty=float("nan"))
    with pytest.raises(DatasetError, match="'empty' .* holds no value"):
        DatasetRegistry().register("d", data, target="label")


def test_empty_frame_is_refused() -> None:
    """A table without rows is refused."""
    with pytest.raises(DatasetError, match="has no rows"):
        DatasetRegistry().register("d", frame().iloc[:0], target="label")


@pytest.mark.parametrize("data", [[[1, 2]], {"a": [1]}, 3])
def test_data_of_the_wrong_type_is_refused(data: object) -> None:
    """Data that is neither a DataFrame nor a path says what to pass."""
    with pytest.raises(ConfigurationError, match="must be a pandas DataFrame"):
        DatasetRegistry().register("d", data, target="label")  # type: ignore[arg-type]


def test_public_message_of_a_missing_value_has_no_count() -> None:
    """The public message of a gap in a feature leaves out its count."""
    data = frame().assign(age=[50.0, None, 47.0])
    dataset = DatasetRegistry().register("d", data, target="label", features=["age"])
    with pytest.raises(DatasetError, match="1 missing values") as caught:
        dataset.xy()
    assert "1" not in caught.value.public_message  # type: ignore[attr-defined]
