"""install_error_handlers on a plain FastAPI app, served by a real uvicorn, called with httpx."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.fastapi import install_error_handlers
from octollm_grpc.server import CallLogger, RequestIds, ServerMetrics, current_request_id
from tests.http.support import serve_app

SECRET = "s3cr3t-/srv/private/db.sqlite"


class Item(BaseModel):
    name: str = Field(min_length=1)
    priority: int = Field(ge=1, le=10)


def _app(registry: CollectorRegistry) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, metrics=ServerMetrics(registry, component="http"))

    @app.get("/ok")
    async def ok() -> dict[str, Any]:
        return {"request_id": current_request_id()}

    @app.get("/raise/{kind}")
    async def raise_(kind: str) -> None:
        raise {
            "not_found": e.TaskNotFoundError("t-1"),
            "unauthenticated": e.AuthenticationError("Missing bearer token"),
            "rate_limited": e.RateLimitError(limit=100, window=60, retry_after=30),
            "arm": e.ArmUnavailableError(["code", "math"]),
            "violations": e.ValidationErrors([
                {"field": "description", "message": "must not be blank"},
                {"field": "priority", "message": "must be within 1..10"},
            ]),
            "unexpected": RuntimeError(f"{SECRET} while reading"),
            "key": KeyError(SECRET),
            "timeout": TimeoutError(SECRET),
            "unserializable": e.OctoLLMError("odd", details={"x": object()}),
        }[kind]

    @app.get("/sync-boom")
    def sync_boom() -> None:
        raise ValueError(SECRET)

    @app.post("/items")
    async def create(item: Item, limit: int = 10) -> dict[str, Any]:
        return {"name": item.name, "limit": limit}

    return app


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, CollectorRegistry]]:
    registry = CollectorRegistry()
    with serve_app(_app(registry)) as url:
        yield url, registry


def _errors(registry: CollectorRegistry, error_type: str) -> float:
    value = registry.get_sample_value(
        "octollm_errors_total", {"error_type": error_type, "component": "http"})
    return value or 0.0


def _failed(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in logs if event["event"] == "http.request.failed"]


@pytest.mark.parametrize(
    ("kind", "status", "error", "grpc_code", "level", "details"),
    [
        ("not_found", 404, "TASK_NOT_FOUND", "NOT_FOUND", "warning", {"task_id": "t-1"}),
        ("unauthenticated", 401, "AUTHENTICATION_ERROR", "UNAUTHENTICATED", "warning", {}),
        ("rate_limited", 429, "RATE_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED", "warning",
         {"limit": 100, "window": 60}),
        ("arm", 503, "ARM_UNAVAILABLE", "UNAVAILABLE", "error",
         {"required_capabilities": ["code", "math"]}),
        ("violations", 400, "VALIDATION_ERRORS", "INVALID_ARGUMENT", "warning",
         {"errors": [{"field": "description", "message": "must not be blank"},
                     {"field": "priority", "message": "must be within 1..10"}]}),
    ],
)
def test_octollm_error_gets_its_status_body_log_and_metric(
    served: tuple[str, CollectorRegistry], kind: str, status: int, error: str, grpc_code: str,
    level: str, details: dict[str, Any],
) -> None:
    """An OctoLLMError answers with the table's status and to_dict(), logged and counted once."""
    url, registry = served
    before = _errors(registry, error)
    with capture_logs() as logs:
        response = httpx.get(f"{url}/raise/{kind}", headers={"x-request-id": f"rid-{kind}"})
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert body["details"] == details
    assert response.headers["x-request-id"] == f"rid-{kind}"
    assert _errors(registry, error) == before + 1
    [event] = _failed(logs)
    assert event["log_level"] == level
    assert event["grpc_code"] == grpc_code
    assert event["error_code"] == error
    assert event["request_id"] == f"rid-{kind}"
    assert event["grpc_method"] == "GET /raise/{kind}"
    assert "exc_info" not in event


def test_task_not_found_is_404_not_the_seeds_400(served: tuple[str, CollectorRegistry]) -> None:
    """The seed's isinstance chain sent TaskNotFoundError (a ValidationError) to 400."""
    url, _ = served
    response = httpx.get(f"{url}/raise/not_found")
    assert response.status_code == 404
    assert response.json() == {"error": "TASK_NOT_FOUND", "message": "Task t-1 not found",
                               "details": {"task_id": "t-1"}}


def test_rate_limit_sends_retry_after(served: tuple[str, CollectorRegistry]) -> None:
    """retry_after becomes the Retry-After header and stays in the body."""
    url, _ = served
    response = httpx.get(f"{url}/raise/rate_limited")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert response.json()["retry_after"] == 30
    assert "retry-after" not in httpx.get(f"{url}/raise/arm").headers


def test_request_validation_error_lists_every_violation(
    served: tuple[str, CollectorRegistry],
) -> None:
    """A request FastAPI rejects is the table's 400 VALIDATION_ERRORS, one entry a violation."""
    url, registry = served
    before = _errors(registry, "VALIDATION_ERRORS")
    with capture_logs() as logs:
        response = httpx.post(f"{url}/items?limit=lots",
                              json={"name": "", "priority": 99, "extra": SECRET})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "VALIDATION_ERRORS"
    assert body["message"] == "Validation failed with 3 errors"
    errors = body["details"]["errors"]
    assert {item["field"] for item in errors} == {"body.name", "body.priority", "query.limit"}
    assert all(set(item) == {"field", "message", "type"} for item in errors)
    assert {item["type"] for item in errors} == {"string_too_short", "less_than_equal",
                                                 "int_parsing"}
    assert "lots" not in response.text and SECRET not in response.text
    assert _errors(registry, "VALIDATION_ERRORS") == before + 1
    [event] = _failed(logs)
    assert (event["log_level"], event["grpc_code"]) == ("warning", "INVALID_ARGUMENT")


@pytest.mark.parametrize("path", ["/raise/unexpected", "/raise/key", "/sync-boom"])
def test_unexpected_exception_is_a_generic_500_with_the_traceback_logged(
    served: tuple[str, CollectorRegistry], path: str,
) -> None:
    """Any other exception: the generic body, nothing of it on the wire, critical in the log."""
    url, registry = served
    before = _errors(registry, "INTERNAL_ERROR")
    with capture_logs() as logs:
        response = httpx.get(url + path, headers={"x-request-id": "rid-boom"})
    assert response.status_code == 500
    assert response.json() == {"error": "INTERNAL_ERROR", "message": "An internal error occurred",
                               "details": {}}
    assert SECRET not in response.text
    assert all(SECRET not in value for value in response.headers.values())
    assert response.headers["x-request-id"] == "rid-boom"
    assert _errors(registry, "INTERNAL_ERROR") == before + 1
    [event] = _failed(logs)
    assert event["log_level"] == "critical"
    assert event["error_code"] == "INTERNAL_ERROR"
    assert SECRET in str(event["exc_info"])  # the exception itself goes to the log


def test_builtin_timeout_is_504(served: tuple[str, CollectorRegistry]) -> None:
    """Python's TimeoutError maps as on gRPC (DEADLINE_EXCEEDED there), with a fixed message."""
    url, _ = served
    with capture_logs() as logs:
        response = httpx.get(f"{url}/raise/timeout")
    assert response.status_code == 504
    assert response.json() == {"error": "TIMEOUT_ERROR", "message": "The operation timed out",
                               "details": {}}
    [event] = _failed(logs)
    assert (event["grpc_code"], event["log_level"]) == ("DEADLINE_EXCEEDED", "error")


def test_error_whose_body_cannot_be_rendered_is_a_generic_500(
    served: tuple[str, CollectorRegistry],
) -> None:
    """Details that are not JSON must not crash the handler: generic 500, logged."""
    url, _ = served
    with capture_logs() as logs:
        response = httpx.get(f"{url}/raise/unserializable")
    assert response.status_code == 500
    assert response.json()["error"] == "INTERNAL_ERROR"
    [event] = _failed(logs)
    assert event["log_level"] == "critical"


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [("client-id-42", True), ("bad\x7fline", False), ("x" * 129, False), ("", False),
     (None, False)],
)
def test_request_id_is_echoed_when_valid_else_generated(
    served: tuple[str, CollectorRegistry], sent: str | None, echoed: bool,
) -> None:
    """The gRPC side's rule: printable ASCII up to 128 characters is kept, else a new id."""
    url, _ = served
    headers = {} if sent is None else {"x-request-id": sent}
    response = httpx.get(f"{url}/ok", headers=headers)
    assert response.status_code == 200
    rid = response.headers["x-request-id"]
    assert response.json() == {"request_id": rid}  # current_request_id() in the endpoint
    if echoed:
        assert rid == sent
    else:
        assert len(rid) == 32 and int(rid, 16) >= 0


def test_request_ids_and_logger_are_configurable() -> None:
    """A custom header and logger event are used; logging and metrics can be turned off."""
    app = FastAPI()
    install_error_handlers(app, request_ids=RequestIds(header="x-correlation-id"),
                           logger=CallLogger(event="http.request.failed"), metrics=False)

    @app.get("/missing")
    async def missing() -> None:
        raise e.TaskNotFoundError("t-9")

    with serve_app(app) as url, capture_logs() as logs:
        response = httpx.get(f"{url}/missing", headers={"x-correlation-id": "corr-1"})
    assert response.status_code == 404
    assert response.headers["x-correlation-id"] == "corr-1"
    assert "x-request-id" not in response.headers
    assert [event["event"] for event in logs] == ["http.request.failed"]


def test_missing_fastapi_names_the_extra() -> None:
    """Without FastAPI, importing the module says which extra to install."""
    code = ("import sys; sys.modules['fastapi'] = None\n"
            "try:\n    import octollm_grpc.fastapi\n"
            "except ImportError as error:\n    print(error)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "pip install 'octollm-grpc[fastapi]'" in done.stdout


def test_error_in_a_later_middleware_still_gets_the_generic_body_and_id() -> None:
    """A middleware added after install runs outside ours: Starlette's error middleware then
    answers with our 500 handler, and the id settled for the request is still sent."""
    app = FastAPI()
    install_error_handlers(app, metrics=False)

    @app.middleware("http")
    async def broken(request: Any, call_next: Any) -> Any:
        raise RuntimeError(SECRET)

    @app.get("/ok")
    async def ok() -> dict[str, str]:
        return {}

    with serve_app(app) as url:
        response = httpx.get(f"{url}/ok", headers={"x-request-id": "outer-1"})
    assert response.status_code == 500
    assert response.json()["error"] == "INTERNAL_ERROR"
    assert SECRET not in response.text
    assert response.headers["x-request-id"] == "outer-1"
