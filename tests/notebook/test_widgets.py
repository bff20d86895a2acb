"""The panels: built, their buttons clicked in code, their API effect checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.coordinator.conftest import Running
from tests.notebook.conftest import invite, join
from workbench.errors import MissingDependencyError
from workbench.notebook.widgets import DatasetPanel, JobPanel, JoinPanel
from workbench.sim import split_demo_data


def test_join_panel_joins_then_reconnects(coordinator: Running, tmp_path: Path) -> None:
    """Connect joins with an invitation and saves the credential that reconnects."""
    tokens = invite(coordinator, ["hospital-a"])
    path = tmp_path / "a.json"
    namespace: dict[str, Any] = {}
    seen: list[Any] = []
    panel = JoinPanel(url=coordinator.url, namespace=namespace, on_connect=seen.append)
    panel.invitation.value = tokens["hospital-a"]
    panel.name.value = "hospital-a"
    panel.credential.value = str(path)

    panel.button.click()

    assert panel.federation is not None and panel.federation.member == "hospital-a"
    assert namespace["_federation"] is panel.federation and seen == [panel.federation]
    assert path.exists() and panel.invitation.value == ""
    assert "connected to f1 as hospital-a" in panel.message.value

    again = JoinPanel(url=coordinator.url, credential=str(path), namespace={})
    again.button.click()
    assert again.federation is not None and again.federation.member == "hospital-a"
    for federation in (panel.federation, again.federation):
        federation.close()


def test_join_panel_shows_errors(coordinator: Running) -> None:
    """A refused invitation, or an empty form, shows the reason and connects nothing."""
    invite(coordinator, ["a"])
    panel = JoinPanel(url=coordinator.url, namespace={})
    panel.button.click()
    assert "neither an invitation nor a credential" in panel.message.value

    panel.invitation.value = "wbi_nothing"
    panel.name.value = "a"
    assert panel.connect() is None
    assert panel.federation is None
    assert "not known" in panel.message.value and "color" in panel.message.value


def test_dataset_panel_registers_and_publishes(coordinator: Running) -> None:
    """The panel lists namespace DataFrames and registers and publishes the chosen."""
    federation = join(coordinator, invite(coordinator, ["a"]))["a"]
    _, parts = split_demo_data(5, ["a", "b"])
    frame = parts["a"][0]
    namespace = {"cancer": frame, "_hidden": frame, "rows": [1, 2]}
    try:
        panel = DatasetPanel(federation, namespace=namespace)
        assert panel.variable.options == ("cancer",)
        assert panel.target.value == "target" and panel.name.value == "cancer"

        namespace["other"] = frame.drop(columns="target")
        panel.rescan.click()
        assert panel.variable.options == ("cancer", "other")
        assert panel.variable.value == "cancer"

        panel.name.value = "breast"
        panel.publish.value = True
        panel.button.click()

        assert "breast" in federation.datasets
        assert len(federation.datasets.get("breast").frame) == len(frame)
        published = federation.members()[0]["datasets"]
        assert [(d["name"], d["rows"]) for d in published] == [("breast", len(frame))]
        assert f"{len(frame)} rows" in panel.message.value

        panel.variable.value = "other"
        panel.target.value = "mean radius"
        panel.name.value = "bad name!"
        assert panel.register() is None
        assert "bad name!" in panel.message.value
    finally:
        federation.close()


def test_job_panel_follows_a_job(coordinator: Running) -> None:
    """The panel's thread draws a bar per round and the history until the job ends."""
    names = ["hospital-a", "hospital-b", "researcher"]
    federations = join(coordinator, invite(coordinator, names))
    _, parts = split_demo_data(6, names[:2])
    try:
        for name in names[:2]:
            federations[name].register_dataset(
                "cancer", parts[name][0], target="target"
            )
        job = federations["researcher"].train(
            dataset="cancer",
            model="sgd_classifier",
            rounds=2,
            classes=[0, 1],
            key_bits=512,
            allow_insecure_keys=True,
        )
        panel = JobPanel(job, interval=0.2)
        job.wait(timeout=120)
        assert panel.join(timeout=30)

        assert panel.status_ is not None and panel.status_["state"] == "completed"
        assert (panel.progress.value, panel.progress.max) == (4, 4)
        assert panel.progress.bar_style == "success"
        bars = [row.children[0] for row in panel.rounds.children]
        assert [b.description for b in bars] == [f"round {n}" for n in (1, 2, 3, 4)]
        assert [(b.value, b.max) for b in bars] == [(2, 2)] * 4
        history = job.history
        for value in history["val_accuracy"].dropna():
            assert f"{value:.4f}" in panel.metrics.value
        assert "completed, round 4 of 4" in panel.title.value

        still = JobPanel(job, follow=False)
        assert still.rounds.children == ()
        still.button.click()
        assert len(still.rounds.children) == 4 and still.progress.value == 4
    finally:
        for federation in federations.values():
            federation.close()


def test_panels_need_ipywidgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ipywidgets the panels raise MissingDependencyError with the command."""
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    monkeypatch.delitem(sys.modules, "workbench.notebook.widgets")
    with pytest.raises(MissingDependencyError, match=r"pip install 'workbench\["):
        import workbench.notebook.widgets  # noqa: F401


def test_import_needs_no_notebook_packages() -> None:
    """workbench, its API and workbench.notebook import without IPython or widgets."""
    code = (
        "import sys\n"
        "for name in ('IPython', 'ipywidgets', 'ipykernel', 'nbclient'):\n"
        "    sys.modules[name] = None\n"
        "import workbench, workbench.api, workbench.notebook\n"
        "try:\n"
        "    workbench.notebook.JobPanel\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("MissingDependencyError the notebook panels need")
