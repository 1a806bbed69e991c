"""The real ChatOllama (via create_chat_model) against the loopback Ollama server."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import Runnable
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run

from receipt_dynamo import ReceiptDetails, parse_receipt_document
from receipt_label import (
    ANSWER_JSON_SCHEMA,
    LabelingOptions,
    LLMOutputError,
    LLMRateLimitError,
    LLMRequestError,
    LLMTransientError,
    OllamaSettings,
    build_labeling_graph,
    create_chat_model,
    label_receipt,
)
from tests.helpers import REPO_ROOT
from tests.ollama_server import OllamaServer, ScriptedResponse, label_words_responder, words_in_prompt
from tests.scripted_chat import well_formed_answer

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "tests" / "fixtures"
SECRET = "sk-integration-SECRET-5f1e2d3c4b5a"
#: The client timeout of success paths: far beyond any answer time of the loopback server, even on a busy machine.
TIMEOUT = 30.0
#: Only the timing-out case uses a short client timeout, against a server that waits STALL (stopping the
#: server ends the wait), so the client times out every time.
SHORT_TIMEOUT = 0.5
STALL = 60.0
FAST = LabelingOptions(retry_delay_seconds=0.0)


def fixture(name: str) -> ReceiptDetails:
    return parse_receipt_document(json.loads((FIXTURES / name).read_text()))


def chat_model(
    server: OllamaServer, *, stream: bool = True, model: str = "gpt-oss:120b", timeout: float = TIMEOUT
) -> Runnable[Any, Any]:
    llm = create_chat_model(OllamaSettings(base_url=server.url, model=model, timeout_seconds=timeout), api_key=SECRET)
    return llm if stream else llm.bind(stream=False)


def price_label(text: str) -> str | None:
    return "LINE_TOTAL" if re.fullmatch(r"\$?\d+\.\d\d", text) else "PRODUCT_NAME"


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "plain"])
def test_one_call_carries_bearer_model_schema_and_temperature(ollama_server: OllamaServer, stream: bool) -> None:
    details = fixture("receipt_grocery.json")
    ollama_server.script(ScriptedResponse.answer(well_formed_answer(details, lambda w: price_label(w.text)), chunks=7))

    result = label_receipt(details, llm=chat_model(ollama_server, stream=stream))

    assert result.llm_calls == 1
    assert len(result.labels) == len(details.words)
    assert {lab.label_proposed_by for lab in result.labels} == {"receipt_label:gpt-oss:120b"}
    [request] = ollama_server.chat_requests
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    body = request.json
    assert body["model"] == "gpt-oss:120b"
    assert body["format"] == ANSWER_JSON_SCHEMA
    assert body["options"]["temperature"] == 0
    assert body["stream"] is stream
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    # the prompt addresses every word by its ids
    assert [(w.line_id, w.word_id, w.text) for w in words_in_prompt(request)] == [
        (w.line_id, w.word_id, w.text) for w in details.words
    ]


def test_no_key_means_no_authorization_header(ollama_server: OllamaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)  # the ollama client would send it on its own
    ollama_server.responder = label_words_responder(price_label)
    llm = create_chat_model(OllamaSettings(base_url=ollama_server.url, timeout_seconds=TIMEOUT))
    label_receipt(fixture("receipt_pharmacy.json"), llm=llm)
    assert "authorization" not in ollama_server.chat_requests[0].headers


def test_rate_limit_raises_llm_rate_limit_error_without_retrying_in_process(ollama_server: OllamaServer) -> None:
    ollama_server.script(ScriptedResponse.http_error(429, "too many concurrent requests", headers={"Retry-After": "2"}))
    ollama_server.responder = label_words_responder(price_label)
    with pytest.raises(LLMRateLimitError, match="429"):
        label_receipt(fixture("receipt_grocery.json"), llm=chat_model(ollama_server), options=FAST)
    assert len(ollama_server.chat_requests) == 1


FAILURES = {
    "http-500": ScriptedResponse.http_error(500, "internal error"),
    "http-503": ScriptedResponse.http_error(503, "overloaded"),
    "timeout": ScriptedResponse.answer('{"labels": []}', delay=STALL),
    "dropped-connection": ScriptedResponse.answer('{"labels": []}', drop=True),
    "connection-reset": ScriptedResponse.answer('{"labels": []}', reset=True),
}
STREAM_FAILURES = {
    "truncated-stream": ScriptedResponse.answer('{"labels": []}', truncate=True),
    "empty-truncated-stream": ScriptedResponse.answer("", truncate=True),
    "error-line-in-stream": ScriptedResponse.answer('{"labels": []}', stream_error="model runner crashed"),
}


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "plain"])
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_server_failures_raise_llm_transient_error(ollama_server: OllamaServer, failure: str, stream: bool) -> None:
    ollama_server.script(FAILURES[failure], FAILURES[failure])
    llm = chat_model(ollama_server, stream=stream, timeout=SHORT_TIMEOUT if failure == "timeout" else TIMEOUT)
    with pytest.raises(LLMTransientError) as raised:
        label_receipt(fixture("receipt_grocery.json"), llm=llm, options=FAST)
    assert len(ollama_server.chat_requests) == 2  # one in-process retry, then the state machine's turn
    assert ("timed out" in str(raised.value)) is (failure == "timeout")


@pytest.mark.parametrize("failure", sorted(STREAM_FAILURES))
def test_broken_streams_raise_llm_transient_error(ollama_server: OllamaServer, failure: str) -> None:
    ollama_server.script(STREAM_FAILURES[failure], STREAM_FAILURES[failure])
    with pytest.raises(LLMTransientError):
        label_receipt(fixture("receipt_grocery.json"), llm=chat_model(ollama_server), options=FAST)
    assert len(ollama_server.chat_requests) == 2


def test_connection_refused_raises_llm_transient_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = create_chat_model(OllamaSettings(base_url=f"http://127.0.0.1:{port}", timeout_seconds=TIMEOUT))
    with pytest.raises(LLMTransientError):
        label_receipt(fixture("receipt_grocery.json"), llm=llm, options=FAST)


def test_a_transient_failure_then_success_is_retried_in_process(ollama_server: OllamaServer) -> None:
    ollama_server.script(ScriptedResponse.http_error(502, "bad gateway"))
    ollama_server.responder = label_words_responder(price_label)
    result = label_receipt(fixture("receipt_grocery.json"), llm=chat_model(ollama_server), options=FAST)
    assert result.llm_calls == 2
    assert len(ollama_server.chat_requests) == 2
    assert result.labels


def test_unauthorized_raises_llm_request_error_once(ollama_server: OllamaServer) -> None:
    ollama_server.script(ScriptedResponse.http_error(401, "unauthorized"))
    with pytest.raises(LLMRequestError) as info:
        label_receipt(fixture("receipt_grocery.json"), llm=chat_model(ollama_server), options=FAST)
    assert info.value.status_code == 401
    assert len(ollama_server.chat_requests) == 1


def test_malformed_answer_is_repaired_over_http(ollama_server: OllamaServer) -> None:
    details = fixture("receipt_restaurant.json")
    bad = '{"labels": [{"line_id": 1, "word_id": 1, "label": "MERCHANT_NAME", "reasoning": "name"'
    ollama_server.script(ScriptedResponse.answer(bad))
    ollama_server.responder = label_words_responder(price_label)

    result = label_receipt(details, llm=chat_model(ollama_server))

    assert result.llm_calls == 2 and result.repaired
    first, second = ollama_server.chat_requests
    assert [m["role"] for m in second.json["messages"]] == ["system", "user", "assistant", "user"]
    assert second.json["messages"][2]["content"] == bad
    assert "not valid JSON" in second.json["messages"][3]["content"]
    assert second.json["messages"][:2] == first.json["messages"]
    assert len(result.labels) == len(details.words)


def test_an_answer_cut_at_the_token_limit_is_repaired_with_that_reason(ollama_server: OllamaServer) -> None:
    details = fixture("receipt_restaurant.json")
    ollama_server.script(
        ScriptedResponse.answer('{"labels": [{"line_id": 1, "word_id": 1, "label": "MERC', done_reason="length")
    )
    ollama_server.responder = label_words_responder(price_label)

    result = label_receipt(details, llm=chat_model(ollama_server))

    assert result.llm_calls == 2
    assert "cut off at the output token limit" in ollama_server.chat_requests[1].json["messages"][-1]["content"]
    assert len(result.labels) == len(details.words)


def test_token_usage_reported_by_the_server_is_summed(ollama_server: OllamaServer) -> None:
    details = fixture("receipt_pharmacy.json")
    ollama_server.script(
        ScriptedResponse.answer("not json", prompt_eval_count=1200, eval_count=30),
        ScriptedResponse.answer(
            well_formed_answer(details, lambda w: "PRODUCT_NAME"), prompt_eval_count=1300, eval_count=900
        ),
    )
    result = label_receipt(details, llm=chat_model(ollama_server))
    assert (result.input_tokens, result.output_tokens) == (2500, 930)


def test_two_garbage_answers_raise_llm_output_error(ollama_server: OllamaServer) -> None:
    ollama_server.default = ScriptedResponse.answer("I cannot help with receipts.")
    with pytest.raises(LLMOutputError):
        label_receipt(fixture("receipt_restaurant.json"), llm=chat_model(ollama_server))
    assert len(ollama_server.chat_requests) == 2


def test_a_thousand_word_receipt_over_http(ollama_server: OllamaServer) -> None:
    doc = {
        "image_id": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
        "receipt_id": 3,
        "lines": [
            {
                "line_id": i,
                "text": "x",
                "words": [
                    {"word_id": j, "text": f"SKU{i:03d}-{j}" if j < 10 else f"{i}.{j:02d}"} for j in range(1, 11)
                ],
            }
            for i in range(1, 101)
        ],
    }
    details = parse_receipt_document(doc)
    ollama_server.responder = label_words_responder(price_label)

    result = label_receipt(details, llm=chat_model(ollama_server))

    assert len(details.words) == 1000
    assert result.llm_calls == 1
    assert len(result.labels) == 1000
    assert sum(lab.label == "LINE_TOTAL" for lab in result.labels) == 100


class _CollectingTracer(BaseTracer):
    """Records every run (inputs, outputs, serialized model, metadata) as a tracer backend would."""

    def __init__(self) -> None:
        super().__init__()
        self.dumps: list[str] = []

    def _persist_run(self, run: Run) -> None:
        self._collect(run)

    def _collect(self, run: Run) -> None:
        self.dumps.append(json.dumps(run.model_dump(), default=repr))
        for child in run.child_runs:
            self._collect(child)

    def _on_run_update(self, run: Run) -> None:
        self.dumps.append(json.dumps(run.model_dump(), default=repr))

    def _start_trace(self, run: Run) -> None:
        super()._start_trace(run)
        self.dumps.append(json.dumps(run.model_dump(), default=repr))


def test_the_key_never_reaches_graph_state_logs_or_traces(
    ollama_server: OllamaServer, caplog: pytest.LogCaptureFixture
) -> None:
    details = fixture("receipt_grocery.json")
    bad = "not json"
    ollama_server.script(ScriptedResponse.answer(bad), ScriptedResponse.http_error(500, "flaky"))
    ollama_server.responder = label_words_responder(price_label)
    llm = chat_model(ollama_server)
    tracer = _CollectingTracer()

    with caplog.at_level(logging.DEBUG):
        graph = build_labeling_graph(llm, model_name="gpt-oss:120b", options=FAST)
        states = list(
            graph.stream(
                {"details": details, "model_name": "gpt-oss:120b"},
                config={"callbacks": [tracer]},
                stream_mode="values",
            )
        )
        ollama_server.script(ScriptedResponse.http_error(401, "unauthorized"))
        with pytest.raises(LLMRequestError) as info:
            label_receipt(details, llm=llm, config={"callbacks": [tracer]})

    assert ollama_server.chat_requests[0].headers["authorization"] == f"Bearer {SECRET}"  # the key was used
    assert len(states) > 3 and states[-1]["labels"]
    for state in states:
        assert SECRET not in repr(state)
    assert tracer.dumps and all(SECRET not in dump for dump in tracer.dumps)
    assert any("ChatOllama" in dump for dump in tracer.dumps)  # the model's run was traced
    assert caplog.records and all(SECRET not in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_cli_prints_a_table_of_words_and_labels(ollama_server: OllamaServer) -> None:
    ollama_server.responder = label_words_responder(price_label)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "receipt_label",
            str(FIXTURES / "receipt_restaurant.json"),
            "--base-url",
            ollama_server.url,
            "--model",
            "llama3.2:3b",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "OLLAMA_API_KEY": SECRET, "OLLAMA_TIMEOUT_SECONDS": "30"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].split() == ["line", "word", "text", "label", "reasoning"]
    assert re.search(r"^\s*1\s+1\s+\S+\s+PRODUCT_NAME\s+\S", completed.stdout, re.MULTILINE)
    assert "LINE_TOTAL" in completed.stdout
    assert "1 LLM call(s), model llama3.2:3b" in completed.stdout
    assert ollama_server.chat_requests[0].json["model"] == "llama3.2:3b"
    assert ollama_server.chat_requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in completed.stdout + completed.stderr


def test_cli_reports_bad_documents_and_llm_errors(ollama_server: OllamaServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    doc = json.loads((FIXTURES / "receipt_restaurant.json").read_text())
    doc["lines"][2]["words"][0]["word_id"] = -1
    bad.write_text(json.dumps(doc))
    env = {"PATH": "/usr/bin:/bin", "OLLAMA_TIMEOUT_SECONDS": "30"}
    cmd = [sys.executable, "-m", "receipt_label"]

    completed = subprocess.run(
        [*cmd, str(bad), "--base-url", ollama_server.url],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "lines[2].words[0].word_id" in completed.stderr

    ollama_server.default = ScriptedResponse.http_error(429, "slow down")
    good = str(FIXTURES / "receipt_restaurant.json")
    completed = subprocess.run(
        [*cmd, good, "--base-url", ollama_server.url],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert "LLMRateLimitError" in completed.stderr
