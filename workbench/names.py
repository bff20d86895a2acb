"""The one naming rule for datasets, members and federations.

A name starts with an ASCII letter or digit and goes on with at most 63 ASCII
letters, digits, dots, underscores or hyphens: ``^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$``.
Such a name is safe as a path segment, in a URL and in a database column of 64
characters, and it cannot climb out of a folder (it never starts with a dot and holds
no slash).
"""

from __future__ import annotations

import re

from workbench.errors import InvalidNameError

__all__ = ["NAME_PATTERN", "NAME_RULE", "validate_name"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = (
    "1 to 64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
)


def validate_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid name, else raise.

    Parameters
    ----------
    kind : str
        What the name names, for the message: ``"dataset"``, ``"member"``,
        ``"federation"``.
    value : object
        The name to check.

    Returns
    -------
    str
        ``value`` unchanged.

    Raises
    ------
    InvalidNameError
        If ``value`` is not a string matching :data:`NAME_PATTERN`.

    Examples
    --------
    >>> validate_name("dataset", "hosp-a.2024")
    'hosp-a.2024'
    """
    if not isinstance(value, str) or NAME_PATTERN.fullmatch(value) is None:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidNameError(
            f"the {kind} name {shown} is not allowed: a name is {NAME_RULE}",
            hint=f"choose a {kind} name matching {NAME_PATTERN.pattern}",
        )
    return value
