"""``grpc.Call`` answered by another call: what the sync wrappers of a response stream share."""

from __future__ import annotations

from typing import Any

import grpc

__all__ = ["DelegatingCall"]


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
