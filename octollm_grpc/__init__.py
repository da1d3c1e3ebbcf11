"""octollm-grpc: typed gRPC errors with rich status details, and resilient gRPC clients.

The curated public API. Modules: ``errors`` (the hierarchy), ``codes`` (the mapping table),
``status`` (wire encoding), ``http`` (gateway rendering), ``server`` and ``client``
(interceptors, sync and ``.aio``), ``codegen`` (stub generation), ``testing``.
"""

from __future__ import annotations

from octollm_grpc import errors as errors  # the hierarchy's module, importable from here
from octollm_grpc.codes import ErrorMapping, mapping_for, register
from octollm_grpc.errors import _base
from octollm_grpc.errors import _classes as _catalog
from octollm_grpc.errors._base import *  # noqa: F403 - ErrorDetails, OctoLLMError
from octollm_grpc.errors._classes import *  # noqa: F403 - the hierarchy's classes
from octollm_grpc.http import to_http
from octollm_grpc.status import from_rpc_error, to_status

__version__ = "0.1.0"

__all__ = [
    "ErrorMapping",
    "__version__",
    "from_rpc_error",
    "mapping_for",
    "register",
    "to_http",
    "to_status",
]
# The error classes, named once where they are defined. errors.SystemError and
# errors.TimeoutError are reached through `errors`: re-exporting them here would shadow
# Python's builtins in `from octollm_grpc import *` (the catalog's __all__ leaves them out).
__all__ += _base.__all__
__all__ += _catalog.__all__
