"""The public surface: how many objects it has, that their names are unique, and the layers."""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import pkgutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import octollm_grpc

PACKAGE = Path(octollm_grpc.__file__).parent
MAX_PUBLIC = 90
# A sync function and its grpc.aio twin, in an ``aio`` module, may share a name.
AIO_TWINS = {"resilient_channel", "resilient_interceptors", "server_interceptors"}


def _all_modules() -> list[str]:
    names = ["octollm_grpc"]
    for info in pkgutil.walk_packages(octollm_grpc.__path__, "octollm_grpc."):
        if not info.name.startswith("octollm_grpc._proto"):
            names.append(info.name)
    return sorted(names)


def _public_modules() -> list[str]:
    return [m for m in _all_modules() if not any(p.startswith("_") for p in m.split("."))]


def _public_objects() -> tuple[dict[object, tuple[str, str]], dict[str, set[object]]]:
    """Every object named in a public module's ``__all__``, once, with where it was first seen."""
    seen: dict[object, tuple[str, str]] = {}
    by_name: dict[str, set[object]] = defaultdict(set)
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            # Re-exports are one object; plain values (a version string) are keyed by value.
            key: object = (type(value), value) if isinstance(value, (str, int)) else id(value)
            seen.setdefault(key, (module_name, name))
            by_name[name].add(key)
    return seen, by_name


def test_public_surface_is_small() -> None:
    """At most 90 distinct objects over the __all__ of every public module."""
    seen, _ = _public_objects()
    print(f"\npublic objects: {len(seen)} (limit {MAX_PUBLIC})")
    for module, name in sorted(seen.values()):
        print(f"  {module}.{name}")
    assert len(seen) <= MAX_PUBLIC


def test_no_two_public_objects_share_a_name() -> None:
    """Two different public objects never have the same name, but for the aio twins."""
    seen, by_name = _public_objects()
    clashes = {name: sorted(f"{seen[k][0]}.{seen[k][1]}" for k in keys)
               for name, keys in by_name.items() if len(keys) > 1}
    print(f"\nduplicate public names: {sorted(clashes)}")
    assert set(clashes) <= AIO_TWINS
    for name, where in clashes.items():
        assert len(where) == 2 and any(".aio" in w for w in where), (name, where)


def test_every_public_object_is_documented_in_the_api_reference() -> None:
    """Each public module is rendered in docs/api.md; each public object has a docstring with
    an Args section when it takes arguments and a Returns section when it returns a value."""
    api = (PACKAGE.parent / "docs" / "api.md").read_text()
    seen, _ = _public_objects()
    rendered = {line.removeprefix("::: ").strip() for line in api.splitlines()
                if line.startswith("::: ")}
    for module, name in seen.values():
        module_obj = importlib.import_module(module)
        value = getattr(module_obj, name)
        home = getattr(value, "__module__", module)
        if callable(value) or isinstance(value, type):
            doc = inspect.getdoc(value) or ""
            assert doc.strip(), f"{module}.{name} has no docstring"
            if isinstance(value, type) and issubclass(value, enum.Enum):
                continue  # its values are its documentation
            try:
                signature = inspect.signature(value)
            except ValueError:
                continue  # a plain Exception or Warning subclass: builtin __init__, no arguments
            if signature.parameters:
                assert "Args:" in doc, f"{module}.{name} has no Args section"
            returns = signature.return_annotation
            if not isinstance(value, type) and returns not in (None, "None", signature.empty):
                assert "Returns:" in doc or "Yields:" in doc, f"{module}.{name}: no Returns"
        assert module in rendered or home in rendered, f"{module}.{name} is not in docs/api.md"


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """The octollm_grpc modules ``module`` imports at import time (not in functions)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        found.add(f"{base}.{alias.name}")  # a submodule
                    elif base in known:
                        found.add(base)  # a name its __init__ (or module) defines

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    known = set(_all_modules())
    graph: dict[str, set[str]] = {}
    for module in known:
        relative = Path(*module.split(".")[1:])
        path = PACKAGE / relative / "__init__.py"
        if not path.exists():
            path = (PACKAGE / relative).with_suffix(".py")
        edges: set[str] = set()
        for target in _imports(path, module, known):
            edges.add(target)
            # Importing a.b.c runs a.b's __init__ first: an edge, unless a.b encloses us.
            parts = target.split(".")
            for i in range(2, len(parts)):  # the root package encloses everything
                parent = ".".join(parts[:i])
                if not (module == parent or module.startswith(parent + ".")):
                    edges.add(parent)
        # A module's own enclosing packages are already being imported when it runs.
        graph[module] = {e for e in edges if not (module == e or module.startswith(e + "."))}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return found


def test_import_graph_has_no_cycle() -> None:
    """No module imports, through others, a module that imports it (package inits included)."""
    cycles = _cycles(_graph())
    print(f"\nimport cycles: {len(cycles)}")
    for cycle in cycles:
        print("  " + " -> ".join(cycle))
    assert cycles == []


def test_the_cycle_check_finds_a_cycle() -> None:
    """The check itself reports a cycle through a package's __init__."""
    graph = {"a": {"b.x"}, "b": {"b.x"}, "b.x": {"c"}, "c": {"a"}}
    assert _cycles(graph) == [["a", "b.x", "c", "a"]]


@pytest.mark.parametrize("order", ["forward", "reverse", "layers"])
def test_every_module_imports_first_in_a_fresh_interpreter(order: str) -> None:
    """Every module imports cleanly in a fresh interpreter, in several orders."""
    modules = [m for m in _all_modules() if m != "octollm_grpc.__main__"]
    if order == "reverse":
        modules.reverse()
    elif order == "layers":
        modules.sort(key=lambda m: ("_core" not in m, "observability" not in m, m))
    # One fresh interpreter per order; the static check above covers "each module first".
    script = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print('ok', len(sys.argv) - 1)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"ok {len(modules)}"


def test_core_imports_no_grpc_and_nothing_above_it() -> None:
    """octollm_grpc._core imports neither grpc nor any octollm_grpc module outside _core."""
    for path in sorted((PACKAGE / "_core").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] != "grpc", f"{path.name} imports {name}"
                if name.startswith("octollm_grpc"):
                    assert name.startswith("octollm_grpc._core"), f"{path.name} imports {name}"


def test_core_wire_names_match_the_status_package() -> None:
    """The core's copies of the trailer keys are the status package's."""
    from octollm_grpc._core import backoff
    from octollm_grpc.status import _limits

    assert (backoff.DETAILS_KEY, backoff.PUSHBACK_KEY) == (_limits.DETAILS_KEY,
                                                           _limits.PUSHBACK_KEY)


@pytest.mark.parametrize("layer", ["testing", "resilience", "fastapi"])
def test_upper_layers_use_public_names_of_the_others(layer: str) -> None:
    """testing, resilience and fastapi import only public modules of server and client."""
    paths = ([PACKAGE / "fastapi.py"] if layer == "fastapi"
             else sorted((PACKAGE / layer).glob("*.py")))
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[:2] in (["octollm_grpc", "server"], ["octollm_grpc", "client"]):
                    assert not any(p.startswith("_") for p in parts), (path.name, node.module)
                    if layer != "fastapi":
                        module = importlib.import_module(node.module)
                        for alias in node.names:
                            if alias.name == "aio":  # the public aio module
                                continue
                            assert alias.name in getattr(module, "__all__", ()), (
                                path.name, node.module, alias.name)
            if layer == "resilience" and isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("octollm_grpc.client",
                                                   "octollm_grpc.server")), node.module


def test_fixed_entry_points_import() -> None:
    """The names tests outside this repository use import from the documented paths."""
    from octollm_grpc import errors, from_rpc_error, to_status  # noqa: F401
    from octollm_grpc.client import resilient_channel, resilient_interceptors  # noqa: F401
    from octollm_grpc.client.aio import resilient_channel as aio_channel  # noqa: F401
    from octollm_grpc.client.aio import resilient_interceptors as aio_interceptors  # noqa: F401
    from octollm_grpc.fastapi import install_error_handlers  # noqa: F401
    from octollm_grpc.resilience import (  # noqa: F401
        CircuitBreaker,
        CircuitState,
        retry_with_backoff,
        with_fallback,
    )
    from octollm_grpc.server import server_interceptors  # noqa: F401
    from octollm_grpc.server.aio import server_interceptors as aio_server  # noqa: F401
    from octollm_grpc.status import from_rpc_error as decode  # noqa: F401
    from octollm_grpc.status import to_status as encode  # noqa: F401
    from octollm_grpc.testing import FaultInjector, serve  # noqa: F401

    assert CircuitState.HALF_OPEN.value == "half_open"
    assert errors.OctoLLMError.__module__ == "octollm_grpc.errors"


#: Where "seed" is a word of its own and means something else (random seeds, the sample's
#: --arm-seed flag, pytest-randomly's seed).
_OTHER_SEEDS = ("arm-seed", "arm_seed", "ARM_SEED", "randomly-seed", "random seed", "its seed")


def test_user_facing_text_names_the_standard_not_an_internal_word() -> None:
    """No docstring, comment or docs page calls the OctoLLM error-handling standard "seed"."""
    import re

    word = re.compile(r"\bseed'?s?\b", re.IGNORECASE)
    root = PACKAGE.parent
    paths = [p for p in PACKAGE.rglob("*.py") if "_proto" not in p.parts]
    paths += [*(root / "docs").glob("*.md"), root / "README.md"]
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in paths
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if word.search(line) and not any(other in line for other in _OTHER_SEEDS)
    ]
    assert found == []


def test_server_package_loads_no_jwt_stack_until_jwt_verifier_is_used() -> None:
    """Importing the server stacks loads neither PyJWT nor cryptography; JWTVerifier does."""
    code = ("import sys, octollm_grpc.server, octollm_grpc.server.aio\n"
            "print(sorted(m for m in ('jwt', 'cryptography') if m in sys.modules))\n"
            "from octollm_grpc.server import JWTVerifier\n"
            "print(JWTVerifier.__name__, 'jwt' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.splitlines() == ["[]", "JWTVerifier True"]
