"""A real coordinator on uvicorn, in a thread, on a free port of 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from workbench.client import CoordinatorClient
from workbench.coordinator import CoordinatorSettings, create_app
from workbench.crypto import generate_sealing_keypair


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    url: str
    data_dir: Path
    app: object

    def client(self, token: str | None = None) -> CoordinatorClient:
        return CoordinatorClient(self.url, token, timeout=10)

    @property
    def coordinator(self):  # type: ignore[no-untyped-def]
        return self.app.state.coordinator  # type: ignore[attr-defined]

    def federation(self, name: str, members: list[str]) -> dict[str, object]:
        """Create a federation and join ``members``; return tokens and keys."""
        admin = self.coordinator.create_federation(name)
        out: dict[str, object] = {"admin": admin}
        with self.client(admin) as client:
            for member in members:
                invitation = client.invite(name, member)
                private, public = generate_sealing_keypair()
                with self.client() as anonymous:
                    joined = anonymous.join(invitation, member, public)
                out[member] = (joined["credential"], private, public)
        return out


def start_coordinator(
    data_dir: Path, *, max_body_bytes: int = 1 << 20, database_url: str | None = None
) -> tuple[uvicorn.Server, threading.Thread, Running]:
    port = free_port()
    app = create_app(
        CoordinatorSettings(
            str(data_dir), database_url=database_url, max_body_bytes=max_body_bytes
        )
    )
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the coordinator did not start")
        time.sleep(0.02)
    return server, thread, Running(f"http://127.0.0.1:{port}", data_dir, app)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    server, thread, info = start_coordinator(tmp_path / "coordinator")
    yield info
    server.should_exit = True
    thread.join(timeout=10)
