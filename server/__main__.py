"""``python -m server``: run the sample task service (``--help`` lists every flag)."""

from __future__ import annotations

import asyncio
import sys

from server.config import parse_args


def main() -> int:
    """Run until SIGTERM/SIGINT; exit 0 after a graceful stop, 1 if the service cannot start."""
    settings = parse_args()
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
