"""After a job, the coordinator's storage and log hold no plaintext and no data."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest import train
from workbench.crypto import EncryptedVector
from workbench.jobs import fedavg
from workbench.jobs.spec import JobSpec
from workbench.member.datasets import LocalDataset
from workbench.sim import LocalFederation
from workbench.wire import decode_bundle

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Replay:
    """A member's context that replays its rounds here and records what it encrypts."""

    def __init__(self, job: Any, member: str, dataset: LocalDataset) -> None:
        self.job = job
        self.job_id = job.id
        self.spec: JobSpec = job.spec
        self.member = member
        self.participants = list(job.spec.members)
        self.submitter = "researcher"
        self.public_key = job.public_key
        self.private_key = job._private_key
        self._dataset = dataset

    def dataset(self) -> LocalDataset:
        return self._dataset

    def upload(self, round: int, vectors: dict[str, EncryptedVector]) -> None:
        pass

    def aggregate(self, round: int) -> dict[str, EncryptedVector]:
        data = self.job.federation.client.aggregate(self.job_id, round, wait=0)
        return {
            name: EncryptedVector.from_bytes(raw, self.public_key)
            for name, raw in decode_bundle(data).items()
        }


def patterns_of_values(values: np.ndarray) -> set[bytes]:
    """Byte and text forms in which a stored plaintext value would show."""
    found: set[bytes] = set()
    for value in np.asarray(values, dtype=float).ravel():
        if value == 0 or abs(value) < 1e-6 or float(value).is_integer():
            continue
        # Eight-byte forms only: a four-byte float32 pattern turns up by chance in
        # a few hundred kilobytes of ciphertexts (one in 2**32 per offset and
        # pattern), which would make the scan fail on noise, not on a leak.
        found.add(struct.pack("<d", value))
        found.add(struct.pack(">d", value))
        if abs(value) >= 1e-3:
            found.add(f"{value:.5f}".encode())
    return found


def patterns_of_rows(frame: pd.DataFrame) -> set[bytes]:
    """The CSV text of each row's first values, and each value's float64 bytes."""
    found: set[bytes] = set()
    for line in frame.to_csv(index=False, header=False).splitlines():
        found.add(line[:24].encode())
    found |= patterns_of_values(frame.drop(columns=["target"]).to_numpy())
    return found


def scan(paths: list[Path], patterns: set[bytes]) -> list[tuple[str, bytes]]:
    hits = []
    for path in paths:
        content = path.read_bytes()
        hits += [(str(path), p) for p in patterns if p in content]
    return hits


def test_coordinator_holds_no_plaintext(
    federation: LocalFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scan the database, blob folder and log for update values and data rows."""
    job = train(federation, rounds=3).wait(timeout=180)
    recorded: list[np.ndarray] = []
    real = fedavg.encrypt_vector

    def recording(  # type: ignore[no-untyped-def]
        public_key, values, encoding, **options
    ):
        recorded.append(np.array(values, dtype=float))
        return real(public_key, values, encoding, **options)

    monkeypatch.setattr(fedavg, "encrypt_vector", recording)
    rows: set[bytes] = set()
    for member, files in federation.datasets.items():
        dataset = LocalDataset("breast_cancer", files[0].path, target="target")
        rows |= patterns_of_rows(dataset.frame)
        runner = fedavg.FedAvgRunner(job.spec)
        context = Replay(job, member, dataset)
        for number in range(1, job.spec.rounds + 1):
            runner.run_round(context, number)  # type: ignore[arg-type]
    assert len(recorded) == 3 * (2 + 2 * 3)
    updates = set().union(*(patterns_of_values(v) for v in recorded))
    assert len(updates) > 100 and len(rows) > 1000

    stored = [p for p in federation.state_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("coordinator.db") for p in stored)
    assert len([p for p in stored if "blobs" in p.parts]) > 10
    targets = [*stored, federation.coordinator_log]
    assert scan(targets, updates) == []
    assert scan(targets, rows) == []

    # The scan finds what it looks for where it is: the members' own files.
    member_files = [files[0].path for files in federation.datasets.values()]
    assert scan(member_files, rows)
