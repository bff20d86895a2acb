"""Federated statistics: counts, means, standard deviations and histograms.

A stats job has one round. Each participant takes the complete rows (no missing
value in any requested column) of its local dataset and uploads three encrypted
vectors:

``moments``
    the column means, weighted by the member's row count (the count travels
    encrypted in the weight slot);
``squares``
    the column means of the squared values, weighted the same way;
``histogram``
    for each column, the number of rows in each bin of the edges the spec
    declares, with one bin below the first edge and one above the last;
``clipped``
    for each column, the number of values clipped to its bound (see below).

The coordinator adds the vectors under Paillier encryption. Whoever holds the job's
private key (the submitter and the participants) decrypts the sums and learns the
pooled count, means, standard deviations and histogram counts, never one member's.

Notes
-----
Each column ``j`` has a centre ``c_j`` (the middle of its bin edges) and a bound
``b_j`` (by default ten times half the span of its edges). Its values are centred,
clipped to ``[c_j - b_j, c_j + b_j]`` and divided by ``b_j`` before their means are
packed with 32-bit quantization, so a pooled mean is exact up to
``b_j / (2**31 - 1) / 2`` (the packing error bound of
:class:`workbench.crypto.PackedEncoding`) and a pooled variance up to about
``b_j**2 / (2**31 - 1)``. Centring keeps the variance clear of the cancellation
that ``E[x**2] - E[x]**2`` suffers when the mean is large. Values beyond the bound
are clipped; the result counts them per column, so a querier sees when a bound was
too tight. Histogram
counts are packed with a step of exactly one, so they are exact integers.

Small counts can identify people. A member refuses a job

* whose sums could hold fewer than :data:`MIN_OTHER_MEMBERS` members besides the
  submitter (``min_members``, less one if the submitter takes part), since the
  submitter could then read one member's figures;
* when its complete rows are fewer than the job's ``min_rows`` or
  :data:`MIN_ROWS`, whichever is larger.

Its failure is reported and the others go on. Two jobs over member sets that
differ by one member still disclose that member's figures by subtraction; the
pooled histogram is returned as decrypted, with no suppression of small cells
(docs/limitations.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.crypto import DecryptedSum, PackedEncoding, encrypt_vector
from workbench.errors import DatasetError, JobSpecError
from workbench.jobs import JobContext, register_job_kind
from workbench.jobs.spec import EncryptionSpec, JobSpec, OptionValue, Scalar

__all__ = [
    "MAX_BINS",
    "MIN_OTHER_MEMBERS",
    "MIN_ROWS",
    "StatsResult",
    "StatsRunner",
    "check_options",
    "stats_spec",
    "summarize",
]

logger = logging.getLogger(__name__)

MAX_BINS = 10_000
"""Most histogram bins of one column."""

MIN_OTHER_MEMBERS = 2
"""Fewest members besides the submitter whose sums a member lets be added."""

MIN_ROWS = 5
"""Fewest complete rows with which a member answers, whatever the job asks."""

_COUNT_BITS = 32
_COUNT_CLIP = float((1 << (_COUNT_BITS - 1)) - 1)
"""With ``clip == 2**(bits-1) - 1`` the quantization step is exactly 1."""


def _encodings(spec: JobSpec) -> tuple[PackedEncoding, PackedEncoding, PackedEncoding]:
    members = max(1, len(spec.members or []))
    max_rows = int(spec.options["max_rows"])  # type: ignore[arg-type]
    moments = PackedEncoding(
        clip=1.0, bits=_COUNT_BITS, max_contributions=members, max_weight=max_rows
    )
    squares = moments
    counts = PackedEncoding(
        clip=_COUNT_CLIP, bits=_COUNT_BITS, max_contributions=members
    )
    return moments, squares, counts


def _edges(spec: JobSpec) -> dict[str, np.ndarray]:
    raw = spec.options["edges"]
    assert isinstance(raw, list)
    columns = spec.options["columns"]
    assert isinstance(columns, list)
    return {
        str(name): np.asarray(row, dtype=np.float64)
        for name, row in zip(columns, raw, strict=True)
    }


def _scales(spec: JobSpec) -> tuple[np.ndarray, np.ndarray]:
    edges = _edges(spec)
    centres = np.array([(row[0] + row[-1]) / 2 for row in edges.values()])
    bounds = np.asarray(spec.options["bounds"], dtype=np.float64)
    return centres, bounds


def _short(row: object) -> str:
    text = repr(row)
    return text if len(text) <= 80 else text[:77] + "..."


def check_options(spec: JobSpec) -> None:
    """Check a stats spec's options.

    Raises
    ------
    JobSpecError
        If columns, edges, bounds, max_rows or min_rows are missing or invalid.
    """
    options = spec.options
    columns = options.get("columns")
    if not isinstance(columns, list) or not columns:
        raise JobSpecError(
            f"a stats job needs options['columns'], a non-empty list, got {columns!r}",
            hint="pass columns=['age', 'chol'] to fed.stats()",
        )
    if len(set(map(str, columns))) != len(columns):
        raise JobSpecError(
            f"options['columns'] lists a column twice: {columns}",
            hint="name each column once",
        )
    edges = options.get("edges")
    if not isinstance(edges, list) or len(edges) != len(columns):
        raise JobSpecError(
            "options['edges'] must hold one list of bin edges per column",
            hint="pass bins= and ranges= to fed.stats(), or edges= per column",
        )
    for name, row in zip(columns, edges, strict=True):
        values = np.asarray(row, dtype=np.float64) if isinstance(row, list) else None
        if (
            values is None
            or values.size < 2
            or not np.isfinite(values).all()
            or np.any(np.diff(values) <= 0)
            or values.size > MAX_BINS + 1
        ):
            raise JobSpecError(
                f"the bin edges of column {name!r} must be 2 to {MAX_BINS + 1} "
                f"finite, strictly increasing numbers, got {_short(row)}",
                hint="give ranges={column: (low, high)} with low < high",
            )
    bounds = options.get("bounds")
    if not isinstance(bounds, list) or len(bounds) != len(columns):
        raise JobSpecError(
            "options['bounds'] must hold one bound per column",
            hint="pass bounds={column: bound} to fed.stats(), or leave the default",
        )
    for name, bound in zip(columns, bounds, strict=True):
        if (
            not isinstance(bound, int | float)
            or isinstance(bound, bool)
            or not math.isfinite(bound)
            or bound <= 0
        ):
            raise JobSpecError(
                f"the bound of column {name!r} must be a positive number, got "
                f"{bound!r}",
                hint="pass a bound above the magnitude of every value",
            )
    for key in ("max_rows", "min_rows"):
        value = options.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise JobSpecError(
                f"options[{key!r}] must be a positive integer, got {value!r}",
                hint=f"pass {key}= as an int",
            )
    _encodings(spec)


def stats_spec(
    *,
    dataset: str,
    columns: Sequence[str],
    edges: Sequence[Sequence[float]],
    members: Sequence[str],
    bounds: Sequence[float] | None = None,
    max_rows: int = 1_000_000,
    min_rows: int = 5,
    round_deadline: float = 120.0,
    min_members: int | None = None,
    encryption: EncryptionSpec | None = None,
) -> JobSpec:
    """Build and check the spec of a stats job.

    Parameters
    ----------
    dataset : str
        Dataset name, registered at every participant.
    columns : sequence of str
        Numeric columns to summarize.
    edges : sequence of sequences of float
        Histogram bin edges of each column, strictly increasing.
    members : sequence of str
        Participants.
    bounds : sequence of float, optional
        Per column, values farther than ``bound`` from the middle of the edges are
        clipped before their means are packed; default: ten times half the span
        of the column's edges.
    max_rows : int, default=1_000_000
        Largest row count of one member.
    min_rows : int, default=5
        A member with fewer complete rows refuses the job.
    round_deadline : float, default=120.0
        Seconds the round stays open.
    min_members : int, optional
        Fewest members with which the round may close; default: all.
    encryption : EncryptionSpec, optional
        Key size; packing settings are the kind's own.

    Returns
    -------
    JobSpec

    Raises
    ------
    JobSpecError
        If an option is invalid.
    """
    if bounds is None:
        bounds = [5.0 * (float(row[-1]) - float(row[0])) for row in edges]
    names: list[Scalar] = [str(c) for c in columns]
    rows: list[list[Scalar]] = [[float(v) for v in row] for row in edges]
    limits: list[Scalar] = [float(b) for b in bounds]
    options: dict[str, OptionValue] = {
        "columns": names,
        "edges": rows,
        "bounds": limits,
        "max_rows": int(max_rows),
        "min_rows": int(min_rows),
    }
    spec = JobSpec(
        kind="stats",
        dataset=dataset,
        features=[str(c) for c in columns],
        rounds=1,
        members=list(members),
        min_members=len(members) if min_members is None else min_members,
        round_deadline=round_deadline,
        encryption=encryption or EncryptionSpec(),
        options=options,
    )
    check_options(spec)
    return spec


def _local_table(context: JobContext) -> pd.DataFrame:
    names = context.spec.options["columns"]
    columns = [str(c) for c in names]  # type: ignore[union-attr]
    frame = context.dataset().frame
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"the dataset {context.spec.dataset!r} has no column {missing[0]!r}",
            hint="register the dataset with the columns the job names",
        )
    table = frame[columns]
    for name in columns:
        if not pd.api.types.is_numeric_dtype(table[name]):
            raise DatasetError(
                f"the column {name!r} is not numeric (dtype {table[name].dtype})",
                hint="convert it to numbers before registering the dataset",
            )
    return table.dropna().astype(np.float64)


def _histogram_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # Bin 0 is below the first edge, the last bin above the last edge; a value equal
    # to the last edge counts in the last regular bin, as numpy.histogram does.
    inner, _ = np.histogram(values, bins=edges)
    below = int(np.sum(values < edges[0]))
    above = int(np.sum(values > edges[-1]))
    return np.concatenate([[below], inner, [above]]).astype(np.float64)


class StatsRunner:
    """A member's side of a stats job."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec

    def run_round(self, context: JobContext, round: int) -> None:
        """Compute the local moments and histogram and upload them encrypted."""
        summed = self.spec.min_members - (
            1 if context.submitter in context.participants else 0
        )
        if summed < MIN_OTHER_MEMBERS:
            raise JobSpecError(
                f"the job's sums may hold only {summed} member(s) besides its "
                f"submitter, fewer than {MIN_OTHER_MEMBERS}; refusing so that no "
                "member's figures can be read alone",
                hint="submit the job again with a larger min_members",
            )
        table = _local_table(context)
        min_rows = max(
            MIN_ROWS,
            int(self.spec.options["min_rows"]),  # type: ignore[arg-type]
        )
        max_rows = int(self.spec.options["max_rows"])  # type: ignore[arg-type]
        rows = len(table)
        if rows < min_rows:
            raise DatasetError(
                f"only {rows} complete rows, fewer than the job's min_rows="
                f"{min_rows}; refusing so that small counts are not disclosed",
                hint="the job goes on with the other members",
            )
        if rows > max_rows:
            raise DatasetError(
                f"{rows} complete rows, more than the job's max_rows={max_rows}",
                hint="submit the job again with a larger max_rows",
            )
        moments, squares, counts = _encodings(self.spec)
        values = table.to_numpy()
        centres, bounds = _scales(self.spec)
        scaled = (values - centres) / bounds
        clipped = np.clip(scaled, -1.0, 1.0)
        beyond = np.sum(clipped != scaled, axis=0).astype(np.float64)
        if beyond.any():
            logger.warning(
                "stats job %s: values beyond their column's bound were clipped",
                context.job_id,
            )
        edges = _edges(self.spec)
        histogram = np.concatenate(
            [
                _histogram_counts(values[:, j], edges[name])
                for j, name in enumerate(edges)
            ]
        )
        key = context.public_key
        private = context.private_key
        context.upload(
            round,
            {
                "moments": encrypt_vector(
                    key, clipped.mean(axis=0), moments, weight=rows, private_key=private
                ),
                "squares": encrypt_vector(
                    key,
                    (clipped**2).mean(axis=0),
                    squares,
                    weight=rows,
                    private_key=private,
                ),
                "histogram": encrypt_vector(
                    key, histogram, counts, private_key=private
                ),
                "clipped": encrypt_vector(key, beyond, counts, private_key=private),
            },
        )
        logger.info("stats job %s: update uploaded", context.job_id)


@dataclass(frozen=True)
class StatsResult:
    """Pooled statistics of a stats job.

    Attributes
    ----------
    summary : pandas.DataFrame
        One row per column: ``count``, ``mean``, ``std`` (sample standard
        deviation, ``ddof=1``) and ``clipped`` (values clipped to the column's
        bound before their moments were packed; when it is not 0, the mean and
        std are of the clipped values).
    histograms : dict of str to pandas.DataFrame
        Per column, one row per bin: ``low``, ``high`` (``-inf`` and ``inf`` for
        the bins below and above the edges) and ``count``.
    members : int
        Number of members whose updates were added.
    """

    summary: pd.DataFrame
    histograms: dict[str, pd.DataFrame]
    members: int


def summarize(spec: JobSpec, sums: Mapping[str, DecryptedSum]) -> StatsResult:
    """Turn the decrypted aggregate of a stats job into pooled statistics.

    Parameters
    ----------
    spec : JobSpec
        The job's spec.
    sums : mapping of str to DecryptedSum
        The decrypted aggregate of round 1, by vector name.

    Returns
    -------
    StatsResult
    """
    moments, squares, histogram = sums["moments"], sums["squares"], sums["histogram"]
    count = int(moments.weight or 0)
    centres, bounds = _scales(spec)
    scaled_mean = moments.values / count
    scaled_square = squares.values / count
    mean = centres + scaled_mean * bounds
    spread = np.maximum(scaled_square - scaled_mean**2, 0.0) * bounds**2
    variance = spread * count / max(count - 1, 1)
    columns = list(_edges(spec))
    clipped = np.rint(sums["clipped"].values).astype(np.int64)
    summary = pd.DataFrame(
        {"count": count, "mean": mean, "std": np.sqrt(variance), "clipped": clipped},
        index=columns,
    )
    counts = np.rint(histogram.values).astype(np.int64)
    histograms: dict[str, pd.DataFrame] = {}
    start = 0
    for name, edges in _edges(spec).items():
        size = edges.size + 1
        low = np.concatenate([[-np.inf], edges])
        high = np.concatenate([edges, [np.inf]])
        histograms[name] = pd.DataFrame(
            {"low": low, "high": high, "count": counts[start : start + size]}
        )
        start += size
    return StatsResult(summary, histograms, moments.contributions)


register_job_kind("stats", StatsRunner, check_options=check_options)
