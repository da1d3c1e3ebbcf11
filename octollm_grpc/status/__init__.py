"""OctoLLMError <-> ``google.rpc.Status``: encoding on the server, decoding on the client.

[`to_status`][octollm_grpc.status.to_status] builds the status a failed call ends with;
[`from_rpc_error`][octollm_grpc.status.from_rpc_error] rebuilds
the typed error from a failed call. The encoder, decoder and the bounds they keep are private
modules (``_encode``, ``_decode``, ``_limits``, ``_details``).
"""

from __future__ import annotations

from octollm_grpc.status._budget import (
    CALLERS_BUDGET as CALLERS_BUDGET,
)
from octollm_grpc.status._budget import (
    TIMEOUT_CAUSE_KEY as TIMEOUT_CAUSE_KEY,
)
from octollm_grpc.status._budget import callers_budget
from octollm_grpc.status._decode import from_rpc_error
from octollm_grpc.status._encode import to_status

__all__ = ["callers_budget", "from_rpc_error", "to_status"]
