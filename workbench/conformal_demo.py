"""The conformal demo: three labs answer queries over a real local federation.

``workbench demo conformal`` splits scikit-learn's breast_cancer data into a test
part, kept by the querier (the ``researcher`` member), and three equal parts, one
per lab. A coordinator process and one member process per lab run on 127.0.0.1,
as in the FedAvg demo. For each combination rule the researcher sends the test
objects in one conformal job; each lab trains a random forest and calibrates an
inductive conformal predictor on its own part and answers with p-values. The
demo prints coverage and average set size at 0.8, 0.9 and 0.95 for each rule,
beside an inductive conformal predictor trained and calibrated on the pooled
parts in this process.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workbench.jobs._conformal_core import p_value_threshold
from workbench.sim import DatasetFile, LocalFederation

__all__ = ["CONFIDENCES", "LABS", "format_conformal_demo", "run_conformal_demo"]

LABS = ("lab-a", "lab-b", "lab-c")
CONFIDENCES = (0.8, 0.9, 0.95)
RULES = ("mean", "weighted_mean", "median", "twice_mean")
SPLIT = (
    "breast_cancer shuffled with the demo's seed: 25% kept by the querier as query "
    "objects, the rest split into three equal parts, one per lab"
)


def run_conformal_demo(
    *,
    key_bits: int = 2048,
    seed: int = 0,
    data_dir: Path | None = None,
    allow_insecure_keys: bool = False,
) -> dict[str, Any]:
    """Run the conformal demo federation and compare every rule with pooled data.

    Parameters
    ----------
    key_bits : int, default=2048
        Paillier key size of each query's job.
    seed : int, default=0
        Seed of the split, of the labs' predictors and of the pooled one.
    data_dir : path, optional
        Where to keep the federation's files; a temporary folder if ``None``.
    allow_insecure_keys : bool, default=False
        Allow ``key_bits`` below 2048 (tests only).

    Returns
    -------
    dict
        ``rules`` (rule name to confidence, as text, to ``coverage`` and
        ``size``), ``pooled`` (the same), ``reports`` (rule to the members that
        answered and failed), ``labs`` (rows per lab), ``test_objects``,
        ``seconds``, ``query_seconds`` (rule to seconds), ``key_bits`` and
        ``split``.
    """
    from sklearn.datasets import load_breast_cancer

    from workbench.jobs.conformal import ConformalClassifier

    started = time.monotonic()
    frame = load_breast_cancer(as_frame=True).frame
    order = np.random.default_rng(seed).permutation(len(frame))
    n_test = int(round(0.25 * len(frame)))
    test = frame.iloc[order[:n_test]]
    parts = np.array_split(order[n_test:], len(LABS))
    X_test = test.drop(columns="target").to_numpy()
    y_test = test["target"].to_numpy()

    rules: dict[str, dict[str, dict[str, float]]] = {}
    reports: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="workbench-conformal-") as scratch:
        root = Path(data_dir) if data_dir is not None else Path(scratch)
        files = {}
        for lab, rows in zip(LABS, parts, strict=True):
            path = root / "data" / f"{lab}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.iloc[rows].to_csv(path, index=False)
            files[lab] = [DatasetFile("breast_cancer", path, "target")]
        with LocalFederation(files, data_dir=root / "federation", poll_wait=2) as fed:
            assert fed.researcher is not None
            for rule in RULES:
                querier = fed.researcher.conformal(
                    dataset="breast_cancer",
                    rule=rule,
                    classes=[0, 1],
                    seed=seed,
                    key_bits=key_bits,
                    allow_insecure_keys=allow_insecure_keys,
                )
                began = time.monotonic()
                # One query per rule: members abstain as for the highest level,
                # and the sets of every level come from the same p-values.
                p_values = querier.predict_p(X_test, confidence=max(CONFIDENCES))
                seconds[rule] = time.monotonic() - began
                rules[rule] = _summaries(p_values, y_test)
                report = querier.last_report_
                reports[rule] = {
                    "answered": report.answered,
                    "failures": report.failures,
                }

    pooled_rows = np.concatenate(parts)
    pooled = ConformalClassifier(random_state=seed).fit(
        frame.iloc[pooled_rows].drop(columns="target").to_numpy(),
        frame.iloc[pooled_rows]["target"].to_numpy(),
    )
    return {
        "rules": rules,
        "pooled": _summaries(pooled.predict_p(X_test), y_test),
        "reports": reports,
        "labs": {lab: int(len(rows)) for lab, rows in zip(LABS, parts, strict=True)},
        "test_objects": int(n_test),
        "seconds": time.monotonic() - started,
        "query_seconds": seconds,
        "key_bits": key_bits,
        "split": SPLIT,
    }


def _summaries(p_values: Any, y: Any) -> dict[str, dict[str, float]]:
    summaries = {}
    rows = np.arange(len(y))
    for level in CONFIDENCES:
        sets = p_values > p_value_threshold(level)
        summaries[f"{level:g}"] = {
            "coverage": float(sets[rows, y].mean()),
            "size": float(sets.sum(axis=1).mean()),
        }
    return summaries


def format_conformal_demo(result: Mapping[str, Any]) -> str:
    """The conformal demo's result as a text table."""
    levels = [f"{level:g}" for level in CONFIDENCES]
    header = "".join(f"   {'@ ' + level:>13}" for level in levels)
    lines = [
        f"Conformal prediction on breast_cancer: three labs "
        f"({', '.join(str(n) for n in result['labs'].values())} rows), "
        f"{result['test_objects']} query objects, {result['key_bits']}-bit keys",
        "",
        f"{'rule':<17}{header}",
        f"{'':<17}" + "".join(f"   {'cover':>6} {'size':>6}" for _ in levels),
    ]
    rows = {**result["rules"], "pooled (one ICP)": result["pooled"]}
    for name, entry in rows.items():
        cells = "".join(
            f"   {entry[level]['coverage']:>6.3f} {entry[level]['size']:>6.3f}"
            for level in levels
        )
        lines.append(f"{name:<17}{cells}")
    failures = {
        rule: report["failures"]
        for rule, report in result["reports"].items()
        if report["failures"]
    }
    lines += [
        "",
        "query seconds: "
        + ", ".join(f"{r} {s:.1f}" for r, s in result["query_seconds"].items()),
        f"failures: {failures or 'none'}",
        f"total time: {result['seconds']:.1f} s",
        "split: " + str(result["split"]),
    ]
    return "\n".join(lines)
