"""The join, member and demo commands over real processes and a real coordinator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue

import pandas as pd
import pytest

from tests.coordinator.conftest import Running, start_coordinator
from workbench.member import Credential

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Running]:
    server, thread, running = start_coordinator(tmp_path / "state")
    yield running
    server.should_exit = True
    thread.join(timeout=10)


def workbench(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def invite(running: Running, names: list[str]) -> dict[str, str]:
    admin = running.coordinator.create_federation("f1")
    with running.client(admin) as client:
        return {n: client.invite("f1", n) for n in names}


def join(  # type: ignore[no-untyped-def]
    running: Running, invitation: str, name: str, path: Path, *extra: str
):
    return workbench(
        "join",
        "--coordinator",
        running.url,
        "--invitation",
        invitation,
        "--name",
        name,
        "--credential",
        str(path),
        *extra,
    )


def test_join_refuses_an_existing_credential(
    coordinator: Running, tmp_path: Path
) -> None:
    """join keeps an existing credential file unless --force is given."""
    invitations = invite(coordinator, ["a", "b"])
    path = tmp_path / "a.json"
    assert join(coordinator, invitations["a"], "a", path).returncode == 0
    refused = join(coordinator, invitations["b"], "b", path)
    assert refused.returncode == 1
    assert "exists already" in refused.stderr and "--force" in refused.stderr
    assert Credential.load(path).member == "a"
    forced = join(coordinator, invitations["b"], "b", path, "--force")
    assert forced.returncode == 0, forced.stderr
    assert Credential.load(path).member == "b"


def test_join_to_a_folder_keeps_the_invitation(
    coordinator: Running, tmp_path: Path
) -> None:
    """--credential naming a folder is refused before redeeming, without traceback."""
    invitations = invite(coordinator, ["a"])
    refused = join(coordinator, invitations["a"], "a", tmp_path)
    assert refused.returncode == 1
    assert "is a folder" in refused.stderr and "Traceback" not in refused.stderr
    joined = join(coordinator, invitations["a"], "a", tmp_path / "a.json")
    assert joined.returncode == 0, joined.stderr


@pytest.fixture
def credential(coordinator: Running, tmp_path: Path) -> Path:
    invitations = invite(coordinator, ["a"])
    path = tmp_path / "a.json"
    assert join(coordinator, invitations["a"], "a", path).returncode == 0
    return path


def test_member_needs_a_dataset(credential: Path) -> None:
    """workbench member without --dataset refuses to start and says what to pass."""
    result = workbench("member", "--credential", str(credential))
    assert result.returncode == 1
    assert "pass --dataset NAME=PATH:TARGET" in result.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("../../x={csv}:y", "dataset name '../../x' is not allowed"),
        ("cancer={csv}:nocol", "no target column 'nocol'"),
    ],
)
def test_member_refuses_a_bad_dataset(
    credential: Path, tmp_path: Path, spec: str, message: str
) -> None:
    """A bad dataset name or a missing target column stops the member at once."""
    csv = tmp_path / "d.csv"
    pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]}).to_csv(csv, index=False)
    result = workbench(
        "member", "--credential", str(credential), "--dataset", spec.format(csv=csv)
    )
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_member_stops_promptly_on_sigterm(credential: Path, tmp_path: Path) -> None:
    """SIGTERM ends an idle member well before its 30-second long-poll would."""
    csv = tmp_path / "d.csv"
    pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]}).to_csv(csv, index=False)
    command = [
        sys.executable,
        "-m",
        "workbench.cli",
        "member",
        "--credential",
        str(credential),
        "--dataset",
        f"d={csv}:y",
        "--poll-wait",
        "30",
    ]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT) as run:
        assert run.stderr is not None
        # A reader thread, so that a member that never says it serves fails the
        # test after a minute instead of hanging it.
        queue: Queue[str] = Queue()
        reader = threading.Thread(
            target=lambda: [queue.put(line) for line in run.stderr], daemon=True
        )
        reader.start()
        lines: list[str] = []
        while not any("serving" in line for line in lines):
            try:
                lines.append(queue.get(timeout=60))
            except Empty:
                run.kill()
                pytest.fail("the member did not start serving:\n" + "".join(lines))
        time.sleep(1.0)  # let the first long-poll begin
        os.kill(run.pid, signal.SIGTERM)
        try:
            code = run.wait(timeout=20)
        finally:
            run.kill()
        reader.join(timeout=10)
        rest = "".join(queue.get() for _ in range(queue.qsize()))
    assert code == 0, "".join(lines) + rest
    assert "stopped" in rest
    assert not any("httpx" in line for line in [*lines, *rest.splitlines()])


@pytest.mark.parametrize(
    "arguments",
    [
        ["demo", "--key-bits", "1000"],
        ["demo", "conformal", "--key-bits", "100"],
        ["demo", "--rounds", "0"],
    ],
)
def test_demo_refuses_bad_options_in_one_line(arguments: list[str]) -> None:
    """A bad demo option gives one line and exit status 2, no traceback."""
    result = workbench(*arguments)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("workbench demo: --")
