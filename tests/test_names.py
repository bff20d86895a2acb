"""Tests of the naming rule."""

import pytest

from workbench.errors import InvalidNameError
from workbench.names import validate_name


@pytest.mark.parametrize("name", ["a", "hosp-a", "Data_1.v2", "9" * 64])
def test_valid_names_pass(name: str) -> None:
    """Names that follow the rule are returned unchanged."""
    assert validate_name("dataset", name) == name


@pytest.mark.parametrize(
    "name", ["", "../../x", ".hidden", "dätä", "a/b", "a b", "x" * 65, "-a", 5, None]
)
def test_invalid_names_are_refused(name: object) -> None:
    """Names that break the rule raise an error stating the rule."""
    with pytest.raises(InvalidNameError, match="the dataset name .* is not allowed"):
        validate_name("dataset", name)
