"""Decoding never raises, whatever the trailer holds: deep or wide details fall back safely.

An envelope's ``details_json`` nested a few thousand levels made ``json.loads`` raise
``RecursionError`` out of ``from_rpc_error`` (and out of both resilient channels, after
retrying). Depth and size of what is parsed are bounded; beyond them the error keeps its code,
class and message, without those details.
"""

from __future__ import annotations

import json
import random
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from octollm_grpc import errors as e
from octollm_grpc._proto.octollm.errors.v1 import errors_pb2
from octollm_grpc.client import RetryPolicy, resilient_channel
from octollm_grpc.client import aio as client_aio
from octollm_grpc.status._decode import from_status_proto
from octollm_grpc.status._limits import DETAILS_KEY, MAX_DETAILS_BYTES, MAX_DETAILS_DEPTH
from octollm_grpc.testing import FakeClock
from tests.client.backend import UNARY, Backend, Reply
from tests.servers import sync_server

POLICY = RetryPolicy(max_attempts=3, initial_backoff=0.1, max_backoff=1.0)


def _nested(depth: int, width: int = 1) -> str:
    """JSON text: ``depth`` levels of alternating lists and maps, ``width`` items per level."""
    if width == 1:  # built in one pass: 100,000 levels must not take quadratic time
        opens = ('{"k0":' if level % 2 == 0 else "[" for level in reversed(range(depth)))
        closes = ("}" if level % 2 == 0 else "]" for level in range(depth))
        return '{"deep":' + "".join(opens) + "0" + "".join(closes) + "}"
    text = "0"
    for level in range(depth):
        if level % 2:
            text = "[" + ",".join([text] * width) + "]"
        else:
            text = "{" + ",".join(f'"k{i}":{text}' for i in range(width)) + "}"
    return '{"deep":' + text + "}"


def _status(details_json: str, code: int = 5, reason: str = "TASK_NOT_FOUND") -> status_pb2.Status:
    envelope = errors_pb2.ErrorEnvelope(error_code=reason, message="Task not found: t1",
                                        details_json=details_json)
    info = error_details_pb2.ErrorInfo(reason=reason, domain="octollm.grpc")
    return status_pb2.Status(code=code, message="Task not found: t1", details=[
        any_pb2.Any(type_url="type.googleapis.com/google.rpc.ErrorInfo",
                    value=info.SerializeToString()),
        any_pb2.Any(type_url="type.googleapis.com/octollm.errors.v1.ErrorEnvelope",
                    value=envelope.SerializeToString()),
    ])


@pytest.mark.parametrize("depth", [MAX_DETAILS_DEPTH + 1, 3000, 100_000])
def test_deep_details_json_decodes_without_its_details(depth: int) -> None:
    """A few thousand levels of JSON: the class, code and message, the details left out."""
    error = from_status_proto(_status(_nested(depth)))
    assert type(error) is e.TaskNotFoundError
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.message == "Task not found: t1"
    assert "deep" not in error.details


def test_details_at_the_depth_limit_are_kept() -> None:
    """Details up to the bound (far deeper than any real error's) still round-trip."""
    text = _nested(MAX_DETAILS_DEPTH - 1)
    error = from_status_proto(_status(text))
    assert error.details == json.loads(text)


def test_oversized_details_json_is_not_parsed() -> None:
    """Details over the size bound are dropped, not parsed."""
    text = json.dumps({"blob": "x" * (MAX_DETAILS_BYTES + 1)})
    error = from_status_proto(_status(text))
    assert type(error) is e.TaskNotFoundError
    assert "blob" not in error.details


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    """Only structure counts: a string full of brackets is kept."""
    text = json.dumps({"text": "[" * 5000 + "{" * 5000 + '\\"'})
    assert from_status_proto(_status(text)).details == json.loads(text)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depth=st.integers(0, 4000), width=st.integers(1, 3), code=st.integers(0, 20),
       reason=st.sampled_from(["TASK_NOT_FOUND", "VALIDATION_ERRORS", "NOPE", ""]))
def test_any_nesting_decodes_to_a_typed_error(depth: int, width: int, code: int,
                                              reason: str) -> None:
    """Deep and wide nesting, any code and reason: an OctoLLMError, never an exception."""
    if width > 1:
        depth = min(depth, 9)  # width ** depth items: wide stays small enough to build
    text = _nested(depth, width)
    error = from_status_proto(_status(text, code, reason))
    assert isinstance(error, e.OctoLLMError)
    assert error.message == "Task not found: t1"
    if depth < MAX_DETAILS_DEPTH - 1 and len(text) <= MAX_DETAILS_BYTES:
        assert error.details == json.loads(text)


def _deep_reply() -> Reply:
    # 2500 levels of lists: deep enough for json's RecursionError, small enough for a trailer.
    deep = '{"deep":' + "[" * 2500 + "]" * 2500 + "}"
    data = _status(deep, code=grpc.StatusCode.UNAVAILABLE.value[0],
                   reason="ARM_UNAVAILABLE").SerializeToString()
    return Reply(grpc.StatusCode.UNAVAILABLE, trailers=((DETAILS_KEY, data),),
                 message="Task not found: t1")


def _check(error: Any, backend: Backend) -> None:
    assert type(error) is e.ArmUnavailableError
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error.details() == "Task not found: t1"
    assert len(backend.attempts) == POLICY.max_attempts


def test_sync_resilient_channel_raises_the_typed_error() -> None:
    """Sync channel, 5000 levels in the envelope: retried, then the typed error."""
    backend = Backend([_deep_reply()])
    clock = FakeClock()
    with sync_server([backend.handler()]) as target, resilient_channel(
            target, retry=POLICY, budget=None, breaker=None, clock=clock.now,
            sleep=clock.sleep, rng=random.Random(1), registry=CollectorRegistry()) as channel:
        with pytest.raises(e.OctoLLMError) as raised:
            channel.unary_unary(UNARY)(b"x", timeout=5)
    _check(raised.value, backend)


async def test_aio_resilient_channel_raises_the_typed_error() -> None:
    """aio channel, the same trailer: retried, then the typed error."""
    backend = Backend([_deep_reply()])
    clock = FakeClock()
    with sync_server([backend.handler()]) as target:
        async with client_aio.resilient_channel(
                target, retry=POLICY, budget=None, breaker=None, clock=clock.now,
                sleep=clock.async_sleep, rng=random.Random(1),
                registry=CollectorRegistry()) as channel:
            with pytest.raises(e.OctoLLMError) as raised:
                await channel.unary_unary(UNARY)(b"x", timeout=5)
    _check(raised.value, backend)
