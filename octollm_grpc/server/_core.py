"""The one core both stacks share: per-method plans, and each call from start to end.

A `Call` is the one prologue and epilogue of every wrapped handler: entered (``with``
on the sync stacks, ``async with`` on aio) it starts the call and admits it (rate limit, auth,
a request that parsed); left, it records success, or decides on the failure and has the stack
send it. The sync (`octollm_grpc.server._sync`), aio
([`octollm_grpc.server.aio`][octollm_grpc.server.aio])
and thread-pool (`octollm_grpc.server._threaded`) wrappers keep only how a stream is
iterated and how a status is sent. Everything a method needs (metric children, its rate
limit, its scopes) is resolved once, in its `MethodPlan`; a successful call costs a
clock read, the request id and the counters.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

import grpc

from octollm_grpc import codes
from octollm_grpc.errors import OctoLLMError
from octollm_grpc.observability import _otel as otel
from octollm_grpc.observability import _propagation as propagation
from octollm_grpc.observability._logs import (
    CallLogger,
    Level,
    bind_request_id,
    level_for_exception,
    unbind_request_id,
)
from octollm_grpc.observability._propagation import Inbound
from octollm_grpc.observability._requestid import DEFAULT_HEADER, RequestIds
from octollm_grpc.observability._server_metrics import MethodMetrics, ServerMetrics
from octollm_grpc.server._auth import Grant
from octollm_grpc.server._concurrency import SHED_EVENT, ConcurrencyRejection, Permit, Route
from octollm_grpc.server._failures import (
    Failure,
    HandlerStatus,
    level_for_code,
    merge_trailers,
    message_of,
)
from octollm_grpc.server._handlers import (
    UNDECODABLE,
    Metadata,
    ServicerContext,
    handler_shape,
    split_method,
    undecodable_error,
)
from octollm_grpc.server._options import ServerOptions, part
from octollm_grpc.server._ratelimit import RateLimit
from octollm_grpc.server._shedding import Refusal, Rejection, RejectionLog, RejectionStatuses
from octollm_grpc.status._encode import to_status_or_raise, unencodable_status
from octollm_grpc.status._limits import RichStatus

__all__ = [
    "AsyncCall",
    "Call",
    "MethodPlan",
    "Pipeline",
    "SyncCall",
    "handler_shape",
]

_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED
_perf_counter = time.perf_counter


class MethodPlan:
    """What one method needs on each call, resolved once."""

    __slots__ = ("concurrency", "guarded", "limit", "method", "metrics", "rpc_type", "scopes")

    def __init__(
        self,
        method: str,
        rpc_type: str,
        metrics: MethodMetrics | None,
        limit: tuple[str, RateLimit] | None,
        scopes: frozenset[str] | None,
        concurrency: Route | None = None,
    ) -> None:
        self.method = method
        self.rpc_type = rpc_type
        self.metrics = metrics
        self.limit = limit
        self.scopes = scopes
        self.concurrency = concurrency
        self.guarded = limit is not None or scopes is not None or concurrency is not None


class Call:
    """The state of one call in progress, started by `begin`.

    Starting it reads the clock, settles the request id (bound for logs, set as trailer) and
    what outbound calls inherit, opens our server span if we trace, and counts the start.
    `SyncCall` and `AsyncCall` add the prologue and epilogue.
    """

    __slots__ = ("context", "inbound_token", "log_tokens", "metadata", "permit", "pipeline",
                 "plan", "principal", "rejection", "request", "request_id", "span",
                 "start", "trailers")

    start: float
    pipeline: Pipeline
    plan: MethodPlan
    context: ServicerContext
    request: Any
    rejection: Refusal | None  # set when a limiter refused the call (the shed path)
    permit: Permit | None  # the call's place under the concurrency limit, given back at end
    span: otel.ServerSpan | None
    principal: str | None  # who auth found the caller to be (a certificate's, a token's)
    metadata: Metadata | None
    request_id: str | None
    trailers: tuple[tuple[str, str], ...] | None
    log_tokens: contextvars.Token[Any] | None
    inbound_token: contextvars.Token[Inbound | None] | None
    #: Blocks for an awaitable verdict of a coroutine verifier (only a thread-pool call has it).
    wait: Callable[[Awaitable[Any]], Any] | None = None

    @classmethod
    def begin(
        cls, pipeline: Pipeline, plan: MethodPlan, context: ServicerContext, request: Any
    ) -> Self:
        """Start a call of ``plan``'s method (see the class docstring)."""
        # Made without __init__: a type calling __init__ enters the interpreter anew (a C to
        # Python call) on every call; a classmethod call does not (CPython 3.11, 3.12).
        self = object.__new__(cls)
        self.start = _perf_counter()
        self.pipeline = pipeline
        self.plan = plan
        self.context = context
        self.request = request
        self.rejection = self.permit = self.span = None
        self.principal = None
        request_ids = pipeline.request_ids
        # Read once per call: on aio each invocation_metadata() builds a new tuple.
        self.metadata = (
            context.invocation_metadata() if request_ids is not None or plan.guarded else None)
        if pipeline.tracing:
            tracer = pipeline.tracer if pipeline.tracer is not None else otel.active_tracer()
            if tracer is not None:
                if self.metadata is None:
                    self.metadata = context.invocation_metadata()
                self.span = otel.start_server_span(tracer, plan.method, self.metadata)
        # Each field set once (this runs on every call).
        if request_ids is not None:
            rid = self.request_id = request_ids.from_metadata(self.metadata)
            self.log_tokens = bind_request_id(rid)
            # Set now, so an abort by the handler (which keeps earlier trailers) carries it too.
            self.trailers = ((request_ids.header, rid),)
            context.set_trailing_metadata(self.trailers)
        else:
            self.request_id = self.trailers = self.log_tokens = None
        # What outbound calls on resilient channels inherit: deadline and request id (also
        # what current_request_id() reads: one context variable for both).
        self.inbound_token = propagation.enter(
            context, self.request_id,
            request_ids.header if request_ids is not None else DEFAULT_HEADER)
        if plan.metrics is not None:
            plan.metrics.start()
        return self


    def finish(self) -> None:
        """The handler returned: `Pipeline.succeed`, then `Pipeline.end` (in one step: this
        runs on every successful call)."""
        try:
            context = self.context
            trailers = self.trailers
            if trailers is not None:
                current = context.trailing_metadata()
                if current is not trailers:
                    context.set_trailing_metadata(merge_trailers(current, (), trailers[0]))
            code = context.code()
            if code is None or code is _OK:
                metrics = self.plan.metrics
                if metrics is not None:
                    metrics.succeed(_perf_counter() - self.start)
            else:
                # The handler set a non-OK code and returned: its decision, logged and
                # counted as is.
                self.pipeline._record(self, code, None, level_for_code(code), None, None)
        finally:
            if self.permit is not None or self.span is not None:
                self.pipeline.end(self)
            else:  # the usual call: only its context variables to unbind
                token = self.inbound_token
                if token is not None:
                    propagation.leave(token)
                log_tokens = self.log_tokens
                if log_tokens is not None:
                    unbind_request_id(log_tokens)


class SyncCall(Call):
    """A call whose handler runs in this thread: ``with SyncCall.begin(...): <run it>``.

    Entering admits the call; leaving records success or, for an exception, calls
    `end_failed`. A failed call always leaves by an exception (the stack's own, or the
    handler's, which is never swallowed): the block needs no return after it.
    """

    __slots__ = ()

    def __enter__(self) -> Self:
        if self.plan.guarded or self.request is UNDECODABLE:
            try:
                refused = self.plan.guarded and self.pipeline.admit(self, self.wait)
                if not refused and self.request is UNDECODABLE:
                    raise undecodable_error()
            except BaseException as exc:  # __exit__ sorts it as it sorts the handler's
                self.__exit__(type(exc), exc, exc.__traceback__)
                raise
            if refused:  # shed straight away: nothing of the failure path to decide
                try:
                    self.end_refused(self.pipeline.shed(self))
                finally:
                    self.pipeline.end(self)
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if exc is None:
            self.finish()
            return
        try:
            if isinstance(exc, (Exception, GeneratorExit)):
                self.end_failed(exc)
        finally:
            self.pipeline.end(self)

    def end_failed(self, exc: BaseException) -> None:
        """End the call that raised ``exc``: raise what ends it, or return to re-raise ``exc``.

        ``GeneratorExit``: grpc stopped consuming the response stream (the client went away).
        """
        raise NotImplementedError

    def end_refused(self, status: RichStatus) -> None:
        """End the call the rate limiter refused with ``status`` (see `Pipeline.shed`):
        send it, raising what ends the call."""
        raise NotImplementedError


class AsyncCall(Call):
    """`SyncCall` for coroutines: ``async with AsyncCall.begin(...): <await it>``."""

    __slots__ = ()

    async def __aenter__(self) -> Self:
        if self.plan.guarded or self.request is UNDECODABLE:
            try:
                refused = self.plan.guarded and await self.pipeline.admit_async(self)
                if not refused and self.request is UNDECODABLE:
                    raise undecodable_error()
            except BaseException as exc:  # __aexit__ sorts it as it sorts the handler's
                await self.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            if refused:  # shed straight away: nothing of the failure path to decide
                try:
                    await self.end_refused(self.pipeline.shed(self))
                finally:
                    self.pipeline.end(self)
        return self

    async def __aexit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if exc is None:
            self.finish()
            return
        try:
            if isinstance(exc, (Exception, asyncio.CancelledError, GeneratorExit)):
                await self.end_failed(exc)
        finally:
            self.pipeline.end(self)

    async def end_failed(self, exc: BaseException) -> None:
        """`SyncCall.end_failed`; also ``asyncio.CancelledError`` (call cancelled)."""
        raise NotImplementedError

    async def end_refused(self, status: RichStatus) -> None:
        """`SyncCall.end_refused`."""
        raise NotImplementedError


class Pipeline:
    """The configured stack: error mapping plus the optional parts, in this order per call.

    request id -> (started counter) -> rate limit -> auth -> handler; on the way out the
    status is decided, then logged once and counted.
    """

    def __init__(self, options: ServerOptions) -> None:
        """Build the parts ``options`` asks for (``True`` ones with their defaults)."""
        self.options = options
        # Our own server span when no instrumentation started one
        # (see octollm_grpc.observability._otel).
        # A given provider's tracer is made once; the global one is looked up per call, as an
        # application may set it after building its server.
        self.tracing = otel.AVAILABLE
        provider = options.tracer_provider
        self.tracer = otel.active_tracer(provider) if provider is not None else None
        self.request_ids = part(options.request_ids, RequestIds)
        self.logger = part(options.logger, CallLogger)
        self.metrics = part(options.metrics, ServerMetrics)
        self.rate_limiter = options.rate_limit
        self.auth = options.auth
        self.concurrency = options.concurrency
        self.domain = options.domain
        self.debug = options.debug
        # Refusals are shed cheaply: one status per limit and wait, one log event per caller
        # and second (see octollm_grpc.server._shedding).
        self.rejection_statuses = RejectionStatuses(domain=self.domain)
        self.rejection_log = None
        if self.logger is not None and self.rate_limiter is not None:
            self.rejection_log = RejectionLog(
                self.logger, secret_keys=self.rate_limiter.key_metadata is not None)
        # Concurrency refusals: one grpc.call.shed event per partition and second.
        self.shed_log = None
        if self.logger is not None and self.concurrency is not None:
            self.shed_log = RejectionLog(self.logger, event=SHED_EVENT)

    # -- per method ---------------------------------------------------------------------

    def plan(self, method: str, rpc_type: str) -> MethodPlan:
        """Resolve everything ``method`` needs per call."""
        service, name = split_method(method)
        return MethodPlan(
            method,
            rpc_type,
            self.metrics.for_method(rpc_type, service, name) if self.metrics is not None else None,
            # "is not None", not truthiness: an empty RateLimiter (it has __len__) is falsy.
            self.rate_limiter.limit_for(method) if self.rate_limiter is not None else None,
            self.auth.requirement(method) if self.auth is not None else None,
            self.concurrency.route(
                method, self.metrics.registry if self.metrics is not None else None,
                streaming=rpc_type != "unary")
            if self.concurrency is not None else None,
        )

    # -- per call -----------------------------------------------------------------------

    def admit(self, call: Call, wait: Callable[[Awaitable[Any]], Any] | None = None) -> bool:
        """Rate limit, then auth; raises the error the call must end with, or returns
        ``True`` when the rate limiter refused it (``call.rejection``; see `shed`).

        ``wait`` blocks for an awaitable verdict of a coroutine verifier (a ``def`` handler on
        an aio server); without it only a sync verifier can run.
        """
        plan = call.plan
        if plan.limit is not None and self._rate_limit(plan.limit, call):
            return True
        if plan.concurrency is not None:
            self._take_place(plan.concurrency, call)
        if plan.scopes is not None:
            assert self.auth is not None
            try:
                granted = self.auth.identify(call.metadata, wait, call.context)
                _note_principal(call, granted)
                self.auth.authorize(plan.scopes, granted)
            except BaseException:
                self._give_place_back(call)
                raise
        return False

    async def admit_async(self, call: Call) -> bool:
        """`admit` for aio: the verifier may be a coroutine function."""
        plan = call.plan
        if plan.limit is not None:
            # A shared store (Redis) answers over the network: never block the event loop.
            limiter = self.rate_limiter
            assert limiter is not None
            key = limiter.key_for(call.metadata, call.context.peer, call.context)
            wait = await limiter.acquire_async(plan.limit[0], plan.limit[1], key)
            if wait > 0.0:
                call.rejection = Rejection(plan.limit[1], key, wait)
                return True
        if plan.concurrency is not None:
            self._take_place(plan.concurrency, call)
        if plan.scopes is not None:
            assert self.auth is not None
            try:
                granted = await self.auth.identify_async(call.metadata, call.context)
                _note_principal(call, granted)
                self.auth.authorize(plan.scopes, granted)
            except BaseException:
                self._give_place_back(call)
                raise
        return False

    def _take_place(self, route: Route, call: Call) -> None:
        # After the rate limit (a caller over its own limit takes no place), before auth
        # (an overloaded server spends nothing on verifying a call it refuses).
        assert self.concurrency is not None
        admitted = self.concurrency.acquire(route, call.metadata)
        if isinstance(admitted, ConcurrencyRejection):
            call.rejection = admitted
            raise _Refused()  # ends with the rejection's cached status (see _shed)
        call.permit = admitted

    def _give_place_back(self, call: Call) -> None:
        # Refused by auth: the handler never ran, so its time is no latency sample.
        if call.permit is not None:
            assert self.concurrency is not None
            self.concurrency.release(call.permit, sample=False)
            call.permit = None

    def _rate_limit(self, limit: tuple[str, RateLimit], call: Call) -> bool:
        # Cheap rejection first, before any verifier runs: it also slows token guessing.
        limiter = self.rate_limiter
        assert limiter is not None
        key = limiter.key_for(call.metadata, call.context.peer, call.context)
        wait = limiter.acquire(limit[0], limit[1], key)
        if wait > 0.0:
            call.rejection = Rejection(limit[1], key, wait)
            return True
        return False

    def cancelled(self, call: Call) -> None:
        """The client went away: not an error, so no log event; counted as ``Canceled``."""
        metrics = call.plan.metrics
        if metrics is not None:
            metrics.handled(_CANCELLED).inc()
            metrics.handling.observe(_perf_counter() - call.start)

    def fail(self, call: Call, exc: BaseException, *, aborted: bool, cancelled: bool) -> Failure:
        """Decide how a call that raised ``exc`` ends; log it once and count it.

        ``aborted``: ``exc`` is the handler's own ``context.abort``. ``cancelled``: the client
        went away (no log event, counted as ``Canceled``).
        """
        if cancelled:
            self.cancelled(call)
            return Failure(None, None)
        context = call.context
        rid_pair = call.trailers[0] if call.trailers is not None else None
        handler_code = context.code()
        if aborted or (handler_code is not None and handler_code is not _OK):
            # The handler decided the code: keep it and its message, add only the request id.
            code = handler_code if handler_code is not None else grpc.StatusCode.UNKNOWN
            trailers = merge_trailers(context.trailing_metadata(), (), rid_pair)
            if aborted:
                # What the caller decodes a bare status of this code to (NOT_FOUND: NotFoundError).
                aborted_code = codes.class_for_status_code(code).error_code
                self._record(call, code, aborted_code, level_for_code(code), None, None)
                otel.call_failed(code, aborted_code, message_of(context.details()),
                                 call.request_id)
                return Failure(None, trailers)
            mapping = codes.mapping_for(exc)
            if isinstance(exc, OctoLLMError):
                error_code, log_exc = exc.error_code, None
            else:
                error_code, log_exc = mapping.error_code, exc
            self._record(call, code, error_code,
                         level_for_exception(exc, mapping), log_exc, None)
            handler_message = message_of(context.details())
            otel.call_failed(code, error_code, handler_message, call.request_id)
            return Failure(HandlerStatus(code, handler_message, trailers), None)

        if call.rejection is not None:
            return self._shed(call, call.rejection)
        exc = codes.converted(exc)  # map_exception: a type the application does not own
        mapping = codes.mapping_for(exc)
        try:
            status = to_status_or_raise(exc, request_id=call.request_id, domain=self.domain,
                                        debug=self.debug)
        except Exception:  # noqa: BLE001 - e.g. a __str__ that raises: still end the call safely
            mapping = codes.UNEXPECTED
            status = unencodable_status(call.request_id, self.domain)
        current = context.trailing_metadata()
        if call.trailers is not None and current is call.trailers:
            # The handler set no trailers of its own: only our request id is there, and
            # merge_trailers would drop it and put it back last.
            trailers = status.trailing_metadata + call.trailers
        else:
            trailers = merge_trailers(current, status.trailing_metadata, rid_pair)
        if isinstance(exc, OctoLLMError) and mapping is not codes.UNEXPECTED:
            error_code, log_exc, message = exc.error_code, None, status.details
        else:
            error_code, log_exc, message = mapping.error_code, exc, None
        self._record(call, status.code, error_code,
                     level_for_exception(exc, mapping), log_exc, message)
        otel.call_failed(status.code, error_code, status.details, call.request_id)
        return Failure(status._replace(trailing_metadata=trailers), None)

    def shed(self, call: Call) -> RichStatus:
        """The status a call the rate limiter refused (``call.rejection``) ends with, counted
        and logged as every refusal is (`_shed`)."""
        assert call.rejection is not None
        status = self._shed(call, call.rejection).status
        assert isinstance(status, RichStatus)
        return status

    def _shed(self, call: Call, rejection: Refusal) -> Failure:
        """A refused call: the cached status, counted per call, logged per caller and second.

        Shed as cheaply as it can be: the status is the cached one as is (no ``RequestInfo``:
        the request id still goes back as its trailer), and the call is counted but not timed
        (no latency histogram: a refusal's latency says nothing about the service).
        """
        status = self.rejection_statuses.status(rejection, None)
        current = call.context.trailing_metadata()
        if call.trailers is not None and current is call.trailers:
            trailers = status.trailing_metadata + call.trailers
        else:  # e.g. trailers set by an earlier interceptor
            trailers = merge_trailers(current, status.trailing_metadata,
                                      call.trailers[0] if call.trailers is not None else None)
        metrics = call.plan.metrics
        if metrics is not None:
            metrics.handled(status.code).inc()
        if self.metrics is not None:
            self.metrics.error("RATE_LIMIT_EXCEEDED")
        otel.call_failed(status.code, "RATE_LIMIT_EXCEEDED", status.details, call.request_id)
        log = self.shed_log if isinstance(rejection, ConcurrencyRejection) \
            else self.rejection_log
        if log is not None and self.logger is not None and self.logger.enabled_for("warning"):
            try:
                log.note(call.plan.method, rejection.key, call.request_id)
            except Exception:  # noqa: BLE001 - a broken log setup must not change the status
                _fallback_log.exception("octollm_grpc could not log a refused call")
        return Failure(status._replace(trailing_metadata=trailers), None)

    def _record(
        self,
        call: Call,
        code: grpc.StatusCode,
        error_code: str | None,
        level: Level,
        exc: BaseException | None,
        message: str | None,
    ) -> None:
        duration = _perf_counter() - call.start
        metrics = call.plan.metrics
        if metrics is not None:
            metrics.handled(code).inc()
            metrics.handling.observe(duration)
        if self.metrics is not None:
            self.metrics.error(error_code or code.name, duration)
        if self.logger is not None and self.logger.enabled_for(level):
            try:
                self.logger.failed(
                    level,
                    method=call.plan.method,
                    grpc_code=code.name,
                    error_code=error_code,
                    request_id=call.request_id,
                    duration=duration,
                    peer=_peer(call.context) if self.logger.peer else None,
                    message=message,
                    exc=exc,
                    principal=call.principal,
                )
            except Exception:  # noqa: BLE001 - a broken log setup must not change the status
                _fallback_log.exception("octollm_grpc could not log a failed call")

    def end(self, call: Call) -> None:
        """Give back the call's place under the concurrency limit (its time is a latency
        sample) and unbind its context variables (always, after success or failure)."""
        if call.permit is not None:
            assert self.concurrency is not None
            self.concurrency.release(call.permit)
            call.permit = None
        if call.inbound_token is not None:
            propagation.leave(call.inbound_token)
        if call.span is not None:
            otel.end_server_span(call.span)
        if call.log_tokens is not None:
            unbind_request_id(call.log_tokens)


def _note_principal(call: Call, granted: object) -> None:
    """Remember who the caller is (for its log event and span) before scopes are checked,
    so a refusal for a missing scope still names the caller."""
    if isinstance(granted, Grant) and granted.principal is not None:
        call.principal = granted.principal
        otel.set_principal(granted.principal)


class _Refused(Exception):
    """Unwinds a call the concurrency limit refused from admission to `Pipeline.fail` (never
    leaves the stack: the call ends with its rejection's status). A rate-limit refusal needs
    no exception: `Pipeline.admit` says so and the call is shed at once (`Pipeline.shed`)."""


_fallback_log = logging.getLogger("octollm_grpc.server")
def _peer(context: ServicerContext) -> str:
    try:
        peer = context.peer()
    except Exception:  # noqa: BLE001 - a peer we cannot read must not hide the failure itself
        return ""
    return peer if isinstance(peer, str) else str(peer)
