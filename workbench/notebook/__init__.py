"""The notebook layer: the ``%federate`` magic and ipywidgets panels.

Both are thin over :mod:`workbench.api`: each subcommand and each button is one
call there. ``%load_ext workbench`` adds the magic; the panels are
:class:`JoinPanel`, :class:`DatasetPanel` and :class:`JobPanel`, imported on
first use so that this package needs neither IPython nor ipywidgets until then.
"""

from __future__ import annotations

__all__ = ["DatasetPanel", "JobPanel", "JoinPanel"]


def __getattr__(name: str) -> object:
    # ipywidgets is an optional dependency: import it only when a panel is asked for.
    if name in __all__:
        from workbench.notebook import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'workbench.notebook' has no attribute {name!r}")
