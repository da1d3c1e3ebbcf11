"""``assert_rich_error``: one assertion for "this call failed with exactly this error"."""

from __future__ import annotations

from typing import Any

import grpc

from octollm_grpc.errors import OctoLLMError
from octollm_grpc.status import from_rpc_error

__all__ = ["assert_rich_error"]

_MISSING = object()


def assert_rich_error(
    exc: BaseException, code: grpc.StatusCode, error_code: str | None, **details: Any
) -> OctoLLMError:
    """Assert ``exc`` is the failed call ``code`` / ``error_code`` with these ``details``.

    ``exc`` is what a call raised: the typed error from a resilient channel, or the plain
    ``grpc.RpcError`` / ``grpc.aio.AioRpcError`` from any channel (decoded here). It must
    have come over the wire with our rich status (``grpc-status-details-bin``), unless it is
    an error the client raised itself (such as ``CircuitOpenError``). ``error_code=None``
    skips that check; each keyword must be in ``details`` with an equal value (keys not
    named are not checked). Returns the decoded error for further checks; raises
    ``AssertionError`` saying what differs.

    Args:
        exc: What the call raised.
        code: The expected status code.
        error_code: The expected ``error_code`` (``None``: not checked).
        **details: Expected entries of ``details``.

    Returns:
        The decoded error, for further checks.

    Raises:
        AssertionError: Any of them differs.
    """
    if not isinstance(exc, grpc.RpcError):
        raise AssertionError(f"expected a failed gRPC call (grpc.RpcError), got {exc!r}")
    error = from_rpc_error(exc)
    problems = []
    if error.code() is not code:
        problems.append(f"code {error.code().name}, expected {code.name}")
    came_over_wire = not isinstance(exc, OctoLLMError) or exc.trailing_metadata() is not None
    if came_over_wire and error.rich_status is None:
        problems.append("no rich status (grpc-status-details-bin) on the call")
    if error_code is not None and error.error_code != error_code:
        problems.append(f"error_code {error.error_code!r}, expected {error_code!r}")
    for key, expected in details.items():
        actual = error.details.get(key, _MISSING)
        if actual is _MISSING:
            problems.append(f"details[{key!r}] missing (details: {dict(error.details)!r})")
        elif actual != expected:
            problems.append(f"details[{key!r}] == {actual!r}, expected {expected!r}")
    if problems:
        raise AssertionError(f"{type(error).__name__} {error.message!r}: " + "; ".join(problems))
    return error
