"""The coordinator: federations, jobs and rounds over HTTP, holding only ciphertexts.

Start one with ``workbench coordinator --data-dir DIR`` or, from Python, with
:func:`serve`; :func:`create_app` returns the ASGI application.
"""

from __future__ import annotations

from workbench.coordinator.app import CoordinatorSettings, create_app
from workbench.coordinator.server import (
    DEFAULT_PORT,
    check_transport,
    is_loopback,
    serve,
)
from workbench.coordinator.service import Coordinator
from workbench.coordinator.storage import Storage

__all__ = [
    "DEFAULT_PORT",
    "Coordinator",
    "CoordinatorSettings",
    "Storage",
    "check_transport",
    "create_app",
    "is_loopback",
    "serve",
]
