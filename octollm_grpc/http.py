"""Errors for HTTP gateways: the standard's JSON envelope, the HTTP status and ``Retry-After``."""

from __future__ import annotations

import math
import re
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
    """Render any exception as (HTTP status, headers, the standard's JSON body).

    ``OctoLLMError`` gives its own ``to_dict()``; ``Retry-After`` is whole seconds, rounded up,
    at most `MAX_RETRY_AFTER_HEADER` (none for a ``retry_after`` of 0 or less).
    A 401 carries ``WWW-Authenticate: Bearer error="invalid_token"`` and a 403
    ``WWW-Authenticate: Bearer error="insufficient_scope"`` (RFC 6750), with ``scope`` naming
    the missing scopes when the error's ``details["required_scopes"]`` lists them.
    Anything else gives the standard's generic 500 body, with none of the exception's text.

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
        challenge = _bearer_challenge(mapping.http_status, exc)
        if challenge is not None:
            headers["WWW-Authenticate"] = challenge
    else:
        message = TIMEOUT_MESSAGE if mapping is codes.BUILTIN_TIMEOUT else GENERIC_MESSAGE
        body = {"error": mapping.error_code, "message": message, "details": {}}
    return HttpError(mapping.http_status, headers, body)


# RFC 6750 scope tokens: printable ASCII without space, '"' or '\\' (section 3).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")


def _bearer_challenge(status: int, exc: e.OctoLLMError) -> str | None:
    """The RFC 6750 challenge of a 401 or 403, else ``None``."""
    if status == 401:
        return 'Bearer error="invalid_token"'
    if status != 403:
        return None
    scopes = exc.details.get("required_scopes")
    if isinstance(scopes, list) and scopes and all(
            isinstance(s, str) and _SCOPE_TOKEN.fullmatch(s) for s in scopes):
        return f'Bearer error="insufficient_scope", scope="{" ".join(scopes)}"'
    return 'Bearer error="insufficient_scope"'
