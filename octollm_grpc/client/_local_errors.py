"""grpc's own local failures as typed errors: a call grpc refused to send is no traceback.

grpc raises some failures in the calling process, before anything reaches the network, as
exceptions of its own that are not `grpc.RpcError` (``grpc.aio`` raises one when a
metadata key or value has bytes HTTP/2 cannot carry, e.g. a control byte in an
``authorization`` value; on streaming calls it reports the same as an ``INTERNAL`` status
"Invalid metadata" that no server sent). Escaping a resilient channel untyped, they became 500s with
``critical`` tracebacks in every service that passed a caller's header on.
"""

from __future__ import annotations

import grpc

from octollm_grpc.errors import InvalidInputError, OctoLLMError

__all__ = ["LOCAL_ERROR_MESSAGE", "local_error"]

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
