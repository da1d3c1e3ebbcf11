"""octollm-grpc: typed gRPC errors with rich status details, and resilient gRPC clients.

The curated public API. Modules: ``errors`` (the hierarchy), ``codes`` (the mapping table),
``status`` (wire encoding), ``http`` (gateway rendering), ``server`` and ``client``
(interceptors, sync and ``.aio``), ``codegen`` (stub generation), ``testing``.
"""

from __future__ import annotations

from octollm_grpc import errors
from octollm_grpc.codes import ErrorMapping, mapping_for, register
from octollm_grpc.errors import (
    AbortedError,
    AlreadyExistsError,
    ArmUnavailableError,
    AuthenticationError,
    AuthorizationError,
    CacheError,
    CancelledCallError,
    CapacityExceededError,
    CircuitOpenError,
    DatabaseError,
    ErrorDetails,
    ExternalError,
    InternalError,
    InvalidInputError,
    InvalidStateError,
    LLMAPIError,
    NetworkError,
    NotFoundError,
    OctoLLMError,
    OutOfRangeError,
    PiiDetectedError,
    RateLimitError,
    ResourceError,
    ResourceExhaustedError,
    SerializationError,
    TaskNotFoundError,
    ThirdPartyAPIError,
    UnimplementedError,
    ValidationError,
    ValidationErrors,
    VectorDBError,
)
from octollm_grpc.http import HttpError, to_http
from octollm_grpc.status import from_rpc_error, from_status_proto, to_status, to_status_proto

__version__ = "0.1.0"

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "ArmUnavailableError",
    "AuthenticationError",
    "AuthorizationError",
    "CacheError",
    "CancelledCallError",
    "CapacityExceededError",
    "CircuitOpenError",
    "DatabaseError",
    "ErrorDetails",
    "ErrorMapping",
    "ExternalError",
    "HttpError",
    "InternalError",
    "InvalidInputError",
    "InvalidStateError",
    "LLMAPIError",
    "NetworkError",
    "NotFoundError",
    "OctoLLMError",
    "OutOfRangeError",
    "PiiDetectedError",
    "RateLimitError",
    "ResourceError",
    "ResourceExhaustedError",
    "SerializationError",
    "TaskNotFoundError",
    "ThirdPartyAPIError",
    "UnimplementedError",
    "ValidationError",
    "ValidationErrors",
    "VectorDBError",
    "__version__",
    "errors",
    "from_rpc_error",
    "from_status_proto",
    "mapping_for",
    "register",
    "to_http",
    "to_status",
    "to_status_proto",
]
# errors.SystemError and errors.TimeoutError are reached through `errors`: re-exporting them
# here would shadow Python's builtins in `from octollm_grpc import *`.
