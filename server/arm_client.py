"""The task service's side of the arm: one call, and what its failures mean to a task client.

The channel is a resilient one (retry, retry budget, circuit breaker), so by the time an error
reaches here the retries are spent. What the task's caller then sees:

- the arm answered with an error of its own (``LLMAPIError`` ...): that error, details intact;
- the breaker is open: ``CircuitOpenError``, with ``retry_after`` = time until it half-opens
  (naming the arm by its capability, not by its address);
- the arm took too long: our ``TimeoutError`` (``DEADLINE_EXCEEDED``) naming the bound (the
  call's timeout, or the per-attempt timeout when the call has none);
- the arm could not be reached or said nothing useful: ``ArmUnavailableError``, with the
  cause's error code in its details (never its text, which names internal addresses).

With several arms (``--arm-target primary,fallback,...``) a call that ends in
``ArmUnavailableError`` or ``CircuitOpenError`` moves on to the next arm
(:func:`octollm_grpc.resilience.with_fallback`): an arm whose breaker is open fails fast, so
it is skipped without waiting. All arms share the call's timeout; the error of the last one
tried is raised. The answer's ``arm_id`` says which arm served.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable, Sequence

import grpc

from octollm_grpc import errors
from octollm_grpc.resilience import with_fallback
from octollm_grpc.status import callers_budget, from_rpc_error
from server.gen.octollm.arms.v1 import arms_pb2, arms_pb2_grpc

__all__ = ["CAPABILITY", "ArmClient", "classify_arm_error"]

#: What the task service asks of an arm (``ArmUnavailableError``'s required capability).
CAPABILITY = "llm.complete"
#: grpc core and the loop time the deadline apart: this close to it counts as reached.
_SLACK = 0.01


def classify_arm_error(error: BaseException, timeout: float | None) -> BaseException:
    """The error a task client should see for ``error``, raised by a call to the arm.

    ``timeout`` is the bound a timeout error names (``None``: unknown, named as 0).
    """
    if isinstance(error, grpc.RpcError) and not isinstance(error, errors.OctoLLMError):
        error = from_rpc_error(error)
    if isinstance(error, errors.CircuitOpenError):
        return errors.CircuitOpenError(f"arm ({CAPABILITY})", error.retry_after or 0.0)
    if isinstance(error, errors.ExternalError):
        return error
    if isinstance(error, (errors.TimeoutError, builtins.TimeoutError)) or (
            isinstance(error, errors.OctoLLMError)
            and error.code() is grpc.StatusCode.DEADLINE_EXCEEDED):
        bound = timeout or 0.0
        return errors.TimeoutError("arm call", int(bound) if bound.is_integer() else bound)
    if isinstance(error, errors.OctoLLMError):
        unavailable = errors.ArmUnavailableError([CAPABILITY])
        unavailable.details["cause"] = error.error_code
        return unavailable
    return error


#: One arm's call: (request, seconds left or None, metadata) -> the answer, or the error.
_ArmCall = Callable[[arms_pb2.CompleteRequest, float | None,
                     tuple[tuple[str, str], ...] | None],
                    Awaitable[arms_pb2.CompleteResponse]]


def _arm_call(channel: grpc.aio.Channel, position: int, count: int) -> _ArmCall:
    # The generated *_pb2_grpc modules have no type stubs.
    stub = arms_pb2_grpc.ArmServiceStub(channel)  # type: ignore[no-untyped-call]

    async def complete(request: arms_pb2.CompleteRequest, timeout: float | None,
                       metadata: tuple[tuple[str, str], ...] | None,
                       ) -> arms_pb2.CompleteResponse:
        if timeout is not None and timeout <= 0:  # an earlier arm used up the call's time
            raise builtins.TimeoutError("no time left for this arm")
        response: arms_pb2.CompleteResponse = await stub.Complete(
            request, timeout=timeout, metadata=metadata)
        return response

    # What with_fallback's log lines call this arm (its position, not its address).
    complete.__qualname__ = f"arm {position} of {count}"
    return complete


class ArmClient:
    """Calls ``ArmService.Complete`` over ``channels`` (resilient ``grpc.aio`` channels).

    ``channels`` is one channel, or several in order of preference: the first is the primary,
    the others are tried in turn when it is unavailable (see the module docstring).
    The id of the call being served travels on as ``x-request-id`` by itself (a resilient
    channel does that inside a served call), so the arm's log lines carry the task service's id.
    ``attempt_timeout`` is the channels' per-attempt timeout: the bound a timeout error names
    when the call had none.
    """

    def __init__(self, channels: grpc.aio.Channel | Sequence[grpc.aio.Channel], *,
                 attempt_timeout: float | None = None) -> None:
        self._attempt_timeout = attempt_timeout
        chain = list(channels) if isinstance(channels, Sequence) else [channels]
        if not chain:
            raise ValueError("ArmClient needs at least one channel")
        self._calls = [_arm_call(channel, i + 1, len(chain)) for i, channel in enumerate(chain)]

    async def complete(self, task_id: str, prompt: str, priority: int,
                       timeout: float | None) -> arms_pb2.CompleteResponse:
        """The first available arm's answer; on failure raises what
        :func:`classify_arm_error` says of the last arm's error.

        ``timeout`` (seconds, all arms together) is the caller's; ``None``: the channels'
        per-attempt timeout alone bounds each attempt.
        """
        request = arms_pb2.CompleteRequest(task_id=task_id, prompt=prompt, priority=priority)
        metadata = None  # the request id is propagated by the channel
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        # What a timeout error names: the shorter of the call's time and one attempt's.
        bounds = [b for b in (timeout, self._attempt_timeout) if b is not None]
        bound = round(min(bounds), 3) if bounds else None

        def classified(call: _ArmCall) -> Callable[[], Awaitable[arms_pb2.CompleteResponse]]:
            async def attempt() -> arms_pb2.CompleteResponse:
                left = None if deadline is None else deadline - asyncio.get_running_loop().time()
                try:
                    return await call(request, left, metadata)
                except (grpc.RpcError, builtins.TimeoutError) as error:
                    classified = classify_arm_error(error, bound)
                    if (isinstance(classified, errors.TimeoutError) and deadline is not None
                            and asyncio.get_running_loop().time() >= deadline - _SLACK):
                        # The caller's time ran out (the task's timeout or its deadline), not
                        # the arm's: clients' breakers must not count it against us.
                        callers_budget(classified)
                    raise classified from error

            attempt.__qualname__ = call.__qualname__
            return attempt

        attempts = [classified(call) for call in self._calls]
        if len(attempts) == 1:
            return await attempts[0]()
        first_available = with_fallback(*attempts, on=(errors.ArmUnavailableError,))
        response: arms_pb2.CompleteResponse = await first_available()
        return response
