"""The exception hierarchy of the OctoLLM error-handling standard, with its names and signatures.

Every class has a unique ``error_code`` (it travels as ``google.rpc.ErrorInfo.reason``, so a
client rebuilds the exact class). Every instance is also a `grpc.RpcError`: it answers
``code()``, ``details()``, ``trailing_metadata()``, so ``except grpc.RpcError`` handlers keep
working when a resilient channel raises the typed exception.

The one name clash, ``details``: the standard makes it a dict, gRPC makes it a method returning the
message. Here it is an `ErrorDetails`, a ``dict`` that is also callable: ``e.details["x"]``
reads a detail and ``e.details()`` returns the message, as gRPC code expects.
"""

from __future__ import annotations

from octollm_grpc.errors import _base as base
from octollm_grpc.errors import _classes as catalog
from octollm_grpc.errors._base import *  # noqa: F403 - ErrorDetails, OctoLLMError
from octollm_grpc.errors._classes import *  # noqa: F403 - every class but the two below
from octollm_grpc.errors._classes import BuiltinTimeoutError as BuiltinTimeoutError
from octollm_grpc.errors._classes import SystemError as SystemError  # noqa: A004
from octollm_grpc.errors._classes import TimeoutError as TimeoutError  # noqa: A004

# Each name is written once, in the module that defines it.
__all__ = ["SystemError", "TimeoutError"]
__all__ += base.__all__
__all__ += catalog.__all__

# The classes answer to this module, where users import them from (pickles, reprs, docs).
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
