"""Bearer-token authentication with per-method scopes.

The token comes from the ``authorization`` metadata (``Bearer <token>``). A verifier turns it
into the caller's scopes, or ``None`` when the token is not valid;
[`StaticTokens`][octollm_grpc.server.StaticTokens] is a
verifier for a fixed set of tokens, compared in constant time. No token, a malformed header or
a rejected token -> `AuthenticationError` (``UNAUTHENTICATED``); a
valid token without a required scope -> `AuthorizationError`
(``PERMISSION_DENIED``). Open methods (health and reflection by default) need no token.
Tokens never appear in error messages, details or logs.

A verifier may return a [`Grant`][octollm_grpc.server.Grant] (scopes plus the caller's principal,
e.g. a JWT's
``sub``): the principal is then logged with a failed call and set as ``octollm.principal`` on
the span. A verifier may also raise `AuthenticationError` itself,
with an ``error_code`` saying why (``TOKEN_EXPIRED``, ...), which becomes ``ErrorInfo.reason``;
a verifier object with a coroutine method ``verify_async`` is awaited through it on aio servers
([`JWTVerifier`][octollm_grpc.server.JWTVerifier] is one).
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeAlias

from octollm_grpc.errors import AuthenticationError, AuthorizationError

__all__ = ["DEFAULT_OPEN_METHODS", "BearerAuth", "Grant", "StaticTokens", "Verifier"]

#: token -> the caller's scopes, or ``None`` if the token is not valid. On an aio server the
#: verifier may also be a coroutine function.
Verifier: TypeAlias = Callable[[str], "Iterable[str] | Awaitable[Iterable[str] | None] | None"]

#: Services reachable without a token: load balancers and grpcurl must not need one.
DEFAULT_OPEN_METHODS: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class Grant(frozenset[str]):
    """Scopes with the principal they were granted to (a verifier's richer answer).

    It is a ``frozenset`` of scopes, so code that only wants the scopes needs nothing else;
    ``principal`` names the caller (a JWT's ``sub``, a certificate's SPIFFE ID) or is ``None``.

    Args:
        scopes: The scopes granted.
        principal: Who they are granted to; logged with a failed call and set as
            ``octollm.principal`` on the span (never put a credential here).
    """

    principal: str | None

    def __new__(cls, scopes: Iterable[str] = (), principal: str | None = None) -> Grant:
        return super().__new__(cls, scopes)

    def __init__(self, scopes: Iterable[str] = (), principal: str | None = None) -> None:
        super().__init__()
        self.principal = principal

    def __repr__(self) -> str:
        return f"Grant({sorted(self)!r}, principal={self.principal!r})"


class StaticTokens:
    """A verifier for a fixed map of token -> scopes.

    Every known token is compared with `hmac.compare_digest` on every call, so the time
    taken tells nothing about which token (or how much of one) matched.

    Args:
        tokens: Each token's scopes.
    """

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Mapping[str, Iterable[str]]) -> None:
        if not tokens:
            raise ValueError("StaticTokens needs at least one token")
        self._tokens = [(t.encode("utf-8"), frozenset(s)) for t, s in tokens.items()]
        if any(not t for t, _ in self._tokens):
            raise ValueError("tokens must not be empty")

    def __call__(self, token: str) -> frozenset[str] | None:
        """The scopes of ``token``, or ``None`` when it is not one of the known tokens."""
        presented = token.encode("utf-8", "surrogateescape")
        found: frozenset[str] | None = None
        for known, scopes in self._tokens:
            if hmac.compare_digest(known, presented) and found is None:
                found = scopes
        return found

    def __repr__(self) -> str:
        return f"StaticTokens(<{len(self._tokens)} tokens>)"


class BearerAuth:
    """Which methods need which scopes, and how tokens are checked.

    ``scopes`` maps a full method (``/pkg.Service/Method``) or a service prefix
    (``/pkg.Service/``) to the scopes it requires (all of them); the most specific entry wins,
    else ``default_scopes`` (empty: any valid token). ``open_methods`` are full methods or
    service prefixes that need no token at all.

    Args:
        verifier: ``verifier(token)`` returns the caller's scopes, or ``None`` for an invalid
            token (a coroutine function on the aio stack only).
        scopes: Scopes required by ``"/pkg.Svc/Method"`` or ``"/pkg.Svc/"``.
        default_scopes: Scopes required by every other method.
        open_methods: Methods (or ``"/pkg.Svc/"`` prefixes) that need no token (default:
            health and reflection).
        header: The metadata key of the token.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        scopes: Mapping[str, Iterable[str]] | None = None,
        default_scopes: Iterable[str] = (),
        open_methods: Iterable[str] = DEFAULT_OPEN_METHODS,
        header: str = "authorization",
    ) -> None:
        self._verifier = verifier
        self._scopes = {k: frozenset(v) for k, v in (scopes or {}).items()}
        self._default = frozenset(default_scopes)
        self._open = tuple(open_methods)
        self._header = header.lower()

    def requirement(self, method: str) -> frozenset[str] | None:
        """The scopes ``method`` requires, or ``None`` when it is open (resolve once per method)."""
        if method in self._open or any(
            p.endswith("/") and method.startswith(p) for p in self._open
        ):
            return None
        if method in self._scopes:
            return self._scopes[method]
        service = method[: method.rfind("/") + 1]
        return self._scopes.get(service, self._default)

    def _token(self, metadata: Iterable[Any] | None) -> str:
        for key, value in metadata or ():
            if key == self._header:
                scheme, _, token = (value if isinstance(value, str) else "").partition(" ")
                token = token.strip()
                if scheme.lower() != "bearer" or not token:
                    raise AuthenticationError("Malformed authorization header: expected Bearer")
                return token
        raise AuthenticationError("Missing bearer token")

    @staticmethod
    def authorize(required: frozenset[str], granted: Iterable[str] | None) -> str | None:
        """Raise unless ``granted`` (what `identify` gave) has every ``required`` scope.

        Returns the principal when ``granted`` is a [`Grant`][octollm_grpc.server.Grant] naming one.

        Raises:
            AuthenticationError: ``granted`` is ``None`` (the credential was not valid).
            AuthorizationError: a scope is missing (named in ``details["required_scopes"]``).
        """
        if granted is None:
            raise AuthenticationError("Invalid bearer token")
        missing = required.difference(granted)
        if missing:
            raise AuthorizationError(
                "Missing required scope", details={"required_scopes": sorted(missing)}
            )
        return granted.principal if isinstance(granted, Grant) else None

    @property
    def is_async(self) -> bool:
        """True when the verifier is a coroutine function (only the aio stack can await it)."""
        verifier = self._verifier
        # A callable object counts by its __call__ method.
        return inspect.iscoroutinefunction(verifier) or inspect.iscoroutinefunction(
            type(verifier).__call__)

    def identify(
        self,
        metadata: Iterable[Any] | None,
        wait: Callable[[Awaitable[Any]], Any] | None = None,
        context: Any = None,
    ) -> Iterable[str] | None:
        """The caller's scopes (a [`Grant`][octollm_grpc.server.Grant] when the verifier names the
        caller), or
        ``None`` when the token is not valid; raises ``AuthenticationError`` for a missing or
        malformed header (or when the verifier raises it).

        ``wait`` blocks until an awaitable verdict is ready (a ``def`` handler on an aio
        server hands it to the event loop); without it a coroutine verifier is a ``TypeError``.
        ``context`` (the servicer context) is unused here;
        [`CertificateAuth`][octollm_grpc.server.CertificateAuth] reads the
        connection's certificate from it.
        """
        granted = self._verifier(self._token(metadata))
        if inspect.isawaitable(granted) and wait is not None:
            granted = wait(granted)
        if inspect.isawaitable(granted):
            # A coroutine verifier only works on an aio server; close it to avoid a warning.
            close = getattr(granted, "close", None)
            if callable(close):
                close()
            raise TypeError("an async verifier needs the aio server interceptors")
        return granted

    async def identify_async(
        self, metadata: Iterable[Any] | None, context: Any = None
    ) -> Iterable[str] | None:
        """`identify` for aio servers: the verifier may be a coroutine function, or have
        a coroutine method ``verify_async`` (used instead of calling it)."""
        token = self._token(metadata)
        verify_async = getattr(self._verifier, "verify_async", None)
        granted = verify_async(token) if verify_async is not None else self._verifier(token)
        if inspect.isawaitable(granted):
            granted = await granted
        return granted

    def check(
        self,
        required: frozenset[str],
        metadata: Iterable[Any] | None,
        wait: Callable[[Awaitable[Any]], Any] | None = None,
        context: Any = None,
    ) -> str | None:
        """Raise unless ``metadata`` carries a valid token with every ``required`` scope
        (`identify`, then `authorize`); the caller's principal, if named."""
        return self.authorize(required, self.identify(metadata, wait, context))

    async def check_async(
        self, required: frozenset[str], metadata: Iterable[Any] | None, context: Any = None
    ) -> str | None:
        """`check` for aio servers (see `identify_async`)."""
        return self.authorize(required, await self.identify_async(metadata, context))
