"""Tests of the ``workbench`` command's checks of its arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.cli import main


def test_join_refuses_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """join --credential in a folder that does not exist fails and creates nothing."""
    target = tmp_path / "nonexistent" / "dir" / "a.json"
    code = main(
        [
            "join",
            "--coordinator",
            "http://127.0.0.1:9",
            "--invitation",
            "wbi_x",
            "--name",
            "a",
            "--credential",
            str(target),
        ]
    )
    assert code == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nonexistent").exists()


def test_join_hint_speaks_of_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-HTTP --coordinator is refused with a hint about --coordinator."""
    code = main(
        [
            "join",
            "--coordinator",
            "ftp://127.0.0.1",
            "--invitation",
            "wbi_x",
            "--name",
            "a",
            "--credential",
            "a.json",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "hint: pass e.g. --coordinator http://" in err and "connect(" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-body-bytes", "-5"], "--max-body-bytes must be a positive"),
        (["--log-level", "LOUD"], "--log-level must be one of"),
    ],
)
def test_coordinator_refuses_bad_settings(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    """A negative body limit or an unknown log level stops the coordinator."""
    code = main(["coordinator", "--data-dir", str(tmp_path / "d"), *extra])
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_federation_create_checks_the_name_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad federation name is refused before the state folder is made."""
    data = tmp_path / "state"
    code = main(["federation", "create", "../../x", "--data-dir", str(data)])
    assert code == 1
    assert "federation" in capsys.readouterr().err
    assert not data.exists()


def test_member_publishes_names_and_full_schemas_on_request(tmp_path: Path) -> None:
    """Served datasets are published by name; --publish adds schema and rows."""
    import pandas as pd

    from tests.coordinator.conftest import start_coordinator
    from workbench.api import connect
    from workbench.cli import publish_datasets
    from workbench.member import DatasetRegistry

    server, thread, running = start_coordinator(tmp_path / "state")
    try:
        admin = running.coordinator.create_federation("f1")
        with running.client(admin) as client:
            invitations = {n: client.invite("f1", n) for n in ("a", "b")}
        members = {
            n: connect(running.url, invitation=i, name=n)
            for n, i in invitations.items()
        }
        frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
        for name, full in (("a", False), ("b", True)):
            registry = DatasetRegistry()
            registry.register("cancer", frame, target="y")
            publish_datasets(members[name].client, registry, full=full)
        published = {m["name"]: m["datasets"] for m in members["a"].members()}
        for federation in members.values():
            federation.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert published["a"] == [{"name": "cancer", "schema": {}, "rows": None}]
    assert published["b"] == [
        {
            "name": "cancer",
            "schema": {"x": "float64; column 0", "y": "int64; target"},
            "rows": 3,
        }
    ]
