"""A member's local datasets: names mapped to tables that never leave the member.

A dataset is a pandas DataFrame, or a CSV or Parquet file read when first needed,
with a target column and feature columns. :meth:`LocalDataset.xy` checks the
features a job declares against the table and names the offending column when
one is missing or not numeric. Only the schema (column names and dtypes) and the
row count may be published, and only when the owner opts in.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigurationError, DatasetError, MissingDependencyError
from workbench.names import validate_name

logger = logging.getLogger(__name__)

__all__ = ["DatasetRegistry", "LocalDataset", "public_error"]


def public_error(message: str, public: str, *, hint: str | None = None) -> DatasetError:
    """A DatasetError whose ``public_message`` carries no value of the data.

    The member agent reports ``public_message`` to the coordinator when local work
    fails, and keeps ``message`` (which may name local values) in its own log.

    Parameters
    ----------
    message : str
        The full message, for the data owner.
    public : str
        The same fact without data values, for the coordinator.
    hint : str, optional
        What to do next.
    """
    error = DatasetError(message, hint=hint)
    error.public_message = public  # type: ignore[attr-defined]
    return error


class LocalDataset:
    """One registered dataset.

    Parameters
    ----------
    name : str
        Name jobs refer to.
    data : pandas.DataFrame or path
        The table, or a ``.csv`` / ``.parquet`` file.
    target : str
        Target column.
    features : sequence of str or None, default=None
        Feature columns; ``None`` means every column but the target.
    publish : bool, default=False
        Whether the owner allows publishing the schema and row count.
    """

    def __init__(
        self,
        name: str,
        data: pd.DataFrame | str | os.PathLike[str],
        *,
        target: str,
        features: Sequence[str] | None = None,
        publish: bool = False,
    ) -> None:
        self.name = validate_name("dataset", name)
        if not isinstance(target, str) or not target:
            raise ConfigurationError(
                f"target must be the name of the target column, got {target!r}",
                hint="pass target='diagnosis', say",
            )
        if features is not None and (
            isinstance(features, str)
            or not isinstance(features, Sequence)
            or not all(isinstance(f, str) for f in features)
        ):
            raise ConfigurationError(
                f"features must be a list of column names, got {features!r}",
                hint="pass features=['age', 'weight'], or leave it out for every "
                "column but the target",
            )
        self.target = target
        self.publish = publish
        self._path: Path | None = None
        self._frame: pd.DataFrame | None = None
        if isinstance(data, pd.DataFrame):
            self._frame = data
        elif not isinstance(data, str | os.PathLike):
            raise ConfigurationError(
                f"the data of dataset {name!r} must be a pandas DataFrame or the "
                f"path of a .csv or .parquet file, got a {type(data).__name__}",
                hint="wrap it first: pandas.DataFrame(rows, columns=[...])",
            )
        else:
            self._path = Path(data)
            if self._path.suffix.lower() not in (".csv", ".parquet", ".pq"):
                raise DatasetError(
                    f"cannot read {self._path}: only .csv and .parquet files are "
                    "supported",
                    hint="convert the file, or register a pandas DataFrame",
                )
            if not self._path.exists():
                raise DatasetError(
                    f"the file {self._path} of dataset {name!r} does not exist",
                    hint="check the path",
                )
        self._features = None if features is None else list(features)
        self._lock = threading.Lock()
        if self._frame is not None:
            self._check_target()

    @property
    def frame(self) -> pd.DataFrame:
        """The table (read from its file on first use)."""
        with self._lock:
            if self._frame is None:
                assert self._path is not None
                self._frame = _read(self._path)
                self._check_target()
            return self._frame

    @property
    def features(self) -> list[str]:
        """Feature columns."""
        if self._features is not None:
            return list(self._features)
        return [c for c in self.frame.columns if c != self.target]

    def schema(self) -> dict[str, str]:
        """Feature and target names and dtypes (no values).

        Each feature's dtype is followed by ``"; column N"`` (its place among the
        features, from 0) and the target's by ``TARGET_MARK``, so that a member
        without the dataset can tell the features apart and put them in order
        (the coordinator keeps a schema with its keys sorted).
        """
        dtypes = {str(c): str(t) for c, t in self.frame.dtypes.items()}
        schema = {
            c: f"{dtypes[c]}{COLUMN_MARK}{i}" for i, c in enumerate(self.features)
        }
        schema[self.target] = dtypes[self.target] + TARGET_MARK
        return schema

    def xy(
        self, features: Sequence[str] | None = None, target: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the feature matrix and target vector, after checking columns.

        Parameters
        ----------
        features : sequence of str or None
            Columns a job declares; ``None`` uses the registered ones.
        target : str or None
            Target a job declares; ``None`` uses the registered one.

        Raises
        ------
        DatasetError
            If a column is missing, not numeric, or holds missing values.
        """
        frame = self.frame
        target = target or self.target
        columns = list(features) if features is not None else self.features
        for column in [*columns, target]:
            if column not in frame.columns:
                raise public_error(
                    f"dataset {self.name!r} has no column {column!r}",
                    f"dataset {self.name!r} has no column {column!r}",
                    hint=f"its columns are {_some(frame.columns)}",
                )
        for column in columns:
            series = frame[column]
            if not (
                pd.api.types.is_numeric_dtype(series)
                or pd.api.types.is_bool_dtype(series)
            ):
                raise public_error(
                    f"the column {column!r} of dataset {self.name!r} is not numeric "
                    f"(dtype {series.dtype})",
                    f"the column {column!r} of dataset {self.name!r} is not numeric",
                    hint="encode it as numbers, or leave it out of the features",
                )
            if series.isna().any():
                raise public_error(
                    f"the column {column!r} of dataset {self.name!r} has "
                    f"{int(series.isna().sum())} missing values",
                    f"the column {column!r} of dataset {self.name!r} has missing "
                    "values",
                    hint="impute or drop them before registering the dataset",
                )
        if frame[target].isna().any():
            raise public_error(
                f"the target {target!r} has {int(frame[target].isna().sum())} "
                "missing values",
                f"the target {target!r} has missing values",
                hint="drop those rows before registering the dataset",
            )
        return frame[columns].to_numpy(dtype=float), frame[target].to_numpy()

    def validate(self) -> None:
        """Check the table now: rows, target and feature columns, usable values.

        A file is read here, so that a bad dataset is refused when it is registered
        and not at a job's first round.

        Raises
        ------
        DatasetError
            If the table has no rows, lacks the target or a named feature, a named
            feature is not numeric, or a column holds no value at all.
        """
        frame = self.frame
        columns = list(map(str, frame.columns))
        if len(frame) == 0:
            raise DatasetError(
                f"dataset {self.name!r} has no rows",
                hint="register a table with at least one row",
            )
        for column in self._features or []:
            if column not in frame.columns:
                raise DatasetError(
                    f"dataset {self.name!r} has no feature column {column!r}",
                    hint=f"name columns it has: {_some(columns)}",
                )
            series = frame[column]
            if not (
                pd.api.types.is_numeric_dtype(series)
                or pd.api.types.is_bool_dtype(series)
            ):
                raise DatasetError(
                    f"the feature column {column!r} of dataset {self.name!r} is not "
                    f"numeric (dtype {series.dtype})",
                    hint="encode it as numbers, or leave it out of features=[...]",
                )
        used = [*(self._features or columns), self.target]
        for column in dict.fromkeys(used):
            if frame[column].isna().all():
                raise DatasetError(
                    f"the column {column!r} of dataset {self.name!r} holds no value "
                    "(every row is missing)",
                    hint="drop the column, or leave it out of features=[...]",
                )

    def _check_target(self) -> None:
        assert self._frame is not None
        if self.target not in self._frame.columns:
            raise DatasetError(
                f"dataset {self.name!r} has no target column {self.target!r}",
                hint=f"its columns are {_some(self._frame.columns)}",
            )


TARGET_MARK = "; target"
COLUMN_MARK = "; column "


def published_features(schema: Mapping[str, str]) -> tuple[list[str], str] | None:
    """The features, in order, and the target of a schema from :meth:`schema`.

    Returns ``None`` for a schema without the marks (published otherwise).
    """
    places: dict[int, str] = {}
    targets = []
    for column, dtype in schema.items():
        text = str(dtype)
        if text.endswith(TARGET_MARK):
            targets.append(column)
            continue
        _, mark, place = text.rpartition(COLUMN_MARK)
        if not mark or not place.isdigit():
            return None
        places[int(place)] = column
    if len(targets) != 1 or sorted(places) != list(range(len(places))):
        return None
    return [places[i] for i in range(len(places))], targets[0]


def _some(columns: Any, shown: int = 20) -> str:
    # The first column names, and how many more there are.
    names = [str(c) for c in columns]
    text = ", ".join(repr(n) for n in names[:shown])
    if len(names) > shown:
        text += f", ... and {len(names) - shown} more"
    return f"[{text}]"


def _read(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    try:
        return pd.read_parquet(path)
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading {path} needs pyarrow, which is not installed",
            hint="pip install 'workbench[parquet]'",
        ) from exc


class DatasetRegistry:
    """A member's datasets by name."""

    def __init__(self) -> None:
        self._datasets: dict[str, LocalDataset] = {}
        self._lock = threading.Lock()

    def register(
        self,
        name: str,
        data: pd.DataFrame | str | os.PathLike[str],
        *,
        target: str,
        features: Sequence[str] | None = None,
        publish: bool = False,
    ) -> LocalDataset:
        """Register (or replace) a dataset; see :class:`LocalDataset`."""
        dataset = LocalDataset(
            name, data, target=target, features=features, publish=publish
        )
        dataset.validate()
        with self._lock:
            self._datasets[name] = dataset
        logger.info("dataset %s registered", name)
        return dataset

    def get(self, name: str) -> LocalDataset:
        """Return a dataset.

        Raises
        ------
        DatasetError
            If no dataset has this name; the message lists the registered ones.
        """
        with self._lock:
            found = self._datasets.get(name)
            names = sorted(self._datasets)
        if found is None:
            raise DatasetError(
                f"no dataset named {name!r} is registered on this member",
                hint=f"registered: {names}; register it with register_dataset()",
            )
        return found

    def names(self) -> list[str]:
        """Registered names, sorted."""
        with self._lock:
            return sorted(self._datasets)

    def __contains__(self, name: Any) -> bool:
        with self._lock:
            return name in self._datasets
