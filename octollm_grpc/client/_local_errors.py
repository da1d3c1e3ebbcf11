"""grpc's own local failures as typed errors: a call grpc refused to send is no traceback.

grpc raises some failures in the calling process, before anything reaches the network, as
exceptions of its own that are not `grpc.RpcError` (``grpc.aio`` raises one when a
metadata key or value has bytes HTTP/2 cannot carry, e.g. a control byte in an
``authorization`` value; on streaming calls it reports the same as an ``INTERNAL`` status
"Invalid metadata" that no server sent). Escaping a resilient channel untyped, they became 500s with
``critical`` tracebacks in every service that passed a caller's header on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from octollm_grpc.errors import InvalidInputError, OctoLLMError

__all__ = ["LOCAL_ERROR_MESSAGE", "local_error", "refused_metadata"]

#: The message of the typed error (grpc's own text lists its internal operations).
LOCAL_ERROR_MESSAGE = "gRPC refused to send the call: its metadata or message is not valid"


def local_error(error: BaseException) -> OctoLLMError | None:
    """The typed error for grpc's own local failure ``error``, or ``None`` for anything else.

    grpc's local exceptions are recognised by their module (grpc's core extension), as their
    classes are not public names. They become `InvalidInputError`
    (never retried, no breaker verdict): the call as given can never be sent.

    Args:
        error: what awaiting or starting the call raised.

    Returns:
        The typed error to raise instead, or ``None`` when ``error`` is not grpc's own.
    """
    if (isinstance(error, Exception) and not isinstance(error, grpc.RpcError)
            and type(error).__module__.startswith("grpc.")):
        return InvalidInputError(LOCAL_ERROR_MESSAGE,
                                 details={"grpc_error": type(error).__name__})
    if isinstance(error, grpc.aio.AioRpcError) and _made_locally(error):
        return InvalidInputError(LOCAL_ERROR_MESSAGE, details={"grpc_error": "InvalidMetadata"})
    return None


def _made_locally(error: grpc.aio.AioRpcError) -> bool:
    # A streaming call's refused metadata is a status grpc made here, not the server's: no
    # metadata at all, and grpc's own words (no server sends them: ours always set a reason).
    return (error.code() is grpc.StatusCode.INTERNAL
            and error.details() in _LOCAL_STATUS_DETAILS
            and not error.initial_metadata() and not error.trailing_metadata())


#: What grpc.aio says when it fails a streaming call locally for its metadata.
_LOCAL_STATUS_DETAILS = frozenset({"Invalid metadata"})


def refused_metadata(metadata: Iterable[Any] | None) -> OctoLLMError | None:
    """The typed error for call metadata HTTP/2 cannot carry, or ``None`` when it can.

    Checked before a call starts, so every grpcio version gives the same answer: grpc.aio
    raises its own exception on unary calls, reports a local ``INTERNAL`` on streams, and
    1.66 lets a stream wait until its deadline. A key must be lower-case letters, digits,
    ``-``, ``_`` or ``.``; a value of a key not ending in ``-bin`` must be printable ASCII.

    Args:
        metadata: The call's metadata (pairs), or ``None``.

    Returns:
        ``InvalidInputError`` (never retried, no breaker verdict), or ``None``.
    """
    for key, value in metadata or ():
        # A key checked before is looked up (a channel's calls send the same few keys);
        # ``key.__class__ is str`` first: any other key is refused, and may be unhashable.
        binary = _CHECKED_KEYS.get(key) if key.__class__ is str else None
        if binary is None:
            if not isinstance(key, str) or not key or key.strip(_KEY_CHARS):
                return _refused()
            binary = key.endswith("-bin")
            if len(_CHECKED_KEYS) < _MAX_CHECKED_KEYS and key.__class__ is str:
                _CHECKED_KEYS[key] = binary
        if binary:
            continue
        if not isinstance(value, str) or not (value.isascii() and value.isprintable()):
            return _refused()
    return None


def _refused() -> OctoLLMError:
    return InvalidInputError(LOCAL_ERROR_MESSAGE, details={"grpc_error": "InvalidMetadata"})


_KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_."
#: Keys found valid, and whether each is binary (``-bin``): a bounded memo, so a process
#: passing arbitrary callers' keys on checks the ones past the bound every time.
_CHECKED_KEYS: dict[str, bool] = {}
_MAX_CHECKED_KEYS = 1024
