"""The HTTP side of auth (real uvicorn): 401 and 403 carry RFC 6750 challenges."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from octollm_grpc import errors as e
from octollm_grpc.fastapi import install_error_handlers
from octollm_grpc.http import to_http
from tests.http.support import serve_app


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, metrics=False)

    @app.get("/expired")
    async def expired() -> None:
        raise e.AuthenticationError("The bearer token has expired", error_code="TOKEN_EXPIRED")

    @app.get("/scope")
    async def scope() -> None:
        raise e.AuthorizationError("Missing required scope",
                                   details={"required_scopes": ["tasks.write"]})

    @app.get("/odd-scope")
    async def odd_scope() -> None:
        raise e.AuthorizationError("Missing required scope",
                                   details={"required_scopes": ['a"b\r\nX-Evil: 1']})

    @app.get("/missing")
    async def missing() -> None:
        raise e.TaskNotFoundError("t-1")

    return app


def test_auth_errors_carry_bearer_challenges() -> None:
    """401 -> ``Bearer error="invalid_token"`` with the reason in the body; 403 ->
    ``error="insufficient_scope"`` naming the scope; a scope that is not a valid RFC 6750
    token is left out of the header rather than injected; other errors have no challenge."""
    with serve_app(_app()) as base, httpx.Client(base_url=base, timeout=5) as client:
        expired = client.get("/expired")
        scope = client.get("/scope")
        odd = client.get("/odd-scope")
        missing = client.get("/missing")
    assert expired.status_code == 401
    assert expired.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert expired.json()["error"] == "TOKEN_EXPIRED"
    assert scope.status_code == 403
    assert scope.headers["www-authenticate"] == \
        'Bearer error="insufficient_scope", scope="tasks.write"'
    assert odd.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    assert "x-evil" not in odd.headers
    assert missing.status_code == 404 and "www-authenticate" not in missing.headers


def test_to_http_challenges_decoded_errors_too() -> None:
    """An error decoded from a gRPC refusal (what a gateway re-raises) gets the challenge."""
    status, headers, body = to_http(e.AuthenticationError("x", error_code="TOKEN_MALFORMED"))
    assert (status, headers, body["error"]) == (
        401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, "TOKEN_MALFORMED")
