"""Statistical benchmark of the FedAvg job kind on the demo's hospitals.

For each demo seed, breast_cancer is split over four hospitals exactly as
``workbench demo`` splits it (Dirichlet label skew, see ``workbench.sim``). The job
runs in this process: every member is a :class:`workbench.jobs.fedavg.FedAvgRunner`,
the same code a member process runs, and its uploads are encrypted, added under
encryption and decrypted with the real packed Paillier code, but with 512-bit keys
for speed (the demo uses 2048 bits; the key size changes nothing in the decrypted
figures). Only the coordinator and HTTP are left out.

Each strategy (``fedavg`` and ``newton``) trains 10 rounds after the two setup
rounds, as in the demo, once with the default validation part (20% of each
member's rows kept out of training for the per-round metrics) and once with
``validation_fraction=0`` (``*_all_rows``: every row trains, as in the pooled
model and in the demo). Printed: mean and minimum over seeds of the accuracy and
ROC AUC on the union of the hospitals' held-out parts, for each federated strategy,
for each hospital's local-only model and for a model fitted to the pooled training
rows, and the gap (federated minus pooled accuracy): mean, minimum, and the number
of seeds within 1 point of pooled.

Run: ``.venv/bin/python benchmarks/fedavg.py [--seeds 25] [--rounds 10] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import phe

from workbench.crypto import (
    DecryptedSum,
    EncryptedVector,
    aggregate,
    decrypt_vector,
    generate_keypair,
)
from workbench.jobs.fedavg import FedAvgRunner, build_model, fedavg_spec
from workbench.jobs.spec import EncryptionSpec, JobSpec
from workbench.member.datasets import LocalDataset
from workbench.sim import compare_models, split_demo_data

# name: (strategy, validation_fraction)
STRATEGIES = {
    "fedavg": ("fedavg", 0.2),
    "newton": ("newton", 0.2),
    "fedavg_all_rows": ("fedavg", 0.0),
    "newton_all_rows": ("newton", 0.0),
}


class InProcessContext:
    """A member's view of a job whose rounds are kept in a dictionary."""

    def __init__(
        self,
        spec: JobSpec,
        member: str,
        dataset: LocalDataset,
        uploads: dict[int, dict[str, dict[str, EncryptedVector]]],
        keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey],
    ) -> None:
        self.job_id = "benchmark"
        self.spec = spec
        self.member = member
        self.participants = list(spec.members)
        self.submitter = "researcher"
        self.public_key, self.private_key = keys
        self._dataset = dataset
        self._uploads = uploads

    def dataset(self) -> LocalDataset:
        """The member's dataset."""
        return self._dataset

    def upload(self, round: int, vectors: dict[str, EncryptedVector]) -> None:
        """Keep the member's update of ``round``."""
        self._uploads.setdefault(round, {})[self.member] = dict(vectors)

    def aggregate(self, round: int) -> dict[str, EncryptedVector]:
        """Add every member's update of ``round`` under encryption."""
        updates = list(self._uploads[round].values())
        return {name: aggregate([u[name] for u in updates]) for name in updates[0]}


def run_job(
    spec: JobSpec,
    datasets: dict[str, LocalDataset],
    keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey],
) -> Any:
    """Run every round of ``spec`` in lockstep and return the global model."""
    uploads: dict[int, dict[str, dict[str, EncryptedVector]]] = {}
    contexts = {
        member: InProcessContext(spec, member, datasets[member], uploads, keys)
        for member in spec.members
    }
    runners = {member: FedAvgRunner(spec) for member in spec.members}
    for number in range(1, spec.rounds + 1):
        for member in spec.members:
            runners[member].run_round(contexts[member], number)
    any_context = next(iter(contexts.values()))
    sums: dict[int, dict[str, DecryptedSum]] = {
        number: {
            name: decrypt_vector(keys[1], vector)
            for name, vector in any_context.aggregate(number).items()
        }
        for number in uploads
    }
    return build_model(spec, sums)


def run_seed(
    seed: int,
    *,
    rounds: int,
    keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey],
) -> dict[str, dict[str, float]]:
    """Scores of every model for one demo seed."""
    frame, parts = split_demo_data(seed)
    features = [c for c in frame.columns if c != "target"]
    datasets = {
        hospital: LocalDataset("breast_cancer", train, target="target")
        for hospital, (train, _) in parts.items()
    }
    models = {}
    for name, (strategy, fraction) in STRATEGIES.items():
        spec = fedavg_spec(
            dataset="breast_cancer",
            model="logistic_regression",
            rounds=rounds,
            classes=[0, 1],
            members=list(parts),
            seed=seed,
            strategy=strategy,
            validation_fraction=fraction,
            encryption=EncryptionSpec(key_bits=512, allow_insecure_keys=True),
        )
        models[name] = run_job(spec, datasets, keys)
    overall, _ = compare_models(parts, features, models)
    return overall


def summarize(results: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Mean and minimum over seeds, and the gap of each strategy to pooled."""
    summary: dict[str, Any] = {}
    for name in results[0]:
        entry: dict[str, float] = {}
        for metric in ("accuracy", "auc"):
            values = np.array([r[name][metric] for r in results])
            entry[f"{metric}_mean"] = float(values.mean())
            entry[f"{metric}_min"] = float(values.min())
        summary[name] = entry
    pooled = np.array([r["pooled"]["accuracy"] for r in results])
    summary["gap"] = {}
    for strategy in STRATEGIES:
        gap = np.array([r[strategy]["accuracy"] for r in results]) - pooled
        summary["gap"][strategy] = {
            "mean": float(gap.mean()),
            "min": float(gap.min()),
            "within_1_point": int(np.sum(gap >= -0.01 - 1e-12)),
            "seeds": len(gap),
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table, or JSON with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=25, help="demo seeds 0..N-1")
    parser.add_argument("--rounds", type=int, default=10, help="training rounds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    started = time.monotonic()
    keys = generate_keypair(512, allow_insecure=True)
    results = [run_seed(s, rounds=args.rounds, keys=keys) for s in range(args.seeds)]
    summary = summarize(results)
    summary["seeds"] = args.seeds
    summary["rounds"] = args.rounds
    summary["key_bits"] = 512
    summary["per_seed"] = results
    summary["seconds"] = time.monotonic() - started
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(
        f"FedAvg job kind on the demo split, {args.seeds} seeds, {args.rounds} "
        "training rounds, 512-bit Paillier keys"
    )
    print()
    print(
        f"{'model':<16} {'acc mean':>9} {'acc min':>8} {'AUC mean':>9} {'AUC min':>8}"
    )
    for name in (*STRATEGIES, "local", "pooled"):
        entry = summary[name]
        print(
            f"{name:<16} {100 * entry['accuracy_mean']:8.2f}% "
            f"{100 * entry['accuracy_min']:7.2f}% {entry['auc_mean']:9.4f} "
            f"{entry['auc_min']:8.4f}"
        )
    print()
    for strategy in STRATEGIES:
        gap = summary["gap"][strategy]
        print(
            f"gap {strategy} - pooled: mean {100 * gap['mean']:+.2f} points, "
            f"worst {100 * gap['min']:+.2f}, within 1 point on "
            f"{gap['within_1_point']} of {gap['seeds']} seeds"
        )
    print(f"time: {summary['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
