"""``octollm-grpc`` (also ``python -m octollm_grpc``): stub generation and the error catalog."""

from __future__ import annotations

import sys
from collections.abc import Sequence

_USAGE = """usage: octollm-grpc COMMAND [ARGS]

commands:
  generate PROTO_DIR --out DIR [--package PKG]   generate Python code (+ .pyi) from .proto files
  catalog                                        print the error catalog as a Markdown table
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a sub-command; exit status 0 on success, 1 on failure, 2 on bad usage."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "generate":
        from octollm_grpc.codegen import main as generate_main

        return generate_main(rest)
    if command == "catalog":
        from octollm_grpc._catalog_markdown import render_markdown

        print(render_markdown(), end="")
        return 0
    print(f"octollm-grpc: unknown command {command!r}\n\n{_USAGE}", file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    sys.exit(main())
