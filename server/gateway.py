"""The task service's HTTP/JSON gateway: each route is one TaskService call, errors included.

Bodies are the proto3 JSON mapping (``google.protobuf.json_format``) of the request and
response messages, printed with the proto field names (``task_id``) as grpcurl prints
them; requests may use either spelling (``task_id`` or ``taskId``). Every call goes to the
service over a resilient ``grpc.aio`` channel, with the HTTP request's id as its
``x-request-id`` (and the caller's ``authorization`` header, when sent), so both sides log
one id. A typed error coming back is rendered by
:func:`octollm_grpc.fastapi.install_error_handlers`: curl sees the same error code, message
and details as grpcurl, with the HTTP status of the same table.

The channel does not retry ``RESOURCE_EXHAUSTED`` (the HTTP caller gets 429 and
``Retry-After`` at once and decides) nor ``ExecuteTask`` (the service has already retried
the arm; retrying the execution would multiply arm calls). Its breaker is per method, so an
arm outage seen by ``ExecuteTask`` cannot close the other routes.

What one HTTP caller may cost the others is bounded by :mod:`server.http_limits`
(connections, header and body time, body size, JSON decoded in a worker process), and each
call names its HTTP client to the service's rate limiter (:mod:`server.http_callers`), after
the gateway has checked its credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import structlog
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.openapi.utils import get_openapi
from google.protobuf import json_format
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from octollm_grpc import codes, errors
from octollm_grpc.client import BreakerSettings, RetryPolicies, RetryPolicy
from octollm_grpc.client.aio import resilient_channel
from octollm_grpc.fastapi import install_error_handlers
from octollm_grpc.server import ServerMetrics, current_request_id
from server.gen.octollm.tasks.v1 import reasons_errors, tasks_pb2, tasks_pb2_grpc
from server.http_callers import CallerIdentity
from server.http_limits import (
    GatewayGuard,
    HeaderTooLargeError,
    HttpLimits,
    JsonDecoder,
    PayloadTooLargeError,
    Refusals,
    RequestTimeoutError,
    check_authorization,
    gateway_config,
    read_body,
    refusal_for,
    register_errors,
    route_uvicorn_logs,
)
from server.validation import validate_page_size

__all__ = ["ErrorBody", "Gateway", "create_app", "gateway_channel", "start_gateway"]

log = structlog.get_logger("server.gateway")

SERVICE = tasks_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name


class ErrorBody(BaseModel):
    """The seed's error envelope (what every error response carries), for the OpenAPI docs."""

    error: str
    message: str
    details: dict[str, Any]
    retry_after: float | None = None


#: Every error a gateway route can answer with, and when; the OpenAPI document lists each by
#: its error code under the HTTP status the code table gives it (said once, in
#: octollm_grpc.codes, once register_errors has added the gateway's own).
_ANSWERS: tuple[tuple[type[errors.OctoLLMError], str], ...] = (
    (errors.InvalidInputError, "a parameter out of range, a body that is not the message"),
    (errors.ValidationErrors, "every violation, also of a request that does not fit the route"),
    (reasons_errors.InvalidPageTokenError, "a page_token the service did not issue"),
    (reasons_errors.TaskStateConflictError, "the task's status does not allow the change"),
    (errors.AuthenticationError, "with --auth-token: no valid bearer token"),
    (errors.TaskNotFoundError, "no task with that id"),
    (RequestTimeoutError, "the body did not arrive within --http-body-timeout"),
    (PayloadTooLargeError, "the body is over --http-max-body"),
    (errors.RateLimitError, "with Retry-After"),
    (HeaderTooLargeError, "the authorization header is too large to pass on"),
    (errors.InternalError, "nothing of the cause is sent"),
    (errors.LLMAPIError, "the arm's own error, details intact"),
    (errors.NetworkError, "the service could not be reached"),
    (errors.ArmUnavailableError, "with Retry-After when known"),
    (errors.CircuitOpenError, "the gateway's or the service's breaker, with Retry-After"),
    (errors.CapacityExceededError, "overloaded or shutting down, with Retry-After"),
    (errors.TimeoutError, "the task or the call ran out of time"),
)


def _error_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses``: per HTTP status, the error codes answered with it and when."""
    by_status: dict[int, list[str]] = {}
    for cls, when in _ANSWERS:
        mapping = codes.mapping_for_class(cls)
        by_status.setdefault(mapping.http_status, []).append(f"{mapping.error_code} ({when})")
    return {status: {"model": ErrorBody, "description": "; ".join(entries)}
            for status, entries in sorted(by_status.items())}


def gateway_channel(target: str, registry: CollectorRegistry | None = None,
                    credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """The resilient channel the gateway calls the service on (see the module's policy);
    over TLS with ``credentials``."""
    return resilient_channel(
        target,
        credentials=credentials,
        retry=RetryPolicies(
            default=RetryPolicy(pushback_codes=frozenset()),
            methods={f"{SERVICE}/ExecuteTask": None},
        ),
        breaker=BreakerSettings(per_method=True),
        registry=registry,
    )


def _metadata(request: Request, limits: HttpLimits,
              identity: CallerIdentity | None) -> tuple[tuple[str, str], ...]:
    # install_error_handlers' middleware gives every request an id before any route runs.
    request_id = current_request_id()
    pairs = [("x-request-id", request_id)] if request_id else []
    authorization = request.headers.get("authorization")
    check_authorization(authorization, limits)  # before the call: no budget spent on it
    if authorization is not None:
        pairs.append(("authorization", authorization))
    if identity is not None:
        pairs.extend(identity.metadata(request))
    return tuple(pairs)


_CREATE_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {
        "schema": {"type": "object", "description": "octollm.tasks.v1.CreateTaskRequest"},
        "example": {"description": "Summarize the quarterly report", "priority": 5}}}}}


def _in_our_words(error: errors.SystemError) -> errors.OctoLLMError:
    """What the HTTP caller sees of a 5xx the service's channel raised.

    The service's own errors carry their ErrorInfo (``reason``) and pass as they are, as do
    deadlines. A bare UNAVAILABLE, INTERNAL, UNKNOWN or DATA_LOSS is grpc's own text (or a
    proxy's), never the service's answer: for UNAVAILABLE it names the service's internal
    address ("failed to connect to all addresses; ... ipv4:10.0.0.7:50051 ..."), for the
    others whatever the transport said. The caller gets our words (502 NETWORK_ERROR naming
    the service, or 500 INTERNAL_ERROR with nothing of the cause); the log keeps grpc's.
    """
    bare = error.reason is None and type(error) in (errors.NetworkError, errors.SystemError)
    if not bare:  # the service's own, or a deadline (ours or the service's: 504 as it is)
        return error
    log.warning("http.service.failed", grpc_code=error.code().name, grpc_message=error.message)
    if isinstance(error, errors.NetworkError):
        return errors.NetworkError(f"{SERVICE} could not be reached; retry later",
                                   details={"target": SERVICE})
    return errors.InternalError()


def _json(message: Message) -> dict[str, Any]:
    # Proto field names (task_id), as grpcurl prints them; either spelling is accepted in.
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, without FastAPI's 422 responses: a request that does not
    fit a route is answered 400 ``VALIDATION_ERRORS`` (see :func:`_error_responses`)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version,
                               description=app.description, routes=app.routes)
        for operations in document["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)  # routes with parameters only
        components = document["components"]  # ErrorBody's schema is always there
        components["schemas"] = {name: schema for name, schema in components["schemas"].items()
                                 if name not in ("HTTPValidationError", "ValidationError")}
        app.openapi_schema = document
    return app.openapi_schema


def create_app(channel: grpc.aio.Channel, *, metrics: ServerMetrics | None = None,
               timeout: float | None = None, limits: HttpLimits | None = None,
               identity: CallerIdentity | None = None) -> FastAPI:
    """The gateway's FastAPI app, calling TaskService on ``channel``.

    ``metrics`` counts its error responses (default: none counted); ``timeout`` is each
    call's deadline in seconds (default: none, the HTTP client decides how long to wait);
    ``limits`` bound bodies and headers (default: :class:`HttpLimits`); ``identity`` tells the
    service which HTTP client each call is for (its rate limit key) and checks credentials
    first (default: every call is the gateway's own).
    """
    limits = limits if limits is not None else HttpLimits()
    register_errors()
    stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
    app = FastAPI(
        title="octollm-grpc sample task service (HTTP/JSON gateway)",
        description=f"Each route calls one `{SERVICE}` RPC. Bodies are the proto3 JSON "
                    "mapping of its request and response messages; errors carry the same "
                    "error code, message and details as on gRPC.",
        version="1",
        responses=_error_responses(),
    )
    install_error_handlers(app, metrics=metrics if metrics is not None else False)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # Bodies are parsed in a worker process; start_gateway starts it, Gateway.stop stops it.
    decoder = app.state.json_decoder = JsonDecoder()

    async def admit(request: Request) -> tuple[tuple[str, str], ...]:
        """The call's metadata, once the credentials are checked (before anything else)."""
        metadata = _metadata(request, limits, identity)
        if identity is not None:
            await identity.authenticate(metadata)
        return metadata

    async def call(rpc: Callable[..., Awaitable[Message]], message: Message,
                   request: Request,
                   metadata: tuple[tuple[str, str], ...] | None = None) -> dict[str, Any]:
        if metadata is None:
            metadata = await admit(request)
        try:
            response = await rpc(message, metadata=metadata, timeout=timeout)
        except errors.CircuitOpenError as error:
            # Always the gateway's own breaker (a server's CIRCUIT_OPEN decodes as its parent,
            # ResourceError): name the service, not its internal address.
            raise errors.CircuitOpenError(SERVICE, error.retry_after or 0.0) from None
        except (errors.ResourceExhaustedError, errors.CancelledCallError) as error:
            # grpc's own size limits and the server's overload, in our words (413/431/503).
            raise refusal_for(error, limits) from None
        except errors.SystemError as error:
            raise _in_our_words(error) from None
        return _json(response)

    @app.post("/v1/tasks", summary="CreateTask", tags=["tasks"], openapi_extra=_CREATE_BODY)
    async def create_task(request: Request) -> dict[str, Any]:
        """Create a task (``CreateTaskResponse``); idempotent on ``request_id``."""
        # Read here, not by FastAPI: bounded in size and time, decoded off the event loop.
        # Credentials first: a caller without valid ones costs no body read and no parse.
        metadata = await admit(request)
        raw = await read_body(request, limits)
        message = await decoder.decode(raw, tasks_pb2.CreateTaskRequest())
        return await call(stub.CreateTask, message, request, metadata)

    @app.get("/v1/tasks", summary="ListTasks", tags=["tasks"])
    async def list_tasks(
        request: Request,
        page_size: int = Query(0, description="1..1000; 50 when 0"),
        page_token: str = Query("", description="next_page_token of the previous page"),
    ) -> dict[str, Any]:
        """One page of tasks, oldest first (``ListTasksResponse``)."""
        validate_page_size(page_size)  # the service's own check, before protobuf's int32
        message = tasks_pb2.ListTasksRequest(page_size=page_size, page_token=page_token)
        return await call(stub.ListTasks, message, request)

    @app.get("/v1/tasks/{task_id}", summary="GetTask", tags=["tasks"])
    async def get_task(request: Request, task_id: str) -> dict[str, Any]:
        """The task and its history (``GetTaskResponse``)."""
        return await call(stub.GetTask, tasks_pb2.GetTaskRequest(task_id=task_id), request)

    @app.delete("/v1/tasks/{task_id}", summary="DeleteTask", tags=["tasks"])
    async def delete_task(request: Request, task_id: str) -> dict[str, Any]:
        """Delete the task and its history (``DeleteTaskResponse``: ``{}``)."""
        return await call(stub.DeleteTask, tasks_pb2.DeleteTaskRequest(task_id=task_id),
                          request)

    @app.post("/v1/tasks/{task_id}:execute", summary="ExecuteTask", tags=["tasks"])
    async def execute_task(request: Request, task_id: str) -> dict[str, Any]:
        """Run the task on the arm (``ExecuteTaskResponse``)."""
        return await call(stub.ExecuteTask, tasks_pb2.ExecuteTaskRequest(task_id=task_id),
                          request)

    @app.post("/v1/tasks/{task_id}:cancel", summary="CancelTask", tags=["tasks"])
    async def cancel_task(request: Request, task_id: str) -> dict[str, Any]:
        """Cancel a PENDING or RUNNING task (``CancelTaskResponse``)."""
        return await call(stub.CancelTask, tasks_pb2.CancelTaskRequest(task_id=task_id),
                          request)

    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the service owns SIGTERM/SIGINT and stops us."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class Gateway:
    """A running gateway: its URL, and :meth:`stop`."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], url: str,
                 guard: GatewayGuard, refusals: Refusals, decoder: JsonDecoder) -> None:
        self._server = server
        self._decoder = decoder
        self._task = task
        self._guard = guard
        self._refusals = refusals
        self.url = url

    async def stop(self) -> None:
        """Stop accepting; open requests get the grace period, those cut then get a 503.

        Returns once every request has been answered (uvicorn does not wait for the ones
        it cancels at the end of its graceful-shutdown timeout; they answer here).
        """
        self._guard.stopping = True
        self._server.should_exit = True
        await self._task
        cut = list(self._server.server_state.tasks)
        if cut:
            await asyncio.wait(cut, timeout=1.0)
        self._refusals.flush()
        self._decoder.close()


def bind_host(host: str) -> str:
    """``host`` as sockets take it: ``[::1]`` -> ``::1``."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


async def start_gateway(app: FastAPI, host: str, port: int, *, limits: HttpLimits | None = None,
                        grace: float = 5.0, tls: Mapping[str, Any] | None = None) -> Gateway:
    """Serve ``app`` (made by :func:`create_app`) on ``host:port`` (0: a free port) in the
    running loop; over HTTPS when ``tls`` gives uvicorn's ``ssl_*`` settings (see
    :func:`https_settings`).

    The socket is bound here, so a taken port fails at once with ``OSError`` (no silent
    sharing), and requests arriving before uvicorn is up wait in the listen backlog.
    ``limits`` bound connections, header and body time (default: :class:`HttpLimits`);
    ``grace`` is how long :meth:`Gateway.stop` lets open requests run.
    """
    limits = limits if limits is not None else HttpLimits()
    host = bind_host(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP; without it every response stalls ~40 ms (Nagle + delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(limits.backlog())
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    route_uvicorn_logs()
    decoder: JsonDecoder = app.state.json_decoder
    decoder.start()
    refusals = Refusals()
    guard = GatewayGuard(app)
    config = gateway_config(guard, limits, refusals,
                            grace, tls)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http-gateway")
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    scheme = "https" if tls else "http"
    return Gateway(server, task, f"{scheme}://{shown}:{bound}", guard, refusals, decoder)


def https_settings(cert: str, key: str, client_ca: str | None = None) -> dict[str, Any]:
    """uvicorn's settings for HTTPS with ``cert`` and ``key``; with ``client_ca``, a client
    certificate signed by it is required (mTLS), as on the gRPC port."""
    settings: dict[str, Any] = {"ssl_certfile": cert, "ssl_keyfile": key}
    if client_ca is not None:
        settings.update(ssl_ca_certs=client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return settings
