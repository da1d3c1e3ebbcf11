"""Calls answered by another call: what our wrappers of a call share, on both stacks."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import grpc

from octollm_grpc.client._half_close import WatchedRequests

__all__ = ["AioDelegatingCall", "DelegatingCall"]


class DelegatingCall(grpc.Call):
    """Every ``grpc.Call`` method answered by ``self._call`` (the call being wrapped now)."""

    _call: Any

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def is_active(self) -> bool:
        return bool(self._call.is_active())

    def time_remaining(self) -> float:
        return self._call.time_remaining()  # type: ignore[no-any-return]

    def add_callback(self, callback: Any) -> bool:
        return bool(self._call.add_callback(callback))

    def initial_metadata(self) -> Any:
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._call.code()  # type: ignore[no-any-return]

    def details(self) -> str:
        return self._call.details()  # type: ignore[no-any-return]


class AioDelegatingCall:
    """Every ``grpc.aio.Call`` method (and the request-stream ones) answered by ``self._call``.

    ``_watcher`` says when the caller's request stream ended (``None``: no request stream).
    """

    _call: Any
    _watcher: WatchedRequests | None = None

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def cancelled(self) -> bool:
        return bool(self._call.cancelled())

    def done(self) -> bool:
        return bool(self._call.done())

    def add_done_callback(self, callback: Any) -> None:
        self._call.add_done_callback(lambda _call: callback(self))

    def time_remaining(self) -> float | None:
        return self._call.time_remaining()  # type: ignore[no-any-return]

    async def initial_metadata(self) -> Any:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await self._call.trailing_metadata()

    def code(self) -> Coroutine[Any, Any, grpc.StatusCode]:
        # Not a coroutine function: grpc.aio runs ``code()`` of the call we return as a task,
        # and grpcio's channel close (1.66 at least) raises "Unrecognized call object" for a
        # pending task whose frame is a method of ours; grpc's own coroutine runs instead.
        return self._call.code()  # type: ignore[no-any-return]

    async def details(self) -> str:
        return await self._call.details()  # type: ignore[no-any-return]

    async def debug_error_string(self) -> str:
        return await self._call.debug_error_string()  # type: ignore[no-any-return]

    async def wait_for_connection(self) -> None:
        await self._call.wait_for_connection()

    async def write(self, request: Any) -> None:
        await self._call.write(request)

    async def done_writing(self) -> None:
        await self._call.done_writing()

    @property
    def _done_writing_flag(self) -> bool:
        # grpc.aio reads this name off the call we return (see octollm_grpc.client._half_close).
        return self._watcher is not None and self._watcher.ended
