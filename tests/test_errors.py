"""Tests of rebuilding errors from their HTTP bodies."""

from __future__ import annotations

from workbench.errors import (
    InvalidRequestError,
    JobSpecError,
    ModelRegistryError,
    error_from_dict,
)


def test_invalid_request_is_rebuilt_as_its_own_class() -> None:
    """A 422 invalid_request body becomes an InvalidRequestError, not a model error."""
    body = {"code": "invalid_request", "message": "rows: bad", "hint": "see docs"}
    error = error_from_dict(body, status=422)
    assert type(error) is InvalidRequestError
    assert not isinstance(error, ModelRegistryError)
    assert error.message == "rows: bad" and error.hint == "see docs"
    assert type(error_from_dict(JobSpecError("x").to_dict(), status=422)) is (
        JobSpecError
    )
