"""The demo, as a researcher runs it: `workbench demo --json`, 2048-bit keys."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_json_matches_pooled() -> None:
    """Four hospitals, 10 rounds: federated accuracy within 1 point of pooled."""
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads(done.stdout)
    for name in ("federated", "local", "pooled"):
        assert set(result[name]) == {"accuracy", "auc"}
        assert 0.5 < result[name]["accuracy"] <= 1.0
    gap = result["federated"]["accuracy"] - result["pooled"]["accuracy"]
    assert abs(gap) <= 0.01
    assert result["strategy"] == "newton"
    assert 0.5 < result["fedavg"]["accuracy"] <= 1.0
    assert result["federated"]["auc"] > 0.95
    assert result["key_bits"] == 2048
    assert result["rounds"] == 12 and result["training_rounds"] == 10
    assert len(result["hospitals"]) == 4
    assert result["bytes_sent"] > 0 and result["seconds"] > 0
