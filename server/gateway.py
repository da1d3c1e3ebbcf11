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
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import uvicorn
from fastapi import Body, FastAPI, Query, Request
from google.protobuf import json_format
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from octollm_grpc import errors
from octollm_grpc.client import BreakerSettings, RetryPolicies, RetryPolicy
from octollm_grpc.client.aio import resilient_channel
from octollm_grpc.fastapi import install_error_handlers
from octollm_grpc.server import ServerMetrics, current_request_id
from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc

__all__ = ["ErrorBody", "Gateway", "create_app", "gateway_channel", "start_gateway"]

SERVICE = tasks_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
_M = TypeVar("_M", bound=Message)


class ErrorBody(BaseModel):
    """The seed's error envelope (what every error response carries), for the OpenAPI docs."""

    error: str
    message: str
    details: dict[str, Any]
    retry_after: float | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in [
        (400, "INVALID_INPUT, VALIDATION_ERRORS (every violation, also of a request that "
              "does not fit the route), FAILED_PRECONDITION"),
        (401, "AUTHENTICATION_ERROR (with --auth-token)"),
        (404, "TASK_NOT_FOUND"),
        (429, "RATE_LIMIT_EXCEEDED, with Retry-After"),
        (500, "INTERNAL_ERROR: nothing of the cause is sent"),
        (503, "ARM_UNAVAILABLE, CIRCUIT_OPEN (with Retry-After)"),
        (504, "TIMEOUT_ERROR"),
    ]
}


def gateway_channel(target: str, registry: CollectorRegistry | None = None) -> grpc.aio.Channel:
    """The resilient channel the gateway calls the service on (see the module's policy)."""
    return resilient_channel(
        target,
        retry=RetryPolicies(
            default=RetryPolicy(pushback_codes=frozenset()),
            methods={f"{SERVICE}/ExecuteTask": None},
        ),
        breaker=BreakerSettings(per_method=True),
        registry=registry,
    )


def _metadata(request: Request) -> tuple[tuple[str, str], ...]:
    pairs = [("x-request-id", current_request_id() or "")]
    authorization = request.headers.get("authorization")
    if authorization is not None:
        pairs.append(("authorization", authorization))
    return tuple(pairs)


def _parse(data: dict[str, Any], message: _M) -> _M:
    """``data`` (proto3 JSON) into ``message``; a mismatch is the caller's INVALID_INPUT."""
    try:
        return json_format.ParseDict(data, message)
    except json_format.ParseError:
        # The parser's text quotes Python internals (int() messages): a fixed message instead.
        name = message.DESCRIPTOR.full_name
        raise errors.InvalidInputError(
            f"The request body is not a valid {name} in the proto3 JSON mapping",
            details={"message_type": name},
        ) from None


def _json(message: Message) -> dict[str, Any]:
    # Proto field names (task_id), as grpcurl prints them; either spelling is accepted in.
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def create_app(channel: grpc.aio.Channel, *, metrics: ServerMetrics | None = None,
               timeout: float | None = None) -> FastAPI:
    """The gateway's FastAPI app, calling TaskService on ``channel``.

    ``metrics`` counts its error responses (default: none counted); ``timeout`` is each
    call's deadline in seconds (default: none, the HTTP client decides how long to wait).
    """
    stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
    app = FastAPI(
        title="octollm-grpc sample task service (HTTP/JSON gateway)",
        description=f"Each route calls one `{SERVICE}` RPC. Bodies are the proto3 JSON "
                    "mapping of its request and response messages; errors carry the same "
                    "error code, message and details as on gRPC.",
        version="1",
        responses=_ERRORS,
    )
    install_error_handlers(app, metrics=metrics if metrics is not None else False)

    async def call(rpc: Callable[..., Awaitable[Message]], message: Message,
                   request: Request) -> dict[str, Any]:
        try:
            response = await rpc(message, metadata=_metadata(request), timeout=timeout)
        except errors.CircuitOpenError as error:
            if error.trailing_metadata() is None:
                # The gateway's own breaker: name the service, not its internal address.
                raise errors.CircuitOpenError(SERVICE, error.retry_after or 0.0) from None
            raise
        return _json(response)

    @app.post("/v1/tasks", summary="CreateTask", tags=["tasks"])
    async def create_task(
        request: Request,
        body: dict[str, Any] = Body(  # noqa: B008 - FastAPI's way of declaring a body
            ..., description="octollm.tasks.v1.CreateTaskRequest",
            examples=[{"description": "Summarize the quarterly report", "priority": 5}]),
    ) -> dict[str, Any]:
        """Create a task (``CreateTaskResponse``); idempotent on ``request_id``."""
        return await call(stub.CreateTask, _parse(body, tasks_pb2.CreateTaskRequest()), request)

    @app.get("/v1/tasks", summary="ListTasks", tags=["tasks"])
    async def list_tasks(
        request: Request,
        page_size: int = Query(0, description="1..1000; 50 when 0"),
        page_token: str = Query("", description="next_page_token of the previous page"),
    ) -> dict[str, Any]:
        """One page of tasks, oldest first (``ListTasksResponse``)."""
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

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], url: str) -> None:
        self._server = server
        self._task = task
        self.url = url

    async def stop(self) -> None:
        """Stop accepting, let open requests finish (uvicorn's graceful shutdown), return."""
        self._server.should_exit = True
        await self._task


async def start_gateway(app: FastAPI, host: str, port: int) -> Gateway:
    """Serve ``app`` on ``host:port`` (0: a free port) in the running loop.

    The socket is bound here, so a taken port fails at once with ``OSError`` (no silent
    sharing), and requests arriving before uvicorn is up wait in the listen backlog.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP; without it every response stalls ~40 ms (Nagle + delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                            timeout_graceful_shutdown=5)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http-gateway")
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return Gateway(server, task, f"http://{shown}:{bound}")
