"""``python -m server``: run the sample task service (``--help`` lists every flag)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import MutableMapping

from server.config import parse_args


def quiet_grpc_core(environ: MutableMapping[str, str]) -> None:
    """grpc core writes its own lines to stderr through absl, INFO ones included ("Got goaway
    ..." when a peer stops), which would break the service's JSON-lines log: unless the
    operator chose a ``GRPC_VERBOSITY``, only its errors are printed. Set before gRPC loads."""
    environ.setdefault("GRPC_VERBOSITY", "ERROR")


def main() -> int:
    """Run until SIGTERM/SIGINT; exit 0 after a graceful stop, 1 if the service cannot start."""
    settings = parse_args()
    quiet_grpc_core(os.environ)
    # Imported after parsing, so --help and bad flags answer without loading gRPC.
    from octollm_grpc.errors import OctoLLMError
    from server.app import run

    try:
        asyncio.run(run(settings))
    except (OctoLLMError, OSError) as error:
        print(f"python -m server: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
