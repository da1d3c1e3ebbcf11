"""Resilient channels on a fake clock for the client tests (no budget or breaker unless given)."""

from __future__ import annotations

import random
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from octollm_grpc.client import aio as client_aio
from octollm_grpc.client import resilient_channel
from octollm_grpc.testing import FakeClock


def sync_channel(target: str, clock: FakeClock, **kwargs: Any) -> grpc.Channel:
    """A sync resilient channel on ``clock`` (no budget, no breaker unless given)."""
    kwargs.setdefault("budget", None)
    kwargs.setdefault("breaker", None)
    kwargs.setdefault("rng", random.Random(1234))
    kwargs.setdefault("registry", CollectorRegistry())
    kwargs.setdefault("sleep", clock.sleep)
    return resilient_channel(target, clock=clock.now, **kwargs)


def aio_channel(target: str, clock: FakeClock, **kwargs: Any) -> grpc.aio.Channel:
    """The aio form of :func:`sync_channel` (create it inside the running loop)."""
    kwargs.setdefault("budget", None)
    kwargs.setdefault("breaker", None)
    kwargs.setdefault("rng", random.Random(1234))
    kwargs.setdefault("registry", CollectorRegistry())
    kwargs.setdefault("sleep", clock.async_sleep)
    return client_aio.resilient_channel(target, clock=clock.now, **kwargs)
