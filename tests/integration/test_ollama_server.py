"""The loopback Ollama server itself: a responder's own exception fails its test; scripted 500s do not."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.ollama_server import OllamaServer, RecordedRequest, ScriptedResponse

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration

CLIENT_TIMEOUT = 30.0  # success paths: far beyond any answer time of the loopback server


class ResponderBroke(Exception):
    """Stands for a bug in a test's responder."""


def broken(request: RecordedRequest) -> ScriptedResponse:
    raise ResponderBroke(f"responder bug on {request.path}")


def post_chat(url: str) -> tuple[int, dict[str, Any]]:
    """POST a minimal non-streaming /api/chat request: (HTTP status, JSON body)."""
    body = json.dumps({"model": "m", "stream": False, "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(f"{url}/api/chat", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_a_raising_responder_is_answered_500_and_raised_again_when_the_server_stops() -> None:
    with (
        pytest.raises(ResponderBroke, match="responder bug on /api/chat") as raised,
        OllamaServer(responder=broken) as server,
    ):
        status, body = post_chat(server.url)
        recorded = server.responder_errors
    # asserted outside the block: an assertion error inside it would be replaced by ResponderBroke
    assert status == 500 and "ResponderBroke" in body["error"]  # the client got an answer, no hang
    assert recorded == [raised.value]  # the very exception, with the responder's own frame
    assert any(entry.name == "broken" for entry in raised.traceback)
    assert server.responder_errors == []  # raised once


def test_raise_responder_error_raises_the_first_once_and_notes_the_others() -> None:
    calls = iter(range(3))

    def flaky(_: RecordedRequest) -> ScriptedResponse:
        raise ResponderBroke(f"bug {next(calls)}")

    with OllamaServer(responder=flaky) as server:
        statuses = [post_chat(server.url)[0] for _ in range(3)]
        with pytest.raises(ResponderBroke) as raised:
            server.raise_responder_error()
        server.raise_responder_error()  # nothing left: no error
    assert statuses == [500, 500, 500]
    assert str(raised.value) == "bug 0"
    assert raised.value.__notes__ == [
        "the responder also raised ResponderBroke('bug 1')",
        "the responder also raised ResponderBroke('bug 2')",
    ]


def test_scripted_500s_and_the_default_500_are_answers_not_errors() -> None:
    with OllamaServer(default=ScriptedResponse.http_error(500, "model runner crashed")) as server:
        server.script(ScriptedResponse.http_error(500, "scripted"))
        server.responder = None
        scripted = post_chat(server.url)
        default = post_chat(server.url)
        server.default = None
        nothing_left = post_chat(server.url)
        errors = server.responder_errors
    assert scripted == (500, {"error": "scripted"})
    assert default == (500, {"error": "model runner crashed"})
    assert nothing_left == (500, {"error": "loopback: no scripted response left"})
    assert errors == []


INNER_CONFTEST = """
from tests.ollama_server import ollama_server  # noqa: F401
"""

INNER_TESTS = """
import json
import urllib.error
import urllib.request

from tests.ollama_server import ScriptedResponse


def post_chat(url):
    body = json.dumps({"model": "m", "stream": False, "messages": []}).encode()
    request = urllib.request.Request(url + "/api/chat", data=body)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


class ResponderBroke(Exception):
    pass


def test_expects_a_transient_500_but_its_responder_is_broken(ollama_server):
    def responder(request):
        raise ResponderBroke("KeyError-like bug in the responder")

    ollama_server.responder = responder
    assert post_chat(ollama_server.url) == 500  # looks like the transient error the test expects


def test_a_scripted_500_is_a_deliberate_answer(ollama_server):
    ollama_server.script(ScriptedResponse.http_error(500, "internal error"))
    assert post_chat(ollama_server.url) == 500
"""


def test_the_fixture_fails_the_test_whose_responder_raised_with_that_exception(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner=INNER_TESTS)

    result = pytester.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_expects_a_transient_500_but_its_responder_is_broken*",
            '*raise ResponderBroke("KeyError-like bug in the responder")*',
            "E*ResponderBroke: KeyError-like bug in the responder",
        ]
    )
    assert "test_a_scripted_500_is_a_deliberate_answer" not in "\n".join(
        line for line in result.stdout.lines if line.startswith("ERROR")
    )
