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




def test_a_resolved_lookup_is_reused() -> None:
    """The second exception of a class is converted like the first (the lookup is cached)."""
    octollm_grpc.map_exception(KeyError, _not_found)
    first, second = codes.converted(KeyError("a")), codes.converted(KeyError("b"))
    assert type(first) is type(second) is e.NotFoundError


def test_a_failed_converter_is_logged_with_what_failed() -> None:
    """The event names the exception type and the converter; the chain keeps both errors."""

    class Converter:
        def __call__(self, exc: BaseException) -> e.OctoLLMError:
            raise ValueError("bug in the converter")

        def __repr__(self) -> str:
            return "<Converter>"

    octollm_grpc.map_exception(KeyError, _broken_by_name)
    octollm_grpc.map_exception(IndexError, Converter())
    original = KeyError("k")
    with capture_logs() as logs:
        failed = codes.converted(original)
        codes.converted(IndexError("i"))
    assert isinstance(failed, codes.ConverterFailed)
    assert str(failed) == "the exception converter failed"
    assert isinstance(failed.__cause__, RuntimeError)
    assert failed.__context__ is original
    assert [(ev["event"], ev["exception_type"], ev["converter"], ev["log_level"])
            for ev in logs] == [
        ("exception_converter_failed", "KeyError", "_broken_by_name", "error"),
        ("exception_converter_failed", "IndexError", "<Converter>", "error")]
    assert str(logs[0]["exc_info"]) == "converter bug"


def _broken_by_name(exc: KeyError) -> e.OctoLLMError:
    raise RuntimeError("converter bug")


def test_a_non_error_result_is_named_in_the_failure() -> None:
    """The TypeError logged for a wrong result names what the converter returned."""
    octollm_grpc.map_exception(KeyError, lambda exc: 42)  # type: ignore[arg-type,return-value]
    with capture_logs() as logs:
        codes.converted(KeyError("k"))
    assert str(logs[0]["exc_info"]) == "the converter returned int, not an OctoLLMError"


def test_a_converted_error_keeps_its_own_cause() -> None:
    """A converter that sets a cause keeps it; otherwise the original becomes the cause."""
    root = OSError("disk")

    def with_cause(exc: KeyError) -> e.OctoLLMError:
        error = e.NotFoundError("gone")
        error.__cause__ = root
        return error

    octollm_grpc.map_exception(KeyError, with_cause)
    assert codes.converted(KeyError("k")).__cause__ is root
