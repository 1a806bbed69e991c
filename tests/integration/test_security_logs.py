"""The Ollama key never reaches a log line or the LangGraph state, even with every logger at DEBUG.

The real ProcessReceipt handler reads the key from (moto's) Secrets Manager and labels a receipt
against the loopback server, with the root logger, the handler's and every library logger
(botocore, urllib3, httpx, httpcore, langchain, langgraph, ollama, receipt_label) at DEBUG,
LangChain's global debug printing every chain's inputs and outputs, and a callback recording
every node's input and output state. The server must receive the key in the Authorization header;
nothing else may hold it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.globals import set_debug

from receipt_label import LLMRequestError, LLMTransientError, pipeline
from tests.fault_injection import API_KEY, ProcessWorld, process_world
from tests.ollama_server import OllamaServer, ScriptedResponse, label_words_responder

pytestmark = pytest.mark.integration

KEY_FRAGMENTS = (API_KEY, API_KEY[4:20], API_KEY[-16:])  # the key, and pieces of it (a cut or masked copy)
LIBRARY_LOGGERS = (
    "process_receipt",
    "botocore",
    "boto3",
    "urllib3",
    "httpx",
    "httpcore",
    "langchain",
    "langgraph",
    "ollama",
    "receipt_label",
)


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.name, record.getMessage(), repr(record.args), repr(record.__dict__)]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        self.lines.append(" | ".join(parts))


class StateRecorder(BaseCallbackHandler):
    """Every chain / node input and output of the graph run (the LangGraph state as it flows)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.seen.append(repr(serialized) + repr(inputs) + repr(kwargs))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.seen.append(repr(outputs))

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.seen.append(repr(serialized) + repr(messages) + repr(kwargs))

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.seen.append(repr(response))

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.seen.append(repr(error))


@pytest.fixture
def debug_world(
    ollama_server: OllamaServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ProcessWorld, Everything]]:
    capture = Everything()
    root = logging.getLogger()
    saved = root.level, {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    with process_world(ollama_server, monkeypatch, name="security_logs") as world:
        # Capture starts once the test's own setup (which stores the key in Secrets Manager) is done.
        world.server.responder = label_words_responder(lambda t: "PRODUCT_NAME" if t.isalpha() else None)
        root.addHandler(capture)
        root.setLevel(logging.DEBUG)
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)
        set_debug(True)
        try:
            yield world, capture
        finally:
            set_debug(False)
            root.removeHandler(capture)
            root.setLevel(saved[0])
            for name, level in saved[1].items():
                logging.getLogger(name).setLevel(level)


def leaks(text: str) -> list[str]:
    return [fragment for fragment in KEY_FRAGMENTS if fragment in text]


def test_the_key_is_sent_to_ollama_but_never_logged_or_put_in_graph_state_even_at_debug(
    debug_world: tuple[ProcessWorld, Everything], capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    world, capture = debug_world
    recorder = StateRecorder()
    label_receipt = pipeline.label_receipt

    def label_with_recorder(details: Any, *, llm: Any, config: Any = None) -> Any:
        return label_receipt(details, llm=llm, config={**(config or {}), "callbacks": [recorder]})

    monkeypatch.setattr(pipeline, "label_receipt", label_with_recorder)
    labeled = world.load("receipt_grocery.json")
    result = world.invoke(labeled)
    # Failures log more (exceptions, retries): a rejected key and a server error, too.
    world.server.responder = None
    world.server.script(ScriptedResponse.http_error(401, "invalid key"))
    with pytest.raises(LLMRequestError):
        world.invoke(world.load("receipt_pharmacy.json"))
    world.server.script(*[ScriptedResponse.http_error(500, "boom")] * 2)
    with pytest.raises(LLMTransientError):
        world.invoke(world.load("receipt_restaurant.json"))

    assert result["labels_added"] > 0
    assert [r.headers["authorization"] for r in world.server.chat_requests] == [f"Bearer {API_KEY}"] * 4
    out, err = capfd.readouterr()
    assert '"level":"DEBUG"' in out or "[DEBUG]" in out or any("DEBUG" in line for line in capture.lines)
    assert any(line.startswith("httpcore") for line in capture.lines)  # library debug logs were on
    assert any(line.startswith("botocore") for line in capture.lines)
    assert any(line.startswith("process_receipt | receipt failed") for line in capture.lines)  # with its traceback
    assert recorder.seen and any("messages" in s for s in recorder.seen)  # the state was seen
    assert leaks(out + err) == []
    assert [line[:200] for line in capture.lines if leaks(line)] == []
    assert [s[:200] for s in recorder.seen if leaks(s)] == []
    assert [name for name, value in os.environ.items() if leaks(value)] == []  # nor the environment
