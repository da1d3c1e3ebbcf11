"""Certificate identities: the caller of an mTLS connection, and scopes by who it is.

With client certificates required (``server_credentials(..., client_ca=...)``), the TLS
handshake has already proven that the peer holds a key the CA vouched for. What remains is to
name the peer and decide what it may call.
[`certificate_principal`][octollm_grpc.server.certificate_principal] names it: the SPIFFE ID
(a certificate's single ``spiffe://`` URI SAN), else its first DNS SAN, else its subject common
name. [`CertificateAuth`][octollm_grpc.server.CertificateAuth] maps principals (exact, or globs such
as
``spiffe://example.org/ns/*/sa/web``) to scopes and enforces per-method scopes exactly as
[`BearerAuth`][octollm_grpc.server.BearerAuth] does with tokens. Refusals never carry the
certificate's contents: a missing certificate is ``UNAUTHENTICATED`` (reason
``CERTIFICATE_REQUIRED``), a principal without a scope ``PERMISSION_DENIED`` naming the
missing scope.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from octollm_grpc.errors import AuthenticationError
from octollm_grpc.server._auth import DEFAULT_OPEN_METHODS, BearerAuth, Grant

__all__ = ["MAX_PRINCIPAL_LENGTH", "CertificateAuth", "certificate_principal"]

#: A longer name is cut to this many characters (log lines and bucket keys stay small).
MAX_PRINCIPAL_LENGTH = 256


def certificate_principal(context: Any) -> str | None:
    """The principal of the peer's client certificate, or ``None`` when it presented none.

    The SPIFFE ID comes first (grpc core sets it only for a certificate with exactly one URI
    SAN, and a valid ``spiffe://`` one), then the first DNS SAN, then the subject's common
    name. Control characters are replaced by ``?`` and the result is cut to 256 characters
    (``MAX_PRINCIPAL_LENGTH``), since the name ends up in logs.

    Args:
        context: The servicer context of the call (sync or aio).

    Returns:
        The principal, or ``None`` for a plaintext call or a TLS one without a client
        certificate.
    """
    try:
        auth_context = context.auth_context()
    except Exception:  # noqa: BLE001 - no TLS, or a context without it: no certificate
        return None
    if not auth_context:
        return None
    for key in ("peer_spiffe_id", "peer_dns", "x509_common_name"):
        values = auth_context.get(key)
        if values:
            return _printable(values[0])
    return None


def _printable(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_PRINCIPAL_LENGTH])


class CertificateAuth(BearerAuth):
    """Per-method scopes for mTLS callers, granted by the principal of their certificate.

    ``principals`` maps a principal, exactly or as an `fnmatch` glob (``*`` also matches
    ``/``), to its scopes; a caller gets the scopes of its exact entry plus those of every glob
    it matches. A principal listed nowhere is authenticated (the CA vouched for it) with no
    scopes: it may call only methods that require none. ``scopes``, ``default_scopes`` and
    ``open_methods`` are [`BearerAuth`][octollm_grpc.server.BearerAuth]'s. A call without a client
    certificate (plaintext, or TLS where certificates are optional) is
    `AuthenticationError` with reason ``CERTIFICATE_REQUIRED``.
    Pass it as ``server_interceptors(auth=CertificateAuth(...))`` on either stack.

    Args:
        principals: Principal or glob -> the scopes it is granted.
        scopes: Scopes required by ``"/pkg.Svc/Method"`` or ``"/pkg.Svc/"``.
        default_scopes: Scopes required by every other method.
        open_methods: Methods (or ``"/pkg.Svc/"`` prefixes) open to any caller (default:
            health and reflection).
    """

    def __init__(
        self,
        principals: Mapping[str, Iterable[str]],
        *,
        scopes: Mapping[str, Iterable[str]] | None = None,
        default_scopes: Iterable[str] = (),
        open_methods: Iterable[str] = DEFAULT_OPEN_METHODS,
    ) -> None:
        super().__init__(_no_tokens, scopes=scopes, default_scopes=default_scopes,
                         open_methods=open_methods)
        self._exact: dict[str, frozenset[str]] = {}
        self._globs: list[tuple[str, frozenset[str]]] = []
        for pattern, granted in principals.items():
            if any(c in pattern for c in "*?["):
                self._globs.append((pattern, frozenset(granted)))
            else:
                self._exact[pattern] = frozenset(granted)

    def scopes_of(self, principal: str) -> Grant:
        """The scopes ``principal`` is granted (its exact entry plus every matching glob)."""
        granted = set(self._exact.get(principal, ()))
        for pattern, scopes in self._globs:
            if fnmatch.fnmatchcase(principal, pattern):
                granted.update(scopes)
        return Grant(granted, principal)

    def identify(
        self,
        metadata: Iterable[Any] | None,
        wait: Callable[[Awaitable[Any]], Any] | None = None,
        context: Any = None,
    ) -> Grant:
        """The scopes of the certificate the peer of ``context`` presented, with its
        principal; raises ``AuthenticationError`` (``CERTIFICATE_REQUIRED``) without one."""
        principal = certificate_principal(context) if context is not None else None
        if principal is None:
            raise AuthenticationError("A client certificate is required",
                                      error_code="CERTIFICATE_REQUIRED")
        return self.scopes_of(principal)

    async def identify_async(self, metadata: Iterable[Any] | None, context: Any = None) -> Grant:
        """`identify` (reading the connection's certificate never blocks)."""
        return self.identify(metadata, None, context)

    def __repr__(self) -> str:
        return f"CertificateAuth(<{len(self._exact) + len(self._globs)} principals>)"


def _no_tokens(token: str) -> None:  # pragma: no cover - CertificateAuth never reads tokens
    return None
