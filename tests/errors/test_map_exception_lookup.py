"""map_exception's lookup: MRO order, our registered classes, the decorator form, failures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

import octollm_grpc
from octollm_grpc import codes
from octollm_grpc import errors as e

_C = grpc.StatusCode


@pytest.fixture(autouse=True)
def _restore_converters() -> Iterator[None]:
    # map_exception is process-wide: each test leaves the table as it found it.
    saved = dict(codes._converters)
    yield
    with codes._lock:
        codes._converters.clear()
        codes._converters.update(saved)
        codes._converter_for.clear()


def _not_found(exc: KeyError) -> e.OctoLLMError:
    return e.NotFoundError("No such order", details={"kind": "order"})


def test_the_most_specific_class_in_the_mro_wins() -> None:
    """KeyError's converter beats LookupError's; IndexError falls back to LookupError's."""
    octollm_grpc.map_exception(LookupError, lambda exc: e.OutOfRangeError("lookup"))
    octollm_grpc.map_exception(KeyError, lambda exc: e.NotFoundError("key"))
    key = codes.converted(KeyError("k"))
    index = codes.converted(IndexError("i"))
    assert (type(key), key.message) == (e.NotFoundError, "key")  # type: ignore[attr-defined]
    assert (type(index), index.message) == (e.OutOfRangeError, "lookup")  # type: ignore[attr-defined]
    assert key.__cause__ is not None and type(key.__cause__) is KeyError
    unrelated = ValueError("v")
    assert codes.converted(unrelated) is unrelated


def test_registered_classes_of_ours_keep_their_mapping() -> None:
    """An OctoLLMError that is also a KeyError keeps its registered mapping, unconverted."""

    class OrderMissing(e.NotFoundError, KeyError):
        error_code = "TEST_ORDER_MISSING"

    octollm_grpc.map_exception(KeyError, lambda exc: e.ValidationError("wrong"))
    octollm_grpc.map_exception(Exception, lambda exc: e.ValidationError("wrong"))
    for error in (OrderMissing("o-1"), e.DatabaseError("q", None), e.OctoLLMError("x")):
        assert codes.converted(error) is error
    assert codes.mapping_for(OrderMissing("o-1")).grpc_code is _C.NOT_FOUND


def test_decorator_form_registers_and_returns_the_function() -> None:
    """@map_exception(T) registers the decorated converter and returns it unchanged."""

    class StoreConflict(Exception):
        pass

    @octollm_grpc.map_exception(StoreConflict)
    def conflict(exc: StoreConflict) -> e.OctoLLMError:
        return e.AlreadyExistsError(f"conflict on {exc.args[0]}")

    assert callable(conflict) and conflict.__name__ == "conflict"
    converted = codes.converted(StoreConflict("orders"))
    assert isinstance(converted, e.AlreadyExistsError)
    assert converted.message == "conflict on orders"
    # Mapping a type again replaces its converter.
    octollm_grpc.map_exception(StoreConflict, lambda exc: e.AbortedError("again"))
    assert type(codes.converted(StoreConflict("x"))) is e.AbortedError


def test_a_converter_returning_a_non_error_is_a_failure() -> None:
    """A converter that returns something other than an OctoLLMError counts as failed."""
    octollm_grpc.map_exception(KeyError, lambda exc: "not an error")  # type: ignore[arg-type,return-value]
    with capture_logs() as logs:
        result = codes.converted(KeyError("k"))
    assert isinstance(result, codes.ConverterFailed)
    assert codes.mapping_for(result) is codes.UNEXPECTED
    [event] = logs
    assert event["event"] == "exception_converter_failed"
    assert isinstance(event["exc_info"], TypeError)


@pytest.mark.parametrize(
    ("exc_type", "converter", "message"),
    [
        (e.NotFoundError, _not_found, "is an OctoLLMError: use register"),
        ("KeyError", _not_found, "takes an exception class"),
        (int, _not_found, "takes an exception class"),
        (KeyError, "not callable", "converter must be callable"),
    ],
)
def test_map_exception_refuses_bad_arguments(exc_type: Any, converter: Any,
                                             message: str) -> None:
    """Non-exception types, our own classes and non-callables raise TypeError at once."""
    with pytest.raises(TypeError, match=message):
        octollm_grpc.map_exception(exc_type, converter)


