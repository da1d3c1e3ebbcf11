"""The task service's side of the arm: one call, and what its failures mean to a task client.

The channel is a resilient one (retry, retry budget, circuit breaker), so by the time an error
reaches here the retries are spent. What the task's caller then sees:

- the arm answered with an error of its own (``LLMAPIError`` ...): that error, details intact;
- the breaker is open: ``CircuitOpenError``, with ``retry_after`` = time until it half-opens
  (naming the arm by its capability, not by its address);
- the arm took too long: our ``TimeoutError`` (``DEADLINE_EXCEEDED``) naming the bound;
- the arm could not be reached or said nothing useful: ``ArmUnavailableError``, with the
  cause's error code in its details (never its text, which names internal addresses).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable

import grpc

from octollm_grpc import errors
from octollm_grpc.status import from_rpc_error
from server.gen.octollm.arms.v1 import arms_pb2, arms_pb2_grpc

__all__ = ["CAPABILITY", "ArmClient", "classify_arm_error"]

#: What the task service asks of an arm (``ArmUnavailableError``'s required capability).
CAPABILITY = "llm.complete"


def classify_arm_error(error: BaseException, timeout: float) -> BaseException:
    """The error a task client should see for ``error``, raised by a call to the arm."""
    if isinstance(error, grpc.RpcError) and not isinstance(error, errors.OctoLLMError):
        error = from_rpc_error(error)
    if isinstance(error, errors.CircuitOpenError):
        return errors.CircuitOpenError(f"arm ({CAPABILITY})", error.retry_after or 0.0)
    if isinstance(error, errors.ExternalError):
        return error
    if isinstance(error, (errors.TimeoutError, builtins.TimeoutError)) or (
            isinstance(error, errors.OctoLLMError)
            and error.code() is grpc.StatusCode.DEADLINE_EXCEEDED):
        return errors.TimeoutError("arm call", int(timeout) if timeout.is_integer() else timeout)
    if isinstance(error, errors.OctoLLMError):
        unavailable = errors.ArmUnavailableError([CAPABILITY])
        unavailable.details["cause"] = error.error_code
        return unavailable
    return error


class ArmClient:
    """Calls ``ArmService.Complete`` over ``channel`` (a resilient ``grpc.aio`` channel).

    ``request_id`` gives the id of the call being served; it is sent on as ``x-request-id``
    so the arm's log lines carry the same id as the task service's.
    """

    def __init__(self, channel: grpc.aio.Channel,
                 request_id: Callable[[], str | None] = lambda: None) -> None:
        self._request_id = request_id
        # The generated *_pb2_grpc modules have no type stubs.
        self._stub = arms_pb2_grpc.ArmServiceStub(channel)  # type: ignore[no-untyped-call]

    async def complete(self, task_id: str, prompt: str, priority: int,
                       timeout: float) -> arms_pb2.CompleteResponse:
        """The arm's answer; on failure raises what :func:`classify_arm_error` says."""
        request = arms_pb2.CompleteRequest(task_id=task_id, prompt=prompt, priority=priority)
        try:
            rid = self._request_id()
            response: arms_pb2.CompleteResponse = await self._stub.Complete(
                request, timeout=timeout, metadata=(("x-request-id", rid),) if rid else None)
        except (grpc.RpcError, builtins.TimeoutError) as error:
            raise classify_arm_error(error, timeout) from error
        return response
