"""Statistical benchmark of non-disclosive conformal prediction.

Prints one table per setting and, with ``--json``, the same figures as JSON:
``{setting: {"rules": {rule: {confidence: {"coverage", "size"}}}, "pooled": ...,
"single": {member: ...}}}``; for regression ``size`` is the median interval width.

Settings:

* breast_cancer split over 3 members (equal sizes, and 60/25/15), random forests;
* Tox21 SR-MMP split over 3 companies by Bemis-Murcko scaffold, RDKit Morgan
  fingerprints (needs ../shared/data/tox21 and the ``chem`` extra);
* UCI Concrete regression after Spjuth et al. 2019 (927 training and 103 test rows,
  K = 2, 4, 6 equal members, SVR with an RBF kernel; needs
  ../shared/data/uci-concrete).

The combination rules run on the plaintext path, which tests/jobs show to give the
same floats (and, for counts, the same integers) as the Paillier path. Besides the
p-value rules: ``pooled_counts`` adds the members' counts of calibration scores at
or above each test score, each member on its own model; ``ensemble`` and
``ensemble_counts`` score every calibration example and query with the average of
the members' models, through an encrypted histogram or through summed counts
(exact); ``ensemble_normalized`` (regression) divides those residuals by the
spread of the members' predictions plus a fixed offset.

Run: ``.venv/bin/python benchmarks/conformal.py [--splits 100] [--json]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from workbench.jobs.conformal import (
    RULES,
    ConformalClassifier,
    ConformalRegressor,
    ConformalWarning,
    CountReply,
    FederatedSplitConformal,
    MeanEnsemble,
    MemberReply,
    add_counts,
    combine_p_values,
    count_p_values,
    count_reply,
    evaluate_intervals,
    evaluate_sets,
    intervals_from_sets,
    minimum_calibration_size,
    p_value_threshold,
    rule_confidence,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
CLASSIFICATION_LEVELS = (0.8, 0.9, 0.95)
REGRESSION_LEVELS = (0.8, 0.85, 0.9)
CALIBRATION_SIZE = 0.3
SVR_C = 10.0
DIFFICULTY_OFFSET = 1.0


# Members ---------------------------------------------------------------------------


def _split_member(
    rows: np.ndarray, rng: np.random.Generator, calibration_size: float
) -> tuple[np.ndarray, np.ndarray]:
    shuffled = rng.permutation(rows)
    n_calibration = max(int(round(calibration_size * rows.size)), 1)
    return shuffled[n_calibration:], shuffled[:n_calibration]


def _classifier_members(
    X: np.ndarray,
    y: np.ndarray,
    parts: list[np.ndarray],
    model: Any,
    seed: int,
    classes: np.ndarray,
    calibration_size: float,
) -> tuple[list[ConformalClassifier], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    members, calibration = [], []
    for i, part in enumerate(parts):
        train, cal = _split_member(part, rng, calibration_size)
        fitted = (
            clone(model).set_params(random_state=seed * 10 + i).fit(X[train], y[train])
        )
        member = ConformalClassifier(fitted, classes=classes, random_state=seed + i)
        members.append(member.calibrate(X[cal], y[cal]))
        calibration.append(cal)
    return members, calibration


def _classification_split(
    X: np.ndarray,
    y: np.ndarray,
    test: np.ndarray,
    parts: list[np.ndarray],
    model: Any,
    seed: int,
    calibration_size: float,
) -> dict[str, Any]:
    """Every figure of one random split of a classification setting."""
    classes = np.unique(y)
    columns = np.searchsorted(classes, y[test])
    members, calibration = _classifier_members(
        X, y, parts, model, seed, classes, calibration_size
    )
    p_values = [member.predict_p(X[test]) for member in members]
    out: dict[str, Any] = {"rules": {}, "single": {}, "pooled": {}}

    pooled_rows = np.concatenate(parts)
    pooled_members, _ = _classifier_members(
        X, y, [pooled_rows], model, seed + 1000, classes, calibration_size
    )
    pooled_p = pooled_members[0].predict_p(X[test])
    ensemble = FederatedSplitConformal(
        MeanEnsemble([m.estimator_ for m in members], classes=classes),
        bins=1000,
        encrypted=False,
    ).calibrate([(X[cal], y[cal]) for cal in calibration])
    # The querier draws the tie-breaks of the summed counts.
    draws = np.random.default_rng(seed + 2000).random((test.size, classes.size))
    own_counts = count_p_values(
        add_counts([_own_counts(member, X[test]) for member in members]),
        tie_breaks=draws,
    )
    test_scores = ensemble.test_scores(X[test])
    shared_counts = count_p_values(
        add_counts(
            [count_reply(ensemble.scores(X[c], y[c]), test_scores) for c in calibration]
        ),
        tie_breaks=draws,
    )

    for level in CLASSIFICATION_LEVELS:
        epsilon = p_value_threshold(level)
        key = str(level)
        for i, (member, p) in enumerate(zip(members, p_values, strict=True)):
            ok = member.calibration_size_ >= minimum_calibration_size(level)
            sets = p > epsilon if ok else np.ones_like(p, dtype=bool)
            out["single"].setdefault(f"member-{i + 1}", {})[key] = _class_figures(
                sets, columns, classes
            )
        out["pooled"][key] = _class_figures(pooled_p > epsilon, columns, classes)
        for rule in RULES:
            needed = minimum_calibration_size(rule_confidence(rule, level))
            replies = [
                MemberReply(
                    p, member.calibration_counts() >= needed, member.calibration_size_
                )
                for member, p in zip(members, p_values, strict=True)
            ]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConformalWarning)
                combined = combine_p_values(replies, rule)
            out["rules"].setdefault(rule, {})[key] = _class_figures(
                combined > epsilon, columns, classes
            )
        for rule, p in (("pooled_counts", own_counts),):
            out["rules"].setdefault(rule, {})[key] = _class_figures(
                p > epsilon, columns, classes
            )
        sets = ensemble.predict_set(X[test], level)
        out["rules"].setdefault("ensemble", {})[key] = _class_figures(
            sets, columns, classes
        )
        out["rules"].setdefault("ensemble_counts", {})[key] = _class_figures(
            shared_counts > epsilon, columns, classes
        )
    return out


def _own_counts(member: ConformalClassifier, X: np.ndarray) -> CountReply:
    greater, equal, sizes = member.predict_counts(X)
    return CountReply(greater, equal, sizes)


def _class_figures(sets: np.ndarray, columns: np.ndarray, classes: np.ndarray) -> dict:
    result = evaluate_sets(sets, columns, classes)
    return {"coverage": result["coverage"], "size": result["size"]}


# Regression ------------------------------------------------------------------------


def _regression_split(
    X: np.ndarray,
    y: np.ndarray,
    test: np.ndarray,
    parts: list[np.ndarray],
    model: Any,
    seed: int,
    grid: np.ndarray,
    calibration_size: float,
    *,
    ensemble_model: Any | None = None,
    difficulty_offset: float = DIFFICULTY_OFFSET,
) -> dict[str, Any]:
    """Every figure of one random split of the regression setting.

    ``model`` is what each member fits for its own predictor, and the pooled
    predictor; ``ensemble_model`` (default: ``model``) what each member fits on
    the same rows for the average of the ``ensemble`` rules.
    """
    rng = np.random.default_rng(seed)
    members, calibration, averaged = [], [], []
    for part in parts:
        train, cal = _split_member(part, rng, calibration_size)
        fitted = clone(model).fit(X[train], y[train])
        members.append(ConformalRegressor(fitted).calibrate(X[cal], y[cal]))
        calibration.append(cal)
        if ensemble_model is None:
            averaged.append(fitted)
        else:
            averaged.append(clone(ensemble_model).fit(X[train], y[train]))
    train, cal = _split_member(np.concatenate(parts), rng, calibration_size)
    pooled = ConformalRegressor(clone(model).fit(X[train], y[train]))
    pooled.calibrate(X[cal], y[cal])
    average = MeanEnsemble(averaged)
    ensemble = FederatedSplitConformal(
        average,
        task="regression",
        bins=4000,
        score_max=float(grid[-1] - grid[0]),
        encrypted=False,
    ).calibrate([(X[c], y[c]) for c in calibration])
    normalized = FederatedSplitConformal(
        average,
        task="regression",
        score_max=float(grid[-1] - grid[0]) / difficulty_offset,
        encrypted=False,
        difficulty_offset=difficulty_offset,
    )
    p_values = [member.predict_p(X[test], grid) for member in members]
    counted = {}
    own = [CountReply(*_grid_counts(m, X[test], grid)) for m in members]
    counted["pooled_counts"] = count_p_values(add_counts(own))
    for rule, split in (
        ("ensemble_counts", ensemble),
        ("ensemble_normalized", normalized),
    ):
        test_scores = split.test_scores(X[test], grid)
        replies = [
            count_reply(split.scores(X[c], y[c]), test_scores) for c in calibration
        ]
        counted[rule] = count_p_values(add_counts(replies))
    truth = y[test]
    out: dict[str, Any] = {"rules": {}, "single": {}, "pooled": {}}
    for level in REGRESSION_LEVELS:
        key = str(level)
        out["pooled"][key] = _interval_figures(
            pooled.predict_int(X[test], level), truth
        )
        out["single"].setdefault("member-1", {})[key] = _interval_figures(
            members[0].predict_int(X[test], level), truth
        )
        for rule in RULES:
            replies = [
                MemberReply(p, np.ones(grid.size, dtype=bool), m.calibration_size_)
                for m, p in zip(members, p_values, strict=True)
            ]
            combined = combine_p_values(replies, rule)
            intervals = intervals_from_sets(combined > p_value_threshold(level), grid)
            out["rules"].setdefault(rule, {})[key] = _interval_figures(intervals, truth)
        out["rules"].setdefault("pooled_counts", {})[key] = _interval_figures(
            intervals_from_sets(
                counted["pooled_counts"] > p_value_threshold(level), grid
            ),
            truth,
        )
        out["rules"].setdefault("ensemble", {})[key] = _interval_figures(
            ensemble.predict_int(X[test], level), truth
        )
        for rule in ("ensemble_counts", "ensemble_normalized"):
            intervals = intervals_from_sets(
                counted[rule] > p_value_threshold(level), grid
            )
            out["rules"].setdefault(rule, {})[key] = _interval_figures(intervals, truth)
    return out


def _grid_counts(
    member: ConformalRegressor, X: np.ndarray, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    greater, equal, size = member.predict_counts(X, grid)
    return greater, equal, np.full(grid.size, size)


def _interval_figures(intervals: np.ndarray, truth: np.ndarray) -> dict:
    result = evaluate_intervals(intervals, truth)
    return {"coverage": result["coverage"], "size": result["median_width"]}


# Settings --------------------------------------------------------------------------


def _breast_cancer_job(args: tuple[int, tuple[float, ...], float]) -> dict[str, Any]:
    seed, fractions, calibration_size = args
    X, y_index = load_breast_cancer(return_X_y=True)
    y = np.array(["malignant", "benign"])[y_index]
    rng = np.random.default_rng(seed)
    order = rng.permutation(y.size)
    n_test = int(round(0.2 * y.size))
    test, rest = order[:n_test], order[n_test:]
    cuts = np.round(np.cumsum(fractions)[:-1] * rest.size).astype(int)
    parts = np.split(rest, cuts)
    model = RandomForestClassifier(n_estimators=100, n_jobs=1)
    return _classification_split(X, y, test, parts, model, seed, calibration_size)


def _tox21_data() -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    path = DATA / "tox21" / "tox21.csv.gz"
    if not path.exists():
        return f"skipped Tox21: {path} is not there"
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem import rdFingerprintGenerator
        from rdkit.Chem.Scaffolds import MurckoScaffold
    except ImportError:
        return (
            "skipped Tox21: RDKit is missing; install it with "
            "pip install 'workbench[chem]'"
        )
    import csv

    RDLogger.DisableLog("rdApp.*")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    features, labels, scaffolds = [], [], []
    with gzip.open(path, "rt") as handle:
        for row in csv.DictReader(handle):
            if row["SR-MMP"] == "":
                continue
            molecule = Chem.MolFromSmiles(row["smiles"])
            if molecule is None:
                continue
            features.append(generator.GetFingerprintAsNumPy(molecule).astype(np.uint8))
            labels.append("toxic" if row["SR-MMP"] == "1" else "inactive")
            scaffolds.append(MurckoScaffold.MurckoScaffoldSmiles(mol=molecule))
    return np.array(features), np.array(labels), np.array(scaffolds)


def _tox21_job(args: tuple[int, Any, float]) -> dict[str, Any]:
    seed, (X, y, scaffolds), calibration_size = args
    rng = np.random.default_rng(seed)
    order = rng.permutation(y.size)
    n_test = int(round(0.2 * y.size))
    test, rest = order[:n_test], order[n_test:]
    # Whole scaffolds go to one company each, largest groups first, each to the
    # company with the fewest compounds so far.
    names, group = np.unique(scaffolds[rest], return_inverse=True)
    sizes = np.bincount(group)
    shuffled = rng.permutation(names.size)
    by_size = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
    owner = np.empty(names.size, dtype=int)
    totals = np.zeros(3, dtype=int)
    for g in by_size:
        company = int(np.argmin(totals))
        owner[g] = company
        totals[company] += sizes[g]
    parts = [rest[owner[group] == c] for c in range(3)]
    model = RandomForestClassifier(n_estimators=100, n_jobs=1, min_samples_leaf=1)
    return _classification_split(X, y, test, parts, model, seed, calibration_size)


def _concrete_data() -> tuple[np.ndarray, np.ndarray] | str:
    path = DATA / "uci-concrete" / "Concrete_Data.csv"
    if not path.exists():
        return f"skipped UCI Concrete: {path} is not there"
    table = np.loadtxt(path, delimiter=",")
    return table[:, :8], table[:, 8]


def concrete_model(members: int, *, base_c: float = SVR_C) -> Any:
    """SVR (RBF) on standardized features and target, regularized for ``members``.

    ``gamma="scale"`` and ``epsilon=0.05`` (in units of the target's standard
    deviation) are fixed; ``C = base_c * members``. A member trained on a
    ``1 / members`` share of the rows and regularized with the pooled ``C`` would
    be smoother than a model of all rows; multiplying ``C`` by the number of
    members keeps the penalty per row that of the pooled model, which suits an
    average of the members' models (divide-and-conquer kernel regression). The
    rule uses only the job's public member count. A member's own predictor
    (the p-value rules) and the pooled predictor use ``members=1``.
    """
    svr = SVR(kernel="rbf", C=base_c * members, gamma="scale", epsilon=0.05)
    return TransformedTargetRegressor(
        make_pipeline(StandardScaler(), svr), transformer=StandardScaler()
    )


def _concrete_job(args: tuple[int, int, Any, float, float]) -> dict[str, Any]:
    seed, members, (X, y), calibration_size, offset = args
    rng = np.random.default_rng(seed)
    order = rng.permutation(y.size)
    test, rest = order[:103], order[103:]
    parts = np.array_split(rest, members)
    grid = np.arange(-40.0, 140.0, 0.1)
    return _regression_split(
        X,
        y,
        test,
        parts,
        concrete_model(1),
        seed,
        grid,
        calibration_size,
        ensemble_model=concrete_model(members),
        difficulty_offset=offset,
    )


# Reporting -------------------------------------------------------------------------


def _average(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every leaf figure over the splits."""
    first = results[0]
    if isinstance(first, dict):
        return {key: _average([r[key] for r in results]) for key in first}
    return float(np.mean(results))


def _table(name: str, summary: dict[str, Any], size_name: str) -> str:
    levels = list(summary["pooled"])
    header = f"{'':24}" + "".join(
        f"{'cov ' + lv:>11}{size_name + ' ' + lv:>13}" for lv in levels
    )
    lines = [name, header]

    def row(label: str, figures: dict[str, Any]) -> str:
        cells = "".join(
            f"{figures[lv]['coverage']:>11.4f}{figures[lv]['size']:>13.4f}"
            for lv in levels
        )
        return f"{label:24}{cells}"

    for member, figures in summary["single"].items():
        lines.append(row(f"single {member}", figures))
    for rule, figures in summary["rules"].items():
        lines.append(row(f"rule {rule}", figures))
    lines.append(row("pooled", summary["pooled"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=100, help="random splits (100)")
    parser.add_argument(
        "--tox21-splits", type=int, default=5, help="random splits of Tox21 (5)"
    )
    parser.add_argument(
        "--calibration-size",
        type=float,
        default=CALIBRATION_SIZE,
        help="fraction of each member's rows (and of the pooled rows) held out "
        "for calibration (0.3)",
    )
    parser.add_argument(
        "--difficulty-offset",
        type=float,
        default=DIFFICULTY_OFFSET,
        help="offset (MPa) added to the members' spread in ensemble_normalized (1)",
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seed of the first split (0); settings were chosen on seeds 0-99, so "
        "--first-seed 1000 gives figures on splits never looked at",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    parser.add_argument("--workers", type=int, default=2, help="processes (2)")
    parser.add_argument(
        "--only",
        choices=["breast_cancer", "tox21", "concrete"],
        action="append",
        help="run only these settings (repeatable)",
    )
    args = parser.parse_args(argv)
    chosen = set(args.only or ["breast_cancer", "tox21", "concrete"])
    report: dict[str, Any] = {}
    tables: list[str] = []
    skipped: list[str] = []
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        if "breast_cancer" in chosen:
            for label, fractions in (
                ("equal", (1 / 3, 1 / 3, 1 / 3)),
                ("60/25/15", (0.6, 0.25, 0.15)),
            ):
                jobs = [
                    (seed, fractions, args.calibration_size)
                    for seed in range(args.first_seed, args.first_seed + args.splits)
                ]
                summary = _average(list(pool.map(_breast_cancer_job, jobs)))
                name = f"breast_cancer {label}, 3 members, {args.splits} splits"
                report[f"breast_cancer {label}"] = summary
                tables.append(_table(name, summary, "size"))
        if "tox21" in chosen:
            data = _tox21_data()
            if isinstance(data, str):
                skipped.append(data)
            else:
                jobs = [
                    (seed, data, args.calibration_size)
                    for seed in range(
                        args.first_seed, args.first_seed + args.tox21_splits
                    )
                ]
                summary = _average(list(pool.map(_tox21_job, jobs)))
                name = (
                    f"Tox21 SR-MMP, 3 companies by scaffold, {args.tox21_splits} splits"
                )
                report["tox21 SR-MMP"] = summary
                tables.append(_table(name, summary, "size"))
        if "concrete" in chosen:
            data = _concrete_data()
            if isinstance(data, str):
                skipped.append(data)
            else:
                for members in (2, 4, 6):
                    jobs = [
                        (
                            seed,
                            members,
                            data,
                            args.calibration_size,
                            args.difficulty_offset,
                        )
                        for seed in range(
                            args.first_seed, args.first_seed + args.splits
                        )
                    ]
                    summary = _average(list(pool.map(_concrete_job, jobs)))
                    name = (
                        f"UCI Concrete, K = {members}, {args.splits} repeats "
                        f"(size: median width)"
                    )
                    report[f"concrete K={members}"] = summary
                    tables.append(_table(name, summary, "width"))
    elapsed = time.perf_counter() - started
    if args.json:
        print(
            json.dumps(
                {"settings": report, "skipped": skipped, "seconds": elapsed}, indent=1
            )
        )
    else:
        print("\n\n".join(tables))
        for reason in skipped:
            print(reason)
        print(f"\n{elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
