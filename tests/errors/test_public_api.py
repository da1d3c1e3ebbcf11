"""The curated top-level API: every name in __all__ exists, and star-import works."""

from __future__ import annotations

import builtins

import grpc

import octollm_grpc
from octollm_grpc import codes


def test_every_exported_name_resolves() -> None:
    """Each name in octollm_grpc.__all__ is importable from the package."""
    missing = [name for name in octollm_grpc.__all__ if not hasattr(octollm_grpc, name)]
    assert missing == []


def test_star_import_does_not_shadow_builtins() -> None:
    """`from octollm_grpc import *` works and leaves Python's TimeoutError alone."""
    namespace: dict[str, object] = {}
    exec("from octollm_grpc import *", namespace)
    assert namespace["to_status"] is octollm_grpc.to_status
    assert "TimeoutError" not in namespace and "SystemError" not in namespace
    assert builtins.TimeoutError is TimeoutError


def test_code_named_fallback_classes_are_exported() -> None:
    """The classes a status without a known reason decodes to are importable from the top."""
    for code in (
        grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.CANCELLED,
    ):
        cls = codes.class_for_status_code(code)
        assert cls.__name__ in octollm_grpc.__all__
        assert getattr(octollm_grpc, cls.__name__) is cls
