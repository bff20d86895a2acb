"""A real coordinator on uvicorn, in a thread, on a free port of 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import phe
import pytest
import uvicorn

from workbench.client import CoordinatorClient
from workbench.coordinator import CoordinatorSettings, create_app
from workbench.crypto import generate_sealing_keypair

KeyPairs = list[tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]]


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
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
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


@dataclass
class JobSetup:
    """A federation of members ``a``, ``b`` and ``c`` and a running job."""

    running: Running
    tokens: dict[str, object]
    job_id: str
    public_key: object
    private_key: object

    def client(self, member: str) -> CoordinatorClient:
        credential = self.tokens[member][0]  # type: ignore[index]
        return self.running.client(str(credential))


@pytest.fixture(scope="session")
def small_keys() -> KeyPairs:
    """Two 512-bit Paillier key pairs (tests only)."""
    from workbench.crypto import generate_keypair

    return [generate_keypair(512, allow_insecure=True) for _ in range(2)]


def submit(
    running: Running,
    keys: tuple[object, object],
    *,
    members: tuple[str, ...] = ("a", "b", "c"),
    rounds: int = 2,
    min_members: int | None = None,
    deadline: float = 30.0,
    federation: str = "f1",
) -> JobSetup:
    """Create a federation of ``members`` and submit a job from ``a``."""
    from workbench.crypto import private_key_to_bytes, public_key_to_json, seal

    public_key, private_key = keys
    tokens = running.federation(federation, list(members))
    secret = private_key_to_bytes(private_key)  # type: ignore[arg-type]
    sealed = {m: seal(secret, tokens[m][2]) for m in members}  # type: ignore[index]
    spec = {
        "kind": "stats",
        "dataset": "d",
        "rounds": rounds,
        "members": list(members),
        "min_members": min_members or len(members),
        "round_deadline": deadline,
        "encryption": {"key_bits": 512, "allow_insecure_keys": True},
    }
    credential = str(tokens[members[0]][0])  # type: ignore[index]
    with running.client(credential) as client:
        status = client.submit_job(spec, public_key_to_json(public_key), sealed)
    return JobSetup(running, tokens, status["id"], public_key, private_key)


def update(setup: JobSetup, values: list[float], weight: int = 1) -> bytes:
    """An update bundle holding one weighted vector ``p``."""
    from workbench.crypto import PackedEncoding, encrypt_vector
    from workbench.wire import encode_bundle

    encoding = PackedEncoding(clip=8.0, bits=16, max_contributions=5, max_weight=100)
    vector = encrypt_vector(
        setup.public_key,  # type: ignore[arg-type]
        values,
        encoding,
        weight=weight,
    )
    return encode_bundle({"p": vector.to_bytes()})
