"""Workbench: federated research from notebooks."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> object:
    # The front door is imported on first use, so that ``import workbench`` stays
    # light for the coordinator and the command line.
    if name in ("connect", "Federation", "Job"):
        from workbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """Add ``%federate`` to an IPython shell (``%load_ext workbench``)."""
    from workbench.notebook.magic import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """Remove ``%federate`` and the log handler that ``%load_ext workbench`` added."""
    from workbench.notebook.magic import unload_ipython_extension as unload

    unload(ipython)
