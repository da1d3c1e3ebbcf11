"""Generate importable Python packages (``_pb2``, ``_pb2_grpc``, ``.pyi``) from .proto files.

protoc writes absolute imports that mirror the proto paths (``from acme.v1 import x_pb2``),
which only work when the output folder itself is on ``sys.path``. This command rewrites them
so the generated code lives inside a package of yours (``--package acme_gen``), names the
message classes' module accordingly (so they pickle), adds the
``__init__.py`` files, and points imports of OctoLLM's error protos at the copies shipped in
``octollm_grpc._proto``; ``google/rpc/*`` and the well-known types resolve to the installed
``googleapis-common-protos`` and ``protobuf``.

A file that declares errors with the ``(octollm.errors.v1.error)`` options also gets
``x_errors.py`` and ``x_errors.pyi`` beside its ``x_pb2.py`` (docs/errors.md, "Errors declared
in protos"); a declaration that cannot work is a
[`CodegenError`][octollm_grpc.codegen.CodegenError].

    octollm-grpc generate PROTO_DIR --out OUT_DIR [--package PREFIX]
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from octollm_grpc._declared_errors import DeclaredError, DeclaredErrorProblem, read_declared_errors
from octollm_grpc._errors_codegen import render_module, render_stub

__all__ = [
    "CodegenError",
    "generate",
]

#: Where OctoLLM's own protos are shipped inside the wheel (next to their generated code).
_SHIPPED = Path(__file__).resolve().parent / "_proto"
_SHIPPED_PACKAGE = "octollm_grpc._proto"
_SHIPPED_PROTO_PREFIX = "octollm.errors."

_FROM_IMPORT = re.compile(r"^(\s*)from ([\w.]+) import (\w+_pb2(?:_grpc)?)\b", re.MULTILINE)
_BARE_IMPORT = re.compile(r"^(\s*)import (\w+_pb2(?:_grpc)?)\b", re.MULTILINE)
# The module name the message classes get (their __module__, which pickle imports).
_MODULE_NAME = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, )'([\w.]+)'")


class CodegenError(Exception):
    """protoc failed, or the input is not usable; the message says what to fix."""


#: protoc comes from grpcio-tools, which the lean runtime install leaves out.
_INSTALL_CODEGEN = "pip install 'octollm-grpc[codegen]'"


def _grpc_tools() -> ModuleType:
    """``grpc_tools`` with its ``protoc``; a [`CodegenError`][octollm_grpc.codegen.CodegenError]
    naming the extra if absent."""
    try:
        import grpc_tools.protoc
    except ImportError as error:
        raise CodegenError(
            f"generating code needs grpcio-tools, which is not installed: run {_INSTALL_CODEGEN}"
        ) from error
    tools: ModuleType = grpc_tools
    return tools


def include_paths() -> list[Path]:
    """Import roots every generation gets: OctoLLM's protos, googleapis and the WKTs."""
    import google.rpc.status_pb2  # googleapis-common-protos ships the .proto files beside

    googleapis = Path(google.rpc.status_pb2.__file__).resolve().parents[2]
    well_known = Path(_grpc_tools().__path__[0]).resolve() / "_proto"
    return [_SHIPPED, googleapis, well_known]


def _find_protos(proto_dir: Path) -> list[Path]:
    files = sorted(p for p in proto_dir.rglob("*.proto") if p.is_file())
    if not files:
        raise CodegenError(f"no .proto files under {proto_dir}")
    return files


def _module_of(relative_proto: Path) -> str:
    """``acme/v1/x.proto`` -> ``acme.v1``, the package protoc's imports name."""
    return ".".join(relative_proto.parent.parts)


def _rewrite(source: str, local_packages: set[str], local_root_modules: set[str],
             prefix: str | None) -> str:
    def fix_from(match: re.Match[str]) -> str:
        indent, package, module = match.groups()
        if prefix and package in local_packages:
            package = f"{prefix}.{package}"
        elif package.startswith(_SHIPPED_PROTO_PREFIX) or package == "octollm.errors":
            package = f"{_SHIPPED_PACKAGE}.{package}"
        return f"{indent}from {package} import {module}"

    def fix_bare(match: re.Match[str]) -> str:
        indent, module = match.groups()
        if prefix and module.removesuffix("_grpc") in local_root_modules:
            return f"{indent}from {prefix} import {module}"
        return match.group(0)

    def fix_module_name(match: re.Match[str]) -> str:
        return f"{match.group(1)}'{prefix}.{match.group(2)}'"

    source = _BARE_IMPORT.sub(fix_bare, _FROM_IMPORT.sub(fix_from, source))
    if prefix:
        # protoc names the module after the proto path; inside the package it is prefixed.
        source = _MODULE_NAME.sub(fix_module_name, source)
    return source


def generate(
    proto_dir: Path | str,
    out_dir: Path | str,
    package: str | None = None,
    *,
    extra_includes: Iterable[Path | str] = (),
    grpc: bool = True,
    copy_protos: bool = False,
    files: Sequence[str | Path] = (),
) -> list[Path]:
    """Generate Python code for every .proto under ``proto_dir`` into ``out_dir``.

    With ``package="acme_gen"`` the code for ``acme/v1/x.proto`` lands in
    ``out_dir/acme_gen/acme/v1/x_pb2.py`` and imports itself as ``acme_gen.acme.v1``; without
    it, in ``out_dir/acme/v1/`` for an ``out_dir`` that is on ``sys.path``. ``files`` limits
    the run to those protos (paths relative to ``proto_dir``); ``copy_protos`` also copies the
    .proto files next to their code, so others can import them. Returns the files written.
    Raises [`CodegenError`][octollm_grpc.codegen.CodegenError] if protoc fails (protoc prints why on
    stderr), if a declared
    error is unusable (the message names the file, enum and value), or if grpcio-tools (the
    ``[codegen]`` extra) is not installed.

    Args:
        proto_dir: The directory searched for ``.proto`` files.
        out_dir: Where the generated code goes.
        package: The Python package the code imports itself as (see above).
        extra_includes: More ``-I`` directories for imports.
        grpc: Also generate the ``_pb2_grpc`` stubs.
        copy_protos: Copy the ``.proto`` sources next to the code.
        files: Only these files (relative to ``proto_dir``) instead of every one.

    Returns:
        The paths written.

    Raises:
        CodegenError: grpcio-tools is missing, no ``.proto`` file was found, ``protoc``
            failed, or a declared error is unusable (naming the file, enum and value).
    """
    protoc = _grpc_tools().protoc

    proto_root = Path(proto_dir).resolve()
    if not proto_root.is_dir():
        raise CodegenError(f"{proto_dir} is not a directory")
    if package is not None and not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", package):
        raise CodegenError(f"--package must be a dotted Python name, not {package!r}")
    if files:
        protos = [proto_root / f for f in files]
        missing = [str(p) for p in protos if not p.is_file()]
        if missing:
            raise CodegenError(f"no such .proto file: {', '.join(missing)}")
    else:
        protos = _find_protos(proto_root)
    relative = [p.relative_to(proto_root) for p in protos]

    target_root = Path(out_dir).resolve()
    if package:
        target_root = target_root.joinpath(*package.split("."))

    with tempfile.TemporaryDirectory(prefix="octollm-codegen-") as tmp:
        scratch = Path(tmp)
        includes = [proto_root, *map(Path, extra_includes), *include_paths()]
        args = ["grpc_tools.protoc", *(f"-I{p}" for p in includes),
                f"--python_out={scratch}", f"--pyi_out={scratch}"]
        if grpc:
            args.append(f"--grpc_python_out={scratch}")
        # Declared errors are read from protoc's own view of the protos, options resolved.
        descriptors = Path(tmp) / "descriptors.binpb"
        args += [f"--descriptor_set_out={descriptors}", "--include_imports",
                 "--include_source_info"]
        args += [str(p) for p in relative]
        # protoc resolves relative file names against the -I roots; the first root is ours.
        code = _run_protoc(protoc, args, cwd=proto_root)
        if code != 0:
            raise CodegenError(f"protoc failed (exit {code}); see the messages above")

        declared = _declared_errors(descriptors.read_bytes(), relative)
        descriptors.unlink()
        local_packages = {_module_of(r) for r in relative if r.parent.parts}
        local_root_modules = {f"{r.stem}_pb2" for r in relative if not r.parent.parts}
        written: list[Path] = []
        for produced in sorted(scratch.rglob("*")):
            if not produced.is_file():
                continue
            rel = produced.relative_to(scratch)
            destination = target_root / rel
            destination.parent.mkdir(parents=True, exist_ok=True)
            text = _rewrite(produced.read_text(encoding="utf-8"), local_packages,
                            local_root_modules, package)
            destination.write_text(text, encoding="utf-8")
            written.append(destination)
        written += _write_error_modules(declared, target_root)
        if copy_protos:
            for proto, rel in zip(protos, relative, strict=True):
                destination = target_root / rel
                shutil.copyfile(proto, destination)
                written.append(destination)
        written += _add_init_files(target_root, written, Path(out_dir).resolve())
    return written


def _declared_errors(descriptor_set: bytes, relative: Sequence[Path]) -> list[DeclaredError]:
    """The errors the generated files declare, checked against the library's names."""
    from octollm_grpc import codes, errors

    library = {cls.error_code: f"the library's {cls.__name__}" for cls, _ in codes.registered()}
    try:
        return read_declared_errors(descriptor_set, [r.as_posix() for r in relative],
                                    taken_names=errors.__all__, taken_reasons=library)
    except DeclaredErrorProblem as problem:
        raise CodegenError(str(problem)) from None


def _write_error_modules(declared: Sequence[DeclaredError], target_root: Path) -> list[Path]:
    """``x_errors.py`` and ``x_errors.pyi`` beside ``x_pb2.py``, per file declaring errors."""
    by_file: dict[str, list[DeclaredError]] = {}
    for error in declared:
        by_file.setdefault(error.proto_file, []).append(error)
    written: list[Path] = []
    for proto_file, found in sorted(by_file.items()):
        stem = target_root / Path(proto_file).with_suffix("")
        for suffix, render in (("_errors.py", render_module), ("_errors.pyi", render_stub)):
            destination = stem.with_name(stem.name + suffix)
            destination.write_text(render(proto_file, found), encoding="utf-8")
            written.append(destination)
    return written


def _run_protoc(protoc: object, args: Sequence[str], cwd: Path) -> int:
    import os

    previous = Path.cwd()
    os.chdir(cwd)
    try:
        return int(protoc.main(list(args)))  # type: ignore[attr-defined]
    finally:
        os.chdir(previous)


def _add_init_files(target_root: Path, written: list[Path], out_root: Path) -> list[Path]:
    created: list[Path] = []
    folders = {p.parent for p in written}
    for folder in sorted(folders):
        current = folder
        while current != out_root and out_root in current.parents:
            init = current / "__init__.py"
            if not init.exists():
                init.write_text("", encoding="utf-8")
                created.append(init)
            current = current.parent
    return created


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``octollm-grpc generate``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="octollm-grpc generate",
        description="Generate importable Python gRPC code (with .pyi stubs) from .proto files.",
    )
    parser.add_argument("proto_dir", type=Path, help="folder holding your .proto files")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--package", default=None,
                        help="dotted package the code lives in, e.g. acme_gen (recommended)")
    parser.add_argument("-I", "--include", dest="includes", action="append", type=Path,
                        default=[], help="extra import root (repeatable)")
    parser.add_argument("--no-grpc", action="store_true",
                        help="messages only, no *_pb2_grpc.py service stubs")
    parser.add_argument("--copy-protos", action="store_true",
                        help="also copy the .proto files next to the generated code")
    parser.add_argument("files", nargs="*",
                        help="only these .proto files (relative to PROTO_DIR); default: all")
    args = parser.parse_intermixed_args(argv)
    try:
        files = generate(args.proto_dir, args.out, args.package, extra_includes=args.includes,
                         grpc=not args.no_grpc, copy_protos=args.copy_protos, files=args.files)
    except CodegenError as error:
        print(f"octollm-grpc generate: {error}", file=sys.stderr)
        return 1
    for path in files:
        print(path)
    return 0
