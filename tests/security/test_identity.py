"""Certificate identities: the principal of an mTLS caller, scopes by principal (exact and
glob), the principal in the log event and on the span, rate limits keyed on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.client import channel_credentials
from octollm_grpc.server import (
    CertificateAuth,
    RateLimit,
    RateLimiter,
    server_credentials,
    server_interceptors,
)
from octollm_grpc.server import aio as server_aio
from octollm_grpc.status import from_rpc_error
from tests.security.pki import Pair, Pki
from tests.security.support import ECHO, WHO, aio_tls_server, sync_tls_server

WEB = "spiffe://example.org/ns/prod/sa/web"
ADMIN = "spiffe://example.org/ns/staging/sa/admin"
AUTH = CertificateAuth(
    {WEB: ["tasks.read"],
     "spiffe://example.org/ns/*/sa/admin": ["tasks.read", "tasks.write"],
     "worker.internal": ["tasks.read"],
     "legacy-cn": []},
    scopes={ECHO: ["tasks.write"], WHO: ["tasks.read"]},
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A fresh CA in a temporary directory."""
    return Pki(tmp_path)


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider of the test's own, exporting to memory."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _creds(pki: Pki, pair: Pair | None) -> grpc.ChannelCredentials:
    if pair is None:
        return channel_credentials(pki.ca_file)
    return channel_credentials(pki.ca_file, pair.cert_file, pair.key_file)


def _call(port: int, creds: grpc.ChannelCredentials, method: str) -> Any:
    """The response, or the decoded error."""
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        try:
            return channel.unary_unary(method)(b"x", timeout=5)
        except grpc.RpcError as error:
            return error


def _clients(pki: Pki) -> dict[str, Pair]:
    return {
        "web": pki.client(uris=(WEB,), dns=("web.example.org",), cn="web-cn"),
        "admin": pki.client(uris=(ADMIN,)),
        "worker": pki.client(dns=("worker.internal", "second.internal"), cn="worker-cn"),
        "legacy": pki.client(cn="legacy-cn"),
        "stranger": pki.client(uris=("spiffe://other.org/ns/prod/sa/admin",)),
    }


def _check_outcomes(outcomes: dict[str, Any], clients: dict[str, Pair],
                    logs: list[dict[str, Any]]) -> None:
    assert outcomes["web_who"] == WEB.encode()
    denied = outcomes["web_echo"]
    assert isinstance(denied, grpc.RpcError)
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    decoded = from_rpc_error(denied)
    assert type(decoded) is e.AuthorizationError
    assert decoded.error_code == "AUTHORIZATION_ERROR"
    assert decoded.details["required_scopes"] == ["tasks.write"]
    assert outcomes["admin_echo"] == b"echo:x"  # granted by the glob
    assert outcomes["worker_who"] == b"worker.internal"  # the first DNS SAN
    legacy = outcomes["legacy_who"]
    assert isinstance(legacy, grpc.RpcError)
    assert legacy.code() is grpc.StatusCode.PERMISSION_DENIED  # the CN, listed with no scope
    stranger = outcomes["stranger_who"]
    assert isinstance(stranger, grpc.RpcError)
    assert stranger.code() is grpc.StatusCode.PERMISSION_DENIED  # the glob pins the domain
    # The refusals name the scope, never the certificate.
    seen = repr([(o.details(), o.trailing_metadata()) for o in (denied, legacy, stranger)])
    for pair in clients.values():
        body = pair.cert.decode().splitlines()[3]
        assert body not in seen and body not in repr(logs)
    principals = sorted(x.get("principal", "") for x in logs)
    assert principals == sorted(["legacy-cn", WEB, "spiffe://other.org/ns/prod/sa/admin"])
    assert all(x["grpc_code"] == "PERMISSION_DENIED" for x in logs)


def test_sync_scopes_by_certificate_principal(pki: Pki) -> None:
    """Sync: SPIFFE ID, then DNS SAN, then CN name the caller; exact and glob entries grant
    scopes; a missing scope is PERMISSION_DENIED naming it; the principal is logged."""
    server = pki.server()
    clients = _clients(pki)
    creds = server_credentials(server.cert_file, server.key_file, pki.ca_file)
    with capture_logs() as logs, sync_tls_server(
            creds, server_interceptors(auth=AUTH, metrics=False)) as port:
        outcomes = {
            "web_who": _call(port, _creds(pki, clients["web"]), WHO),
            "web_echo": _call(port, _creds(pki, clients["web"]), ECHO),
            "admin_echo": _call(port, _creds(pki, clients["admin"]), ECHO),
            "worker_who": _call(port, _creds(pki, clients["worker"]), WHO),
            "legacy_who": _call(port, _creds(pki, clients["legacy"]), WHO),
            "stranger_who": _call(port, _creds(pki, clients["stranger"]), WHO),
        }
    _check_outcomes(outcomes, clients, logs)


async def test_aio_scopes_by_certificate_principal(pki: Pki) -> None:
    """aio: the same principals, scopes, refusals and log events as on the sync stack."""
    import asyncio

    server = pki.server()
    clients = _clients(pki)
    creds = server_credentials(server.cert_file, server.key_file, pki.ca_file)
    with capture_logs() as logs:
        async with aio_tls_server(
                creds, server_aio.server_interceptors(auth=AUTH, metrics=False)) as port:
            plan = {"web_who": ("web", WHO), "web_echo": ("web", ECHO),
                    "admin_echo": ("admin", ECHO), "worker_who": ("worker", WHO),
                    "legacy_who": ("legacy", WHO), "stranger_who": ("stranger", WHO)}
            outcomes = {}
            for name, (who, method) in plan.items():
                outcomes[name] = await asyncio.to_thread(
                    _call, port, _creds(pki, clients[who]), method)
    _check_outcomes(outcomes, clients, logs)


def test_no_client_certificate_is_unauthenticated(pki: Pki) -> None:
    """TLS without a client certificate (optional on this server) and plaintext alike are
    UNAUTHENTICATED with reason CERTIFICATE_REQUIRED."""
    server = pki.server()
    creds = server_credentials(server.cert_file, server.key_file)  # no client CA
    with sync_tls_server(creds, server_interceptors(auth=AUTH, metrics=False)) as port:
        error = _call(port, _creds(pki, None), WHO)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert from_rpc_error(error).error_code == "CERTIFICATE_REQUIRED"


def test_principal_is_on_the_span(pki: Pki,
                                  spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """The server span of an authenticated call carries ``octollm.principal``, on success and
    on a refusal for a missing scope."""
    provider, exporter = spans
    server = pki.server()
    web = pki.client(uris=(WEB,))
    creds = server_credentials(server.cert_file, server.key_file, pki.ca_file)
    with sync_tls_server(creds, server_interceptors(
            auth=AUTH, metrics=False, tracer_provider=provider)) as port:
        assert _call(port, _creds(pki, web), WHO) == WEB.encode()
        assert _call(port, _creds(pki, web), ECHO).code() is grpc.StatusCode.PERMISSION_DENIED
    finished = exporter.get_finished_spans()
    assert [s.attributes.get("octollm.principal") for s in finished] == [WEB, WEB]


def test_rate_limit_keys_on_the_certificate_principal(pki: Pki) -> None:
    """With ``key_certificate=True`` two callers from the same host get a bucket each (by
    certificate), and one caller's new connection does not get a fresh bucket."""
    server = pki.server()
    a, b = pki.client(uris=(WEB,)), pki.client(uris=(ADMIN,))
    limiter = RateLimiter(RateLimit(1, 60), key_certificate=True)
    creds = server_credentials(server.cert_file, server.key_file, pki.ca_file)
    with capture_logs() as logs, sync_tls_server(
            creds, server_interceptors(rate_limit=limiter, metrics=False)) as port:
        assert _call(port, _creds(pki, a), WHO) == WEB.encode()
        limited = _call(port, _creds(pki, a), WHO)  # a new channel, the same certificate
        assert limited.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _call(port, _creds(pki, b), WHO) == ADMIN.encode()
    assert {x.get("caller") for x in logs if "caller" in x} <= {f"principal:{WEB}"}


def test_rate_limit_without_certificate_falls_back_to_the_peer(pki: Pki) -> None:
    """``key_certificate=True`` on a caller without a certificate keys it by its host."""
    server = pki.server()
    limiter = RateLimiter(RateLimit(1, 60), key_certificate=True)
    creds = server_credentials(server.cert_file, server.key_file)
    with sync_tls_server(creds, server_interceptors(rate_limit=limiter, metrics=False)) as port:
        assert _call(port, _creds(pki, None), WHO) == b"-"
        assert _call(port, _creds(pki, None), WHO).code() is \
            grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(limiter) == 1


def test_rate_limit_keys_on_the_peer_by_default_even_with_certificates(pki: Pki) -> None:
    """Without ``key_certificate`` two certificates from one host share the host's bucket:
    the principal is used only when asked for."""
    server = pki.server()
    a, b = pki.client(uris=(WEB,)), pki.client(uris=(ADMIN,))
    limiter = RateLimiter(RateLimit(1, 60))
    creds = server_credentials(server.cert_file, server.key_file, pki.ca_file)
    with sync_tls_server(creds, server_interceptors(rate_limit=limiter, metrics=False)) as port:
        assert _call(port, _creds(pki, a), WHO) == WEB.encode()
        assert _call(port, _creds(pki, b), WHO).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(limiter) == 1


def test_scopes_of_unions_exact_entry_and_matching_globs() -> None:
    """A principal gets its exact entry's scopes plus every glob's it matches; ``*`` spans
    path segments; matching is case-sensitive."""
    auth = CertificateAuth({"a": ["x"], "a*": ["y"], "*": ["z"], "A": ["upper"]})
    assert auth.scopes_of("a") == {"x", "y", "z"}
    assert auth.scopes_of("ab/c") == {"y", "z"}
    assert auth.scopes_of("b").principal == "b"
    assert "upper" not in auth.scopes_of("a")
    assert "principals" in repr(auth)
