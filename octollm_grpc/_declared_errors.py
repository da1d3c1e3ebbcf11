"""Errors declared in protos: read the ``(octollm.errors.v1.*)`` options from a descriptor set.

An API declares its errors as an ``ErrorReason`` enum (AIP-193) whose values carry an
``ErrorSpec`` (``protos/octollm/errors/v1/options.proto``). This module reads them from the
``FileDescriptorSet`` protoc writes (``--descriptor_set_out --include_imports
--include_source_info``), never from the .proto text, and checks them: whatever would make a
bad class or an ambiguous wire contract is a [`CodegenError`][octollm_grpc.codegen.CodegenError]
naming the file, the enum and the value.

The options are decoded with a descriptor pool built from the set itself (it holds
``options.proto``), so reading works whatever copy of the generated options module is
installed, or none.
"""

from __future__ import annotations

import keyword
import re
import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "BASE_CLASS",
    "DOMAIN_EXTENSION",
    "ERROR_EXTENSION",
    "MAX_REASON_LENGTH",
    "DeclaredError",
    "DeclaredErrorProblem",
    "class_name",
    "read_declared_errors",
    "template_fields",
]

#: The options' full names (their numbers, 58301 and 58302, are in protobuf's in-house range).
DOMAIN_EXTENSION = "octollm.errors.v1.domain"
ERROR_EXTENSION = "octollm.errors.v1.error"
_OPTIONS_FILE = "octollm/errors/v1/options.proto"

#: google.rpc.Code -> (the library class it decodes to, the HTTP status google.rpc.Code names).
#: The classes are those of `octollm_grpc.codes.class_for_status_code` (a test pins it).
BASE_CLASS: dict[str, tuple[str, int]] = {
    "CANCELLED": ("CancelledCallError", 499),
    "UNKNOWN": ("SystemError", 500),
    "INVALID_ARGUMENT": ("ValidationError", 400),
    "DEADLINE_EXCEEDED": ("TimeoutError", 504),
    "NOT_FOUND": ("NotFoundError", 404),
    "ALREADY_EXISTS": ("AlreadyExistsError", 409),
    "PERMISSION_DENIED": ("AuthorizationError", 403),
    "RESOURCE_EXHAUSTED": ("ResourceExhaustedError", 429),
    "FAILED_PRECONDITION": ("InvalidStateError", 400),
    "ABORTED": ("AbortedError", 409),
    "OUT_OF_RANGE": ("OutOfRangeError", 400),
    "UNIMPLEMENTED": ("UnimplementedError", 501),
    "INTERNAL": ("SystemError", 500),
    "UNAVAILABLE": ("NetworkError", 503),
    "DATA_LOSS": ("SystemError", 500),
    "UNAUTHENTICATED": ("AuthenticationError", 401),
}
_CODE_NAMES = {number: name for number, name in enumerate(
    ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
     "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
     "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
     "UNAUTHENTICATED"])}

#: AIP-193: ``[A-Z][A-Z0-9_]+[A-Z0-9]``, at most 63 characters.
_REASON = re.compile(r"[A-Z][A-Z0-9_]+[A-Z0-9]")
MAX_REASON_LENGTH = 63
# Names a generated module binds itself: a class may not take them.
_RESERVED_NAMES = frozenset({"errors", "register", "grpc", "annotations"})


class DeclaredErrorProblem(ValueError):
    """One declared error is unusable; the message names the file, the enum and the value."""


@dataclass(frozen=True, slots=True)
class DeclaredError:
    """One annotated enum value: everything the generated class and the catalog need."""

    proto_file: str
    """The declaring file, relative to its import root: ``acme/orders/v1/orders.proto``."""
    enum: str
    """The enum's full name: ``acme.orders.v1.ErrorReason``."""
    reason: str
    """The value's name: ``ErrorInfo.reason`` and the class's ``error_code``."""
    number: int
    domain: str
    code: str
    """The ``google.rpc.Code`` name (also the ``grpc.StatusCode`` member)."""
    http_status: int
    """The declared status, or the one the code implies when the spec gives 0."""
    message: str
    """The message template: ``"Order {order_id} not found"``."""
    fields: tuple[str, ...]
    """The template's fields, in order of first use (the constructor's keywords)."""
    retryable: bool
    comment: str
    """The value's proto comment (leading, else trailing), ``""`` if none."""

    @property
    def class_name(self) -> str:
        """``ORDER_NOT_FOUND`` -> ``OrderNotFoundError``."""
        return class_name(self.reason)

    @property
    def base_class(self) -> str:
        """The library class (in ``octollm_grpc.errors``) the generated class extends."""
        return BASE_CLASS[self.code][0]


def class_name(reason: str) -> str:
    """The class name for a reason: CamelCase words plus ``Error`` (not doubled)."""
    name = "".join(word.capitalize() for word in reason.split("_") if word)
    return name if name.endswith("Error") else name + "Error"


def _where(proto_file: str, enum: str, value: str | None = None) -> str:
    return f"{proto_file}: enum {enum}" + (f", value {value}" if value else "")


def template_fields(template: str) -> tuple[str, ...]:
    """The ``{name}`` fields of a message template, in order of first use.

    Raises:
        ValueError: a field that is not a plain identifier (``{0}``, ``{}``, ``{a.b}``,
            ``{a!r}``, ``{a:>5}``, a Python keyword) or unbalanced braces.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"message template {template!r} is malformed: {error}") from None
    fields: list[str] = []
    for _text, name, spec, conversion in parsed:
        if name is None:
            continue
        if (not name.isidentifier() or keyword.iskeyword(name) or name == "self"
                or spec or conversion):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (
                f":{spec}" if spec else "") + "}"
            raise ValueError(
                f"message template field {shown} is not a plain identifier field such as "
                "{order_id} (no positions, attributes, indexes, conversions or formats, "
                "no Python keywords)")
        if name not in fields:
            fields.append(name)
    return tuple(fields)


# -- reading the descriptor set ---------------------------------------------------------------


class _Options:
    """Decodes the two extensions from raw option bytes with the set's own descriptors."""

    def __init__(self, files: Sequence[descriptor_pb2.FileDescriptorProto]) -> None:
        pool = descriptor_pool.DescriptorPool()
        for file in files:
            pool.Add(file)
        self.domain = pool.FindExtensionByName(DOMAIN_EXTENSION)
        self.error = pool.FindExtensionByName(ERROR_EXTENSION)
        self._enum_options = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("google.protobuf.EnumOptions"))
        self._value_options = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("google.protobuf.EnumValueOptions"))

    def domain_of(self, options: descriptor_pb2.EnumOptions) -> str | None:
        parsed: Any = self._enum_options.FromString(options.SerializeToString())
        if not parsed.HasExtension(self.domain):
            return None
        return str(parsed.Extensions[self.domain])

    def error_of(self, options: descriptor_pb2.EnumValueOptions) -> Any:
        parsed: Any = self._value_options.FromString(options.SerializeToString())
        if not parsed.HasExtension(self.error):
            return None
        return parsed.Extensions[self.error]


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    found: dict[tuple[int, ...], str] = {}
    for location in file.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        if text.strip():
            lines = [line.strip() for line in text.strip("\n").splitlines()]
            found[tuple(location.path)] = "\n".join(lines).strip()
    return found


_MESSAGE_TYPE, _ENUM_TYPE, _NESTED_TYPE, _NESTED_ENUM, _ENUM_VALUE = 4, 5, 3, 4, 2


def _enums(file: descriptor_pb2.FileDescriptorProto) -> Iterator[
        tuple[str, descriptor_pb2.EnumDescriptorProto, tuple[int, ...]]]:
    """Every enum of the file (nested ones too): full name, descriptor, source path."""
    prefix = f"{file.package}." if file.package else ""
    for index, enum in enumerate(file.enum_type):
        yield prefix + enum.name, enum, (_ENUM_TYPE, index)

    def walk(message: descriptor_pb2.DescriptorProto, name: str, path: tuple[int, ...]) -> Iterator[
            tuple[str, descriptor_pb2.EnumDescriptorProto, tuple[int, ...]]]:
        for index, enum in enumerate(message.enum_type):
            yield f"{name}.{enum.name}", enum, (*path, _NESTED_ENUM, index)
        for index, nested in enumerate(message.nested_type):
            yield from walk(nested, f"{name}.{nested.name}", (*path, _NESTED_TYPE, index))

    for index, message in enumerate(file.message_type):
        yield from walk(message, prefix + message.name, (_MESSAGE_TYPE, index))


def read_declared_errors(
    descriptor_set: bytes | descriptor_pb2.FileDescriptorSet,
    files: Iterable[str] | None = None,
    *,
    taken_names: Iterable[str] = (),
    taken_reasons: dict[str, str] | None = None,
) -> list[DeclaredError]:
    """The declared errors of ``files`` (all files of the set when ``None``), checked.

    Args:
        descriptor_set: protoc's ``FileDescriptorSet`` (serialised or parsed), with imports
            and source info.
        files: the proto files (names as in the set) whose errors to read.
        taken_names: class names the generated classes may not take (the library's).
        taken_reasons: error codes already used, each with who uses it (the library's).

    Returns:
        The errors in file, enum and value order.

    Raises:
        DeclaredErrorProblem: the first problem found, naming the file, enum and value.
    """
    if isinstance(descriptor_set, bytes):
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    all_files = list(descriptor_set.file)
    wanted = set(files) if files is not None else {f.name for f in all_files}
    if not any(f.name == _OPTIONS_FILE for f in all_files):
        return []  # nothing imports the options: nothing is declared
    options = _Options(all_files)
    reasons: dict[str, str] = dict(taken_reasons or {})
    declared: list[DeclaredError] = []
    for file in all_files:
        if file.name not in wanted:
            continue
        comments = _comments(file)
        names: dict[str, str] = {name: "the library (octollm_grpc.errors)" for name in taken_names}
        names.update({name: "the generated module itself" for name in _RESERVED_NAMES})
        for enum_name, enum, path in _enums(file):
            domain = options.domain_of(enum.options)
            for index, value in enumerate(enum.value):
                spec = options.error_of(value.options)
                if spec is None:
                    continue
                where = _where(file.name, enum_name, value.name)
                if domain is None or not domain.strip():
                    raise DeclaredErrorProblem(
                        f"{_where(file.name, enum_name)}: declares errors (value {value.name}) "
                        f"but has no option ({DOMAIN_EXTENSION}), the ErrorInfo.domain, "
                        'e.g. option (octollm.errors.v1.domain) = "orders.acme.example";')
                declared.append(_declared(
                    file.name, enum_name, value, spec, domain,
                    comments.get((*path, _ENUM_VALUE, index), ""), where, reasons, names))
    return declared


def _declared(proto_file: str, enum_name: str, value: descriptor_pb2.EnumValueDescriptorProto,
              spec: Any, domain: str, comment: str, where: str, reasons: dict[str, str],
              names: dict[str, str]) -> DeclaredError:
    reason = value.name
    if len(reason) > MAX_REASON_LENGTH:
        raise DeclaredErrorProblem(
            f"{where}: the reason is {len(reason)} characters long; AIP-193 allows at most "
            f"{MAX_REASON_LENGTH}")
    if not _REASON.fullmatch(reason):
        raise DeclaredErrorProblem(
            f"{where}: the reason must be UPPER_SNAKE_CASE ([A-Z][A-Z0-9_]+[A-Z0-9], AIP-193)")
    code_number = int(spec.code)
    code = _CODE_NAMES.get(code_number)
    if code is None:
        raise DeclaredErrorProblem(f"{where}: code {code_number} is not a google.rpc.Code")
    if code == "OK":
        raise DeclaredErrorProblem(
            f"{where}: the code is OK (or unset); an error needs a failing code such as "
            "NOT_FOUND or FAILED_PRECONDITION")
    http_status = int(spec.http_status) or BASE_CLASS[code][1]
    if not 400 <= http_status <= 599:
        raise DeclaredErrorProblem(
            f"{where}: http_status {spec.http_status} is not a 4xx or 5xx status (0: derived "
            "from the code)")
    if not spec.message.strip():
        raise DeclaredErrorProblem(
            f"{where}: the message template is empty; give the message callers read, e.g. "
            '"Order {order_id} not found"')
    try:
        fields = template_fields(spec.message)
    except ValueError as error:
        raise DeclaredErrorProblem(f"{where}: {error}") from None
    owner = reasons.get(reason)
    if owner is not None:
        raise DeclaredErrorProblem(
            f"{where}: the reason {reason} is already declared by {owner}; a client rebuilds "
            "the class from the reason, so each must be unique")
    reasons[reason] = _where(proto_file, enum_name, reason)
    name = class_name(reason)
    holder = names.get(name)
    if holder is not None:
        raise DeclaredErrorProblem(
            f"{where}: its class name {name} collides with a name of {holder}; rename the "
            "reason")
    names[name] = f"value {reason}"
    return DeclaredError(
        proto_file=proto_file, enum=enum_name, reason=reason, number=value.number,
        domain=domain.strip(), code=code, http_status=http_status, message=spec.message,
        fields=fields, retryable=bool(spec.retryable), comment=comment)
