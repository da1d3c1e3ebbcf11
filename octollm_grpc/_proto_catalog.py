"""``octollm-grpc catalog PROTO_DIR``: the errors an API declares in its protos, as Markdown.

The table has the columns the docs of an API want (reason, code, HTTP, retryable, message,
comment), one row per ``(octollm.errors.v1.error)`` value in file, enum and value order, and is
printed the way the library's own catalog is (``octollm-grpc catalog`` with no folder). The
declarations are checked as ``octollm-grpc generate`` checks them.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from octollm_grpc import _catalog_markdown, codegen
from octollm_grpc._declared_errors import DeclaredError, DeclaredErrorProblem, read_declared_errors

__all__ = ["declared_errors", "main", "render_markdown"]

_HEADER = ("reason", "code", "HTTP", "retryable", "message", "comment")


def declared_errors(proto_dir: Path | str,
                    extra_includes: Iterable[Path | str] = ()) -> list[DeclaredError]:
    """The errors declared by the .proto files under ``proto_dir`` (not by their imports).

    Raises:
        CodegenError: protoc failed, there are no .proto files, or a declaration is unusable
            (the message names the file, enum and value).
    """
    protoc = codegen._grpc_tools().protoc
    root = Path(proto_dir).resolve()
    if not root.is_dir():
        raise codegen.CodegenError(f"{proto_dir} is not a directory")
    relative = [p.relative_to(root).as_posix() for p in codegen._find_protos(root)]
    includes = [root, *map(Path, extra_includes), *codegen.include_paths()]
    with tempfile.TemporaryDirectory(prefix="octollm-catalog-") as tmp:
        out = Path(tmp) / "descriptors.binpb"
        args = ["grpc_tools.protoc", *(f"-I{p}" for p in includes),
                f"--descriptor_set_out={out}", "--include_imports", "--include_source_info",
                *relative]
        code = codegen._run_protoc(protoc, args, cwd=root)
        if code != 0:
            raise codegen.CodegenError(f"protoc failed (exit {code}); see the messages above")
        data = out.read_bytes()
    try:
        return read_declared_errors(data, relative)
    except DeclaredErrorProblem as problem:
        raise codegen.CodegenError(str(problem)) from None


def _cell(text: str) -> str:
    # Free text in a table cell: no line breaks, and a literal `|` must not end the cell.
    return " ".join(text.split()).replace("|", "\\|")


def render_markdown(errors: Sequence[DeclaredError]) -> str:
    """The declared errors as a Markdown table (reason, code, HTTP, retryable, message,
    comment)."""
    rows = [(e.reason, e.code, str(e.http_status), "yes" if e.retryable else "no",
             _cell(e.message), _cell(e.comment)) for e in errors]
    return _catalog_markdown.markdown_table(_HEADER, rows)


def main(argv: Sequence[str]) -> int:
    """``octollm-grpc catalog PROTO_DIR [-I DIR]``; exit status 1 with a message on bad input."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="octollm-grpc catalog",
        description="Print the errors declared in PROTO_DIR's protos as a Markdown table "
                    "(without PROTO_DIR: the library's own catalog).")
    parser.add_argument("proto_dir", type=Path, help="folder holding your .proto files")
    parser.add_argument("-I", "--include", dest="includes", action="append", type=Path,
                        default=[], help="extra import root (repeatable)")
    args = parser.parse_args(argv)
    try:
        found = declared_errors(args.proto_dir, args.includes)
    except codegen.CodegenError as error:
        print(f"octollm-grpc catalog: {error}", file=sys.stderr)
        return 1
    print(render_markdown(found), end="")
    return 0
