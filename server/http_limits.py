"""What one HTTP caller may cost the others: the gateway's connection, time and size limits.

The gateway shares its process, its file descriptors and its event loop with the gRPC server,
so every HTTP resource is bounded here:

- **connections**: at most :attr:`HttpLimits.max_connections` open at once (by default half
  of what the descriptor limit leaves after a reserve for gRPC, the database and the arm); a
  connection over the cap is answered at once with 503 ``CAPACITY_EXCEEDED`` and closed;
- **time to send the headers**: a connection that has not sent a whole request head within
  :attr:`HttpLimits.header_timeout` seconds (from its start, or from the end of its previous
  response) is closed (slowloris);
- **time to send the body**: :attr:`HttpLimits.body_timeout` seconds for the whole body, else
  408 ``REQUEST_TIMEOUT``;
- **body size**: over :attr:`HttpLimits.max_body` bytes is 413 ``PAYLOAD_TOO_LARGE``, decided
  from ``content-length`` before anything is read, or as soon as a chunked body passes it;
- **JSON**: a body is decoded (``json`` and the proto3 mapping) in a worker process
  (:class:`JsonDecoder`), never on the event loop that also runs the gRPC server, and any
  decoding failure (invalid UTF-8, nesting, huge integers) is 400 ``INVALID_INPUT`` in the
  error envelope, logged and counted;
- **headers passed on**: an ``authorization`` header over :attr:`HttpLimits.max_header` bytes is
  431 ``HEADER_TOO_LARGE``; one with bytes gRPC metadata cannot carry is 401.

Connections closed by these limits are logged as one aggregated event per second,
``http.connections.refused`` with a count per reason, not one line per connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import contextlib
import json
import logging
import multiprocessing
import os
import resource
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from google.protobuf.message import Message
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

from octollm_grpc import codes, errors
from server import json_worker

__all__ = [
    "ACCEPT_BURST",
    "DEFAULT_MAX_BODY",
    "GatewayGuard",
    "HeaderTooLargeError",
    "HttpLimits",
    "JsonDecoder",
    "JsonLogHandler",
    "PayloadTooLargeError",
    "Refusals",
    "RequestTimeoutError",
    "accept_burst",
    "check_authorization",
    "default_max_connections",
    "gateway_config",
    "guarded_protocol",
    "read_body",
    "refusal_for",
    "register_errors",
    "route_uvicorn_logs",
]

log = structlog.get_logger("server.http")
_M = TypeVar("_M", bound=Message)

#: ``--http-max-body``'s default: 1 MiB.
DEFAULT_MAX_BODY = 1 << 20
#: Descriptors kept for everything but HTTP connections (gRPC, the database, the arm, logs).
FD_RESERVE = 256
#: The largest listen backlog, and so the most connections asyncio accepts in one pass.
ACCEPT_BURST = 128
#: Descriptors the process holds besides connections (gRPC, the database, logs): ~30 measured.
_OWN_FDS = 32


def _nofile() -> int:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if nofile == resource.RLIM_INFINITY else nofile


def default_max_connections(nofile: int | None = None) -> int:
    """Half of what the descriptor limit leaves after :data:`FD_RESERVE`, within 16..4096.

    Args:
        nofile: the soft ``RLIMIT_NOFILE``; by default this process's.
    """
    nofile = _nofile() if nofile is None else nofile
    return max(16, min(4096, (nofile - FD_RESERVE) // 2))


def accept_burst(cap: int, nofile: int | None = None) -> int:
    """The listen backlog: what fits beside ``cap`` connections, at most :data:`ACCEPT_BURST`.

    asyncio accepts up to the backlog in one pass of its loop, and a connection refused at
    the cap holds its descriptor for about four passes (accepted; transport made;
    ``connection_made`` writes the 503 and closes; ``connection_lost`` frees it) while each
    pass may accept another burst. So four bursts, the kept connections and the process's
    own descriptors must fit in the limit: with 128 under a 384-descriptor limit, a flood of
    half-open connections ran out of descriptors (asyncio's ``out of system resource``).

    Args:
        cap: The connection cap in force.
        nofile: the soft ``RLIMIT_NOFILE``; by default this process's.
    """
    nofile = _nofile() if nofile is None else nofile
    return max(8, min(ACCEPT_BURST, (nofile - cap - _OWN_FDS) // 4))


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The gateway's limits (see the module); ``--http-*`` flags set them."""

    max_body: int = DEFAULT_MAX_BODY
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    #: ``None``: :func:`default_max_connections` of the process's descriptor limit.
    max_connections: int | None = None
    max_header: int = 8192
    keep_alive: float = 5.0

    def max_head(self) -> int:
        """The largest request head (request line and headers) read: 431 above it."""
        return max(16 * 1024, 2 * self.max_header)

    def connections(self) -> int:
        """The connection cap in force."""
        return self.max_connections or default_max_connections()

    def backlog(self) -> int:
        """The listen backlog for :meth:`connections` (see :func:`accept_burst`)."""
        return accept_burst(self.connections())


# -- the errors, with their HTTP statuses ---------------------------------------------------


class PayloadTooLargeError(errors.ValidationError):
    """The request body is over the gateway's ``--http-max-body``: 413, never retried."""

    error_code = "PAYLOAD_TOO_LARGE"

    def __init__(self, limit: int) -> None:
        register_errors()
        super().__init__(f"The request body is larger than the limit of {limit} bytes",
                         details={"limit_bytes": limit})


class HeaderTooLargeError(errors.ValidationError):
    """A request header is over the size the gateway passes on: 431, never retried."""

    error_code = "HEADER_TOO_LARGE"

    def __init__(self, header: str, limit: int) -> None:
        register_errors()
        super().__init__(f"The {header} header is larger than the limit of {limit} bytes",
                         details={"header": header, "limit_bytes": limit})


class RequestTimeoutError(errors.ValidationError):
    """The caller did not send the whole body within ``--http-body-timeout``: 408."""

    error_code = "REQUEST_TIMEOUT"

    def __init__(self, seconds: float) -> None:
        register_errors()
        super().__init__(f"The request body was not received within {seconds:g}s",
                         details={"timeout_seconds": seconds})


_ROWS: tuple[tuple[type[errors.OctoLLMError], grpc.StatusCode, int], ...] = (
    (PayloadTooLargeError, grpc.StatusCode.INVALID_ARGUMENT, 413),
    (HeaderTooLargeError, grpc.StatusCode.INVALID_ARGUMENT, 431),
    (RequestTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED, 408),
)


#: One instance of each, built without ``__init__`` (which registers): what the table is asked.
_SAMPLES = {cls: cls.restore("") for cls, _, _ in _ROWS}


def register_errors() -> None:
    """Give the gateway's errors their HTTP statuses in the error table (idempotent).

    Done when a gateway is made and when one of them is raised, not at import: the table is
    process-wide, and importing the sample must not add rows to every other user of it (the
    library's catalog, ``octollm-grpc catalog``).
    """
    for cls, grpc_code, status in _ROWS:
        if codes.mapping_for(_SAMPLES[cls]).error_code != cls.error_code:
            codes.register(cls, grpc_code, status, client_error=True)


# -- refusals, logged once per interval ------------------------------------------------------


class Refusals:
    """Counts connections the limits closed; logs them as one event per ``interval``.

    The first refusal schedules the event; those within the interval join it. So a flood of
    thousands of connections writes a line a second, not a line (or a traceback) each.
    """

    def __init__(self, interval: float = 1.0,
                 call_later: Callable[[float, Callable[[], None]], object] | None = None,
                 ) -> None:
        """``call_later(delay, callback)`` schedules the event (default: the running loop's)."""
        self.interval = interval
        self.total: Counter[str] = Counter()
        self._pending: Counter[str] = Counter()
        self._scheduled = False
        self._call_later = call_later

    def add(self, reason: str) -> None:
        """Count one refusal for ``reason``; the event follows within ``interval``."""
        self.total[reason] += 1
        self._pending[reason] += 1
        if not self._scheduled:
            self._scheduled = True
            call_later = self._call_later or asyncio.get_running_loop().call_later
            call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Log what is pending now (also called at stop)."""
        self._scheduled = False
        if self._pending:
            counts = dict(self._pending)
            self._pending.clear()
            log.warning("http.connections.refused", count=sum(counts.values()),
                        reasons=counts, interval=self.interval)


def _raw_response(status: str, error: errors.OctoLLMError, retry_after: int | None) -> bytes:
    body = json.dumps(error.to_dict(), separators=(",", ":")).encode()
    head = [f"HTTP/1.1 {status}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def guarded_protocol(limits: HttpLimits, refusals: Refusals) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the connection cap and the header timeout of ``limits``.

    uvicorn 0.54 bounds only the idle time between requests (``timeout_keep_alive``, and
    a byte received re-arms nothing), so a request head sent a byte at a time kept its
    connection for ever; ``limit_concurrency`` answers 503 only once a head is complete.
    """
    cap = limits.connections()
    head_limit = limits.max_head()
    overloaded = _raw_response(
        "503 Service Unavailable",
        errors.CapacityExceededError(
            "The HTTP gateway is at its connection limit; retry later",
            details={"max_connections": cap}, retry_after=1.0),
        1)

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > cap:
                refusals.add("max_connections")
                transport.write(overloaded)
                transport.close()
                return
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            self._header_timer = asyncio.get_running_loop().call_later(
                limits.header_timeout, self._header_timed_out)

        def _header_timed_out(self) -> None:
            self._header_timer = None
            cycle = self.cycle
            if self.transport.is_closing() or (cycle is not None
                                               and not cycle.response_complete):
                return  # a request is being answered: the body timeout governs it
            refusals.add("header_timeout")
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            # uvicorn answers any request h11 refuses with a plain-text 400; ours is the
            # envelope, and a head over h11's buffer limit is 431 (it can never succeed).
            if len(self.conn.trailing_data[0]) >= head_limit:
                refusals.add("head_too_large")
                error: errors.OctoLLMError = HeaderTooLargeError("request head", head_limit)
                status = "431 Request Header Fields Too Large"
            else:
                refusals.add("invalid_http")
                error = errors.InvalidInputError("The request is not valid HTTP/1.1")
                status = "400 Bad Request"
            self.transport.write(_raw_response(status, error, None))
            self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._header_timer is not None:
                self._header_timer.cancel()
            if not self.transport.is_closing():
                self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

    return GuardedH11Protocol


def gateway_config(app: ASGIApp, limits: HttpLimits, refusals: Refusals,
                   grace: float, tls: Mapping[str, Any] | None = None) -> Config:
    """The uvicorn ``Config`` of the embedded gateway (``tls``: uvicorn's ``ssl_*`` settings)."""
    # backlog: asyncio listens with it and accepts up to that many connections at once, before
    # any is closed; uvicorn's 2048 let one burst take every descriptor (EMFILE tracebacks).
    # It must match the listening socket's (Gateway's sock.listen): see accept_burst.
    # factory=True: uvicorn otherwise calls the app with no arguments to guess whether it is a
    # factory, and an app whose __call__ takes *args (a wrapped one: mutmut's trampoline) is
    # taken for one, and its coroutine for the app.

    def factory() -> ASGIApp:
        return app

    return Config(factory, factory=True, lifespan="off", log_config=None, access_log=False,
                  backlog=limits.backlog(), http=guarded_protocol(limits, refusals),
                  timeout_keep_alive=max(1, round(limits.keep_alive)),
                  timeout_graceful_shutdown=max(grace, 0.0),  # type: ignore[arg-type]
                  h11_max_incomplete_event_size=limits.max_head(), **(tls or {}))


# -- the body: bounded in size and time, decoded off the event loop --------------------------


async def read_body(request: Request, limits: HttpLimits) -> bytes:
    """The whole body, refused early when over ``limits.max_body`` or slower than its timeout.

    Raises:
        PayloadTooLargeError: ``content-length`` says too much (nothing is read), or the
            bytes received pass the limit (reading stops there).
        RequestTimeoutError: the body did not arrive within ``limits.body_timeout``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limits.max_body):
        raise PayloadTooLargeError(limits.max_body)
    body = bytearray()
    try:
        async with asyncio.timeout(limits.body_timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limits.max_body:
                    raise PayloadTooLargeError(limits.max_body)
    except TimeoutError:
        raise RequestTimeoutError(limits.body_timeout) from None
    return bytes(body)


class JsonDecoder:
    """Decodes request bodies in one worker process (:mod:`server.json_worker`).

    One worker: a flood of costly bodies queues behind itself (HTTP callers wait), while the
    event loop, and so every gRPC caller, only copies bytes. The worker is started by
    :meth:`start` (spawned, not forked: the process runs gRPC threads), restarted if it dies,
    and ends by itself when this process dies without closing it (SIGKILL, OOM).
    """

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the worker now (in the background), so the first body does not wait for it."""
        self._executor().submit(json_worker.ready)

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=json_worker.exit_with_parent, initargs=(os.getpid(),))
        return self._pool

    async def decode(self, raw: bytes, message: _M) -> _M:
        """``raw`` (proto3 JSON) into ``message``, parsed in the worker.

        Raises:
            InvalidInputError: not JSON (invalid UTF-8, nesting past the parser's depth, an
                integer past Python's digit limit), or not the message (unknown field, wrong
                type, out of range: ``details["field"]`` names a known field); the message
                names the expected type, never the parser's text.
            RequestValidationError: JSON that is not an object (as FastAPI says it).
        """
        cls = type(message)
        loop = asyncio.get_running_loop()
        try:
            outcome, data = await loop.run_in_executor(
                self._executor(), json_worker.decode, raw, cls.__module__, cls.__qualname__)
        except concurrent.futures.process.BrokenProcessPool:
            self._pool = None  # the worker died (killed, out of memory): a new one next time
            raise
        if outcome == "ok":
            message.ParseFromString(data)
            return message
        if outcome == "object":
            raise RequestValidationError([{"loc": ("body",), "msg": "Input should be a valid "
                                           "dictionary", "type": "dict_type"}])
        name = message.DESCRIPTOR.full_name
        if outcome == "json":
            raise errors.InvalidInputError("The request body is not valid JSON",
                                           details={"message_type": name})
        details = {"message_type": name}
        if outcome == "field":
            details["field"] = data.decode()  # one of the message's own field names
        raise errors.InvalidInputError(
            f"The request body is not a valid {name} in the proto3 JSON mapping",
            details=details)

    def close(self) -> None:
        """Stop the worker (a parse in progress is abandoned)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


#: gRPC's default limit on a received message (the service keeps it).
GRPC_MAX_MESSAGE = 4 * 1024 * 1024


def refusal_for(error: errors.OctoLLMError, limits: HttpLimits) -> errors.OctoLLMError:
    """What the HTTP caller gets for a bare ``RESOURCE_EXHAUSTED`` or ``CANCELLED`` status.

    gRPC's own size limits (the client decodes them as ``MESSAGE_TOO_LARGE`` and
    ``METADATA_TOO_LARGE``): a message over the server's maximum is 413, metadata over it 431,
    in our words; a service's own refusals (``RATE_LIMIT_EXCEEDED``) stay what they are.
    ``CANCELLED`` never comes from the HTTP caller (the gateway does not pass a disconnect on),
    so it is the server's overload or stop: 503 with ``Retry-After``.
    """
    if isinstance(error, errors.CancelledCallError):
        return errors.CapacityExceededError("The service is overloaded; retry later",
                                            retry_after=1.0)
    if error.error_code == "METADATA_TOO_LARGE":
        return HeaderTooLargeError("request", limits.max_header)
    if error.error_code == "MESSAGE_TOO_LARGE":
        return PayloadTooLargeError(min(limits.max_body, GRPC_MAX_MESSAGE))
    return error


def check_authorization(value: str | None, limits: HttpLimits) -> None:
    """Refuse an ``authorization`` header gRPC metadata cannot carry, before any call.

    Raises:
        HeaderTooLargeError: over ``limits.max_header`` bytes.
        AuthenticationError: a byte outside printable ASCII (gRPC would fail the call
            locally, after it had been counted).
    """
    if value is None:
        return
    if len(value) > limits.max_header:
        raise HeaderTooLargeError("authorization", limits.max_header)
    if not value.isascii() or not value.isprintable():
        raise errors.AuthenticationError("Malformed authorization header: expected Bearer")


# -- graceful stop ---------------------------------------------------------------------------


class GatewayGuard:
    """Outermost ASGI middleware: 408/413 close their connection; grace cut-offs answer 503.

    A 408 or 413 leaves the rest of the body unread: ``connection: close`` makes uvicorn drop
    the connection instead of reading on (and tells the client not to reuse it).

    uvicorn cancels the requests still running when its graceful-shutdown timeout ends; the
    cancellation would reach it as an exception (a plain-text 500 and a multi-line
    ``CancelledError`` traceback in the JSON log). Here it is answered with the envelope of
    :class:`~octollm_grpc.errors.CapacityExceededError` and ``Retry-After``, and the task ends.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.stopping = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message.get("status") in _CLOSING:
                    message = {**message, "headers": [*message.get("headers", ()),
                                                      (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            log.warning("http.request.cut", reason="grace period over",
                        path=scope.get("path", ""))
            if not started:
                error = errors.CapacityExceededError(
                    "The server is shutting down; retry on another replica",
                    retry_after=1.0)
                body = json.dumps(error.to_dict(), separators=(",", ":")).encode()
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.start", "status": 503,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"retry-after", b"1"),
                                            (b"connection", b"close")]})
                    await send({"type": "http.response.body", "body": body})


_CLOSING = frozenset({408, 413})
#: uvicorn's messages for what :func:`guarded_protocol` counts itself.
_AGGREGATED = frozenset({"Invalid HTTP request received."})


class JsonLogHandler(logging.Handler):
    """uvicorn's stdlib log records as structlog events: one JSON line, no traceback text."""

    def emit(self, record: logging.LogRecord) -> None:
        """Log ``record`` as ``http.server`` at its level (exception type only)."""
        if record.msg in _AGGREGATED:
            return  # counted in http.connections.refused instead: a line per request floods
        with contextlib.suppress(Exception):
            fields: dict[str, Any] = {"message": record.getMessage()}
            if record.exc_info and record.exc_info[0] is not None:
                fields["exc_type"] = record.exc_info[0].__name__
            log.log(record.levelno, "http.server", **fields)


def route_uvicorn_logs() -> None:
    """Send uvicorn's loggers to :class:`JsonLogHandler` (once per process)."""
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, JsonLogHandler) for h in logger.handlers):
            logger.addHandler(JsonLogHandler())
        logger.propagate = False
