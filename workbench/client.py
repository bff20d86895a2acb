"""HTTP access to a coordinator, for members and admins.

:class:`CoordinatorClient` wraps every route of docs/protocol.md. Errors the
coordinator reports come back as the matching :mod:`workbench.errors` class (from
the JSON body ``{"code", "message", "hint"}``); a coordinator that cannot be reached
raises :class:`~workbench.errors.CoordinatorUnavailableError`.
"""

from __future__ import annotations

import base64
import logging
import ssl
import threading
from typing import Any

import httpx

from workbench.errors import (
    CoordinatorUnavailableError,
    ProtocolError,
    WorkbenchError,
    error_from_dict,
)

logger = logging.getLogger(__name__)

__all__ = ["CoordinatorClient"]

OCTETS = "application/octet-stream"


class CoordinatorClient:
    """A connection to one coordinator with one token.

    Parameters
    ----------
    url : str
        Base URL, e.g. ``http://127.0.0.1:8470``; ``https://`` for TLS.
    token : str or None, default=None
        A member credential or an admin token, sent as a bearer token.
    timeout : float, default=30.0
        Seconds to wait for a reply, on top of any long-poll wait.
    verify : bool or str, default=True
        Check the coordinator's TLS certificate; a path names a CA bundle (for a
        self-signed certificate).

    Attributes
    ----------
    bytes_sent : int
        Request body bytes sent so far.
    bytes_received : int
        Response body bytes received so far.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        verify: bool | str = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.bytes_sent = 0
        self.bytes_received = 0
        self._count = threading.Lock()
        headers = {"User-Agent": "workbench"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        tls: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify)
            if isinstance(verify, str)
            else verify
        )
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, verify=tls
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._http.is_closed

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Transport --------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        wait: float = 0.0,
    ) -> httpx.Response:
        """Send one request and return the response, raising reported errors.

        Raises
        ------
        CoordinatorUnavailableError
            If the coordinator cannot be reached or the connection broke.
        WorkbenchError
            The error the coordinator reported, as its class.
        """
        headers = {"Content-Type": OCTETS} if content is not None else None
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method,
                path,
                json=json,
                content=content,
                params=params,
                headers=headers,
                timeout=self.timeout + wait,
            )
        except httpx.TransportError as exc:
            raise CoordinatorUnavailableError(
                f"the coordinator at {self.url} could not be reached "
                f"({type(exc).__name__}: {exc})",
                hint="check that it runs and that the URL is right; members retry",
            ) from exc
        with self._count:
            self.bytes_sent += len(response.request.content or b"")
            self.bytes_received += len(response.content)
        if response.status_code >= 400:
            raise _error(response)
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and return the decoded JSON body."""
        return self.request("GET", path, **kwargs).json()

    # Admin ------------------------------------------------------------------------

    def invite(self, federation: str, member: str) -> str:
        """Issue a single-use invitation (needs the federation's admin token)."""
        body = self.request(
            "POST", f"/v1/federations/{federation}/invitations", json={"member": member}
        ).json()
        return str(body["invitation"])

    # Members ----------------------------------------------------------------------

    def health(self) -> dict[str, str]:
        """Return the coordinator's health and version."""
        return self.get_json("/v1/health")  # type: ignore[no-any-return]

    def join(
        self, invitation: str, name: str, sealing_public_key: bytes
    ) -> dict[str, str]:
        """Redeem an invitation; returns federation, member and credential."""
        return self.request(  # type: ignore[no-any-return]
            "POST",
            "/v1/join",
            json={
                "invitation": invitation,
                "name": name,
                "sealing_public_key": sealing_public_key.hex(),
            },
        ).json()

    def federation(self) -> dict[str, Any]:
        """The caller's federation: its members, their sealing keys and datasets."""
        return self.get_json("/v1/federation")  # type: ignore[no-any-return]

    def publish_dataset(
        self, name: str, schema: dict[str, str], rows: int | None
    ) -> None:
        """Publish a dataset's schema (and row count, if given)."""
        self.request(
            "PUT", f"/v1/datasets/{name}", json={"schema": schema, "rows": rows}
        )

    def submit_job(
        self, spec: dict[str, Any], public_key: str, sealed_keys: dict[str, bytes]
    ) -> dict[str, Any]:
        """Submit a job; returns its status."""
        body = {
            "spec": spec,
            "public_key": public_key,
            "sealed_keys": {
                name: base64.b64encode(blob).decode("ascii")
                for name, blob in sealed_keys.items()
            },
        }
        response = self.request("POST", "/v1/jobs", json=body)
        return response.json()  # type: ignore[no-any-return]

    def jobs(self) -> list[dict[str, Any]]:
        """Summaries of the jobs in the caller's federation."""
        return self.get_json("/v1/jobs")  # type: ignore[no-any-return]

    def job(
        self, job_id: str, *, after: int | None = None, wait: float = 0.0
    ) -> dict[str, Any]:
        """A job's status; with ``after`` and ``wait``, wait for a newer event."""
        return self.get_json(  # type: ignore[no-any-return]
            f"/v1/jobs/{job_id}",
            params={"after": after, "wait": wait if after is not None else None},
            wait=wait,
        )

    def job_events(self, job_id: str) -> list[dict[str, Any]]:
        """A job's life-cycle events."""
        return self.get_json(f"/v1/jobs/{job_id}/events")  # type: ignore[no-any-return]

    def job_key(self, job_id: str) -> tuple[str, str, bytes]:
        """The job's public key (JSON), its fingerprint and the caller's sealed key."""
        body = self.get_json(f"/v1/jobs/{job_id}/key")
        return (
            str(body["public_key"]),
            str(body["fingerprint"]),
            base64.b64decode(body["sealed_key"]),
        )

    def next_task(self, wait: float = 20.0) -> dict[str, Any] | None:
        """The next round to answer, or ``None`` after waiting ``wait`` seconds."""
        response = self.request("GET", "/v1/tasks", params={"wait": wait}, wait=wait)
        if response.status_code == 204:
            return None
        return response.json()  # type: ignore[no-any-return]

    def upload_update(self, job_id: str, number: int, bundle: bytes) -> None:
        """Upload the caller's encrypted update (a bundle) for a round."""
        self.request(
            "POST", f"/v1/jobs/{job_id}/rounds/{number}/update", content=bundle
        )

    def report_failure(self, job_id: str, number: int, message: str) -> None:
        """Tell the coordinator the caller could not compute its update."""
        self.request(
            "POST",
            f"/v1/jobs/{job_id}/rounds/{number}/failure",
            json={"message": message[:4000]},
        )

    def aggregate(self, job_id: str, number: int, wait: float = 20.0) -> bytes | None:
        """The round's encrypted aggregate (a bundle), or ``None`` while it is open."""
        response = self.request(
            "GET",
            f"/v1/jobs/{job_id}/rounds/{number}/aggregate",
            params={"wait": wait},
            wait=wait,
        )
        return None if response.status_code == 204 else response.content

    def put_blob(
        self,
        job_id: str,
        number: int,
        name: str,
        data: bytes,
        *,
        recipient: str | None = None,
        format: str = "bytes",
    ) -> dict[str, Any]:
        """Send a named blob in a round, to everyone or to one ``recipient``."""
        return self.request(  # type: ignore[no-any-return]
            "PUT",
            f"/v1/jobs/{job_id}/rounds/{number}/blobs/{name}",
            content=data,
            params={"recipient": recipient, "format": format},
        ).json()

    def list_blobs(self, job_id: str, number: int) -> list[dict[str, Any]]:
        """The blobs of a round the caller may read."""
        path = f"/v1/jobs/{job_id}/rounds/{number}/blobs"
        return self.get_json(path)  # type: ignore[no-any-return]

    def get_blob(
        self,
        job_id: str,
        number: int,
        name: str,
        *,
        sender: str | None = None,
        wait: float = 0.0,
    ) -> bytes | None:
        """A blob of a round, or ``None`` if it did not arrive within ``wait``."""
        response = self.request(
            "GET",
            f"/v1/jobs/{job_id}/rounds/{number}/blobs/{name}",
            params={"sender": sender, "wait": wait},
            wait=wait,
        )
        return None if response.status_code == 204 else response.content


def _error(response: httpx.Response) -> WorkbenchError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "code" in body:
        return error_from_dict(body, status=response.status_code)
    return ProtocolError(
        f"the coordinator answered {response.status_code} without an error body",
        hint="check that the URL points at a Workbench coordinator",
    )
