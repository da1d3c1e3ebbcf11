"""Who an HTTP call is for: the gateway names its HTTP client to the service's rate limiter.

Every call the gateway makes arrives from the same loopback peer, so the service's rate limit,
keyed by peer, made all HTTP users share one budget: one flood (even of requests with no
token) starved everyone. The gateway now sends two metadata entries with each call:

- ``x-octollm-http-client``: the principal when the service checks tokens (a digest of the
  bearer token, never the token), else the HTTP client's address;
- ``x-octollm-gateway``: a random secret made at start, known only to this process.

:class:`GatewayKeyedLimiter` keys a call by ``x-octollm-http-client`` only when the secret
matches (compared in constant time); any other caller is keyed by its peer address as before,
so a gRPC caller cannot pick another's bucket by sending the header. Credentials are checked by
the gateway before the call (:meth:`CallerIdentity.authenticate`): a request with a bad token
is 401 without spending any budget.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Any

from fastapi import Request

from octollm_grpc.server import BearerAuth, RateLimiter

__all__ = ["CLIENT_KEY", "PROOF_KEY", "CallerIdentity", "GatewayKeyedLimiter"]

CLIENT_KEY = "x-octollm-http-client"
PROOF_KEY = "x-octollm-gateway"


class CallerIdentity:
    """The gateway's side: the secret, the auth it checks first, the key of each request.

    Args:
        auth: the service's own :class:`~octollm_grpc.server.BearerAuth` (``None``: no tokens
            checked; callers are then keyed by address).
        secret: the proof only this process knows (default: 32 random bytes).
    """

    def __init__(self, auth: BearerAuth | None = None, secret: str | None = None) -> None:
        self.auth = auth
        self.secret = secret if secret is not None else secrets.token_urlsafe(32)

    def key(self, request: Request) -> str:
        """The rate-limit key of ``request``: ``principal:<digest>`` or ``address:<host>``."""
        if self.auth is not None:
            value = request.headers.get("authorization", "")
            token = value.partition(" ")[2].strip()
            if token:
                digest = hashlib.sha256(token.encode()).hexdigest()[:32]
                return f"principal:{digest}"
        client = request.client
        return f"address:{client.host if client else 'unknown'}"

    def metadata(self, request: Request) -> list[tuple[str, str]]:
        """The two entries naming ``request``'s caller to the service."""
        return [(CLIENT_KEY, self.key(request)), (PROOF_KEY, self.secret)]

    async def authenticate(self, metadata: Iterable[tuple[str, str]]) -> None:
        """Check the bearer token as the service would, before any budget is spent.

        Raises:
            AuthenticationError: the token is missing, malformed or not valid.
        """
        if self.auth is not None:
            # Validity only: the scopes a method needs are the service's to check.
            await self.auth.check_async(frozenset(), metadata)


class GatewayKeyedLimiter(RateLimiter):
    """A :class:`~octollm_grpc.server.RateLimiter` keying gateway calls by their HTTP client.

    Args:
        secret: the gateway's :attr:`CallerIdentity.secret`.
        *args, **kwargs: as for ``RateLimiter``.
    """

    def __init__(self, secret: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._secret = secret.encode()

    def key_for(self, metadata: Iterable[Any] | None, peer: Any, context: Any = None) -> str:
        """``http:<client>`` for a call proven to come from the gateway, else as before."""
        client = proof = None
        for key, value in metadata or ():
            if key == CLIENT_KEY and isinstance(value, str):
                client = value
            elif key == PROOF_KEY and isinstance(value, str):
                proof = value
        if client is not None and proof is not None and hmac.compare_digest(
                proof.encode(), self._secret):
            return f"http:{client}"
        if client is not None or proof is not None:
            # Not proven: keyed as if it had claimed nothing, whatever it claimed.
            metadata = [(key, value) for key, value in metadata or ()
                        if key not in (CLIENT_KEY, PROOF_KEY)]
        return super().key_for(metadata, peer, context)
