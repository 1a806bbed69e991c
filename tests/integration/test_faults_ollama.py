"""Fault injection, Ollama side: every way the LLM endpoint can fail, through the real ProcessReceipt handler.

Rows of the README "Failure behaviour" table. The loopback server (tests/ollama_server.py) plays
Ollama; the handler runs on moto. For each fault: the error class Step Functions matches on, its
message, how many HTTP calls were made (bounded), and that the table is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from receipt_label import LLMOutputError, LLMRateLimitError, LLMTransientError
from tests.fault_injection import API_KEY, ProcessWorld, process_world
from tests.ollama_server import OllamaServer, RecordedRequest, ScriptedResponse, label_words_responder, words_in_prompt

pytestmark = pytest.mark.integration

FIVE_MB = 5 * 1024 * 1024


def alpha_words(text: str) -> str | None:
    return "PRODUCT_NAME" if text.isalpha() else None


@pytest.fixture
def world(ollama_server: OllamaServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcessWorld]:
    with process_world(ollama_server, monkeypatch, name="faults_ollama") as w:
        w.server.responder = None
        # success paths: a client timeout far beyond any answer time (the timeout fault sets its own)
        monkeypatch.setenv("OLLAMA_TIMEOUT_SECONDS", "30")
        yield w


@dataclass(frozen=True)
class Fault:
    name: str
    answers: list[ScriptedResponse]  # one per chat call, in order
    error: type[Exception]
    message: str  # a fragment of the message the operator sees (Step Functions' Cause)
    chat_calls: int
    timeout: float | None = None  # the client's, for the fault that is a timeout


FAULTS = [
    Fault(
        "http_429",
        [ScriptedResponse.http_error(429, "too many requests, slow down")],
        LLMRateLimitError,
        "Ollama rate limit (HTTP 429): too many requests, slow down",
        1,  # not repeated in the Lambda: Step Functions backs off (no Lambda time spent waiting)
    ),
    Fault(
        "http_500",
        [ScriptedResponse.http_error(500, "internal error")] * 2,
        LLMTransientError,
        "Ollama server error (HTTP 500): internal error",
        2,  # one in-process retry, then Step Functions retries the receipt
    ),
    # The server waits 60 s (stopping it ends the wait), the client 0.4 s: it times out every time.
    Fault("timeout", [ScriptedResponse.answer({"labels": []}, delay=60)] * 2, LLMTransientError, "timed out", 2, 0.4),
    Fault("connection_reset", [ScriptedResponse(reset=True)] * 2, LLMTransientError, "Ollama connection failed", 2),
    Fault(
        "truncated_stream",
        [ScriptedResponse.answer({"labels": []}, truncate=True)] * 2,
        LLMTransientError,
        "Ollama response stream ended before its final chunk (truncated stream)",
        2,
    ),
    Fault(
        "stream_dropped_midway",
        [ScriptedResponse.answer({"labels": []}, drop=True)] * 2,
        LLMTransientError,
        "Ollama",
        2,
    ),
    Fault(
        "not_json",
        [ScriptedResponse.answer("Sure! Here are the labels you asked for.")] * 2,
        LLMOutputError,
        "the model's answer was unusable after 2 call(s): the answer is not valid JSON",
        2,  # the answer, then one repair call
    ),
    Fault(
        "wrong_schema",
        [ScriptedResponse.answer({"words": [{"id": 1, "tag": "TOTAL"}]})] * 2,
        LLMOutputError,
        'the answer must have a "labels" array',
        2,
    ),
    Fault(
        "five_megabyte_answer",
        [ScriptedResponse.answer({"labels": [], "padding": "x" * FIVE_MB})] * 2,
        LLMOutputError,
        "more than the limit of 2000000",
        2,
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_llm_fault_raises_its_typed_error_with_bounded_calls_and_writes_nothing(
    world: ProcessWorld, monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    if fault.timeout is not None:
        monkeypatch.setenv("OLLAMA_TIMEOUT_SECONDS", str(fault.timeout))
    event = world.load()
    before = world.items()
    world.server.script(*fault.answers)

    with pytest.raises(fault.error) as raised:
        world.invoke(event)

    error = raised.value
    assert type(error).__name__ == fault.error.__name__  # the name Step Functions' Retry/Catch matches
    assert fault.message in str(error)
    assert len(str(error)) < 2_000  # a bounded Cause, whatever the model sent
    assert len(world.server.chat_requests) == fault.chat_calls
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in world.server.chat_requests)
    assert world.calls.writes() == []
    assert world.items() == before


def test_a_wrong_schema_answer_is_repaired_once_and_the_repaired_labels_are_written(world: ProcessWorld) -> None:
    event = world.load()
    world.server.script(ScriptedResponse.answer([{"line_id": 1, "word_id": 1, "label": "MERCHANT_NAME"}]))
    world.server.responder = label_words_responder(alpha_words)

    result = world.invoke(event)

    assert result["llm_calls"] == 2 and result["labels_added"] == len(world.labels(event)) > 0
    repair_prompt = world.server.chat_requests[1].messages[-1]["content"]
    assert "JSON object" in repair_prompt  # the model was told what was wrong


def test_labels_for_words_that_do_not_exist_are_rejected_and_the_rest_written(world: ProcessWorld) -> None:
    event = world.load()
    good = label_words_responder(alpha_words)

    def with_ghost_words(request: RecordedRequest) -> ScriptedResponse:
        labels = json.loads(good(request).text)["labels"]
        labels.append({"line_id": 999, "word_id": 1, "label": "TAX", "reasoning": "a word that is not there"})
        return ScriptedResponse.answer({"labels": labels})

    world.server.responder = with_ghost_words

    result = world.invoke(event)

    labels = world.labels(event)
    assert result["labels_rejected"] == 1 and result["llm_calls"] == 1
    assert result["labels_added"] == len(labels) > 0
    assert all(label.line_id != 999 for label in labels)


def test_an_answer_mostly_about_words_that_do_not_exist_fails_after_one_repair_and_writes_nothing(
    world: ProcessWorld,
) -> None:
    event = world.load()
    before = world.items()

    def ghosts(request: RecordedRequest) -> ScriptedResponse:
        words = words_in_prompt(request)
        labels: list[dict[str, Any]] = [
            {"line_id": w.line_id + 500, "word_id": w.word_id, "label": "PRODUCT_NAME", "reasoning": "?"} for w in words
        ]
        return ScriptedResponse.answer({"labels": labels})

    world.server.responder = ghosts

    with pytest.raises(LLMOutputError) as raised:
        world.invoke(event)

    assert type(raised.value).__name__ == "LLMOutputError"
    assert "items are invalid" in str(raised.value) and "on this receipt" in str(raised.value)
    assert len(world.server.chat_requests) == 2
    assert world.calls.writes() == []
    assert world.items() == before
