"""The coordinator's HTTP routes (FastAPI), all under ``/v1``.

Routes parse and check requests, then call :class:`~workbench.coordinator.service.
Coordinator` in a worker thread. Every failure is a JSON body
``{"code", "message", "hint"}`` with the status of its error class. Request bodies
are limited in size (413 names the limit) and JSON bodies are parsed strictly:
unknown fields are errors. docs/protocol.md lists every route.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version as _version
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workbench.coordinator.service import Coordinator, MemberIdentity
from workbench.coordinator.storage import Storage
from workbench.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    ProtocolError,
    TooManyRequestsError,
    WorkbenchError,
)
from workbench.jobs.spec import JobSpec, parse_spec
from workbench.names import validate_name

logger = logging.getLogger(__name__)

__all__ = ["CoordinatorSettings", "create_app"]

T = TypeVar("T")
DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_WORKER_THREADS = 200
DEFAULT_LONG_POLLS_PER_MEMBER = 4
MAX_COLUMNS = 1000
MAX_ROWS = 2**53
OCTETS = "application/octet-stream"


@dataclass(frozen=True)
class CoordinatorSettings:
    """Where the coordinator keeps its state and what it accepts.

    Parameters
    ----------
    data_dir : str
        Folder of the SQLite database (unless ``database_url`` is given) and blobs.
    database_url : str or None, default=None
        A SQLAlchemy URL, e.g. ``postgresql://user@127.0.0.1:5432/workbench``.
    max_body_bytes : int, default=16 MiB
        Largest request body accepted; larger ones get 413.
    worker_threads : int, default=200
        Threads that run requests; a long-poll holds one for up to 30 s.
    long_polls_per_member : int, default=4
        Most long-polls (requests with ``wait`` > 0) one member credential may hold
        open at once; more answer at once with 429. Together with
        ``worker_threads`` this bounds how many members can stall the others.
    """

    data_dir: str
    database_url: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    worker_threads: int = DEFAULT_WORKER_THREADS
    long_polls_per_member: int = DEFAULT_LONG_POLLS_PER_MEMBER


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InvitationRequest(_Strict):
    """Body of ``POST /v1/federations/{federation}/invitations``."""

    member: str = Field(min_length=1, max_length=64)


class JoinRequest(_Strict):
    """Body of ``POST /v1/join``."""

    invitation: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=64)
    sealing_public_key: str = Field(min_length=1, max_length=200)


class DatasetRequest(_Strict):
    """Body of ``PUT /v1/datasets/{name}``."""

    schema_: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=128)],
        Annotated[str, StringConstraints(min_length=1, max_length=64)],
    ] = Field(alias="schema", min_length=0, max_length=MAX_COLUMNS)
    rows: StrictInt | None = Field(default=None, ge=0, lt=MAX_ROWS)


class JobRequest(_Strict):
    """Body of ``POST /v1/jobs``."""

    spec: dict[str, Any]
    public_key: str = Field(max_length=20_000)
    sealed_keys: dict[str, str]


class FailureRequest(_Strict):
    """Body of ``POST /v1/jobs/{job}/rounds/{round}/failure``."""

    message: str = Field(max_length=4000)


class BodyLimit:
    """ASGI middleware refusing request bodies over ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.limit:
                    await _send_error(send, self._error(declared))
                    return
        # Bodies are read whole here (they are small), so that an oversized one is
        # refused before any route parses it, chunked or not.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await _send_error(send, self._error(size))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay: Message | None = {
            "type": "http.request",
            "body": b"".join(chunks),
            "more_body": False,
        }

        async def replayed() -> Message:
            nonlocal replay
            if replay is not None:
                message, replay = replay, None
                return message
            return await receive()

        await self.app(scope, replayed, send)

    def _error(self, size: int) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"the request body ({size} bytes) is larger than this coordinator's "
            f"limit of {self.limit} bytes",
            hint="send a smaller body, or start the coordinator with a larger "
            "--max-body-bytes",
        )


async def _send_error(send: Send, error: WorkbenchError) -> None:
    response = JSONResponse(error.to_dict(), status_code=error.http_status)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ProtocolError(
            f"{what} is not valid base64", hint="send standard base64 text"
        ) from exc


async def _octets(request: Request) -> bytes:
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != OCTETS:
        raise ProtocolError(
            f"the body must be {OCTETS}, got {kind or 'no content type'}",
            hint=f"send the bytes with 'Content-Type: {OCTETS}'",
        )
    return await request.body()


def create_app(settings: CoordinatorSettings) -> FastAPI:
    """Build the coordinator's ASGI application.

    Parameters
    ----------
    settings : CoordinatorSettings
        Data folder, database URL and limits.

    Returns
    -------
    fastapi.FastAPI
        The application; its ``state.coordinator`` is the
        :class:`~workbench.coordinator.service.Coordinator`.
    """
    storage = Storage(settings.data_dir, settings.database_url)
    coordinator = Coordinator(storage)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Long-polls hold a worker thread each; leave room for many members.
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = settings.worker_threads
        coordinator.start()
        logger.info("coordinator started with data in %s", settings.data_dir)
        try:
            yield
        finally:
            coordinator.stop()
            logger.info("coordinator stopped")

    app = FastAPI(
        title="Workbench coordinator",
        version=_version("workbench"),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.coordinator = coordinator
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    _add_error_handlers(app)

    async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(fn, *args, **kwargs)

    async def member(request: Request) -> MemberIdentity:
        return await call(coordinator.authenticate, _bearer(request))

    polls: dict[int, int] = {}
    polls_lock = threading.Lock()

    @asynccontextmanager
    async def long_poll(who: MemberIdentity, wait: float) -> AsyncIterator[None]:
        # Each long-poll holds a worker thread; one credential must not hold them
        # all, or every other member's requests wait behind it.
        if wait <= 0:
            yield
            return
        limit = settings.long_polls_per_member
        with polls_lock:
            held = polls.get(who.member_id, 0)
            if held >= limit:
                raise TooManyRequestsError(
                    f"{who.name} holds {held} long-polls already; the limit per "
                    f"member is {limit}",
                    hint="wait for an open long-poll to answer before starting "
                    "another, or poll with wait=0",
                )
            polls[who.member_id] = held + 1
        try:
            yield
        finally:
            with polls_lock:
                polls[who.member_id] -= 1
                if polls[who.member_id] == 0:
                    del polls[who.member_id]

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": _version("workbench")}

    @app.post("/v1/federations/{federation}/invitations")
    async def invite(
        federation: str, body: InvitationRequest, request: Request
    ) -> dict[str, str]:
        validate_name("federation", federation)
        validate_name("member", body.member)
        found = await call(coordinator.authenticate_admin, _bearer(request), federation)
        token = await call(coordinator.create_invitation, found, body.member)
        return {"federation": federation, "member": body.member, "invitation": token}

    @app.post("/v1/join")
    async def join(body: JoinRequest) -> dict[str, str]:
        credential, who = await call(
            coordinator.join, body.invitation, body.name, body.sealing_public_key
        )
        return {
            "federation": who.federation,
            "member": who.name,
            "credential": credential,
        }

    @app.get("/v1/federation")
    async def federation(request: Request) -> dict[str, Any]:
        return await call(coordinator.federation_view, await member(request))

    @app.put("/v1/datasets/{name}")
    async def publish(
        name: str, body: DatasetRequest, request: Request
    ) -> dict[str, str]:
        validate_name("dataset", name)
        who = await member(request)
        await call(coordinator.publish_dataset, who, name, body.schema_, body.rows)
        return {"dataset": name, "published": "schema"}

    @app.post("/v1/jobs")
    async def submit(body: JobRequest, request: Request) -> dict[str, Any]:
        who = await member(request)
        spec: JobSpec = parse_spec(body.spec)
        sealed = {
            name: _b64(v, f"the sealed key of {name!r}")
            for name, v in body.sealed_keys.items()
        }
        return await call(coordinator.submit_job, who, spec, body.public_key, sealed)

    @app.get("/v1/jobs")
    async def jobs(request: Request) -> list[dict[str, Any]]:
        return await call(coordinator.list_jobs, await member(request))

    @app.get("/v1/jobs/{job_id}")
    async def job(
        job_id: str,
        request: Request,
        after: int | None = Query(default=None, ge=0),
        wait: float = Query(default=0.0, ge=0.0, le=60.0),
    ) -> dict[str, Any]:
        who = await member(request)
        async with long_poll(who, wait if after is not None else 0.0):
            return await call(
                coordinator.job_status, who, job_id, after_event=after, wait=wait
            )

    @app.get("/v1/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> list[dict[str, Any]]:
        return await call(coordinator.job_events, await member(request), job_id)

    @app.get("/v1/jobs/{job_id}/key")
    async def key(job_id: str, request: Request) -> dict[str, Any]:
        found = await call(coordinator.job_key, await member(request), job_id)
        found["sealed_key"] = base64.b64encode(found["sealed_key"]).decode("ascii")
        return found

    @app.get("/v1/tasks")
    async def task(
        request: Request, wait: float = Query(default=0.0, ge=0.0, le=60.0)
    ) -> Response:
        who = await member(request)
        async with long_poll(who, wait):
            found = await call(coordinator.next_task, who, wait)
        if found is None:
            return Response(status_code=204)
        return JSONResponse(found)

    @app.post("/v1/jobs/{job_id}/rounds/{number}/update")
    async def update(job_id: str, number: int, request: Request) -> dict[str, Any]:
        who = await member(request)
        data = await _octets(request)
        return await call(coordinator.accept_update, who, job_id, number, data)

    @app.post("/v1/jobs/{job_id}/rounds/{number}/failure")
    async def failure(
        job_id: str, number: int, body: FailureRequest, request: Request
    ) -> dict[str, Any]:
        who = await member(request)
        await call(coordinator.report_failure, who, job_id, number, body.message)
        return {"job_id": job_id, "round": number, "recorded": True}

    @app.get("/v1/jobs/{job_id}/rounds/{number}/aggregate")
    async def aggregate(
        job_id: str,
        number: int,
        request: Request,
        wait: float = Query(default=0.0, ge=0.0, le=60.0),
    ) -> Response:
        who = await member(request)
        async with long_poll(who, wait):
            data = await call(coordinator.aggregate, who, job_id, number, wait)
        if data is None:
            return Response(status_code=204)
        return Response(content=data, media_type=OCTETS)

    @app.put("/v1/jobs/{job_id}/rounds/{number}/blobs/{name}")
    async def put_blob(
        job_id: str,
        number: int,
        name: str,
        request: Request,
        recipient: str | None = Query(default=None, max_length=64),
        format: str = Query(default="bytes", max_length=16),
    ) -> dict[str, Any]:
        who = await member(request)
        data = await _octets(request)
        return await call(
            coordinator.put_blob,
            who,
            job_id,
            number,
            name,
            data,
            recipient=recipient,
            format=format,
        )

    @app.get("/v1/jobs/{job_id}/rounds/{number}/blobs")
    async def list_blobs(
        job_id: str, number: int, request: Request
    ) -> list[dict[str, Any]]:
        return await call(coordinator.list_blobs, await member(request), job_id, number)

    @app.get("/v1/jobs/{job_id}/rounds/{number}/blobs/{name}")
    async def get_blob(
        job_id: str,
        number: int,
        name: str,
        request: Request,
        sender: str | None = Query(default=None, max_length=64),
        wait: float = Query(default=0.0, ge=0.0, le=60.0),
    ) -> Response:
        who = await member(request)
        async with long_poll(who, wait):
            found = await call(
                coordinator.get_blob,
                who,
                job_id,
                number,
                name,
                sender=sender,
                wait=wait,
            )
        if found is None:
            return Response(status_code=204)
        data, info = found
        headers = {
            "X-Workbench-Sender": info["sender"],
            "X-Workbench-Format": info["format"],
        }
        return Response(content=data, media_type=OCTETS, headers=headers)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(WorkbenchError)
    async def workbench_error(_request: Request, exc: WorkbenchError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error.get("loc", ()))
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        error = InvalidRequestError(
            "the request is invalid: " + "; ".join(parts),
            hint="see docs/protocol.md for the fields of each route",
        )
        return JSONResponse(error.to_dict(), status_code=error.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(
        _request: Request, exc: StarletteHTTPException
    ) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        body = {
            "code": code,
            "message": f"{exc.detail}",
            "hint": "see docs/protocol.md for the routes under /v1",
        }
        return JSONResponse(body, status_code=exc.status_code)
