"""The one table of code behaviour itself: its rows, the defaults computed from it, the catalog
that prints it, and the breaker's verdict per code (no servers: fast, for mutation testing)."""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry

from octollm_grpc import _catalog_markdown as catalog
from octollm_grpc import codes
from octollm_grpc import errors as e
from octollm_grpc.client import BreakerSettings, ChannelBreaker, RetryPolicy
from octollm_grpc.client._breaker import DEFAULT_FAILURE_CODES
from octollm_grpc.server._failures import level_for_code
from octollm_grpc.testing import FakeClock
from tests.client.backend import OK

_C = grpc.StatusCode
ROWS = codes.CODE_BEHAVIOUR


def test_the_table_has_every_code_once_in_numeric_order() -> None:
    """17 rows, one per grpc.StatusCode, in the codes' numeric order; OK is no error at all."""
    assert [row.code for row in ROWS] == sorted(_C, key=lambda code: code.value[0])
    assert len(ROWS) == 17
    ok = codes.behaviour(_C.OK)
    assert (ok.fault, ok.client_retry, ok.pushback_retry, ok.helper_retry,
            ok.breaker_failure) == ("none", False, False, False, False)
    # Where consumers differ, the table says why.
    for row in ROWS:
        differ = len({row.client_retry, row.helper_retry}) > 1 or row.pushback_retry
        assert row.why or not differ, row.code


def test_defaults_elsewhere_are_computed_from_the_table() -> None:
    """RetryPolicy, BreakerSettings, the server's log level and ErrorMapping use the table."""
    policy = RetryPolicy()
    assert policy.retryable_codes == {r.code for r in ROWS if r.client_retry} == {_C.UNAVAILABLE}
    assert policy.pushback_codes == {r.code for r in ROWS if r.pushback_retry} == {
        _C.RESOURCE_EXHAUSTED}
    assert BreakerSettings().failure_codes == DEFAULT_FAILURE_CODES == {
        r.code for r in ROWS if r.breaker_failure}
    for row in ROWS:
        if row.code is not OK:
            assert level_for_code(row.code) == row.level, row.code
    for cls, mapping in codes.registered():
        row = codes.behaviour(mapping.grpc_code)
        # gRPC's own size refusals are the one documented exception: resending cannot succeed.
        final = cls.error_code in {"MESSAGE_TOO_LARGE", "METADATA_TOO_LARGE"}
        assert mapping.retryable is (row.helper_retry and not final), cls
        assert mapping.client_error is (row.fault == "client"), cls
    for mapping in (codes.UNEXPECTED, codes.BUILTIN_TIMEOUT):
        assert mapping.retryable is codes.behaviour(mapping.grpc_code).helper_retry


def test_catalog_prints_the_table() -> None:
    """The catalog's code table is the table, and each class row's columns are its code's."""
    printed = {row[0]: row[1:] for row in catalog.behaviour_rows()}
    for row in ROWS:
        fault, client, pushback, helper, breaker, why = printed[row.code.name]
        assert fault == ("none" if row.code is OK else f"{row.fault} ({row.level})")
        assert client == ("yes" if row.client_retry else
                          "on pushback" if row.pushback_retry else "no")
        assert pushback == ("yes" if row.pushback_honoured else "no")
        assert helper == ("yes" if row.helper_retry else "no")
        assert breaker == ("yes" if row.breaker_failure else "no")
        assert why == row.why
    for name, _code, grpc_code, _http, level, client, helper, breaker in catalog.catalog_rows():
        row = codes.behaviour(_C[grpc_code])
        assert client == printed[grpc_code][1], name
        assert breaker == printed[grpc_code][4], name
        # gRPC's own size refusals: RESOURCE_EXHAUSTED that resilience.retry never retries.
        final = name in {"MessageTooLargeError", "MetadataTooLargeError"}
        assert helper == ("no" if final else printed[grpc_code][3]), name
        if name != "any other exception":
            assert level == row.level, name
    aborted = {row[0]: row for row in catalog.catalog_rows()}["AbortedError"]
    assert aborted[5:] == ("no", "yes", "no")  # channel no, resilience.retry yes: the split


def test_register_defaults_retryable_from_the_code() -> None:
    """A class registered without retryable= gets its code's resilience.retry column."""

    class Busy(e.OctoLLMError):
        error_code = "TEST_BEHAVIOUR_BUSY"

    class Gone(e.OctoLLMError):
        error_code = "TEST_BEHAVIOUR_GONE"

    codes.register(Busy, _C.UNAVAILABLE, 503)
    codes.register(Gone, _C.NOT_FOUND, 404)
    assert codes.mapping_for_class(Busy).retryable is True
    assert codes.mapping_for_class(Gone).retryable is False
    codes.register(Gone, _C.NOT_FOUND, 404, retryable=True)  # explicit wins
    assert codes.mapping_for_class(Gone).retryable is True


def test_breaker_record_walk_matches_the_table() -> None:
    """ChannelBreaker.record: failure codes open it, CANCELLED gives no verdict, others succeed."""
    for row in ROWS:
        breaker = ChannelBreaker("walk", BreakerSettings(failure_threshold=1),
                                 registry=CollectorRegistry(), clock=FakeClock().now)
        breaker.record(breaker.acquire(), row.code)
        assert (breaker.state.name == "OPEN") is row.breaker_failure, row.code


def test_the_decided_rows() -> None:
    """The table's decisions, pinned: fault, client retry, pushback only, helpers, breaker."""
    decided = {row.code.name: (row.fault, row.client_retry, row.pushback_retry,
                               row.helper_retry, row.breaker_failure) for row in ROWS}
    client = ("client", False, False, False, False)
    assert decided == {
        "OK": ("none", False, False, False, False),
        "CANCELLED": client,
        "UNKNOWN": ("server", False, False, False, True),
        "INVALID_ARGUMENT": client,
        "DEADLINE_EXCEEDED": ("server", False, False, False, True),
        "NOT_FOUND": client,
        "ALREADY_EXISTS": client,
        "PERMISSION_DENIED": client,
        "RESOURCE_EXHAUSTED": ("client", False, True, True, False),
        "FAILED_PRECONDITION": client,
        "ABORTED": ("client", False, False, True, False),
        "OUT_OF_RANGE": client,
        "UNIMPLEMENTED": ("server", False, False, False, False),
        "INTERNAL": ("server", False, False, False, True),
        "UNAVAILABLE": ("server", True, False, True, True),
        "DATA_LOSS": ("server", False, False, False, True),
        "UNAUTHENTICATED": client,
    }
    client_codes = {_C[name] for name, row in decided.items() if row[0] == "client"}
    assert client_codes == codes.CLIENT_FAULTS
    assert [codes.behaviour(c).level for c in (_C.NOT_FOUND, _C.INTERNAL, _C.OK)] == [
        "warning", "error", "error"]
    assert [codes.behaviour(c).pushback_honoured for c in (
        _C.UNAVAILABLE, _C.RESOURCE_EXHAUSTED, _C.ABORTED)] == [True, True, False]
