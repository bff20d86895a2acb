"""The coordinator on PostgreSQL, when a server can be started here."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.coordinator.conftest import (
    KeyPairs,
    free_port,
    start_coordinator,
    submit,
    update,
)
from workbench.crypto import EncryptedVector, decrypt_vector
from workbench.wire import decode_bundle

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1, or a skip saying why not."""
    initdb = BIN / "initdb"
    if not initdb.exists():
        found = shutil.which("initdb")
        if found is None:
            pytest.skip(
                "PostgreSQL is not installed (no initdb; apt-get install postgresql)"
            )
        initdb = Path(found)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run it")
    # Outside pytest's private temporary tree, which the postgres user cannot enter.
    folder = Path(tempfile.mkdtemp(prefix="workbench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data = folder / "data"
    port = free_port()
    made = subprocess.run(
        _as_postgres([str(initdb), "-D", str(data), "-U", "workbench", "--auth=trust"]),
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"initdb failed: {made.stderr.strip()[-300:]}")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder}"
    ctl = str(initdb.parent / "pg_ctl")
    started = subprocess.run(
        _as_postgres(
            [
                ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "log"),
                "-w",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {started.stderr.strip()[-300:]}")
    try:
        yield f"postgresql://workbench@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([ctl, "-D", str(data), "-m", "fast", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_job_on_postgres(
    tmp_path: Path, postgres_url: str, small_keys: KeyPairs
) -> None:
    """A round runs and a restart resumes on PostgreSQL as on SQLite."""
    server, thread, running = start_coordinator(
        tmp_path / "state", database_url=postgres_url
    )
    try:
        setup = submit(running, small_keys[0], members=("a", "b"), rounds=1)
        with setup.client("a") as client:
            client.upload_update(setup.job_id, 1, update(setup, [1.5]))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not (tmp_path / "state" / "coordinator.db").exists()
    server, thread, again = start_coordinator(
        tmp_path / "state", database_url=postgres_url
    )
    try:
        setup.running = again
        with setup.client("b") as client:
            client.upload_update(setup.job_id, 1, update(setup, [2.0]))
            data = client.aggregate(setup.job_id, 1, wait=5)
            assert client.job(setup.job_id)["state"] == "completed"
        vector = EncryptedVector.from_bytes(
            decode_bundle(data)["p"],
            setup.public_key,  # type: ignore[arg-type]
        )
        np.testing.assert_allclose(
            decrypt_vector(setup.private_key, vector).values, [3.5], atol=1e-3
        )  # type: ignore[arg-type]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
