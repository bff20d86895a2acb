"""Tests of credential files: no silent overwrite, bad paths found early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.errors import AuthenticationError, CredentialFileError
from workbench.member import Credential
from workbench.member.credentials import check_writable, fallback_path


def credential(member: str = "a") -> Credential:
    return Credential("http://127.0.0.1:1", "f", member, "tok", "00" * 32, "11" * 32)


def test_save_refuses_an_existing_file(tmp_path: Path) -> None:
    """A second save to the same file is refused and the first member is kept."""
    path = credential("a").save(tmp_path / "a.json")
    with pytest.raises(CredentialFileError, match="exists already"):
        credential("b").save(path)
    assert Credential.load(path).member == "a"


def test_save_overwrites_when_asked(tmp_path: Path) -> None:
    """overwrite=True replaces the file, still with mode 0600."""
    path = credential("a").save(tmp_path / "a.json")
    credential("b").save(path, overwrite=True)
    assert Credential.load(path).member == "b"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_check_writable_refuses_a_folder(tmp_path: Path) -> None:
    """A folder as the credential path is refused, naming a file inside it."""
    with pytest.raises(CredentialFileError, match="is a folder"):
        check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_check_writable_leaves_nothing_behind(tmp_path: Path) -> None:
    """The probe file made beside the path is removed again."""
    target = check_writable(tmp_path / "sub" / "a.json")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []


def test_check_writable_refuses_an_unwritable_folder(tmp_path: Path) -> None:
    """A path under a file (not a folder) cannot be written and says so."""
    blocker = tmp_path / "plain"
    blocker.write_text("x")
    with pytest.raises(CredentialFileError, match="cannot be written"):
        check_writable(blocker / "a.json")


def test_fallback_path_is_new_and_beside(tmp_path: Path) -> None:
    """The fallback file lies in the same folder under a new name."""
    spare = fallback_path(tmp_path / "a.json")
    assert spare.parent == tmp_path and spare.name.startswith("a.json.")
    assert not spare.exists()


def test_load_refuses_a_folder(tmp_path: Path) -> None:
    """A folder passed as the credential file is named in a WorkbenchError."""
    with pytest.raises(CredentialFileError, match="is a folder"):
        Credential.load(tmp_path)


def test_load_refuses_other_json(tmp_path: Path) -> None:
    """A JSON file without the credential's fields is refused."""
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"member": "a"}))
    with pytest.raises(AuthenticationError, match="not a Workbench credential"):
        Credential.load(path)
