"""FastAPI error handlers from the same table as the gRPC side (``[fastapi]`` extra).

[`install_error_handlers`][octollm_grpc.fastapi.install_error_handlers] gives a FastAPI app what our
server interceptors give a gRPC
server:

- ``OctoLLMError`` -> the class's HTTP status ([`octollm_grpc.codes`][octollm_grpc.codes]: the most
  specific
  class wins, so ``TaskNotFoundError`` is 404, not the standard's 400), its ``to_dict()`` body, and
  ``Retry-After`` (whole seconds, rounded up) when ``retry_after`` is set;
- FastAPI's ``RequestValidationError`` -> what `ValidationErrors`
  renders through the same table: 400 ``{"error": "VALIDATION_ERRORS", "message": "Validation
  failed with N errors", "details": {"errors": [{"field", "message", "type"}]}}`` (the
  caller's input values are never echoed);
- any other exception -> 500 ``{"error": "INTERNAL_ERROR", "message": "An internal error
  occurred", "details": {}}`` (builtin ``TimeoutError``: 504 ``TIMEOUT_ERROR``), with nothing
  of the exception in the body and its traceback in the log.

Every response carries ``x-request-id``: the caller's when it passes the same check as on gRPC
([`RequestIds`][octollm_grpc.server.RequestIds]), a new one otherwise. While a request runs, the id
is what [`current_request_id`][octollm_grpc.server.current_request_id] returns and is bound for
structlog.
Each error response is logged once, as ``http.request.failed`` with the gRPC side's fields
([`CallLogger`][octollm_grpc.server.CallLogger]: warning
for the caller's errors, error for server-side ones, critical with the traceback for the
unexpected) and counted in ``octollm_errors_total`` / ``octollm_error_duration_seconds``
([`ServerMetrics`][octollm_grpc.server.ServerMetrics], ``component="http"``). ``grpc_method`` in the
event is the route
(``"GET /v1/tasks/{task_id}"``) and ``grpc_code`` the gRPC code the same error has on gRPC.
"""

from __future__ import annotations

import time

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as missing:  # the extra is not installed
    raise ImportError(
        "octollm_grpc.fastapi needs FastAPI: pip install 'octollm-grpc[fastapi]'"
    ) from missing

import grpc

from octollm_grpc import codes
from octollm_grpc.errors import OctoLLMError, ValidationErrors
from octollm_grpc.http import to_http
from octollm_grpc.observability import _requestid as requestid
from octollm_grpc.observability._logs import (
    CallLogger,
    Level,
    bind_request_id,
    level_for_exception,
    unbind_request_id,
)
from octollm_grpc.observability._requestid import RequestIds
from octollm_grpc.observability._server_metrics import ServerMetrics
from octollm_grpc.status._limits import GENERIC_MESSAGE

__all__ = [
    "install_error_handlers",
]

#: The event of a failed HTTP request (the gRPC side's is ``grpc.call.failed``).
HTTP_FAILED_EVENT = "http.request.failed"
#: Where the per-request values live in the ASGI scope's ``state`` (``request.state``).
_STATE_KEY = "octollm_grpc"
_perf_counter = time.perf_counter


class _Exchange:
    """One request in progress: its id and when it started."""

    __slots__ = ("request_id", "start")

    def __init__(self, request_id: str, start: float) -> None:
        self.request_id = request_id
        self.start = start


class ErrorHandlers:
    """The three handlers and the request-id middleware, sharing one configuration.

    ``request_ids``, ``logger`` and ``metrics`` are those of
    [`octollm_grpc.server.server_interceptors`][octollm_grpc.server.server_interceptors], except
    that ``metrics=True`` counts on
    prometheus-client's default registry with ``component="http"``.
    """

    def __init__(
        self,
        *,
        request_ids: RequestIds | None = None,
        logger: CallLogger | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.request_ids = request_ids if request_ids is not None else RequestIds()
        self.logger = logger
        self.metrics = metrics

    # -- the three handlers ---------------------------------------------------------------

    async def octollm_error(self, request: Request, exc: Exception) -> JSONResponse:
        """``OctoLLMError`` -> its HTTP status, ``to_dict()`` body and ``Retry-After``."""
        if not isinstance(exc, OctoLLMError):  # registered for OctoLLMError only
            return await self.unexpected_error(request, exc)
        mapping = codes.mapping_for(exc)
        try:
            status, headers, body = to_http(exc)
            response = JSONResponse(body, status, headers=headers)
        except Exception:  # noqa: BLE001 - e.g. details that are not JSON: still answer safely
            return await self.unexpected_error(request, exc)
        self._record(request, mapping.grpc_code, exc.error_code,
                     level_for_exception(exc, mapping), None, exc.message)
        return self._with_id(request, response)

    async def validation_error(self, request: Request, exc: Exception) -> JSONResponse:
        """FastAPI's ``RequestValidationError`` -> 400 ``VALIDATION_ERRORS``, one entry per
        violation (``field``, ``message``, ``type``; the input values are never echoed)."""
        if not isinstance(exc, RequestValidationError):
            return await self.unexpected_error(request, exc)
        errors = [
            {
                "field": ".".join(str(part) for part in error.get("loc", ())),
                "message": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
            for error in exc.errors()
        ]
        # Every violation at once, as the gRPC side reports them: the table's row for
        # ValidationErrors (400 VALIDATION_ERRORS), not a status of its own.
        error = ValidationErrors(errors)
        status, headers, body = to_http(error)
        self._record(request, codes.mapping_for(error).grpc_code, error.error_code, "warning",
                     None, error.message)
        return self._with_id(request, JSONResponse(body, status, headers=headers))

    async def unexpected_error(self, request: Request, exc: Exception) -> JSONResponse:
        """Any other exception -> the generic 500 body; the exception goes to the log only.

        An exception type given to [`octollm_grpc.map_exception`][octollm_grpc.codes.map_exception]
        is answered as the
        ``OctoLLMError`` its converter returns.
        """
        mapped = codes.converted(exc)
        if isinstance(mapped, OctoLLMError) and mapped is not exc:
            return await self.octollm_error(request, mapped)
        exc = mapped if isinstance(mapped, Exception) else exc
        mapping = codes.mapping_for(exc)
        if isinstance(exc, OctoLLMError) or mapping is not codes.BUILTIN_TIMEOUT:
            mapping = codes.UNEXPECTED
            body = {"error": mapping.error_code, "message": GENERIC_MESSAGE, "details": {}}
        else:
            body = to_http(exc).body
        self._record(request, mapping.grpc_code, mapping.error_code,
                     level_for_exception(exc, mapping), exc, None)
        return self._with_id(request, JSONResponse(body, mapping.http_status))

    # -- the middleware's per-request work ------------------------------------------------

    def begin(self, scope: Scope) -> _Exchange:
        """Settle the request id of an HTTP request and remember it in the scope's state."""
        headers = [(key.decode("latin-1"), value.decode("latin-1"))
                   for key, value in scope.get("headers", ())]
        exchange = _Exchange(self.request_ids.from_metadata(headers), _perf_counter())
        scope.setdefault("state", {})[_STATE_KEY] = exchange
        return exchange

    def _exchange(self, request: Request) -> _Exchange:
        found = request.scope.get("state", {}).get(_STATE_KEY)
        if isinstance(found, _Exchange):
            return found
        # A request that did not pass the middleware (an error raised outside it).
        return self.begin(request.scope)

    def _with_id(self, request: Request, response: JSONResponse) -> JSONResponse:
        # Set here too: a response sent by Starlette's outermost error middleware does not
        # pass through ours.
        response.headers[self.request_ids.header] = self._exchange(request).request_id
        return response

    def _record(self, request: Request, code: grpc.StatusCode, error_code: str, level: Level,
                exc: BaseException | None, message: str | None) -> None:
        exchange = self._exchange(request)
        duration = _perf_counter() - exchange.start
        if self.metrics is not None:
            self.metrics.error(error_code, duration)
        logger = self.logger
        if logger is not None and logger.enabled_for(level):
            client = request.client
            logger.failed(
                level,
                method=f"{request.method} {_route_path(request)}",
                grpc_code=code.name,
                error_code=error_code,
                request_id=exchange.request_id,
                duration=duration,
                peer=f"{client.host}:{client.port}" if client and logger.peer else None,
                message=message,
                exc=exc,
            )


def _route_path(request: Request) -> str:
    """The matched route's template (bounded cardinality), else the raw path."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else request.url.path


class _RequestIdMiddleware:
    """Pure ASGI middleware: request id in, ``x-request-id`` out, unexpected errors caught.

    Pure ASGI (not ``BaseHTTPMiddleware``), so context variables set here reach the endpoint.
    An exception nothing handled is answered here with `ErrorHandlers.unexpected_error`
    (logged once, by us) rather than by Starlette's outermost middleware, which re-raises it
    to the server for a second, unstructured traceback.
    """

    def __init__(self, app: ASGIApp, handlers: ErrorHandlers) -> None:
        self.app = app
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handlers = self.handlers
        exchange = handlers.begin(scope)
        header = handlers.request_ids.header.encode("latin-1")
        value = exchange.request_id.encode("latin-1")
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != header]
                headers.append((header, value))
                message = {**message, "headers": headers}
            await send(message)

        rid_token = requestid.bind(exchange.request_id)
        log_token = bind_request_id(exchange.request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:  # the status line is gone: nothing to answer, let the server know
                raise
            response = await handlers.unexpected_error(Request(scope, receive), exc)
            await response(scope, receive, send_with_id)
        finally:
            unbind_request_id(log_token)
            requestid.unbind(rid_token)


def install_error_handlers(
    app: FastAPI,
    *,
    request_ids: RequestIds | bool = True,
    logger: CallLogger | bool = True,
    metrics: ServerMetrics | bool = True,
) -> ErrorHandlers:
    """Register the three handlers and the request-id middleware on ``app``; returns them.

    ``True`` keeps a part with its defaults, ``False`` drops it (request ids are then still
    generated and echoed, with the default [`RequestIds`][octollm_grpc.server.RequestIds]), an
    object configures it.
    Call it before the app serves its first request (Starlette builds its middleware stack
    then). Errors Starlette itself answers (404 for an unknown path, 405) keep FastAPI's
    ``{"detail": ...}`` body; they carry ``x-request-id`` too.

    Args:
        app: The FastAPI application.
        request_ids: The request-id part (``True``: defaults).
        logger: The call logger (``True``: defaults, ``False``: none).
        metrics: The metrics (``True``: the default registry, ``False``: none).

    Returns:
        The handlers registered (for tests and custom routing).
    """
    handlers = ErrorHandlers(
        request_ids=request_ids if isinstance(request_ids, RequestIds) else None,
        logger=(logger if isinstance(logger, CallLogger)
                else CallLogger(event=HTTP_FAILED_EVENT) if logger else None),
        metrics=(metrics if isinstance(metrics, ServerMetrics)
                 else ServerMetrics(component="http") if metrics else None),
    )
    app.add_exception_handler(OctoLLMError, handlers.octollm_error)
    app.add_exception_handler(RequestValidationError, handlers.validation_error)
    app.add_exception_handler(Exception, handlers.unexpected_error)
    app.add_middleware(_RequestIdMiddleware, handlers=handlers)
    return handlers
