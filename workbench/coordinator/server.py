"""Running the coordinator on uvicorn, with TLS on any non-loopback address."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from workbench.coordinator.app import CoordinatorSettings, create_app
from workbench.errors import ProtocolError

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
    """
    check_transport(host, certfile, keyfile, insecure=insecure)
    if certfile is None and not is_loopback(host):
        logger.warning("listening on %s without TLS (--insecure)", host)
    app = create_app(settings)
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
    uvicorn.Server(config).run()
