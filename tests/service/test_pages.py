"""ListTasks pages against the real service: forged tokens refused, every page readable.

A ``page_token`` the service did not issue is INVALID_ARGUMENT, never INTERNAL (Hypothesis
throws garbage, near-misses and out-of-range positions at the running service); a page stays
well under grpcio's default 4 MiB receive limit whatever the descriptions hold, and the
``next_page_token`` chain still lists every task exactly once.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.service.harness import RunningService, running_service

NOT_OURS = "page_token is not a token this service issued"
MAX_SEQ = 2**63 - 1
#: grpcio's default max receive message length.
DEFAULT_RECEIVE_LIMIT = 4 * 1024 * 1024


def _stub(channel: grpc.Channel) -> tasks_pb2_grpc.TaskServiceStub:
    return tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with running_service(tmp_path_factory.mktemp("pages"), "--rate-limit", "0") as running:
        yield running


@pytest.fixture(scope="module")
def stub(service: RunningService) -> Iterator[tasks_pb2_grpc.TaskServiceStub]:
    with grpc.insecure_channel(service.target) as channel:  # a default grpcio client
        stub = _stub(channel)
        stub.CreateTask(tasks_pb2.CreateTaskRequest(description="one task"), timeout=10)
        yield stub


def _b64(text: str | bytes, *, urlsafe: bool = True, pad: bool = False) -> str:
    data = text.encode() if isinstance(text, str) else text
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    return encoded if pad else encoded.rstrip("=")


def _issued(token: str) -> bool:
    """The oracle: exactly the unpadded urlsafe base64 of ``after:N``, N canonical, in range."""
    match = re.fullmatch(r"[A-Za-z0-9_-]*", token)
    if not match or not token:
        return False
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except ValueError:
        return False
    found = re.fullmatch(r"after:(0|[1-9][0-9]*)", text)
    return bool(found) and int(found.group(1)) <= MAX_SEQ and _b64(text) == token


_garbage = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80),
    st.binary(min_size=1, max_size=60).map(_b64),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40).map(
        lambda t: _b64("after:" + t)),
    st.builds(lambda n, urlsafe, pad, fmt: _b64(fmt.format(n), urlsafe=urlsafe, pad=pad),
              st.integers(min_value=-10**40, max_value=10**40), st.booleans(), st.booleans(),
              st.sampled_from(["after:{}", "after:+{}", "after: {}", "after:0{}", "after:{} ",
                               "after:{:_}", "before:{}", "after:{}.0"])),
    st.integers(min_value=0, max_value=MAX_SEQ).map(lambda n: _b64(f"after:{n}")),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=_garbage)
def test_any_token_not_issued_is_invalid_argument(stub: tasks_pb2_grpc.TaskServiceStub,
                                                  token: str) -> None:
    """Whatever the token, the answer is a page (ours) or INVALID_ARGUMENT, never INTERNAL."""
    request = tasks_pb2.ListTasksRequest(page_size=5, page_token=token)
    if _issued(token):
        stub.ListTasks(request, timeout=10)
        return
    with pytest.raises(grpc.RpcError) as raised:
        stub.ListTasks(request, timeout=10)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, raised.value
    assert raised.value.details() == NOT_OURS


def test_overflowing_position_is_invalid_argument_and_not_critical(
        service: RunningService, stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    """The issue's token (base64 of after: and 26 nines): INVALID_ARGUMENT, nothing critical."""
    token = _b64("after:99999999999999999999999999", urlsafe=False, pad=True)
    with pytest.raises(grpc.RpcError) as raised:
        stub.ListTasks(tasks_pb2.ListTasksRequest(page_token=token), timeout=10)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == NOT_OURS
    events = [json.loads(line) for line in service.logs().splitlines() if line.startswith("{")]
    assert [e for e in events if e.get("level") == "critical"] == []
    assert [e for e in events if e.get("error_code") == "INTERNAL_ERROR"] == []


def test_pages_of_large_tasks_fit_a_default_client(tmp_path: Path) -> None:
    """200 tasks of 10,000 3-byte characters, page_size 1000: pages under 4 MiB, all listed."""
    description = "€" * 10_000  # 30,000 bytes in UTF-8: 200 of them are ~6 MB
    with running_service(tmp_path, "--rate-limit", "0") as big, \
            grpc.insecure_channel(big.target) as channel:  # default options: 4 MiB limit
        stub = _stub(channel)
        with ThreadPoolExecutor(max_workers=4) as pool:
            created = list(pool.map(lambda _: stub.CreateTask(tasks_pb2.CreateTaskRequest(
                description=description), timeout=20).task.task_id, range(200)))
        pages: list[tasks_pb2.ListTasksResponse] = []
        token = ""
        for _ in range(200):  # bounded: at most one page per task
            page = stub.ListTasks(tasks_pb2.ListTasksRequest(page_size=1000, page_token=token),
                                  timeout=20)
            pages.append(page)
            token = page.next_page_token
            if not token:
                break
    listed = [t.task_id for page in pages for t in page.tasks]
    assert sorted(listed) == sorted(created)  # each task exactly once
    assert len(pages) >= 2
    assert max(page.ByteSize() for page in pages) < DEFAULT_RECEIVE_LIMIT // 2
    assert all(len(page.tasks) >= 1 for page in pages)
