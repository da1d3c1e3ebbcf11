"""Errors for HTTP gateways: the seed's JSON envelope, the HTTP status and ``Retry-After``."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from octollm_grpc import codes
from octollm_grpc import errors as e
from octollm_grpc.status._limits import GENERIC_MESSAGE, TIMEOUT_MESSAGE

__all__ = [
    "to_http",
]

#: The longest ``Retry-After`` sent, in seconds (a day): longer advice, however it arrived,
#: is sent as this; a client asks again then.
MAX_RETRY_AFTER_HEADER = 86_400


class HttpError(NamedTuple):
    """What an HTTP gateway sends for an error."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def to_http(exc: BaseException) -> HttpError:
    """Render any exception as (HTTP status, headers, the seed's JSON body).

    ``OctoLLMError`` gives its own ``to_dict()``; ``Retry-After`` is whole seconds, rounded up,
    at most :data:`MAX_RETRY_AFTER_HEADER` (none for a ``retry_after`` of 0 or less).
    Anything else gives the seed's generic 500 body, with none of the exception's text.

    Args:
        exc: Any exception.

    Returns:
        The HTTP status, headers and JSON body to answer with.
    """
    mapping = codes.mapping_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, e.OctoLLMError):
        body = exc.to_dict()
        retry_after = exc.retry_after
        if isinstance(retry_after, (int, float)) and math.isfinite(retry_after) and retry_after > 0:
            headers["Retry-After"] = str(min(math.ceil(retry_after), MAX_RETRY_AFTER_HEADER))
    else:
        message = TIMEOUT_MESSAGE if mapping is codes.BUILTIN_TIMEOUT else GENERIC_MESSAGE
        body = {"error": mapping.error_code, "message": message, "details": {}}
    return HttpError(mapping.http_status, headers, body)
