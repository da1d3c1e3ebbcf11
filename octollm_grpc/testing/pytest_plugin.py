"""The pytest plugin (entry point ``octollm_grpc``): fixtures for testing gRPC error paths.

Loaded automatically once octollm-grpc is installed. A test module (or conftest) supplies its
handlers by defining a ``grpc_handlers`` fixture returning generic handlers; ``grpc_target``
then serves them (sync server, octollm stack, the test's ``fault_injector`` innermost) and
``aio_grpc_target`` does the same on a grpc.aio server (handlers from ``aio_grpc_handlers``,
which defaults to ``grpc_handlers``). Override ``grpc_interceptors`` to add interceptors.

=====================  ========================================================================
fixture                what it gives
=====================  ========================================================================
``fake_clock``         a fresh [`FakeClock`][octollm_grpc.testing.FakeClock]
``fault_injector``     a [`FaultInjector`][octollm_grpc.testing.FaultInjector] sleeping on
``fake_clock``
``grpc_handlers``      yours to define (the default fails the test, saying so)
``aio_grpc_handlers``  the handlers of the aio server (default: ``grpc_handlers``)
``grpc_interceptors``  inside the octollm stack (default: ``[fault_injector]``)
``grpc_target``        ``"127.0.0.1:PORT"`` of a sync server serving them, for the test
``aio_grpc_target``    the same for an aio server (on its own loop thread; any test may dial it)
=====================  ========================================================================
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest

from octollm_grpc.testing._clock import FakeClock
from octollm_grpc.testing._injector import FaultInjector
from octollm_grpc.testing._server import serve, serve_aio_in_thread

__all__: list[str] = []


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fresh fake monotonic clock (its sleeps return at once and advance it)."""
    return FakeClock()


@pytest.fixture
def fault_injector(fake_clock: FakeClock) -> FaultInjector:
    """A fault injector whose delays sleep on ``fake_clock`` (no real waiting)."""
    return FaultInjector(sleep=fake_clock.sleep, async_sleep=fake_clock.async_sleep)


@pytest.fixture
def grpc_handlers() -> Sequence[grpc.GenericRpcHandler]:
    """The generic handlers ``grpc_target`` serves: define this fixture in your tests."""
    pytest.fail("define a `grpc_handlers` fixture returning your generic RPC handlers "
                "(e.g. [add_MyServiceServicer_to_server-style handlers]) to use grpc_target")


@pytest.fixture
def aio_grpc_handlers(grpc_handlers: Sequence[grpc.GenericRpcHandler],
                      ) -> Sequence[grpc.GenericRpcHandler]:
    """The handlers ``aio_grpc_target`` serves (default: ``grpc_handlers``)."""
    return grpc_handlers


@pytest.fixture
def grpc_interceptors(fault_injector: FaultInjector) -> Sequence[Any]:
    """Interceptors inside the octollm stack of the test servers (default: the injector)."""
    return [fault_injector]


@pytest.fixture
def grpc_target(grpc_handlers: Sequence[grpc.GenericRpcHandler],
                grpc_interceptors: Sequence[Any]) -> Iterator[str]:
    """The target of a sync server with the octollm stack serving ``grpc_handlers``."""
    with serve(*grpc_handlers, interceptors=grpc_interceptors) as target:
        yield target


@pytest.fixture
def aio_grpc_target(aio_grpc_handlers: Sequence[grpc.GenericRpcHandler],
                    grpc_interceptors: Sequence[Any]) -> Iterator[str]:
    """The target of a grpc.aio server with the octollm stack serving ``aio_grpc_handlers``."""
    with serve_aio_in_thread(*aio_grpc_handlers, interceptors=grpc_interceptors) as target:
        yield target
