"""The conformal demo over real processes, with small keys."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main
from workbench.conformal_demo import CONFIDENCES, RULES

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_conformal_json_reports_every_rule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``workbench demo conformal --json`` gives coverage and size for each rule."""
    status = main(["demo", "conformal", "--json", "--key-bits", "512", "--seed", "1"])

    result = json.loads(capsys.readouterr().out)
    assert status == 0
    assert sorted(result["rules"]) == sorted(RULES)
    levels = [f"{level:g}" for level in CONFIDENCES]
    for entry in [*result["rules"].values(), result["pooled"]]:
        assert sorted(entry) == sorted(levels)
        sizes = [entry[level]["size"] for level in levels]
        assert sizes == sorted(sizes)
        assert all(0.0 <= entry[level]["coverage"] <= 1.0 for level in levels)
    # twice_mean excludes a class only where the mean rule does too.
    for level in levels:
        assert (
            result["rules"]["twice_mean"][level]["size"]
            >= (result["rules"]["mean"][level]["size"])
        )
    assert result["rules"]["mean"]["0.9"]["coverage"] >= 0.8
    for report in result["reports"].values():
        assert report["answered"] == ["lab-a", "lab-b", "lab-c"]
        assert report["failures"] == {}
