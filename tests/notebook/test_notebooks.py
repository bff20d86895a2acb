"""Every notebook in notebooks/ runs top to bottom in a Jupyter kernel of this venv."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec running this interpreter, so that the venv's packages are used."""
    folder = tmp_path / "jupyter" / "kernels" / "workbench-test"
    folder.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "workbench tests",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # Use the platform folders now, instead of a DeprecationWarning about them.
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return "workbench-test"


def outputs(notebook: object, name: str) -> str:
    """The text a notebook's cells wrote to one stream."""
    return "".join(
        output.get("text", "")
        for cell in notebook.cells  # type: ignore[attr-defined]
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == name
    )


def test_notebooks_are_committed_without_outputs() -> None:
    """No notebook in notebooks/ holds outputs or execution counts."""
    import nbformat

    assert NOTEBOOKS, "notebooks/ holds no notebook"
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, kernel_name: str, tmp_path: Path) -> None:
    """The notebook runs without an error, and %federate printed none."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=600,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    # A %federate failure prints a line instead of raising, so look for one.
    printed_errors = outputs(notebook, "stderr")
    errors = [
        e for e in printed_errors.splitlines() if e.startswith(("error", "ERROR"))
    ]
    assert errors == [] and "Traceback" not in printed_errors, printed_errors
    if path.stem == "federated_training":
        printed = outputs(notebook, "stdout")
        found = dict(re.findall(r"(\w+): accuracy (\d\.\d+)", printed))
        assert set(found) == {"federated", "pooled", "local"}, printed
        assert abs(float(found["federated"]) - float(found["pooled"])) <= 0.02
        assert "completed" in printed
