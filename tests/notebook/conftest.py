"""A real coordinator in a thread, members joined over HTTP, and an IPython shell."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.coordinator.conftest import Running, start_coordinator
from workbench.api import Federation, connect


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Running]:
    server, thread, running = start_coordinator(tmp_path / "state")
    yield running
    server.should_exit = True
    thread.join(timeout=10)


def invite(
    running: Running, names: list[str], federation: str = "f1"
) -> dict[str, str]:
    """Create a federation and an invitation for each name."""
    admin = running.coordinator.create_federation(federation)
    with running.client(admin) as client:
        return {name: client.invite(federation, name) for name in names}


def join(running: Running, invitations: dict[str, str]) -> dict[str, Federation]:
    """Redeem invitations through the API."""
    return {
        name: connect(running.url, invitation=token, name=name)
        for name, token in invitations.items()
    }


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[object]:
    """An IPython shell with ``%load_ext workbench``, no history file."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    ipython = InteractiveShell.instance(config=config)
    ipython.run_line_magic("load_ext", "workbench")
    before = set(ipython.user_ns)
    yield ipython
    for name in set(ipython.user_ns) - before:
        value = ipython.user_ns.pop(name)
        if isinstance(value, Federation):
            value.close()
    ipython.extension_manager.unload_extension("workbench")
