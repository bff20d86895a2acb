"""TLS: a coordinator with a certificate, and the refusal of plain HTTP elsewhere."""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.coordinator.conftest import free_port
from workbench.cli import main
from workbench.client import CoordinatorClient
from workbench.coordinator import CoordinatorSettings, check_transport, create_app
from workbench.errors import CoordinatorUnavailableError, ProtocolError


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_coordinator_over_tls(tmp_path: Path) -> None:
    """With a certificate the coordinator speaks HTTPS, verified against it."""
    cert, key = self_signed(tmp_path)
    port = free_port()
    app = create_app(CoordinatorSettings(str(tmp_path / "state")))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            log_config=None,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            time.sleep(0.02)
        with CoordinatorClient(f"https://127.0.0.1:{port}", verify=str(cert)) as client:
            assert client.health()["status"] == "ok"
        with CoordinatorClient(f"https://127.0.0.1:{port}") as unverified:
            with pytest.raises(
                CoordinatorUnavailableError, match="could not be reached"
            ):
                unverified.health()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_plain_http_off_loopback_is_refused() -> None:
    """Without TLS the coordinator listens only on loopback unless --insecure."""
    with pytest.raises(ProtocolError, match="without TLS"):
        check_transport("192.0.2.10", None, None, insecure=False)
    check_transport("192.0.2.10", None, None, insecure=True)
    check_transport("127.0.0.1", None, None, insecure=False)
    check_transport("::1", None, None, insecure=False)
    with pytest.raises(ProtocolError, match="both --certfile and --keyfile"):
        check_transport("127.0.0.1", "cert.pem", None, insecure=False)


def test_cli_refuses_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`workbench coordinator --host` off loopback without TLS exits with a hint."""
    status = main(["coordinator", "--data-dir", str(tmp_path), "--host", "192.0.2.10"])
    assert status == 1
    err = capsys.readouterr().err
    assert "refusing to listen on 192.0.2.10 without TLS" in err
    assert "--insecure" in err
