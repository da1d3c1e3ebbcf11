"""The lean runtime install: the library imports without its extras, and says which to install.

Each test runs a fresh interpreter whose import system refuses the extras' modules (a real
``sys.meta_path`` finder), as on a machine where only ``pip install octollm-grpc`` ran.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Installed by the extras, never by the runtime dependencies.
EXTRA_MODULES = ("grpc_tools", "grpc_reflection", "grpc_health", "jwt", "cryptography")

_BLOCKER = textwrap.dedent(
    f"""
    import sys

    EXTRAS = {EXTRA_MODULES!r}

    class NotInstalled:
        '''Finds the extras' modules as missing, as a lean install would.'''

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in EXTRAS:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    """
)


def run_without_extras(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (cwd ``tmp_path``) that cannot import the extras."""
    return subprocess.run(
        [sys.executable, "-c", _BLOCKER + textwrap.dedent(code)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_the_blocker_really_hides_the_extras(tmp_path: Path) -> None:
    """The import hook works: grpcio-tools, installed here, is not importable under it."""
    result = run_without_extras(
        """
        try:
            import grpc_tools.protoc
        except ModuleNotFoundError as error:
            print("missing", error.name)
        """,
        tmp_path,
    )
    assert result.stdout.split() == ["missing", "grpc_tools"], result.stderr


def test_every_library_module_imports_without_the_extras(tmp_path: Path) -> None:
    """All of ``octollm_grpc`` (the extras' own modules aside) imports on the runtime deps."""
    result = run_without_extras(
        """
        import importlib, pkgutil
        import octollm_grpc

        imported = []
        for info in pkgutil.walk_packages(octollm_grpc.__path__, "octollm_grpc."):
            try:
                importlib.import_module(info.name)
            except ModuleNotFoundError as error:
                if (error.name or "").split(".")[0] in EXTRAS:
                    raise
                continue  # another extra's module (fastapi, redis, ...): not ours to judge
            imported.append(info.name)
        print(" ".join(imported))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    for module in ("octollm_grpc.codegen", "octollm_grpc.server", "octollm_grpc.server.aio",
                   "octollm_grpc.client", "octollm_grpc.client.aio", "octollm_grpc.status",
                   "octollm_grpc.testing"):
        assert module in imported


def test_generate_without_grpcio_tools_names_the_extra(tmp_path: Path) -> None:
    """`octollm-grpc generate` without grpcio-tools exits 1 naming the pip install to run."""
    (tmp_path / "protos").mkdir()
    (tmp_path / "protos" / "x.proto").write_text('syntax = "proto3";\npackage x;\n')
    result = run_without_extras(
        """
        import sys
        from octollm_grpc.__main__ import main
        sys.exit(main(["generate", "protos", "--out", "out"]))
        """,
        tmp_path,
    )
    assert result.returncode == 1
    assert "pip install 'octollm-grpc[codegen]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_generate_api_without_grpcio_tools_raises_codegen_error(tmp_path: Path) -> None:
    """The Python API raises CodegenError (not a bare ImportError) naming the extra."""
    result = run_without_extras(
        """
        from octollm_grpc.codegen import CodegenError, generate
        try:
            generate(".", "out")
        except CodegenError as error:
            print(type(error.__cause__).__name__, "|", error)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    cause, message = result.stdout.strip().split(" | ")
    assert cause == "ModuleNotFoundError"
    assert message.endswith("run pip install 'octollm-grpc[codegen]'")
