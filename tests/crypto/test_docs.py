"""The examples in the crypto docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "workbench.crypto.packing",
    "workbench.crypto.pool",
    "workbench.crypto.vector",
    "workbench.crypto.paillier",
    "workbench.crypto.slices",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name):
    """Every doctest in the module passes."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
