"""JWT / OIDC bearer tokens: [`JWTVerifier`][octollm_grpc.server.JWTVerifier], a verifier for
[`BearerAuth`][octollm_grpc.server.BearerAuth].

``BearerAuth(JWTVerifier(issuer=..., audience=..., jwks_url=...), scopes={...})`` checks each
call's ``authorization: Bearer <JWT>`` against an OIDC issuer's signing keys: the signature
(only the configured algorithms, each only with a key of its own family, never ``none``), then
``iss``, ``aud``, ``exp``, ``nbf`` and ``iat`` (with ``leeway``). The caller's scopes come from
``scope`` (space separated) or ``scp`` (a list); ``sub`` is the principal logged with a failed
call and set on the span. Built on PyJWT (the ``[jwt]`` extra).

Every refusal is ``UNAUTHENTICATED`` (`AuthenticationError`) with
its own ``ErrorInfo.reason`` (the keys of ``REASONS``) and a fixed message: nothing of the token is
ever echoed in the status, its details, the logs or the span.

Keys come from ``keys=`` (fixed) or from the issuer's JWKS endpoint (``jwks_url=``), fetched on
first use, cached, fetched again when older than ``cache_ttl``, or sooner when a token names a
key id (``kid``) the cache lacks, but never more often than once per ``refresh_interval``
(tokens with made-up key ids cannot turn the verifier into a load generator). A fetch is
bounded in time (``fetch_timeout``) and size (``max_jwks_bytes``), runs in one background
thread (concurrent callers share it; on aio servers the event loop never waits on the
network), and when it fails the keys already known stay in use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from octollm_grpc.errors import AuthenticationError
from octollm_grpc.server._auth import Grant

try:  # the [jwt] extra
    import jwt as _pyjwt
    from jwt.algorithms import get_default_algorithms as _known_algorithms
except ImportError:  # pragma: no cover - exercised only without the extra
    _pyjwt = None  # type: ignore[assignment]
    _known_algorithms = None  # type: ignore[assignment]

__all__ = ["REASONS", "JWTVerifier"]

_log = logging.getLogger("octollm_grpc.server.jwt")

#: ``ErrorInfo.reason`` of each refusal, and its fixed message.
REASONS: Mapping[str, str] = {
    "TOKEN_MALFORMED": "The bearer token is malformed",
    "TOKEN_ALGORITHM_REFUSED": "The bearer token's signing algorithm is not accepted",
    "TOKEN_UNKNOWN_KEY": "The bearer token is signed with an unknown key",
    "TOKEN_BAD_SIGNATURE": "The bearer token's signature is not valid",
    "TOKEN_EXPIRED": "The bearer token has expired",
    "TOKEN_NOT_YET_VALID": "The bearer token is not valid yet",
    "TOKEN_WRONG_ISSUER": "The bearer token is from another issuer",
    "TOKEN_WRONG_AUDIENCE": "The bearer token is meant for another audience",
}

# Which key type each algorithm verifies with: an HMAC algorithm never gets a public key (the
# classic confusion: the RSA public key used as an HMAC secret), an RSA one never an EC key.
_FAMILY = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), "RSA"),
    **dict.fromkeys(("ES256", "ES256K", "ES384", "ES512", "ES521"), "EC"),
    "EdDSA": "OKP",
    **dict.fromkeys(("HS256", "HS384", "HS512"), "oct"),
}


def _refuse(reason: str) -> AuthenticationError:
    return AuthenticationError(REASONS[reason], error_code=reason)


class _Key(NamedTuple):
    kid: str | None
    family: str
    key: Any  # what PyJWT verifies with: a cryptography public key, or HMAC secret bytes
    alg: str | None  # the JWK's own "alg", when it names one


class _KeySet(NamedTuple):
    keys: tuple[_Key, ...]
    fetched_at: float | None  # monotonic time of the last successful fetch (None: fixed keys)


def _family_of(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC"
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return "OKP"
    raise ValueError(f"unsupported key type {type(key).__name__}")


def _jwk_keys(document: Any, *, allow_secrets: bool) -> tuple[_Key, ...]:
    """The usable signature keys of a JWKS document (``{"keys": [...]}``).

    A key that does not parse, is not for signatures, or is a secret (``oct``) where secrets
    are not allowed is skipped; key ids present more than once are dropped altogether (which
    one signed is then ambiguous). Raises ``ValueError`` when the document is not a JWKS.
    """
    assert _pyjwt is not None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    found: list[_Key] = []
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        alg = entry.get("alg")
        if (kid is not None and not isinstance(kid, str)) or (
                alg is not None and not isinstance(alg, str)):
            continue
        if entry.get("use", "sig") != "sig" or (entry.get("kty") == "oct" and not allow_secrets):
            continue
        try:
            jwk = _pyjwt.PyJWK(entry)
        except Exception:  # noqa: BLE001, S112 - an unusable key is skipped, not fatal
            continue
        key = jwk.key
        public = getattr(key, "public_key", None)
        if callable(public):  # a private JWK published by mistake: verify with its public half
            key = public()
        found.append(_Key(kid, str(jwk.key_type), key, alg))
    seen: dict[str | None, int] = {}
    for key in found:
        seen[key.kid] = seen.get(key.kid, 0) + 1
    return tuple(k for k in found if k.kid is None or seen[k.kid] == 1)


def _fixed_keys(keys: Any, *, allow_secrets: bool) -> tuple[_Key, ...]:
    """``keys=`` as given: a JWKS document, or a sequence of PEM public keys, cryptography
    public keys, or (with an HMAC algorithm) secret ``bytes``."""
    if isinstance(keys, Mapping):
        return _jwk_keys(dict(keys), allow_secrets=allow_secrets)
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    result = []
    for item in keys:
        if isinstance(item, str):
            item = item.encode("ascii")
        if isinstance(item, bytes) and item.lstrip().startswith(b"-----BEGIN"):
            item = load_pem_public_key(item)
        if isinstance(item, bytes):
            if not allow_secrets:
                raise ValueError("an HMAC secret needs an HS* algorithm in algorithms")
            result.append(_Key(None, "oct", item, None))
        else:
            result.append(_Key(None, _family_of(item), item, None))
    return tuple(result)


def _download(url: str, timeout: float, max_bytes: int) -> bytes:
    """GET ``url``: at most ``max_bytes`` bytes, within about ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
        url, headers={"Accept": "application/json", "User-Agent": "octollm-grpc"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise ValueError("JWKS response too large")
        chunks: list[bytes] = []
        total = 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("JWKS response too slow")
            chunk = response.read1(65536)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise ValueError("JWKS response too large")
            chunks.append(chunk)
    return b"".join(chunks)


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        raise _refuse("TOKEN_MALFORMED")
    return float(value)


def _scopes(claims: Mapping[str, Any]) -> list[str]:
    scope = claims.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise _refuse("TOKEN_MALFORMED")
        return scope.split()
    scp = claims.get("scp")
    if scp is None:
        return []
    if isinstance(scp, str):
        return scp.split()
    if not isinstance(scp, list) or not all(isinstance(s, str) for s in scp):
        raise _refuse("TOKEN_MALFORMED")
    return list(scp)


class JWTVerifier:
    """A [`BearerAuth`][octollm_grpc.server.BearerAuth] verifier for JWTs from an OIDC issuer.

    Called with a token it returns a [`Grant`][octollm_grpc.server.Grant] (the scopes,
    with ``sub`` as the principal) or raises `AuthenticationError`
    whose ``error_code`` (``ErrorInfo.reason``) says why: ``TOKEN_MALFORMED``,
    ``TOKEN_ALGORITHM_REFUSED``, ``TOKEN_UNKNOWN_KEY``, ``TOKEN_BAD_SIGNATURE``,
    ``TOKEN_EXPIRED``, ``TOKEN_NOT_YET_VALID``, ``TOKEN_WRONG_ISSUER`` or
    ``TOKEN_WRONG_AUDIENCE``. On the sync stack a due JWKS fetch blocks the calling handler
    thread (at most about ``fetch_timeout``); on aio `verify_async` awaits it instead.

    Args:
        issuer: the expected ``iss`` (a string, or a collection of accepted ones).
        audience: the expected ``aud`` (a string, or a collection: any one must be in the
            token's ``aud``).
        jwks_url: the issuer's JWKS endpoint (``https://``; ``http://`` only for tests and
            loopback). Exactly one of ``jwks_url`` and ``keys``.
        keys: fixed keys: a JWKS document, or a sequence of PEM public keys or cryptography
            public keys, or HMAC secrets (``bytes``) when an ``HS*`` algorithm is allowed.
        algorithms: the accepted ``alg`` values (``none`` is refused; ``HS*`` only with
            ``keys``).
        leeway: seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``.
        required_claims: claims every token must have (``iss`` and ``aud`` are always
            required).
        refresh_interval: the least seconds between two JWKS fetches.
        cache_ttl: the seconds after which a cached JWKS is fetched again.
        fetch_timeout: the seconds a JWKS fetch may take.
        max_jwks_bytes: the largest JWKS response accepted.
        max_token_bytes: the longest token accepted.
        clock: the time in seconds since the epoch (``exp`` and ``nbf`` are compared to it).
        monotonic: a monotonic clock in seconds (the JWKS cache ages by it).
        fetch: downloads the JWKS, ``fetch(url, timeout, max_bytes) -> bytes``; by default
            with urllib.

    Raises:
        ImportError: PyJWT is missing (install ``octollm-grpc[jwt]``).
        ValueError: an invalid combination of arguments.
    """

    def __init__(
        self,
        *,
        issuer: str | Collection[str],
        audience: str | Collection[str],
        jwks_url: str | None = None,
        keys: Mapping[str, Any] | Sequence[Any] | None = None,
        algorithms: Iterable[str] = ("RS256", "ES256"),
        leeway: float = 30.0,
        required_claims: Iterable[str] = ("exp",),
        refresh_interval: float = 60.0,
        cache_ttl: float = 3600.0,
        fetch_timeout: float = 2.0,
        max_jwks_bytes: int = 256 * 1024,
        max_token_bytes: int = 8192,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        fetch: Callable[[str, float, int], bytes] = _download,
    ) -> None:
        if _pyjwt is None:
            raise ImportError("JWTVerifier needs PyJWT: pip install 'octollm-grpc[jwt]'")
        self._algorithms = frozenset(algorithms)
        unknown = self._algorithms - set(_known_algorithms()) - {"none"}
        if not self._algorithms or "none" in self._algorithms or unknown:
            raise ValueError("algorithms must name signing algorithms PyJWT knows, never 'none'")
        hmac_allowed = any(_FAMILY.get(a) == "oct" for a in self._algorithms)
        if (jwks_url is None) == (keys is None):
            raise ValueError("give exactly one of jwks_url and keys")
        if jwks_url is not None:
            if urllib.parse.urlsplit(jwks_url).scheme not in ("https", "http"):
                raise ValueError("jwks_url must be an https:// (or http://) URL")
            if hmac_allowed:
                raise ValueError("HS* algorithms verify with a shared secret: pass keys=, "
                                 "never a JWKS URL")
        if leeway < 0 or refresh_interval < 0 or fetch_timeout <= 0 or cache_ttl <= 0:
            raise ValueError("leeway and refresh_interval must be >= 0; fetch_timeout and "
                             "cache_ttl > 0")
        self._issuers = frozenset([issuer] if isinstance(issuer, str) else issuer)
        self._audiences = frozenset([audience] if isinstance(audience, str) else audience)
        if not self._issuers or not self._audiences:
            raise ValueError("issuer and audience must not be empty")
        self._leeway = float(leeway)
        self._required = frozenset(required_claims) | {"iss", "aud"}
        self._jwks_url = jwks_url
        self._refresh_interval = refresh_interval
        self._cache_ttl = cache_ttl
        self._fetch_timeout = fetch_timeout
        # urllib's timeout is per socket operation: connect plus the body's deadline.
        self._wait_limit = 2 * fetch_timeout + 0.25
        self._max_jwks_bytes = max_jwks_bytes
        self._max_token_bytes = max_token_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._fetch = fetch
        self._lock = threading.Lock()
        self._inflight: concurrent.futures.Future[None] | None = None
        self._last_attempt: float | None = None
        #: JWKS fetches attempted so far (successful or not).
        self.fetches = 0
        if keys is not None:
            self._keyset = _KeySet(_fixed_keys(keys, allow_secrets=hmac_allowed), None)
            if not self._keyset.keys:
                raise ValueError("keys holds no usable key")
        else:
            self._keyset = _KeySet((), None)

    def __repr__(self) -> str:
        source = self._jwks_url if self._jwks_url is not None else (
            f"<{len(self._keyset.keys)} keys>")
        return f"JWTVerifier(issuer={sorted(self._issuers)!r}, keys={source})"

    # -- the two entry points -----------------------------------------------------------

    def __call__(self, token: str) -> Grant:
        """Verify ``token``; its scopes and principal (see the class docstring)."""
        header = self._header(token)
        if self._fetch_due(header):
            # Bounded even if a custom fetch ignores its timeout: then the known keys decide.
            with contextlib.suppress(concurrent.futures.TimeoutError):
                self._start_fetch().result(timeout=self._wait_limit)
        return self._verify(token, header)

    async def verify_async(self, token: str) -> Grant:
        """`__call__` for aio servers: a due JWKS fetch is awaited, not waited for."""
        header = self._header(token)
        if self._fetch_due(header):
            fetch = asyncio.wrap_future(self._start_fetch())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(fetch), self._wait_limit)
        return self._verify(token, header)

    # -- steps ----------------------------------------------------------------------------

    def _header(self, token: str) -> dict[str, Any]:
        assert _pyjwt is not None
        if len(token) > self._max_token_bytes or not token.isascii() or token.count(".") != 2:
            raise _refuse("TOKEN_MALFORMED")
        try:
            header = _pyjwt.get_unverified_header(token)
        except Exception:  # noqa: BLE001 - anything unparsable is malformed, whatever PyJWT says
            raise _refuse("TOKEN_MALFORMED") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise _refuse("TOKEN_MALFORMED")
        if alg not in self._algorithms:
            raise _refuse("TOKEN_ALGORITHM_REFUSED")
        return header

    def _candidates(self, header: Mapping[str, Any]) -> list[_Key]:
        alg = header["alg"]
        kid = header.get("kid")
        family = _FAMILY.get(alg)
        return [k for k in self._keyset.keys
                if k.family == family and (k.alg is None or k.alg == alg)
                # A key published without a kid serves tokens with any kid (RFC 7517).
                and (kid is None or k.kid is None or k.kid == kid)]

    def _fetch_due(self, header: Mapping[str, Any]) -> bool:
        if self._jwks_url is None:
            return False
        now = self._monotonic()
        last = self._last_attempt
        if last is not None and now - last < self._refresh_interval:
            return False  # at most one fetch per interval, whatever the tokens say
        fetched = self._keyset.fetched_at
        return (fetched is None or now - fetched >= self._cache_ttl
                or not self._candidates(header))

    def _start_fetch(self) -> concurrent.futures.Future[None]:
        """The fetch in progress, or a new one (one at a time, in its own thread)."""
        with self._lock:
            if self._inflight is not None and not self._inflight.done():
                return self._inflight
            future: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._inflight = future
            self._last_attempt = self._monotonic()
        thread = threading.Thread(target=self._run_fetch, args=(future,),
                                  name="octollm-jwks-fetch", daemon=True)
        thread.start()
        return future

    def _run_fetch(self, future: concurrent.futures.Future[None]) -> None:
        assert self._jwks_url is not None
        self.fetches += 1
        try:
            body = self._fetch(self._jwks_url, self._fetch_timeout, self._max_jwks_bytes)
            if len(body) > self._max_jwks_bytes:
                raise ValueError("JWKS response too large")
            keys = _jwk_keys(json.loads(body), allow_secrets=False)
            self._keyset = _KeySet(keys, self._monotonic())
        except Exception as error:  # noqa: BLE001 - a failed fetch keeps the old keys
            _log.warning("JWKS fetch from %s failed, keeping %d known keys: %s",
                         self._jwks_url, len(self._keyset.keys), type(error).__name__)
        finally:
            future.set_result(None)

    def _verify(self, token: str, header: Mapping[str, Any]) -> Grant:
        assert _pyjwt is not None
        candidates = self._candidates(header)
        if not candidates:
            raise _refuse("TOKEN_UNKNOWN_KEY")
        claims: dict[str, Any] | None = None
        for key in candidates:
            try:
                claims = _pyjwt.decode(
                    token, key.key, algorithms=[header["alg"]],
                    options={"verify_signature": True, "verify_exp": False,
                             "verify_nbf": False, "verify_iat": False, "verify_aud": False,
                             "verify_iss": False, "verify_sub": False, "verify_jti": False,
                             "require": []})
                break
            except (_pyjwt.InvalidSignatureError, _pyjwt.InvalidKeyError):
                continue
            except Exception:  # noqa: BLE001 - a payload that is not a JSON object, ...
                raise _refuse("TOKEN_MALFORMED") from None
        if claims is None:
            raise _refuse("TOKEN_BAD_SIGNATURE")
        return self._check_claims(claims)

    def _check_claims(self, claims: Mapping[str, Any]) -> Grant:
        if any(name not in claims for name in self._required):
            raise _refuse("TOKEN_MALFORMED")
        exp, nbf, iat = (_number(claims, n) for n in ("exp", "nbf", "iat"))
        issuer = claims["iss"]
        audience = claims["aud"]
        if not isinstance(issuer, str):
            raise _refuse("TOKEN_MALFORMED")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise _refuse("TOKEN_MALFORMED")
        subject = claims.get("sub")
        if subject is not None and not isinstance(subject, str):
            raise _refuse("TOKEN_MALFORMED")
        scopes = _scopes(claims)
        now = self._clock()
        if exp is not None and now > exp + self._leeway:
            raise _refuse("TOKEN_EXPIRED")
        if (nbf is not None and now + self._leeway < nbf) or (
                iat is not None and now + self._leeway < iat):
            raise _refuse("TOKEN_NOT_YET_VALID")
        if issuer not in self._issuers:
            raise _refuse("TOKEN_WRONG_ISSUER")
        if self._audiences.isdisjoint(audiences):
            raise _refuse("TOKEN_WRONG_AUDIENCE")
        if subject is not None:  # it is logged: no control characters, bounded
            subject = "".join(c if c.isprintable() else "?" for c in subject[:256])
        return Grant(scopes, subject)
