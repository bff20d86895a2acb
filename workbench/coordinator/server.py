"""Running the coordinator on uvicorn, with TLS on any non-loopback address."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl

import uvicorn

from workbench.coordinator.app import CoordinatorSettings, create_app
from workbench.errors import ProtocolError, StartupError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PORT", "is_loopback", "serve"]

DEFAULT_PORT = 8470


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_transport(
    host: str, certfile: str | None, keyfile: str | None, *, insecure: bool
) -> None:
    """Refuse plain HTTP on an address other than loopback unless ``insecure``.

    Raises
    ------
    ProtocolError
        If only one of ``certfile`` and ``keyfile`` is given, or if ``host`` is not
        a loopback address, no certificate is given and ``insecure`` is false.
    """
    if (certfile is None) != (keyfile is None):
        raise ProtocolError(
            "TLS needs both --certfile and --keyfile; only one was given",
            hint="pass both, or neither on a loopback address",
        )
    if certfile is None and not is_loopback(host) and not insecure:
        raise ProtocolError(
            f"refusing to listen on {host} without TLS: members' credentials and "
            "updates would cross the network in the clear",
            hint="pass --certfile and --keyfile, or --insecure if another layer "
            "encrypts the traffic",
        )


def serve(
    settings: CoordinatorSettings,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    certfile: str | None = None,
    keyfile: str | None = None,
    insecure: bool = False,
) -> None:
    """Run the coordinator until it is stopped (Ctrl-C or SIGTERM).

    Parameters
    ----------
    settings : CoordinatorSettings
        Data folder, database and limits.
    host : str, default="127.0.0.1"
        Address to listen on.
    port : int, default=8470
        Port to listen on.
    certfile, keyfile : str or None
        PEM certificate and key for TLS.
    insecure : bool, default=False
        Allow plain HTTP on an address other than loopback.

    Raises
    ------
    ProtocolError
        See :func:`check_transport`.
    StartupError
        If the port is out of range or taken, the TLS files cannot be read, or the
        data folder or database cannot be used; nothing is started then.
    """
    check_transport(host, certfile, keyfile, insecure=insecure)
    check_tls_files(certfile, keyfile)
    if certfile is None and not is_loopback(host):
        logger.warning("listening on %s without TLS (--insecure)", host)
    # Bind before the application starts, so that a taken port is reported before
    # anything says the coordinator started.
    listener = bind(host, port)
    try:
        app = create_app(settings)
    except BaseException:
        listener.close()
        raise
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run(sockets=[listener])


def check_tls_files(certfile: str | None, keyfile: str | None) -> None:
    """Check that the certificate and key can be read and belong together.

    Raises
    ------
    StartupError
        If a file is missing or unreadable, or the pair is not a valid PEM pair.
    """
    if certfile is None or keyfile is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            certfile, keyfile
        )
    except FileNotFoundError as exc:
        raise StartupError(
            f"the TLS file {exc.filename or certfile!r} does not exist",
            hint="pass --certfile and --keyfile paths of PEM files that exist",
        ) from exc
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot load the TLS certificate {certfile!r} with the key "
            f"{keyfile!r}: {exc}",
            hint="pass a PEM certificate and its matching unencrypted PEM key",
        ) from exc


def bind(host: str, port: int) -> socket.socket:
    """Open a listening TCP socket on ``host``:``port``.

    Raises
    ------
    StartupError
        If the port is outside 1 to 65535, the address is unknown, or the port is
        in use.
    """
    if not 1 <= port <= 65535:
        raise StartupError(
            f"the port {port} is out of range",
            hint="pass --port a number from 1 to 65535",
        )
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(
            f"the address {host!r} cannot be resolved: {exc}",
            hint="pass --host an IP address of this machine, e.g. 127.0.0.1",
        ) from exc
    family, kind, proto, _name, address = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        raise StartupError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick a free port with --port, or stop what holds this one",
        ) from exc
    listener.set_inheritable(True)
    return listener
