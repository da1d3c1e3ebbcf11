"""Config that is accepted must take effect: fields we do not implement are refused.

A field neither we nor gRPC act on (e.g. a misspelt one) is a ``ValueError`` naming the
field, never dropped without a word. Fields gRPC itself implements are handed to it and work.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors as e
from octollm_grpc.client import aio as client_aio
from octollm_grpc.client import resilient_channel
from octollm_grpc.client._config import parse_config
from tests.client.backend import UNARY, Backend, Reply
from tests.servers import sync_server

NAME = [{"service": "test.Echo"}]
RETRY = {"maxAttempts": 2, "initialBackoff": "0.1s", "maxBackoff": "1s",
         "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}

REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"methodConfig": [{"name": NAME, "hedgingPolicy": {
        "maxAttempts": 3, "hedgingDelay": "0.1s"}}]}, "hedgingPolicy"),
    ({"methodConfig": [{"name": NAME, "retryPolicy": RETRY, "hedgingPolicy": {}}]},
     "hedgingPolicy"),
    ({"retryThrotling": {"maxTokens": 10, "tokenRatio": 0.1}}, "retryThrotling"),
    ({"methodConfig": [{"name": NAME, "timout": "1s"}]}, "timout"),
    ({"methodConfig": [{"name": [{"service": "test.Echo", "methd": "Unary"}]}]}, "methd"),
    ({"circuitBreakers": {}}, "circuitBreakers"),
]


@pytest.mark.parametrize(("config", "field"), REFUSED, ids=[r[1] for r in REFUSED])
def test_unimplemented_fields_are_refused_by_name(config: dict[str, Any], field: str) -> None:
    """Each field nobody would act on: ValueError naming it."""
    with pytest.raises(ValueError, match=field):
        parse_config(config)


def test_resilient_channels_refuse_hedging() -> None:
    """Both channel factories refuse hedging before any call is made."""
    config = {"methodConfig": [{"name": NAME, "hedgingPolicy": {"maxAttempts": 2}}]}
    with pytest.raises(ValueError, match="hedgingPolicy"):
        resilient_channel("127.0.0.1:1", config=config, registry=CollectorRegistry())
    with pytest.raises(ValueError, match="hedgingPolicy"):
        client_aio.resilient_channel("127.0.0.1:1", config=config, registry=CollectorRegistry())


def test_fields_grpc_implements_are_accepted() -> None:
    """loadBalancingConfig, timeout, waitForReady and message limits go to gRPC."""
    config = parse_config({
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": NAME, "timeout": "2s", "waitForReady": True,
                          "maxRequestMessageBytes": 1024, "maxResponseMessageBytes": 1024,
                          "retryPolicy": RETRY}],
    })
    assert config.grpc_service_config is not None
    assert config.grpc_service_config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config.grpc_service_config["methodConfig"]
    assert method["timeout"] == "2s" and "retryPolicy" not in method


def test_a_passed_through_timeout_takes_effect() -> None:
    """A methodConfig timeout handed to gRPC really bounds a call made without a deadline."""
    release = threading.Event()
    backend = Backend([Reply(wait=release)])
    config = {"methodConfig": [{"name": NAME, "timeout": "0.2s"}]}
    try:
        with sync_server([backend.handler()]) as target, resilient_channel(
                target, config=config, budget=None, breaker=None,
                registry=CollectorRegistry()) as channel:
            with pytest.raises(e.TimeoutError) as raised:
                channel.unary_unary(UNARY)(b"x")
    finally:
        release.set()
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
