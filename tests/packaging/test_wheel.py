"""The built wheel, installed as a user would: into a fresh venv outside the repository, with
only its declared runtime dependencies, it serves and decodes a typed error end to end."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import octollm_grpc

ROOT = Path(__file__).resolve().parents[2]

# A user's script: a real server with the interceptors, a resilient channel, a typed catch.
ROUND_TRIP = textwrap.dedent(
    """
    import asyncio
    from concurrent import futures

    import grpc
    import octollm_grpc
    from octollm_grpc import TaskNotFoundError
    from octollm_grpc.client import resilient_channel
    from octollm_grpc.client import aio as client_aio
    from octollm_grpc.server import aio as server_aio
    from octollm_grpc.server import server_interceptors

    def get_task(request, context):
        raise TaskNotFoundError(request.decode())

    async def get_task_async(request, context):
        raise TaskNotFoundError(request.decode())

    def handlers(behavior):
        return (grpc.method_handlers_generic_handler(
            "acme.Tasks", {"Get": grpc.unary_unary_rpc_method_handler(behavior)}),)

    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=server_interceptors())
    server.add_generic_rpc_handlers(handlers(get_task))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with resilient_channel(f"127.0.0.1:{port}") as channel:
        try:
            channel.unary_unary("/acme.Tasks/Get")(b"t-1", timeout=10)
        except TaskNotFoundError as error:
            print("sync", error.code().name, error.details["task_id"], error.details())
    server.stop(None)

    async def aio_round_trip():
        server = grpc.aio.server(interceptors=server_aio.server_interceptors())
        server.add_generic_rpc_handlers(handlers(get_task_async))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with client_aio.resilient_channel(f"127.0.0.1:{port}") as channel:
                try:
                    await channel.unary_unary("/acme.Tasks/Get")(b"t-2", timeout=10)
                except TaskNotFoundError as error:
                    print("aio", error.code().name, error.details["task_id"], error.details())
        finally:
            await server.stop(None)

    asyncio.run(aio_round_trip())
    print("from", octollm_grpc.__file__)
    """
)

# Modules only the extras bring; the lean install must not have them.
EXTRA_MODULES = ("grpc_tools", "grpc_reflection", "grpc_health")


def runtime_pins() -> list[str]:
    """requirements-dev.txt's pins of the runtime dependencies (their wheels are cached)."""
    names = {"grpcio", "grpcio-status", "protobuf", "googleapis-common-protos", "structlog",
             "prometheus-client"}
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()
    return [line for line in lines if line.split("==")[0] in names]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build --wheel`` of this checkout (built once for this module)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                    str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("octollm_grpc-*.whl")
    return built


def test_wheel_metadata_version_is_the_package_version(wheel: Path) -> None:
    """One source for the version: the wheel's metadata says octollm_grpc.__version__."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(name).decode())
    assert metadata["Version"] == octollm_grpc.__version__
    assert wheel.name.startswith(f"octollm_grpc-{octollm_grpc.__version__}-")
    assert metadata["License-Expression"] == "Apache-2.0"
    requires = metadata.get_all("Requires-Dist") or []
    runtime = sorted(re.split(r"[<>=!;\[ ]", r)[0] for r in requires if "extra ==" not in r)
    assert runtime == ["googleapis-common-protos", "grpcio", "grpcio-status",
                       "prometheus-client", "protobuf", "structlog"]
    assert {"codegen", "service"} <= set(metadata.get_all("Provides-Extra") or [])


def test_wheel_in_a_fresh_venv_round_trips_a_typed_error(wheel: Path, tmp_path: Path) -> None:
    """pip install of the wheel alone (runtime deps only) serves and catches a typed error."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(runtime_pins()) + "\n")
    # The same versions as the dev venv, so pip takes them from its cache.
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-c", str(constraints), str(wheel)],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)

    listed = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in "
                             f"{EXTRA_MODULES!r} if u.find_spec(m)])"],
                            capture_output=True, text=True, check=True, cwd=tmp_path)
    assert listed.stdout.strip() == "[]"

    run = subprocess.run([python, "-c", ROUND_TRIP], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    # structlog's default logger writes the server's failed-call events to stdout too.
    printed = [line for line in run.stdout.splitlines() if "grpc.call.failed" not in line]
    assert printed[0] == "sync NOT_FOUND t-1 Task t-1 not found"
    assert printed[1] == "aio NOT_FOUND t-2 Task t-2 not found"
    assert printed[2].startswith(f"from {env_dir}/lib/")
    assert run.stderr.count("grpc.call.failed") == 2 and "grpc.call.failed" not in run.stdout
