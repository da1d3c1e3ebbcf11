"""docs/http.md: its Python example runs as written, and its curl walkthrough is what the
gateway answers today."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http.test_gateway import http_url
from tests.readme import DOCS, run_examples, section_examples
from tests.service.harness import RunningService, running_service

PAGE = DOCS / "http.md"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_handlers_example_prints_what_the_page_shows() -> None:
    """The handlers example runs as written and prints the lines the page shows."""
    lines, logs = run_examples(section_examples("handlers", PAGE))
    text = PAGE.read_text(encoding="utf-8")
    shown = text.split("prints\n\n```text\n", 1)[1].split("```", 1)[0].splitlines()
    assert lines == shown
    assert [event["log_level"] for event in logs if event["event"] == "http.request.failed"] == [
        "warning", "warning", "critical", "warning"]


def _curl_examples() -> list[tuple[str, int, dict[str, Any]]]:
    """(command, status, JSON body) of each walkthrough curl call on :8080 with no task id."""
    text = PAGE.read_text(encoding="utf-8")
    body = text.split("<!-- walkthrough:begin -->", 1)[1].split("<!-- walkthrough:end -->")[0]
    found = []
    for block in re.findall(r"```console\n(.*?)```", body, flags=re.S):
        first, _, output = block.partition("\n")
        status = re.search(r"^HTTP/1.1 (\d+)", output, flags=re.M)
        if (first.startswith("$ curl") and ":8080/" in first and status
                and not UUID.search(first)):
            found.append((first[2:], int(status.group(1)),
                          json.loads(output.strip().splitlines()[-1])))
    return found


def _send(client: httpx.Client, command: str) -> httpx.Response:
    """Do what the curl command line does (-X, -H, -d and the URL), with httpx."""
    words = shlex.split(command)[1:]
    method, headers, data, url = "GET", {}, None, ""
    while words:
        word = words.pop(0)
        if word == "-X":
            method = words.pop(0)
        elif word == "-H":
            key, _, value = words.pop(0).partition(": ")
            headers[key] = value
        elif word == "-d":
            data, method = words.pop(0), ("POST" if method == "GET" else method)
        elif not word.startswith("-"):
            url = word
    path = url.split(":8080", 1)[1]
    return client.request(method, path, headers=headers, content=data)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with running_service(tmp_path_factory.mktemp("docs"), "--http-port", "0",
                         "--rate-limit", "0") as running:
        yield running


def test_walkthrough_errors_are_what_the_gateway_answers(service: RunningService) -> None:
    """Every error call of the walkthrough gets the status and body the page shows."""
    examples = _curl_examples()
    assert len(examples) >= 4
    with httpx.Client(base_url=http_url(service), timeout=30) as client:
        for command, status, body in examples:
            response = _send(client, command)
            assert (response.status_code, response.json()) == (status, body), command
            if "x-request-id:" in command:
                assert response.headers["x-request-id"] == "my-trace-42"

