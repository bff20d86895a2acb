"""The %federate magic, driven through IPython against a real coordinator."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.coordinator.conftest import Running
from tests.notebook.conftest import invite, join
from workbench.api import Federation, Job
from workbench.errors import ConfigurationError
from workbench.notebook.magic import parse_spec_body
from workbench.sim import split_demo_data


def handlers() -> list[logging.Handler]:
    return [
        h
        for h in logging.getLogger("workbench").handlers
        if getattr(h, "workbench_notebook", False)
    ]


def test_load_ext_adds_one_log_handler(shell: Any, capsys: Any) -> None:
    """Loading the extension twice leaves one INFO handler; unloading removes all."""
    assert "federate" in shell.magics_manager.magics["line"]
    assert "federate" in shell.magics_manager.magics["cell"]
    shell.run_line_magic("reload_ext", "workbench")
    assert len(handlers()) == 1
    assert logging.getLogger("workbench").level == logging.INFO

    shell.extension_manager.unload_extension("workbench")
    assert handlers() == []
    assert "federate" not in shell.magics_manager.magics["line"]
    assert "federate" not in shell.magics_manager.magics["cell"]
    shell.run_line_magic("load_ext", "workbench")
    assert len(handlers()) == 1

    shell.run_line_magic("federate", "")
    shell.run_line_magic("federate", "train --help")
    printed = capsys.readouterr().out
    assert (
        "connect" in printed and "Submit an encrypted federated training job" in printed
    )
    assert "--strategy STRATEGY" in printed


def test_connect_with_invitation_then_credential(
    coordinator: Running, shell: Any, tmp_path: Path, capsys: Any
) -> None:
    """connect joins and saves a credential, which a second connect then uses."""
    tokens = invite(coordinator, ["hospital-a", "hospital-b"])
    others = join(coordinator, {"hospital-b": tokens["hospital-b"]})
    path = tmp_path / "a.json"

    shell.run_line_magic(
        "federate",
        f"connect {coordinator.url} --invitation {tokens['hospital-a']} "
        f"--name hospital-a --save-to {path}",
    )
    joined = shell.user_ns["_federation"]
    assert isinstance(joined, Federation) and joined.member == "hospital-a"
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    shell.run_line_magic(
        "federate", f"connect {coordinator.url} --credential {path} --as again"
    )
    again = shell.user_ns["again"]
    assert again.member == "hospital-a" and again is not joined
    assert "connected to f1 as hospital-a (2 members)" in capsys.readouterr().out

    members = shell.run_line_magic("federate", "members")
    assert members["member"].tolist() == [m["name"] for m in again.members()]
    others["hospital-b"].close()


def test_errors_print_one_line(coordinator: Running, shell: Any, capsys: Any) -> None:
    """Failures print the message and hint on one line, and no traceback."""
    invite(coordinator, ["a"])
    lines = [
        f"connect {coordinator.url} --invitation wbi_nothing --name a",
        "bogus",
        "members",
        "train --dataset d",
        "status",
        f"connect {coordinator.url} --unknown-flag",
    ]
    for line in lines:
        assert shell.run_line_magic("federate", line) is None
    printed = capsys.readouterr().err
    errors = [e for e in printed.splitlines() if not e.startswith("INFO ")]
    assert len(errors) == len(lines)
    assert all(e.startswith("error: ") for e in errors)
    assert "Traceback" not in printed
    assert "not known" in errors[0]
    assert "no subcommand 'bogus'" in errors[1] and "connect" in errors[1]
    assert "no federation is connected" in errors[2]
    assert "hint: run %federate connect" in errors[2]
    assert "train needs --model, --rounds" in errors[3]
    assert "no job in _job" in errors[4]
    assert "unrecognized arguments: --unknown-flag" in errors[5]


def test_parse_spec_body_reads_key_value_and_json() -> None:
    """A cell body of key = value lines or one JSON object gives train's options."""
    body = "# the job\ndataset = cancer\nrounds = 3\nclasses = [0, 1]\nlocal-epochs=2\n"
    assert parse_spec_body(body) == {
        "dataset": "cancer",
        "rounds": 3,
        "classes": [0, 1],
        "local_epochs": 2,
    }
    assert parse_spec_body('{"rounds": 4, "strategy": "newton"}') == {
        "rounds": 4,
        "strategy": "newton",
    }
    with pytest.raises(ConfigurationError, match="line 2 .* not key = value"):
        parse_spec_body("rounds = 3\nnewton")
    with pytest.raises(ConfigurationError, match="gives 'rounds' a second time"):
        parse_spec_body("rounds = 3\nrounds = 4")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        parse_spec_body('{"rounds": }')


def test_register_train_and_follow(
    coordinator: Running, shell: Any, tmp_path: Path, capsys: Any
) -> None:
    """register, train (line and cell), wait, status, history and jobs match the API."""
    tokens = invite(coordinator, ["hospital-a", "hospital-b"])
    members = join(coordinator, {"hospital-b": tokens["hospital-b"]})
    _, parts = split_demo_data(3, ["hospital-a", "hospital-b"])
    members["hospital-b"].register_dataset(
        "cancer", parts["hospital-b"][0], target="target"
    )
    shell.user_ns["frame"] = parts["hospital-a"][0]
    try:
        shell.run_line_magic(
            "federate",
            f"connect {coordinator.url} --invitation {tokens['hospital-a']} "
            "--name hospital-a",
        )
        shell.run_line_magic(
            "federate", "register cancer frame --target target --publish"
        )
        datasets = shell.run_line_magic("federate", "datasets")
        assert datasets.to_dict("records") == [
            {
                "dataset": "cancer",
                "member": "hospital-a",
                "rows": len(parts["hospital-a"][0]),
                "columns": 31,
                "where": "here",
            }
        ]
        published = members["hospital-b"].members()
        assert [d["name"] for m in published for d in m["datasets"]] == ["cancer"]

        shell.run_line_magic(
            "federate",
            "train --dataset cancer --model logistic_regression --rounds 2 "
            "--strategy newton --validation-fraction 0 --key-bits 512 "
            "--allow-insecure-keys --as newton",
        )
        shell.run_cell_magic(
            "federate",
            "train --as plain --wait --timeout 120",
            "dataset = cancer\nmodel = sgd_classifier\nrounds = 1\n"
            "key_bits = 512\nallow_insecure_keys = true\nseed = 4\n",
        )
        shell.run_line_magic("federate", "wait newton --timeout 120")
        out = capsys.readouterr()
        assert out.err.count("error:") == 0, out.err

        newton, plain = shell.user_ns["newton"], shell.user_ns["plain"]
        assert isinstance(newton, Job) and isinstance(plain, Job)
        assert newton.spec.options["strategy"] == "newton"
        assert (plain.spec.rounds, plain.spec.seed) == (1 + 2, 4)
        assert f"job {newton.id} completed" in out.out

        status = shell.run_line_magic("federate", "status newton")
        assert status["state"] == "completed"
        assert status["rounds_closed"] == status["total_rounds"] == 4
        assert set(status["members"]) == {"hospital-a", "hospital-b"}
        by_id = shell.run_line_magic("federate", f"status {plain.id}")
        assert by_id["id"] == plain.id and by_id["state"] == "completed"

        history = shell.run_line_magic("federate", "history newton")
        pd.testing.assert_frame_equal(history, newton.history)
        jobs = shell.run_line_magic("federate", "jobs")
        assert jobs["id"].tolist() == [plain.id, newton.id]
        assert set(jobs["state"]) == {"completed"}
    finally:
        for federation in members.values():
            federation.close()


def test_use_and_register_errors(coordinator: Running, shell: Any, capsys: Any) -> None:
    """use takes a Federation variable; register refuses a value that is no table."""
    tokens = invite(coordinator, ["a"])
    shell.user_ns["fed"] = join(coordinator, tokens)["a"]
    shell.user_ns["numbers"] = [1, 2, 3]

    shell.run_line_magic("federate", "use numbers")
    shell.run_line_magic("federate", "use fed")
    shell.run_line_magic("federate", "register d numbers --target y")
    errors = [e for e in capsys.readouterr().err.splitlines() if e.startswith("error")]
    assert "'numbers' does not hold a Federation, got list" in errors[0]
    assert "'numbers' is not a pandas DataFrame" in errors[1]
    assert shell.run_line_magic("federate", "members")["member"].tolist() == ["a"]


def test_stats_takes_ranges(coordinator: Running, shell: Any, capsys: Any) -> None:
    """stats passes each --range to Federation.stats and returns the summary."""
    names = ["hospital-a", "hospital-b", "researcher"]
    federations = join(coordinator, invite(coordinator, names))
    _, parts = split_demo_data(7, names[:2])
    try:
        for name in names[:2]:
            federations[name].register_dataset(
                "cancer", parts[name][0], target="target"
            )
        shell.user_ns["fed"] = federations["researcher"]
        shell.run_line_magic("federate", "use fed")
        shell.run_line_magic("federate", "stats --dataset cancer --columns x")
        shell.run_line_magic(
            "federate", "stats --dataset cancer --columns x --range x=1"
        )
        summary = shell.run_line_magic(
            "federate",
            "stats --dataset cancer --columns 'mean radius' "
            "--range 'mean radius=5:30' --key-bits 512 --allow-insecure-keys",
        )
    finally:
        for federation in federations.values():
            federation.close()
    errors = [e for e in capsys.readouterr().err.splitlines() if e.startswith("error")]
    assert "the following arguments are required: --range" in errors[0]
    assert "--range needs COLUMN=LOW:HIGH, got 'x=1'" in errors[1]
    pooled = pd.concat([parts[n][0] for n in names[:2]])["mean radius"]
    assert summary.loc["mean radius", "count"] == len(pooled)
    assert abs(summary.loc["mean radius", "mean"] - pooled.mean()) < 1e-2
