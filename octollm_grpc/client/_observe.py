"""The outermost layer of a resilient channel: propagation and per-call metrics, both stacks.

Per call, before the retry layer sees it: the timeout and request id the served call passes on
(`octollm_grpc.observability._propagation`), so retries stay within the incoming
deadline, and the
current trace context (`octollm_grpc.observability._otel.inject`); then
``grpc_client_started_total``, and when the call is over (after every retry) one
``grpc_client_handled_total`` with its final code and one ``grpc_client_handling_seconds``.
A response stream is over when it ends or fails while being read.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from typing import Any

import grpc
from grpc import aio

from octollm_grpc.client._aio_shapes import per_shape
from octollm_grpc.client._delegation import AioDelegatingCall, DelegatingCall
from octollm_grpc.client._half_close import WatchedRequests, watch
from octollm_grpc.observability._client_metrics import ClientMethodMetrics, ClientMetrics
from octollm_grpc.observability._otel import inject
from octollm_grpc.observability._propagation import outbound_metadata, outbound_timeout

__all__ = ["AioObserver", "CallObserver", "Ending", "Interceptor", "aio_details",
           "aio_observers", "code_of", "end_with", "observed", "sync_details"]

_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED
_UNKNOWN = grpc.StatusCode.UNKNOWN


def code_of(error: BaseException | None) -> grpc.StatusCode:
    if error is None:
        return _OK
    if isinstance(error, (asyncio.CancelledError, grpc.FutureCancelledError)):
        return _CANCELLED
    if isinstance(error, grpc.RpcError):
        code = error.code()
        if isinstance(code, grpc.StatusCode):
            return code
    return _UNKNOWN


class Ending:
    """One call's start, and its single handled count when it ends."""

    __slots__ = ("clock", "done", "metrics", "start")

    def __init__(self, metrics: ClientMethodMetrics, clock: Callable[[], float],
                 start: float | None = None) -> None:
        """Count the call as started, unless ``start`` says when it already was."""
        self.metrics = metrics
        self.clock = clock
        self.done = False
        if start is None:
            metrics.started.inc()
            start = clock()
        self.start = start

    def end(self, code: grpc.StatusCode) -> None:
        if not self.done:  # a stream read after its end must not count twice
            self.done = True
            self.metrics.handled(code, self.clock() - self.start)


class _SyncDetails(grpc.ClientCallDetails):
    __slots__ = ("compression", "credentials", "metadata", "method", "timeout", "wait_for_ready")

    def __init__(self, base: Any, timeout: float | None, metadata: Any) -> None:
        self.method = base.method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


def sync_details(details: Any) -> Any:
    timeout = outbound_timeout(details.timeout)
    metadata = inject(outbound_metadata(details.metadata))
    if timeout is details.timeout and metadata is details.metadata:
        return details
    return _SyncDetails(details, timeout, tuple(metadata) if metadata is not None else None)


class _ObservedStream(DelegatingCall, Iterator[Any]):
    """A sync response stream that counts its outcome when reading it ends."""

    def __init__(self, call: Any, ending: Ending) -> None:
        self._call = call
        self._ending = ending

    def __iter__(self) -> _ObservedStream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except StopIteration:
            self._ending.end(_OK)
            raise
        except BaseException as error:
            self._ending.end(code_of(error))
            raise


class _Observing:
    """What both stacks' outer interceptors share: the metrics and where a call's ending goes."""

    def __init__(self, metrics: ClientMetrics | None, clock: Callable[[], float]) -> None:
        self._metrics = metrics
        self._clock = clock

    def _begin(self, details: Any, grpc_type: str) -> Ending | None:
        if self._metrics is None:
            return None
        return Ending(self._metrics.method(details.method, grpc_type), self._clock)


class CallObserver(
    _Observing,
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """The sync outer interceptor; ``metrics`` ``None`` leaves only the propagation."""

    def _unary(self, continuation: Any, details: Any, request: Any, grpc_type: str,
               inner: Interceptor | None = None) -> Any:
        """Observe a call with a response; ``inner`` is the layer inside when it is no
        interceptor of grpc's chain (see `observed`)."""
        ending = self._begin(details, grpc_type)
        outcome = observed(inner, continuation, sync_details(details), request)
        if isinstance(outcome, BaseException) and not isinstance(outcome, grpc.Future):
            # The retry layer raised its typed error; grpc handed it to us as the outcome.
            if ending is not None:
                ending.end(code_of(outcome))
            raise outcome
        if ending is not None:
            end_with(outcome, ending)
        return outcome

    def _stream(self, continuation: Any, details: Any, request: Any, grpc_type: str,
                inner: Interceptor | None = None) -> Any:
        ending = self._begin(details, grpc_type)
        call = observed(inner, continuation, sync_details(details), request)
        if isinstance(call, BaseException) and not isinstance(call, grpc.Future):
            if ending is not None:
                ending.end(code_of(call))
            raise call
        return call if ending is None else _ObservedStream(call, ending)

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                              request: Any) -> Any:
        return self._unary(continuation, client_call_details, request, "unary")

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                               request_iterator: Any) -> Any:
        return self._unary(continuation, client_call_details, request_iterator, "client_stream")

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any,
                               request: Any) -> Any:
        return self._stream(continuation, client_call_details, request, "server_stream")

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                request_iterator: Any) -> Any:
        return self._stream(continuation, client_call_details, request_iterator, "bidi_stream")


#: ``intercept_*(continuation, client_call_details, request)`` of a sync layer.
Interceptor = Callable[[Any, Any, Any], Any]


def observed(inner: Interceptor | None, continuation: Any, details: Any, request: Any) -> Any:
    """What the observer's continuation gives: ``continuation``'s outcome, or, with the retry
    layer ``inner`` called directly, its outcome or what it raised (as grpc's continuation
    of a layer below would hand it over: an error is a value)."""
    if inner is None:
        return continuation(details, request)
    try:
        return inner(continuation, details, request)
    except Exception as error:  # noqa: BLE001 - handed over as grpc's continuation does
        return error


def end_with(outcome: Any, ending: Ending) -> None:
    """Count ``ending`` when the unary ``outcome`` (a grpc future) is over."""
    outcome.add_done_callback(lambda future: ending.end(_future_code(future)))


def _future_code(future: Any) -> grpc.StatusCode:
    try:
        return code_of(future.exception())
    except grpc.FutureCancelledError:
        return _CANCELLED


# -- grpc.aio -----------------------------------------------------------------------------


def aio_details(details: Any, as_pairs: bool = False,
                ) -> tuple[Any, Sequence[tuple[str, Any]] | None]:
    """The details an aio call goes on with (timeout, request id and trace context passed
    on), and their metadata as pairs (read off grpc's ``Metadata`` once).

    ``as_pairs``: the new details carry the pairs themselves, not a ``Metadata`` made of
    them; only for a continuation that is grpc's own call, which reads them as a tuple
    (``Metadata`` is what an interceptor after ours may expect).
    """
    given = details.metadata
    # tuple(iter(...)): tuple(given) would first ask Metadata.__len__ (Python) for a size.
    pairs = tuple(iter(given)) if given is not None else None
    timeout = outbound_timeout(details.timeout)
    metadata = inject(outbound_metadata(pairs))
    if timeout is details.timeout and metadata is pairs:
        return details, pairs
    carried = metadata if as_pairs or metadata is None else aio.Metadata(*metadata)
    return aio.ClientCallDetails(details.method, timeout, carried, details.credentials,
                                 details.wait_for_ready), metadata


class _ObservedAioCall(
    AioDelegatingCall,
    aio.UnaryStreamCall,  # type: ignore[type-arg]
    aio.StreamUnaryCall,  # type: ignore[type-arg]
    aio.StreamStreamCall,  # type: ignore[type-arg]
):
    """An aio streaming call that counts its outcome when awaiting or reading it ends."""

    def __init__(self, call: Any, ending: Ending,
                 watcher: WatchedRequests | None = None) -> None:
        self._call = call
        self._ending = ending
        self._watcher = watcher
        self._iterator: AsyncIterator[Any] | None = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result().__await__()

    async def _result(self) -> Any:
        try:
            response = await self._call
        except BaseException as error:
            self._ending.end(code_of(error))
            raise
        self._ending.end(_OK)
        return response

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._iterator is None:
            self._iterator = self._messages()
        return self._iterator

    async def _messages(self) -> AsyncIterator[Any]:
        try:
            async for message in self._call:
                yield message
        except BaseException as error:
            self._ending.end(code_of(error))
            raise
        self._ending.end(_OK)

    async def read(self) -> Any:
        try:
            message = await self._call.read()
        except BaseException as error:
            self._ending.end(code_of(error))
            raise
        if message is aio.EOF:
            self._ending.end(_OK)
        return message


class AioObserver(_Observing):
    """The aio outer layer, for every call shape (`aio_observers` makes its four
    interceptors)."""

    async def _start(self, continuation: Any, details: Any, request: Any,
                     ending: Ending | None, inner: Interceptor | None = None) -> Any:
        try:
            if inner is None:
                return await continuation(aio_details(details)[0], request)
            # The retry layer called directly: it returns a call object (as grpc would).
            return await inner(continuation, aio_details(details)[0], request)
        except BaseException as error:
            if ending is not None:
                ending.end(code_of(error))
            raise

    async def streaming(self, continuation: Any, details: Any, request: Any,
                        grpc_type: str) -> Any:
        ending = self._begin(details, grpc_type)
        watcher = None
        if ending is not None and grpc_type != "server_stream":
            request, watcher = watch(request)  # our call answers grpc's half-close check
        call = await self._start(continuation, details, request, ending)
        return call if ending is None else _ObservedAioCall(call, ending, watcher)

    async def unary_unary(self, continuation: Any, client_call_details: Any,
                          request: Any, inner: Interceptor | None = None) -> Any:
        """Observe a unary call; ``inner`` is the retry layer when it is no interceptor of
        grpc's chain (an async ``intercept_unary_unary``)."""
        ending = self._begin(client_call_details, "unary")
        call = await self._start(continuation, client_call_details, request, ending, inner)
        if ending is not None:
            # The retry layer has awaited the call already: its code is there.
            try:
                code = await call.code()
            except BaseException as error:
                ending.end(code_of(error))
                raise
            ending.end(code)
        return call


def aio_observers(metrics: ClientMetrics | None, clock: Callable[[], float]) -> list[Any]:
    """The four aio outer interceptors (``grpc.aio`` files one per call shape)."""
    layer = AioObserver(metrics, clock)
    return per_shape(layer.unary_unary,
                     functools.partial(layer.streaming, grpc_type="server_stream"),
                     functools.partial(layer.streaming, grpc_type="client_stream"),
                     functools.partial(layer.streaming, grpc_type="bidi_stream"))
