"""The equal-work peer: the same work as our stack on every path, assembled from other libraries.

What a team would write by hand instead of using octollm-grpc, doing what our default stack does
on a call, successful or failing with ``TaskNotFoundError``:

- grpc-interceptor's ``ServerInterceptor`` / ``AsyncServerInterceptor`` (``intercept``) catch
  the handler's exception;
- a request id on every call: the caller's ``x-request-id`` when sent, else a new one, bound
  for the handler's logs (structlog's ``bind_contextvars``) and sent back as a trailer;
- prometheus-client, under the names ours uses (on the peer's own registry, :data:`REGISTRY`):
  ``grpc_server_started_total`` per call; ``grpc_server_handled_total`` (by code) and the
  ``grpc_server_handling_seconds`` histogram per finished call; ``octollm_errors_total`` and
  ``octollm_error_duration_seconds`` per failed call;
- on a failure, grpcio-status builds the rich status: ``ErrorInfo`` (reason, domain, the task
  id), ``ResourceInfo`` (the task) and ``RequestInfo`` (the request id), the same details our
  stack sends (less our envelope), and one structlog JSON line with the same fields as ours
  (method, code, error code, request id, duration, peer), through structlog's own
  ``WriteLoggerFactory``.

Used by the ``peer_full`` variant of :mod:`benchmarks.variants`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import prometheus_client
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_interceptor import AsyncServerInterceptor, ServerInterceptor
from grpc_interceptor.exceptions import NotFound
from grpc_status import rpc_status

DOMAIN = "octollm.grpc"
REQUEST_ID_HEADER = "x-request-id"
_RESOURCE_TYPE = "octollm.tasks.v1.Task"


class PeerTaskNotFound(NotFound):
    """The handler's error in the peer stack: grpc-interceptor's NotFound plus the task id."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task {task_id} not found")
        self.task_id = task_id


class _Instruments:
    """The peer's logger and metrics, made once per server process."""

    def __init__(self) -> None:
        sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the server process
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,  # the bound request id
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.WriteLoggerFactory(file=sink),
            cache_logger_on_first_use=True,
        )
        self.log = structlog.get_logger("peer")
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = prometheus_client.Counter(
            "grpc_server_started_total", "Calls started", labels, registry=REGISTRY)
        self.handled = prometheus_client.Counter(
            "grpc_server_handled_total", "Calls completed, by code", (*labels, "grpc_code"),
            registry=REGISTRY)
        self.handling = prometheus_client.Histogram(
            "grpc_server_handling_seconds", "Time to handle a call", labels, registry=REGISTRY)
        self.errors = prometheus_client.Counter(
            "octollm_errors_total", "Errors by type", ("error_type", "component"),
            registry=REGISTRY)
        self.error_duration = prometheus_client.Histogram(
            "octollm_error_duration_seconds", "Time to handle an error", ("error_type",),
            registry=REGISTRY)


#: The peer's metrics (its own registry: ours may live in the same process, on the default one).
REGISTRY = prometheus_client.CollectorRegistry()


_instruments: _Instruments | None = None


def _get_instruments() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


def _request_id(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


def _rich_status(ex: PeerTaskNotFound, request_id: str) -> grpc.Status:
    details = []
    for message in (
        error_details_pb2.ErrorInfo(
            reason="TASK_NOT_FOUND", domain=DOMAIN, metadata={"task_id": ex.task_id}),
        error_details_pb2.ResourceInfo(
            resource_type=_RESOURCE_TYPE, resource_name=ex.task_id,
            description=ex.details),
        error_details_pb2.RequestInfo(request_id=request_id),
    ):
        packed = any_pb2.Any()
        packed.Pack(message)
        details.append(packed)
    status = rpc_status.to_status(status_pb2.Status(
        code=code_pb2.NOT_FOUND, message=ex.details, details=details))
    return status._replace(
        trailing_metadata=(*status.trailing_metadata, (REQUEST_ID_HEADER, request_id)))


def _split(method_name: str) -> tuple[str, str]:
    service, _, name = method_name.lstrip("/").rpartition("/")
    return service, name


class _PeerCall:
    """One call's bookkeeping: start time, labels, request id (bound and set as a trailer)."""

    __slots__ = ("labels", "request_id", "start", "tokens")

    def __init__(self, context: Any, method_name: str) -> None:
        self.start = time.perf_counter()
        service, name = _split(method_name)
        self.labels = ("unary", service, name)
        _get_instruments().started.labels(*self.labels).inc()
        self.request_id = _request_id(context.invocation_metadata())
        self.tokens = structlog.contextvars.bind_contextvars(request_id=self.request_id)
        context.set_trailing_metadata(((REQUEST_ID_HEADER, self.request_id),))

    def succeeded(self) -> None:
        """Count and time the call."""
        inst = _get_instruments()
        inst.handled.labels(*self.labels, "OK").inc()
        inst.handling.labels(*self.labels).observe(time.perf_counter() - self.start)

    def failed(self, context: Any, method_name: str, ex: Exception) -> grpc.Status:
        """Count, time and log the failure; the status to abort with. Re-raises what the peer
        does not map."""
        if not isinstance(ex, PeerTaskNotFound):
            raise ex
        inst = _get_instruments()
        duration = time.perf_counter() - self.start
        inst.handled.labels(*self.labels, "NotFound").inc()
        inst.handling.labels(*self.labels).observe(duration)
        inst.errors.labels("TASK_NOT_FOUND", "grpc_server").inc()
        inst.error_duration.labels("TASK_NOT_FOUND").observe(duration)
        inst.log.warning(
            "grpc.call.failed", grpc_method=method_name, grpc_code="NOT_FOUND",
            error_code="TASK_NOT_FOUND", duration_ms=round(duration * 1000.0, 3),
            peer=context.peer(), message=ex.details)
        return _rich_status(ex, self.request_id)

    def end(self) -> None:
        """Unbind the request id."""
        structlog.contextvars.reset_contextvars(**self.tokens)


class PeerStack(ServerInterceptor):  # type: ignore[misc]
    """The hand-assembled stack for ``grpc.server``."""

    def __init__(self) -> None:
        _get_instruments()

    def intercept(
        self, method: Callable[..., Any], request_or_iterator: Any, context: Any,
        method_name: str,
    ) -> Any:
        call = _PeerCall(context, method_name)
        try:
            response = method(request_or_iterator, context)
        except Exception as ex:  # the peer maps what it knows, re-raises the rest
            context.abort_with_status(call.failed(context, method_name, ex))
            raise  # pragma: no cover - abort_with_status raises
        else:
            call.succeeded()
            return response
        finally:
            call.end()


class AioPeerStack(AsyncServerInterceptor):  # type: ignore[misc]
    """The hand-assembled stack for ``grpc.aio.server``."""

    def __init__(self) -> None:
        _get_instruments()

    async def intercept(
        self, method: Callable[..., Any], request_or_iterator: Any, context: Any,
        method_name: str,
    ) -> Any:
        call = _PeerCall(context, method_name)
        try:
            response = await method(request_or_iterator, context)
        except Exception as ex:  # as above
            status = call.failed(context, method_name, ex)
            await context.abort(status.code, status.details, status.trailing_metadata)
            raise  # pragma: no cover - abort raises
        else:
            call.succeeded()
            return response
        finally:
            call.end()
