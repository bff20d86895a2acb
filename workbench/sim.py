"""A local federation on 127.0.0.1: a coordinator process and member processes.

:class:`LocalFederation` starts ``workbench coordinator`` and one
``workbench member`` process per member, each with its own credential file and
CSV datasets, plus a ``researcher`` member in this process that submits jobs
through :mod:`workbench.api`. It is what ``workbench demo`` and the integration
tests run on; nothing in it is simulated but the hospitals.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.api import Federation, connect
from workbench.client import CoordinatorClient
from workbench.coordinator.service import Coordinator
from workbench.coordinator.storage import Storage
from workbench.crypto import generate_sealing_keypair
from workbench.errors import CoordinatorUnavailableError
from workbench.member.credentials import Credential

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetFile",
    "LocalFederation",
    "compare_models",
    "free_port",
    "run_demo",
    "split_demo_data",
]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class DatasetFile:
    """A dataset a member process serves: a name, a CSV path and a target."""

    name: str
    path: Path
    target: str

    def argument(self) -> str:
        """The ``NAME=PATH:TARGET`` argument of ``workbench member``."""
        return f"{self.name}={self.path}:{self.target}"


@dataclass
class LocalFederation:
    """A coordinator and member processes on this machine.

    Parameters
    ----------
    datasets : mapping of str to sequence of DatasetFile
        Each member's name and the datasets its process serves.
    name : str, default="demo"
        Federation name.
    data_dir : path or None, default=None
        Folder of the coordinator's state, credentials and logs; a temporary
        folder if ``None``.
    database_url : str or None, default=None
        Run the coordinator on this database instead of SQLite.
    poll_wait : float, default=5.0
        Long-poll seconds of the member processes.
    extra_member_args : mapping of str to sequence of str
        More command-line arguments for some member processes.
    """

    datasets: Mapping[str, Sequence[DatasetFile]]
    name: str = "demo"
    data_dir: Path | None = None
    database_url: str | None = None
    poll_wait: float = 5.0
    extra_member_args: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        if self.data_dir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="workbench-")
            self.data_dir = Path(self._temporary.name)
        self.data_dir = Path(self.data_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.members: dict[str, subprocess.Popen[bytes]] = {}
        self.credentials: dict[str, Path] = {}
        self.admin_token = ""
        self.researcher: Federation | None = None
        self._logs: list[Any] = []

    # Paths ------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """The coordinator's ``--data-dir``."""
        assert self.data_dir is not None
        return self.data_dir / "coordinator"

    @property
    def coordinator_log(self) -> Path:
        """The coordinator process's log (stdout and stderr)."""
        assert self.data_dir is not None
        return self.data_dir / "logs" / "coordinator.log"

    def member_log(self, member: str) -> Path:
        """A member process's log."""
        assert self.data_dir is not None
        return self.data_dir / "logs" / f"{member}.log"

    # Life cycle -------------------------------------------------------------------

    def start(self) -> LocalFederation:
        """Start the coordinator, join every member and start their processes."""
        assert self.data_dir is not None
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        storage = Storage(self.state_dir, self.database_url)
        try:
            self.admin_token = Coordinator(storage).create_federation(self.name)
        finally:
            storage.dispose()
        self.start_coordinator()
        with CoordinatorClient(self.url, self.admin_token) as admin:
            invitations = {m: admin.invite(self.name, m) for m in self.datasets}
            research = admin.invite(self.name, "researcher")
        for member, invitation in invitations.items():
            self.credentials[member] = self._join(member, invitation)
        self.researcher = connect(self.url, invitation=research, name="researcher")
        for member in self.datasets:
            self.start_member(member)
        return self

    def start_coordinator(self) -> None:
        """Start (or restart) the coordinator process and wait until it answers."""
        command = [
            sys.executable,
            "-m",
            "workbench.cli",
            "coordinator",
            "--data-dir",
            str(self.state_dir),
            "--port",
            str(self.port),
        ]
        if self.database_url:
            command += ["--database", self.database_url]
        self.coordinator = self._spawn(command, self.coordinator_log)
        self._wait_healthy()

    def start_member(self, member: str) -> None:
        """Start a member process."""
        command = [
            sys.executable,
            "-m",
            "workbench.cli",
            "member",
            "--coordinator",
            self.url,
            "--credential",
            str(self.credentials[member]),
            "--poll-wait",
            str(self.poll_wait),
        ]
        for dataset in self.datasets[member]:
            command += ["--dataset", dataset.argument()]
        command += list(self.extra_member_args.get(member, ()))
        self.members[member] = self._spawn(command, self.member_log(member))

    def kill_coordinator(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the coordinator process and wait for it to end."""
        if self.coordinator is not None:
            self.coordinator.send_signal(sig)
            self.coordinator.wait(timeout=30)

    def kill_member(self, member: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a member process and wait for it to end."""
        process = self.members[member]
        process.send_signal(sig)
        process.wait(timeout=30)

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and remove a temporary folder."""
        if self.researcher is not None:
            self.researcher.close()
        processes = list(self.members.values())
        if self.coordinator is not None:
            processes.append(self.coordinator)
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for handle in self._logs:
            handle.close()
        self._logs.clear()
        if self._temporary is not None:
            self._temporary.cleanup()

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Helpers ----------------------------------------------------------------------

    def _join(self, member: str, invitation: str) -> Path:
        assert self.data_dir is not None
        private, public = generate_sealing_keypair()
        with CoordinatorClient(self.url) as anonymous:
            joined = anonymous.join(invitation, member, public)
        credential = Credential(
            coordinator=self.url,
            federation=joined["federation"],
            member=member,
            token=joined["credential"],
            sealing_private_key=private.hex(),
            sealing_public_key=public.hex(),
        )
        return credential.save(self.data_dir / "credentials" / f"{member}.json")

    def _spawn(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        environment = dict(os.environ)
        environment.setdefault("PYTHONUNBUFFERED", "1")
        # Two cores are shared by every process here: one BLAS thread each.
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            environment.setdefault(name, "1")
        handle = open(log, "ab")
        self._logs.append(handle)
        return subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=environment
        )

    def _wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with CoordinatorClient(self.url, timeout=2) as client:
            while True:
                assert self.coordinator is not None
                if self.coordinator.poll() is not None:
                    raise CoordinatorUnavailableError(
                        f"the coordinator process exited with code "
                        f"{self.coordinator.returncode}",
                        hint=f"see its log: {self.coordinator_log}",
                    )
                try:
                    client.health()
                    return
                except CoordinatorUnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    def describe(self) -> dict[str, Any]:
        """URL, folders and process ids, for logs and reports."""
        return {
            "url": self.url,
            "data_dir": str(self.data_dir),
            "coordinator_pid": None
            if self.coordinator is None
            else self.coordinator.pid,
            "member_pids": {m: p.pid for m, p in self.members.items()},
        }


# The demo -------------------------------------------------------------------------

DEMO_HOSPITALS = ("hospital-a", "hospital-b", "hospital-c", "hospital-d")
DEMO_SPLIT = (
    "Dirichlet label skew: for each class, the share of its rows going to each of "
    "the four hospitals is drawn from Dirichlet(alpha=1.0) with the demo's seed "
    "(redrawn until every hospital holds at least 10 rows of each class); each "
    "hospital then keeps a random 25% of its rows as its held-out part"
)


def split_demo_data(
    seed: int = 0, hospitals: Sequence[str] = DEMO_HOSPITALS
) -> tuple[Any, dict[str, tuple[Any, Any]]]:
    """Split scikit-learn's breast_cancer data into non-IID hospital parts.

    Returns
    -------
    frame : pandas.DataFrame
        The whole table (30 features and ``target``).
    parts : dict of str to (DataFrame, DataFrame)
        Each hospital's training and held-out parts (see :data:`DEMO_SPLIT`).
    """
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame
    y = frame["target"].to_numpy()
    rng = np.random.default_rng(seed)
    k = len(hospitals)
    while True:
        members: list[list[int]] = [[] for _ in range(k)]
        for label in (0, 1):
            rows = rng.permutation(np.flatnonzero(y == label))
            shares = rng.dirichlet(np.ones(k))
            cuts = (np.cumsum(shares) * len(rows)).astype(int)[:-1]
            for index, chunk in enumerate(np.split(rows, cuts)):
                members[index].extend(chunk.tolist())
        counts = [[int(np.sum(y[m] == c)) for c in (0, 1)] for m in members]
        if min(min(c) for c in counts) >= 10:
            break
    parts = {}
    for hospital, chosen in zip(hospitals, members, strict=True):
        order = rng.permutation(np.asarray(chosen))
        cut = int(round(0.75 * len(order)))
        parts[hospital] = (
            frame.iloc[np.sort(order[:cut])].reset_index(drop=True),
            frame.iloc[np.sort(order[cut:])].reset_index(drop=True),
        )
    return frame, parts


def _score(y_true: Any, proba: Any) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import accuracy_score, roc_auc_score

    auc = float(roc_auc_score(y_true, proba)) if len(set(y_true)) > 1 else np.nan
    return {"accuracy": float(accuracy_score(y_true, proba >= 0.5)), "auc": auc}


def compare_models(
    parts: Mapping[str, tuple[Any, Any]],
    features: Sequence[str],
    federated: Mapping[str, Any],
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Score federated models against local-only and pooled logistic regressions.

    Parameters
    ----------
    parts : mapping of str to (DataFrame, DataFrame)
        Each hospital's training and held-out parts (:func:`split_demo_data`).
    features : sequence of str
    federated : mapping of str to fitted estimator
        Federated models by name; each predicts from a plain feature matrix.

    Returns
    -------
    overall : dict
        For each name of ``federated``, ``"local"`` (each hospital's held-out part
        scored by its own model) and ``"pooled"``: ``accuracy`` and ``auc`` on the
        union of the held-out parts.
    hospitals : list of dict
        The same per hospital, with its row counts and malignant share.
    """
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    columns = list(features)
    names = [*federated, "local", "pooled"]
    pooled_train = pd.concat([train for train, _ in parts.values()])
    pooled = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    pooled.fit(pooled_train[columns], pooled_train["target"])
    hospitals = []
    collected: dict[str, list[Any]] = {name: [] for name in ["y", *names]}
    for hospital, (train, test) in parts.items():
        local = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        local.fit(train[columns], train["target"])
        y_test = test["target"].to_numpy()
        X_test = test[columns].to_numpy()
        probabilities = {
            name: model.predict_proba(X_test)[:, 1] for name, model in federated.items()
        }
        probabilities["local"] = local.predict_proba(test[columns])[:, 1]
        probabilities["pooled"] = pooled.predict_proba(test[columns])[:, 1]
        collected["y"].append(y_test)
        row: dict[str, Any] = {
            "hospital": hospital,
            "train_rows": len(train),
            "test_rows": len(test),
            "malignant_share": float(np.mean(train["target"] == 0)),
        }
        for name, proba in probabilities.items():
            collected[name].append(proba)
            row[name] = _score(y_test, proba)
        hospitals.append(row)
    y_all = np.concatenate(collected["y"])
    overall = {name: _score(y_all, np.concatenate(collected[name])) for name in names}
    return overall, hospitals


def run_demo(
    *,
    rounds: int = 10,
    key_bits: int = 2048,
    seed: int = 0,
    progress: bool = True,
    data_dir: Path | None = None,
    strategy: str = "newton",
    validation_fraction: float = 0.0,
    compare_fedavg: bool = True,
) -> dict[str, Any]:
    """Run the demo federation and compare federated, local and pooled models.

    Four member processes each hold one hospital's part of breast_cancer; a
    researcher member submits an encrypted job of the ``fedavg`` kind that trains
    logistic regression with ``strategy`` (``"newton"``, federated Newton steps, by
    default; ``"fedavg"`` averages locally trained parameters). With
    ``validation_fraction=0`` (the default) every member trains on all its
    training rows, as the pooled model does; the job's per-round metrics are then
    in-sample. With ``compare_fedavg`` (the default) and another ``strategy``, a
    second job of plain FedAvg runs on the same members first, and its model is
    scored beside the others under the key ``fedavg``.

    Returns
    -------
    dict
        ``federated``, ``local`` and ``pooled`` (each ``accuracy`` and ``auc`` on
        the union of the hospitals' held-out parts), ``hospitals`` (the same per
        hospital), ``seconds``, ``seconds_per_round``, ``rounds``, ``bytes_sent``,
        ``bytes_received``, ``key_bits``, ``strategy``, ``validation_fraction``,
        ``final_metrics`` (the job's last per-round metrics) and ``split``.
    """
    import numpy as np

    from workbench.jobs.fedavg import fedavg_spec
    from workbench.jobs.spec import EncryptionSpec

    started = time.monotonic()
    frame, parts = split_demo_data(seed)
    features = [c for c in frame.columns if c != "target"]
    with tempfile.TemporaryDirectory(prefix="workbench-demo-") as scratch:
        root = Path(data_dir) if data_dir is not None else Path(scratch)
        files = {}
        for hospital, (train, _) in parts.items():
            path = root / "data" / f"{hospital}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            train.to_csv(path, index=False)
            files[hospital] = [DatasetFile("breast_cancer", path, "target")]
        federation = LocalFederation(files, data_dir=root / "federation", poll_wait=5)
        with federation:
            assert federation.researcher is not None
            models: dict[str, Any] = {}
            plan = [("fedavg", "fedavg")] if compare_fedavg else []
            if strategy != "fedavg" or not compare_fedavg:
                plan.append(("federated", strategy))
            for name, chosen in plan:
                spec = fedavg_spec(
                    dataset="breast_cancer",
                    model="logistic_regression",
                    rounds=rounds,
                    classes=[0, 1],
                    members=list(files),
                    seed=seed,
                    round_deadline=120,
                    strategy=chosen,
                    validation_fraction=validation_fraction,
                    encryption=EncryptionSpec(
                        key_bits=key_bits, allow_insecure_keys=key_bits < 2048
                    ),
                )
                job = federation.researcher.submit(spec)
                job.wait(progress=progress)
                models[name] = job.model
                status = job.status()
                history = job.history
            if "federated" not in models:
                models["federated"] = models["fedavg"]

    overall, hospitals = compare_models(parts, features, models)
    closed = [r for r in status["rounds"] if r["closed_at"] is not None]
    round_seconds = [r["closed_at"] - r["opened_at"] for r in closed]
    return {
        **overall,
        "hospitals": hospitals,
        "seconds": time.monotonic() - started,
        "job_seconds": float(status["finished_at"] - status["created_at"]),
        "seconds_per_round": float(np.mean(round_seconds)),
        "rounds": len(closed),
        "training_rounds": rounds,
        "bytes_sent": int(sum(r["bytes_up"] for r in status["rounds"])),
        "bytes_received": int(sum(r["bytes_down"] for r in status["rounds"])),
        "key_bits": key_bits,
        "strategy": strategy,
        "validation_fraction": validation_fraction,
        "final_metrics": {
            name: float(history[name].iloc[-1])
            for name in ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
        },
        "split": DEMO_SPLIT,
    }


def format_demo(result: Mapping[str, Any]) -> str:
    """The demo's result as a text table."""

    def pair(entry: Mapping[str, float]) -> str:
        return f"{100 * entry['accuracy']:5.1f}%  {entry['auc']:.3f}"

    strategy = str(result.get("strategy", "fedavg"))
    held_out = float(result.get("validation_fraction", 0.0))
    rows = (
        "every training row trains"
        if held_out == 0
        else f"{100 * held_out:.0f}% of each member's rows kept for validation"
    )
    columns = [("federated", f"federated ({strategy})")]
    if "fedavg" in result and strategy != "fedavg":
        columns.append(("fedavg", "plain FedAvg"))
    columns += [("local", "local only"), ("pooled", "pooled")]
    lines = [
        f"Encrypted federated training on breast_cancer: four hospitals, "
        f"{result['training_rounds']} training rounds, {result['key_bits']}-bit "
        "Paillier keys",
        f"federated = strategy {strategy!r} of the fedavg job kind; {rows}",
        "",
        f"{'hospital':<12} {'train':>5} {'test':>4}   "
        + "   ".join(f"{title:>18}" for _, title in columns),
        f"{'':<12} {'rows':>5} {'rows':>4}   "
        + "   ".join(f"{'acc':>10}  {'AUC':>5}" for _ in columns),
    ]
    for row in result["hospitals"]:
        lines.append(
            f"{row['hospital']:<12} {row['train_rows']:>5} {row['test_rows']:>4}   "
            + "   ".join(f"    {pair(row[key])}" for key, _ in columns)
        )
    lines.append(
        f"{'all':<12} {'':>5} {'':>4}   "
        + "   ".join(f"    {pair(result[key])}" for key, _ in columns)
    )
    lines += [
        "",
        f"rounds: {result['rounds']} ({result['rounds'] - result['training_rounds']} "
        f"setup + {result['training_rounds']} training), "
        f"{result['seconds_per_round']:.2f} s per round",
        f"bytes sent by members: {result['bytes_sent']:,}; bytes of aggregates "
        f"fetched: {result['bytes_received']:,}",
        f"total time: {result['seconds']:.1f} s (job: {result['job_seconds']:.1f} s)",
        "split: " + str(result["split"]),
    ]
    return "\n".join(lines)
