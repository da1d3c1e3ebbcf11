"""The curated top-level API: every name in __all__ exists, and star-import works."""

from __future__ import annotations

import builtins

import octollm_grpc


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
