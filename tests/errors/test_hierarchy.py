"""The hierarchy keeps the seed's names, tree and signatures, and fixes the seed's bugs."""

from __future__ import annotations

import asyncio
import builtins
import pickle

import grpc
import pytest

from octollm_grpc import codes
from octollm_grpc import errors as e

SEED_TREE = {
    e.ValidationError: e.OctoLLMError,
    e.InvalidInputError: e.ValidationError,
    e.TaskNotFoundError: e.ValidationError,
    e.AuthenticationError: e.ValidationError,
    e.AuthorizationError: e.ValidationError,
    e.ResourceError: e.OctoLLMError,
    e.ArmUnavailableError: e.ResourceError,
    e.CapacityExceededError: e.ResourceError,
    e.RateLimitError: e.ResourceError,
    e.SystemError: e.OctoLLMError,
    e.DatabaseError: e.SystemError,
    e.CacheError: e.SystemError,
    e.NetworkError: e.SystemError,
    e.TimeoutError: e.SystemError,
    e.ExternalError: e.OctoLLMError,
    e.LLMAPIError: e.ExternalError,
    e.VectorDBError: e.ExternalError,
    e.ThirdPartyAPIError: e.ExternalError,
    e.ValidationErrors: e.ValidationError,
}


@pytest.mark.parametrize(("child", "parent"), SEED_TREE.items())
def test_seed_tree(child: type[e.OctoLLMError], parent: type[e.OctoLLMError]) -> None:
    """Every class of the seed's tree has the seed's direct parent."""
    assert child.__bases__[0] is parent


def test_seed_constructor_signatures() -> None:
    """The seed's constructors build the seed's messages, codes and details."""
    assert e.TaskNotFoundError("t-1").to_dict() == {
        "error": "TASK_NOT_FOUND", "message": "Task t-1 not found", "details": {"task_id": "t-1"}}
    rate = e.RateLimitError(limit=100, window=60, retry_after=30)
    assert rate.to_dict() == {
        "error": "RATE_LIMIT_EXCEEDED",
        "message": "Rate limit exceeded: 100 requests per 60s",
        "details": {"limit": 100, "window": 60},
        "retry_after": 30,
    }
    db = e.DatabaseError("query", ConnectionError("refused"))
    assert (db.message, db.details) == (
        "Database query failed: refused", {"operation": "query", "error": "refused"})
    assert e.TimeoutError("llm call", 30).to_dict()["message"] == "llm call timed out after 30s"
    assert e.ArmUnavailableError(["code", "web"]).message == (
        "No arm available with capabilities: code, web")
    llm = e.LLMAPIError("openai", 503, "overloaded")
    assert llm.details == {"provider": "openai", "status_code": 503, "error_message": "overloaded"}
    assert e.LLMAPIError("openai").message == "openai API error: Unknown error"
    assert e.InvalidInputError("too long", field="description").details == {
        "field": "description"}
    many = e.ValidationErrors([{"field": "a", "message": "x"}, {"field": "b", "message": "y"}])
    assert many.message == "Validation failed with 2 errors"
    assert many.errors == [{"field": "a", "message": "x"}, {"field": "b", "message": "y"}]
    assert e.OctoLLMError("plain").to_dict() == {
        "error": "UNKNOWN_ERROR", "message": "plain", "details": {}}


def test_seed_bug_duplicate_error_code_is_fixed() -> None:
    """The seed's TaskNotFoundError raised TypeError (error_code passed twice); ours builds."""
    error = e.TaskNotFoundError("abc")
    assert error.error_code == "TASK_NOT_FOUND"
    custom = e.ValidationError("bad", field="f", error_code="CUSTOM", details={"x": 1})
    assert (custom.error_code, dict(custom.details)) == ("CUSTOM", {"field": "f", "x": 1})


def test_seed_bug_isinstance_order_is_fixed() -> None:
    """The seed mapped TaskNotFoundError to 400 (ValidationError tested first); MRO gives 404."""
    mapping = codes.mapping_for(e.TaskNotFoundError("x"))
    assert (mapping.grpc_code, mapping.http_status) == (grpc.StatusCode.NOT_FOUND, 404)
    assert codes.mapping_for(e.AuthenticationError()).http_status == 401
    assert codes.mapping_for(e.AuthorizationError()).http_status == 403
    assert codes.mapping_for(e.RateLimitError(1, 1, 1)).http_status == 429


def test_error_codes_are_unique() -> None:
    """Every registered class has its own error_code, so the client can rebuild the class."""
    rows = codes.registered()
    assert len({m.error_code for _, m in rows}) == len(rows)
    assert all(cls.error_code == m.error_code for cls, m in rows)


def test_details_is_a_dict_and_a_method() -> None:
    """`e.details["k"]` reads a detail and `e.details()` gives the message, as grpc code calls."""
    error = e.TaskNotFoundError("t-9")
    assert error.details["task_id"] == "t-9"
    assert error.details() == "Task t-9 not found"
    assert isinstance(error, grpc.RpcError)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.trailing_metadata() is None


def test_builtin_timeouts_and_unknown_exceptions() -> None:
    """Builtin and asyncio TimeoutError -> DEADLINE_EXCEEDED; anything else -> INTERNAL."""
    assert asyncio.TimeoutError is builtins.TimeoutError
    assert codes.mapping_for(TimeoutError()).grpc_code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert codes.mapping_for(builtins.TimeoutError()).http_status == 504
    assert codes.mapping_for(KeyError("x")) is codes.UNEXPECTED
    assert codes.UNEXPECTED.grpc_code is grpc.StatusCode.INTERNAL


def test_register_user_subclass_in_one_line() -> None:
    """A user's subclass is registered in one call and resolved over its parent's mapping."""

    class QuotaSpentError(e.ResourceError):
        error_code = "TEST_QUOTA_SPENT"

    assert codes.mapping_for(QuotaSpentError("x")).grpc_code is grpc.StatusCode.UNAVAILABLE
    codes.register(QuotaSpentError, grpc.StatusCode.RESOURCE_EXHAUSTED, 429)
    assert codes.mapping_for(QuotaSpentError("x")).grpc_code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert codes.class_for_error_code("TEST_QUOTA_SPENT") is QuotaSpentError


def test_register_rejects_bad_input() -> None:
    """Duplicate error codes, non-error classes, OK codes and odd HTTP statuses are refused."""

    class Clash(e.ResourceError):
        error_code = "TASK_NOT_FOUND"

    with pytest.raises(ValueError, match="already used by TaskNotFoundError"):
        codes.register(Clash, grpc.StatusCode.NOT_FOUND, 404)
    with pytest.raises(TypeError):
        codes.register(KeyError, grpc.StatusCode.NOT_FOUND, 404)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-OK"):
        codes.register(e.ResourceError, grpc.StatusCode.OK, 503)
    with pytest.raises(ValueError, match="4xx or 5xx"):
        codes.register(e.ResourceError, grpc.StatusCode.UNAVAILABLE, 200)


def test_errors_pickle() -> None:
    """Errors survive pickling (process pools, multiprocessing queues) with their parts."""
    error = e.RateLimitError(5, 1, 2)
    clone = pickle.loads(pickle.dumps(error))
    assert clone == error and type(clone) is e.RateLimitError
    assert clone.details() == error.message
