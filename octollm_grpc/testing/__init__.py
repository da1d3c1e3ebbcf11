"""A testing kit for services and clients built on octollm-grpc: real servers, no real waiting.

- [`serve`][octollm_grpc.testing.serve] starts a real server (sync, or aio with ``aio=True``) with
  the octollm stack
  on a free loopback port and yields its target;
  [`serve_aio_in_thread`][octollm_grpc.testing.serve_aio_in_thread] runs an aio
  server on its own event loop thread, for tests that have no loop (or another one);
  [`servicer_handlers`][octollm_grpc.testing.servicer_handlers] turns a servicer and its generated
  ``add_*_to_server`` into the
  generic handlers both take.
- [`FaultInjector`][octollm_grpc.testing.FaultInjector] is a server interceptor (sync and aio, all
  four RPC shapes) that
  fails, delays or pushes back the next calls, and records every call it saw
  (`Injection`).
- [`FakeClock`][octollm_grpc.testing.FakeClock] is a monotonic clock whose sleeps advance time at
  once.
- [`assert_rich_error`][octollm_grpc.testing.assert_rich_error] checks a failed call's code, error
  code and details.
- The pytest plugin (entry point ``octollm_grpc``, module
  `octollm_grpc.testing.pytest_plugin`) provides the fixtures ``fake_clock``,
  ``fault_injector``, ``grpc_target`` and ``aio_grpc_target``.
"""

from __future__ import annotations

from octollm_grpc.testing._assertions import assert_rich_error
from octollm_grpc.testing._clock import FakeClock
from octollm_grpc.testing._injector import FaultInjector
from octollm_grpc.testing._server import serve, serve_aio_in_thread, servicer_handlers

__all__ = [
    "FakeClock",
    "FaultInjector",
    "assert_rich_error",
    "serve",
    "serve_aio_in_thread",
    "servicer_handlers",
]
