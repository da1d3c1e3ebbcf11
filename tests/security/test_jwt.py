"""JWTVerifier on both stacks: hostile tokens refused with their own reasons and nothing
leaked, a real JWKS endpoint that rotates its keys, misbehaves or goes down."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.server import BearerAuth, JWTVerifier, server_interceptors
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server._jwt import REASONS
from octollm_grpc.status import from_rpc_error
from octollm_grpc.testing import FakeClock
from tests.security.jwks import JwksServer, SigningKey, jwks_server
from tests.security.support import ECHO, WHO, handlers
from tests.servers import aio_server, sync_server

ISSUER = "https://issuer.test"
AUDIENCE = "octollm-tasks"
NOW = 1_800_000_000.0
SCOPES = {"/sec.Echo/": ["tasks.read"], ECHO: ["tasks.write"]}
# Room for the 64 KiB token: it must reach the verifier, not grpc's metadata limit.
BIG_METADATA = [("grpc.max_metadata_size", 256 * 1024)]


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    """A JWKS endpoint publishing one key, ``k1``."""
    with jwks_server() as server:
        server.keys = [SigningKey("k1")]
        yield server


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-7",
                              "iat": int(NOW) - 10, "exp": int(NOW) + 600,
                              "scope": "tasks.read tasks.write"}
    for name, value in changes.items():
        if value is ...:
            claims.pop(name)
        else:
            claims[name] = value
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(header: Any, payload: Any, signature: bytes = b"sig") -> str:
    return ".".join((_b64(json.dumps(header).encode()), _b64(json.dumps(payload).encode()),
                     _b64(signature)))


def _signed_bytes(key: SigningKey, payload: bytes) -> str:
    """A correctly signed JWS whose payload is ``payload`` as is (not necessarily JSON)."""
    return jwt.api_jws.PyJWS().encode(payload, key.private, algorithm="ES256",
                                      headers={"kid": key.kid})


def _verifier(jwks: JwksServer, **options: Any) -> JWTVerifier:
    options.setdefault("clock", FakeClock(NOW))
    return JWTVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url,
                       algorithms=("ES256", "RS256"), leeway=30, **options)


def hostile_tokens(key: SigningKey) -> list[tuple[str, str, str]]:
    """(name, token, expected reason): at least 25 ways a token can be wrong."""
    stranger = SigningKey(key.kid)  # same kid, another key
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    good = key.sign(_claims())
    head, body, sig = good.split(".")
    tampered_body = _b64(json.dumps(_claims(scope="tasks.admin")).encode())
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    hs_confusion = _raw({"alg": "HS256", "kid": key.kid}, _claims())
    hs_header, hs_body, _ = hs_confusion.split(".")
    import hashlib
    import hmac
    hs_sig = hmac.new(rsa_pem, f"{hs_header}.{hs_body}".encode(), hashlib.sha256).digest()
    return [
        ("alg_none", _raw({"alg": "none", "kid": key.kid}, _claims(), b""),
         "TOKEN_ALGORITHM_REFUSED"),
        ("alg_None_casing", _raw({"alg": "None"}, _claims(), b""), "TOKEN_ALGORITHM_REFUSED"),
        ("alg_confusion_hs256_with_rsa_pem", f"{hs_header}.{hs_body}.{_b64(hs_sig)}",
         "TOKEN_ALGORITHM_REFUSED"),
        ("alg_missing", _raw({"kid": key.kid}, _claims()), "TOKEN_MALFORMED"),
        ("alg_not_a_string", _raw({"alg": 256}, _claims()), "TOKEN_MALFORMED"),
        ("tampered_payload", f"{head}.{tampered_body}.{sig}", "TOKEN_BAD_SIGNATURE"),
        ("tampered_signature", f"{head}.{body}.{flipped}", "TOKEN_BAD_SIGNATURE"),
        ("signature_stripped", f"{head}.{body}.", "TOKEN_BAD_SIGNATURE"),
        ("signed_by_another_key_same_kid", stranger.sign(_claims()), "TOKEN_BAD_SIGNATURE"),
        ("unknown_kid", SigningKey("k-unknown").sign(_claims()), "TOKEN_UNKNOWN_KEY"),
        ("rs256_against_ec_key", jwt.encode(_claims(), rsa_key, algorithm="RS256",
                                            headers={"kid": key.kid}), "TOKEN_UNKNOWN_KEY"),
        ("kid_not_a_string", _raw({"alg": "ES256", "kid": 7}, _claims()), "TOKEN_MALFORMED"),
        ("huge_64k", good + "A" * 65536, "TOKEN_MALFORMED"),
        ("two_segments", f"{head}.{body}", "TOKEN_MALFORMED"),
        ("four_segments", f"{good}.{sig}", "TOKEN_MALFORMED"),
        ("header_not_base64", f"!!!!.{body}.{sig}", "TOKEN_MALFORMED"),
        ("header_is_a_list", _raw(["ES256"], _claims()), "TOKEN_MALFORMED"),
        ("payload_not_json", _signed_bytes(key, b"not json at all"), "TOKEN_MALFORMED"),
        ("payload_is_a_list", _signed_bytes(key, b'["iss"]'), "TOKEN_MALFORMED"),
        ("exp_is_a_string", key.sign(_claims(exp=str(int(NOW) + 600))), "TOKEN_MALFORMED"),
        ("exp_is_a_bool", _signed_bytes(key, json.dumps(_claims(exp=True)).encode()),
         "TOKEN_MALFORMED"),
        ("exp_is_nan", _signed_bytes(key, json.dumps(_claims(exp=float("nan"))).encode()),
         "TOKEN_MALFORMED"),
        ("exp_is_infinite", _signed_bytes(key, json.dumps(_claims()).replace(
            str(int(NOW) + 600), "1e400").encode()), "TOKEN_MALFORMED"),
        ("aud_is_a_number", key.sign(_claims(aud=42)), "TOKEN_MALFORMED"),
        ("aud_list_with_a_number", key.sign(_claims(aud=[AUDIENCE, 42])), "TOKEN_MALFORMED"),
        ("scope_is_a_number", key.sign(_claims(scope=7)), "TOKEN_MALFORMED"),
        ("sub_is_an_object", key.sign(_claims(sub={"id": 1})), "TOKEN_MALFORMED"),
        ("missing_exp", key.sign(_claims(exp=...)), "TOKEN_MALFORMED"),
        ("missing_aud", key.sign(_claims(aud=...)), "TOKEN_MALFORMED"),
        ("missing_iss", key.sign(_claims(iss=...)), "TOKEN_MALFORMED"),
        ("expired", key.sign(_claims(exp=int(NOW) - 31)), "TOKEN_EXPIRED"),
        ("future_nbf", key.sign(_claims(nbf=int(NOW) + 31)), "TOKEN_NOT_YET_VALID"),
        ("future_iat", key.sign(_claims(iat=int(NOW) + 3600)), "TOKEN_NOT_YET_VALID"),
        ("wrong_issuer", key.sign(_claims(iss="https://evil.test")), "TOKEN_WRONG_ISSUER"),
        ("wrong_audience", key.sign(_claims(aud="other-service")), "TOKEN_WRONG_AUDIENCE"),
        ("wrong_audience_list", key.sign(_claims(aud=["a", "b"])), "TOKEN_WRONG_AUDIENCE"),
    ]


def _fragments(token: str) -> list[str]:
    """Pieces of a token that must appear nowhere outside the caller."""
    return [part[:24] for part in token.split(".") if len(part) >= 24]


def _assert_refused(name: str, token: str, reason: str, error: Any,
                    logs: list[dict[str, Any]]) -> None:
    assert isinstance(error, grpc.RpcError), name
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED, name
    decoded = from_rpc_error(error)
    assert type(decoded) is e.AuthenticationError, name
    assert decoded.error_code == reason, (name, decoded.error_code)
    assert error.details() == REASONS[reason], name
    seen = repr((error.details(), error.trailing_metadata(), decoded.to_dict(), logs))
    for fragment in _fragments(token):
        assert fragment not in seen, name


def _call(channel: grpc.Channel, method: str, token: str) -> Any:
    try:
        return channel.unary_unary(method)(b"x", timeout=10,
                                           metadata=[("authorization", f"Bearer {token}")])
    except grpc.RpcError as error:
        return error


def test_sync_hostile_tokens_are_refused_with_their_reason(jwks: JwksServer) -> None:
    """Sync: each of 36 hostile tokens is UNAUTHENTICATED with its own reason and a fixed
    message; no piece of any token is in the status, trailers, details or log events; a
    valid token still works after them all."""
    key = jwks.keys[0]
    tokens = hostile_tokens(key)
    assert len(tokens) >= 25
    auth = BearerAuth(_verifier(jwks), scopes=SCOPES)
    with capture_logs() as logs, sync_server(
            handlers(aio=False), server_interceptors(auth=auth, metrics=False),
            options=BIG_METADATA) as target, grpc.insecure_channel(
                target, options=BIG_METADATA) as channel:
        for name, token, reason in tokens:
            before = len(logs)
            _assert_refused(name, token, reason, _call(channel, WHO, token), logs)
            assert [x["error_code"] for x in logs[before:]] == [reason], name
        assert _call(channel, ECHO, key.sign(_claims())) == b"echo:x"
    assert jwks.requests <= 2  # the first fetch, and one more for the unknown kid


async def test_aio_hostile_tokens_are_refused_with_their_reason(jwks: JwksServer) -> None:
    """aio (async verification): the same 36 hostile tokens, the same reasons, no leaks."""
    key = jwks.keys[0]
    tokens = hostile_tokens(key)
    auth = BearerAuth(_verifier(jwks), scopes=SCOPES)
    with capture_logs() as logs:
        async with aio_server(handlers(aio=True),
                              server_aio.server_interceptors(auth=auth, metrics=False),
                              options=BIG_METADATA) as target:
            async with grpc.aio.insecure_channel(target, options=BIG_METADATA) as channel:
                for name, token, reason in tokens:
                    try:
                        outcome: Any = await channel.unary_unary(WHO)(
                            b"x", timeout=10, metadata=[("authorization", f"Bearer {token}")])
                    except grpc.RpcError as error:
                        outcome = error
                    _assert_refused(name, token, reason, outcome, logs)
                ok = await channel.unary_unary(ECHO)(
                    b"x", timeout=10,
                    metadata=[("authorization", f"Bearer {key.sign(_claims())}")])
                assert ok == b"echo:x"


def test_non_ascii_tokens_are_malformed(jwks: JwksServer) -> None:
    """Tokens with non-ASCII text or undecodable bytes (as surrogates) are TOKEN_MALFORMED,
    through BearerAuth as through the verifier (grpc refuses to send them at all)."""
    verifier = _verifier(jwks)
    good = jwks.keys[0].sign(_claims())
    auth = BearerAuth(verifier)
    for token in (good[:-2] + "é", good + "\udcff\udcfe", "ü.ü.ü"):
        with pytest.raises(e.AuthenticationError) as caught:
            verifier(token)
        assert caught.value.error_code == "TOKEN_MALFORMED"
        with pytest.raises(e.AuthenticationError):
            auth.check(frozenset(), [("authorization", f"Bearer {token}")])
    assert jwks.requests == 0  # refused before any key was needed


def test_principal_and_scopes_come_from_the_token(jwks: JwksServer) -> None:
    """``sub`` is the principal in the failed call's log event; scopes come from ``scope``
    (space separated) or ``scp`` (a list); a missing one is PERMISSION_DENIED naming it."""
    key = jwks.keys[0]
    auth = BearerAuth(_verifier(jwks), scopes=SCOPES)
    reader = key.sign(_claims(scope=..., scp=["tasks.read"], sub="reader-1"))
    with capture_logs() as logs, sync_server(
            handlers(aio=False), server_interceptors(auth=auth, metrics=False)) as target, \
            grpc.insecure_channel(target) as channel:
        assert _call(channel, WHO, reader) == b"-"
        denied = _call(channel, ECHO, reader)
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    assert from_rpc_error(denied).details["required_scopes"] == ["tasks.write"]
    assert [(x["principal"], x["error_code"]) for x in logs] == [
        ("reader-1", "AUTHORIZATION_ERROR")]


def test_hmac_is_never_verified_with_a_public_key() -> None:
    """With RS256 and HS256 both allowed and an RSA public key given, an HS256 token signed
    with that key's PEM finds no key (an HMAC needs a secret); 'none' and HS* with a JWKS
    URL are refused at construction."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    verifier = JWTVerifier(issuer=ISSUER, audience=AUDIENCE, keys=[pem],
                           algorithms=("RS256", "HS256"), clock=FakeClock(NOW))
    forged = _raw({"alg": "HS256"}, _claims())
    head, body, _ = forged.split(".")
    import hashlib
    import hmac
    signature = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(e.AuthenticationError) as caught:
        verifier(f"{head}.{body}.{_b64(signature)}")
    assert caught.value.error_code == "TOKEN_UNKNOWN_KEY"
    assert verifier(jwt.encode(_claims(), rsa_key, algorithm="RS256")).principal == "user-7"
    with pytest.raises(ValueError):
        JWTVerifier(issuer=ISSUER, audience=AUDIENCE, keys=[pem], algorithms=("none",))
    with pytest.raises(ValueError):
        JWTVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url="https://x.test/jwks",
                    algorithms=("HS256",))
    with pytest.raises(ValueError):
        JWTVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url="file:///etc/passwd")


def test_hmac_secret_with_fixed_keys() -> None:
    """HS256 with a shared secret given as ``keys``: the right secret passes, another fails."""
    verifier = JWTVerifier(issuer=ISSUER, audience=AUDIENCE, keys=[b"s" * 32],
                           algorithms=("HS256",), clock=FakeClock(NOW))
    good = jwt.encode(_claims(), b"s" * 32, algorithm="HS256")
    assert verifier(good) == {"tasks.read", "tasks.write"}
    with pytest.raises(e.AuthenticationError) as caught:
        verifier(jwt.encode(_claims(), b"t" * 32, algorithm="HS256"))
    assert caught.value.error_code == "TOKEN_BAD_SIGNATURE"


async def test_aio_key_rotation_keeps_calls_working(jwks: JwksServer) -> None:
    """aio: the JWKS endpoint rotates k1 -> k1+k2 -> k2 mid-test; every valid call keeps
    working, a k2 token triggers one fetch, and k1 is refused once the cache expires."""
    mono = FakeClock()
    verifier = _verifier(jwks, monotonic=mono, refresh_interval=10, cache_ttl=300)
    auth = BearerAuth(verifier, scopes=SCOPES)
    k1, k2 = jwks.keys[0], SigningKey("k2")
    async with aio_server(handlers(aio=True),
                          server_aio.server_interceptors(auth=auth, metrics=False)) as target:
        async with grpc.aio.insecure_channel(target) as channel:
            async def call(key: SigningKey) -> Any:
                try:
                    return await channel.unary_unary(WHO)(b"x", timeout=10, metadata=[
                        ("authorization", f"Bearer {key.sign(_claims())}")])
                except grpc.RpcError as error:
                    return error

            assert [await call(k1) for _ in range(3)] == [b"-"] * 3
            assert jwks.requests == 1
            jwks.keys = [k1, k2]  # the issuer publishes the next key
            mono.advance(11)
            assert await call(k2) == b"-"  # unknown kid: fetched once
            assert await call(k1) == b"-"
            assert jwks.requests == 2
            jwks.keys = [k2]  # and retires the old one
            mono.advance(301)
            refused = await call(k1)  # the cache expired: fetched, k1 is gone
            assert refused.code() is grpc.StatusCode.UNAUTHENTICATED
            assert from_rpc_error(refused).error_code == "TOKEN_UNKNOWN_KEY"
            assert await call(k2) == b"-"
            assert jwks.requests == 3


def test_unknown_kids_fetch_at_most_once_per_interval(jwks: JwksServer) -> None:
    """50 tokens with made-up key ids within one interval cost one fetch; the next interval
    allows one more."""
    mono = FakeClock()
    verifier = _verifier(jwks, monotonic=mono, refresh_interval=60)
    assert verifier(jwks.keys[0].sign(_claims())).principal == "user-7"
    assert jwks.requests == 1
    for n in range(50):
        with pytest.raises(e.AuthenticationError) as caught:
            verifier(SigningKey(f"made-up-{n}").sign(_claims()))
        assert caught.value.error_code == "TOKEN_UNKNOWN_KEY"
    assert jwks.requests == 1
    mono.advance(60)
    with pytest.raises(e.AuthenticationError):
        verifier(SigningKey("made-up-again").sign(_claims()))
    assert jwks.requests == 2


def test_jwks_down_keeps_the_known_keys(jwks: JwksServer) -> None:
    """Once keys are known, an endpoint answering 503 (or gone) leaves them in use."""
    mono = FakeClock()
    verifier = _verifier(jwks, monotonic=mono, cache_ttl=100, refresh_interval=10)
    token = jwks.keys[0].sign(_claims())
    assert verifier(token) == {"tasks.read", "tasks.write"}
    jwks.mode = "error"
    mono.advance(101)
    assert verifier(token) == {"tasks.read", "tasks.write"}  # refetch failed, key kept
    assert jwks.requests == 2
    assert verifier.fetches == 2


@pytest.mark.parametrize("mode", ["huge", "slow", "not_json", "not_jwks", "error"])
def test_hostile_jwks_answers_refuse_cleanly(jwks: JwksServer, mode: str) -> None:
    """A JWKS answer that is too big, too slow, not JSON, not a JWKS or an error gives no
    keys: the call is UNAUTHENTICATED (unknown key), within the fetch timeout."""
    jwks.mode = mode
    verifier = _verifier(jwks, fetch_timeout=0.3, max_jwks_bytes=64 * 1024)
    started = time.monotonic()
    with pytest.raises(e.AuthenticationError) as caught:
        verifier(jwks.keys[0].sign(_claims()))
    jwks.release.set()
    assert caught.value.error_code == "TOKEN_UNKNOWN_KEY"
    assert time.monotonic() - started < 2.0
    assert jwks.requests == 1


def test_duplicate_kids_are_dropped(jwks: JwksServer) -> None:
    """A key id published twice (two different keys) is ambiguous: neither is used, while
    the other keys of the set still are."""
    other = SigningKey("k-other")
    jwks.keys.append(other)
    jwks.mode = "duplicate"  # adds a second, different key with kid "k1"
    verifier = _verifier(jwks)
    with pytest.raises(e.AuthenticationError) as caught:
        verifier(jwks.keys[0].sign(_claims()))
    assert caught.value.error_code == "TOKEN_UNKNOWN_KEY"
    assert verifier(other.sign(_claims())).principal == "user-7"


async def test_aio_fetch_does_not_block_the_event_loop(jwks: JwksServer) -> None:
    """While a slow JWKS fetch is awaited, the event loop keeps running other tasks."""
    jwks.mode = "slow"
    verifier = _verifier(jwks, fetch_timeout=5)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.ensure_future(ticker())
    verifying = asyncio.ensure_future(verifier.verify_async(jwks.keys[0].sign(_claims())))
    await asyncio.sleep(0.2)
    assert not verifying.done()
    assert ticks >= 10  # the loop ran while the fetch waited on the network
    jwks.release.set()
    assert (await asyncio.wait_for(verifying, 5)).principal == "user-7"
    task.cancel()


async def test_aio_plain_def_handlers_verify_in_their_thread(jwks: JwksServer) -> None:
    """aio with plain ``def`` handlers (grpc.aio's thread pool): the same verifier admits a
    valid token (fetching the JWKS from that thread) and refuses an expired one."""
    auth = BearerAuth(_verifier(jwks), scopes=SCOPES)
    key = jwks.keys[0]
    async with aio_server(handlers(aio=False),
                          server_aio.server_interceptors(auth=auth, metrics=False)) as target:
        async with grpc.aio.insecure_channel(target) as channel:
            ok = await channel.unary_unary(ECHO)(b"x", timeout=10, metadata=[
                ("authorization", f"Bearer {key.sign(_claims())}")])
            assert ok == b"echo:x"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(ECHO)(b"x", timeout=10, metadata=[
                    ("authorization", f"Bearer {key.sign(_claims(exp=int(NOW) - 600))}")])
    assert from_rpc_error(caught.value).error_code == "TOKEN_EXPIRED"
    assert jwks.requests == 1


def test_a_fetch_that_ignores_its_timeout_does_not_hold_callers(jwks: JwksServer) -> None:
    """A custom ``fetch`` that hangs: callers wait about twice ``fetch_timeout``, then the
    known keys (none yet) decide: UNKNOWN_KEY, sync and aio alike."""
    release = threading.Event()

    def hanging(url: str, timeout: float, max_bytes: int) -> bytes:
        release.wait(10)
        return b'{"keys": []}'

    verifier = _verifier(jwks, fetch=hanging, fetch_timeout=0.05)
    token = jwks.keys[0].sign(_claims())
    try:
        started = time.monotonic()
        with pytest.raises(e.AuthenticationError) as caught:
            verifier(token)
        assert caught.value.error_code == "TOKEN_UNKNOWN_KEY"
        assert time.monotonic() - started < 1.0
        verifier2 = _verifier(jwks, fetch=hanging, fetch_timeout=0.05)
        started = time.monotonic()
        with pytest.raises(e.AuthenticationError):
            asyncio.run(verifier2.verify_async(token))
        assert time.monotonic() - started < 1.0
    finally:
        release.set()


def test_without_the_jwt_extra_the_verifier_names_it(tmp_path: Path) -> None:
    """Without PyJWT, ``octollm_grpc.server`` still imports and ``JWTVerifier(...)`` raises
    ImportError naming ``octollm-grpc[jwt]``."""
    from tests.packaging.test_extras import run_without_extras

    result = run_without_extras(
        """
        from octollm_grpc.server import BearerAuth, JWTVerifier, StaticTokens
        BearerAuth(StaticTokens({"t": []}))
        try:
            JWTVerifier(issuer="i", audience="a", keys=[b"k"])
        except ImportError as error:
            print(error)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'octollm-grpc[jwt]'" in result.stdout


def test_a_private_jwk_published_by_mistake_verifies_with_its_public_half() -> None:
    """A JWKS entry carrying a private key (``d``) is used as its public key: tokens it
    signed verify, others do not."""
    signer = SigningKey("priv")
    private_jwk = jwt.algorithms.ECAlgorithm.to_jwk(signer.private, as_dict=True)
    assert "d" in private_jwk
    verifier = JWTVerifier(issuer=ISSUER, audience=AUDIENCE, clock=FakeClock(NOW),
                           keys={"keys": [{**private_jwk, "kid": "priv"}]}, algorithms=("ES256",))
    assert verifier(signer.sign(_claims())).principal == "user-7"
    with pytest.raises(e.AuthenticationError) as caught:
        verifier(SigningKey("priv").sign(_claims()))
    assert caught.value.error_code == "TOKEN_BAD_SIGNATURE"


async def test_aio_token_subject_is_on_the_span(jwks: JwksServer) -> None:
    """aio: the server span of a call with a valid token carries ``octollm.principal`` (the
    token's ``sub``), and never the token."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    auth = BearerAuth(_verifier(jwks), scopes=SCOPES)
    token = jwks.keys[0].sign(_claims(sub="svc-billing"))
    async with aio_server(handlers(aio=True), server_aio.server_interceptors(
            auth=auth, metrics=False, tracer_provider=provider)) as target:
        async with grpc.aio.insecure_channel(target) as channel:
            assert await channel.unary_unary(WHO)(
                b"x", timeout=10, metadata=[("authorization", f"Bearer {token}")]) == b"-"
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes.get("octollm.principal") == "svc-billing"
    assert all(fragment not in repr(dict(span.attributes)) for fragment in _fragments(token))
    provider.shutdown()
