"""OctoLLMError <-> ``google.rpc.Status``: encoding on the server, decoding on the client.

:mod:`~octollm_grpc.status.encode` builds the status a failed call ends with (``to_status``);
:mod:`~octollm_grpc.status.decode` rebuilds the typed error from it (``from_rpc_error``);
:mod:`~octollm_grpc.status.limits` holds the bounds both keep and the ``RichStatus`` type.
"""

from __future__ import annotations

from octollm_grpc.status import limits
from octollm_grpc.status.budget import (
    CALLERS_BUDGET,
    TIMEOUT_CAUSE_KEY,
    callers_budget,
    spent_callers_budget,
)
from octollm_grpc.status.decode import from_rpc_error, from_status_proto
from octollm_grpc.status.encode import StatusTemplate, to_status, to_status_proto
from octollm_grpc.status.limits import *  # noqa: F403 - the public bounds and RichStatus

# Importable from here as before (outside __all__); ``X as X`` re-exports them explicitly.
from octollm_grpc.status.limits import MAX_IDENTIFIER_BYTES as MAX_IDENTIFIER_BYTES
from octollm_grpc.status.limits import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from octollm_grpc.status.limits import MAX_RETRY_AFTER as MAX_RETRY_AFTER
from octollm_grpc.status.limits import TIMEOUT_MESSAGE as TIMEOUT_MESSAGE
from octollm_grpc.status.limits import TRAILER_BUDGET as TRAILER_BUDGET

__all__ = [
    "CALLERS_BUDGET",
    "TIMEOUT_CAUSE_KEY",
    "StatusTemplate",
    "callers_budget",
    "from_rpc_error",
    "from_status_proto",
    "spent_callers_budget",
    "to_status",
    "to_status_proto",
]
__all__ += limits.__all__
