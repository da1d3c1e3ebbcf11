"""Stub generation for users' protos, the catalog command, and the installed wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from octollm_grpc import _catalog_markdown as catalog
from octollm_grpc.codegen import CodegenError, generate

ROOT = Path(__file__).resolve().parents[2]

USER_PROTO = """
syntax = "proto3";
package acme.billing.v1;
import "google/rpc/status.proto";
import "octollm/errors/v1/errors.proto";
import "acme/common/v1/money.proto";

message ChargeRequest { acme.common.v1.Money amount = 1; }
message ChargeResponse {
  google.rpc.Status status = 1;
  octollm.errors.v1.ErrorEnvelope error = 2;
}
service BillingService { rpc Charge(ChargeRequest) returns (ChargeResponse); }
"""
MONEY_PROTO = """
syntax = "proto3";
package acme.common.v1;
message Money { int64 units = 1; string currency = 2; }
"""


def _user_protos(tmp_path: Path) -> Path:
    protos = tmp_path / "protos"
    (protos / "acme/billing/v1").mkdir(parents=True)
    (protos / "acme/common/v1").mkdir(parents=True)
    (protos / "acme/billing/v1/billing.proto").write_text(USER_PROTO)
    (protos / "acme/common/v1/money.proto").write_text(MONEY_PROTO)
    return protos


def test_generate_user_folder_end_to_end(tmp_path: Path) -> None:
    """The CLI turns a proto folder into a package whose service works over a real channel."""
    protos = _user_protos(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "octollm_grpc", "generate", str(protos), "--out", str(out),
         "--package", "acme_gen"],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    base = out / "acme_gen/acme/billing/v1"
    assert {p.name for p in base.iterdir()} >= {
        "billing_pb2.py", "billing_pb2.pyi", "billing_pb2_grpc.py", "__init__.py"}
    source = (base / "billing_pb2.py").read_text()
    assert "from acme_gen.acme.common.v1 import money_pb2" in source
    assert "from octollm_grpc._proto.octollm.errors.v1 import errors_pb2" in source
    assert "from acme_gen.acme.billing.v1 import billing_pb2" in (
        base / "billing_pb2_grpc.py").read_text()

    script = textwrap.dedent("""
        import sys
        from concurrent import futures
        import grpc
        from acme_gen.acme.billing.v1 import billing_pb2, billing_pb2_grpc

        class Billing(billing_pb2_grpc.BillingServiceServicer):
            def Charge(self, request, context):
                resp = billing_pb2.ChargeResponse()
                resp.status.message = f"charged {request.amount.units} {request.amount.currency}"
                resp.error.error_code = "NONE"
                return resp

        server = grpc.server(futures.ThreadPoolExecutor(2))
        billing_pb2_grpc.add_BillingServiceServicer_to_server(Billing(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = billing_pb2_grpc.BillingServiceStub(channel)
            reply = stub.Charge(billing_pb2.ChargeRequest(amount={"units": 5, "currency": "EUR"}))
        server.stop(None)
        print(reply.status.message, reply.error.error_code)
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=out, capture_output=True,
                         text=True, check=False, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "charged 5 EUR NONE"


def test_generate_reports_bad_input(tmp_path: Path) -> None:
    """A broken proto, an empty folder or a bad package name gives a clear error, no traceback."""
    with pytest.raises(CodegenError, match=r"no \.proto files"):
        generate(tmp_path, tmp_path / "o")
    with pytest.raises(CodegenError, match="dotted Python name"):
        generate(_user_protos(tmp_path), tmp_path / "o", "not-a-package")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/x.proto").write_text('syntax = "proto3"; message {')
    result = subprocess.run(
        [sys.executable, "-m", "octollm_grpc", "generate", str(tmp_path / "bad"),
         "--out", str(tmp_path / "o2")], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "protoc failed" in result.stderr and "Traceback" not in result.stderr


def test_catalog_command_prints_the_docs_table() -> None:
    """`octollm-grpc catalog` prints the table, and the error page's table is that output."""
    result = subprocess.run([sys.executable, "-m", "octollm_grpc", "catalog"],
                            capture_output=True, text=True, check=True)
    assert result.stdout == catalog.render_markdown()
    assert "| TaskNotFoundError | TASK_NOT_FOUND | NOT_FOUND | 404 | no |" in result.stdout
    assert result.stdout in (ROOT / "docs" / "errors.md").read_text()


def test_committed_generated_code_imports_from_an_installed_wheel(tmp_path: Path) -> None:
    """The wheel holds only octollm_grpc, and its generated code imports when installed."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                    str(dist), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheels = list(dist.glob("octollm_grpc-*.whl"))
    assert len(wheels) == 1
    import zipfile

    names = zipfile.ZipFile(wheels[0]).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("octollm_grpc-")} == {"octollm_grpc"}
    assert "octollm_grpc/_proto/octollm/errors/v1/errors.proto" in names
    assert "octollm_grpc/_proto/octollm/errors/v1/errors_pb2.pyi" in names
    assert "octollm_grpc/py.typed" in names

    # A fresh venv sees the dependencies of this one, but not its editable checkout.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin/python"
    site = subprocess.run([sys.executable, "-c", "import grpc, os; print(os.path.dirname("
                           "os.path.dirname(grpc.__file__)))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    target_site = subprocess.run([str(python), "-c", "import sysconfig; print("
                                  "sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    Path(target_site, "deps.pth").write_text(site + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheels[0])], check=True, timeout=300)
    check = textwrap.dedent("""
        import octollm_grpc, octollm_grpc.status as s
        from octollm_grpc._proto.octollm.errors.v1 import errors_pb2
        from octollm_grpc import errors
        st = s.to_status(errors.TaskNotFoundError("t"))
        print(octollm_grpc.__file__)
        print(errors_pb2.ErrorEnvelope.DESCRIPTOR.full_name, st.code.name)
    """)
    run = subprocess.run([str(python), "-c", check], cwd=tmp_path, capture_output=True,
                         text=True, check=False, env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr
    installed, line = run.stdout.strip().splitlines()
    assert installed.startswith(target_site)
    assert line == "octollm.errors.v1.ErrorEnvelope NOT_FOUND"


def test_shipped_proto_is_the_source() -> None:
    """The envelope .proto shipped for users' imports is the one in protos/."""
    shipped = ROOT / "octollm_grpc/_proto/octollm/errors/v1/errors.proto"
    assert shipped.read_text() == (ROOT / "protos/octollm/errors/v1/errors.proto").read_text()


_PICKLE_CHECK = """
import pickle, sys
sys.path.insert(0, sys.argv[1])
from acme_gen.acme.billing.v1 import billing_pb2
from octollm_grpc._proto.octollm.errors.v1 import errors_pb2
request = billing_pb2.ChargeRequest()
request.amount.units = 7
again = pickle.loads(pickle.dumps(request))
assert again == request and type(again) is billing_pb2.ChargeRequest, again
assert type(request).__module__ == "acme_gen.acme.billing.v1.billing_pb2", type(request).__module__
envelope = errors_pb2.ErrorEnvelope(error_code="X")
assert pickle.loads(pickle.dumps(envelope)) == envelope
print("ok")
"""


def test_generated_messages_pickle(tmp_path: Path) -> None:
    """Generated classes name their real module (the package prefix included), so they pickle.

    Run in a fresh interpreter: the generated protos register in protobuf's default pool.
    """
    out = tmp_path / "out"
    generate(_user_protos(tmp_path), out, "acme_gen")
    result = subprocess.run([sys.executable, "-c", _PICKLE_CHECK, str(out)],
                            capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.stdout.strip() == "ok", result.stderr
