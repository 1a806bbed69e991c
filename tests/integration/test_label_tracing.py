"""LangSmith tracing: on with a flag and a key (or an explicit tracer), off otherwise; never carries the Ollama key.

A loopback HTTP server (pytest-httpserver) stands in for the LangSmith API and records what the
LangSmith client posts; run compression is disabled so the bodies can be searched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import langsmith.run_trees as run_trees
import langsmith.utils as ls_utils
import pytest
from langchain_core.tracers.langchain import LangChainTracer, wait_for_all_tracers
from langsmith import Client
from pytest_httpserver import HTTPServer

from receipt_dynamo import parse_receipt_document
from receipt_label import OllamaSettings, create_chat_model, label_receipt
from tests.helpers import REPO_ROOT
from tests.ollama_server import OllamaServer, label_words_responder

pytestmark = pytest.mark.integration

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "receipt_pharmacy.json"
OLLAMA_KEY = "sk-ollama-TRACE-SECRET-77aa"
ENV_VARS = [
    f"{ns}_{name}"
    for ns in ("LANGSMITH", "LANGCHAIN")
    for name in ("TRACING", "TRACING_V2", "API_KEY", "ENDPOINT", "PROJECT", "DISABLE_RUN_COMPRESSION")
]


def _clear_env_cache() -> None:
    """langsmith caches environment lookups; tests change the environment."""
    ls_utils.get_env_var.cache_clear()  # type: ignore[attr-defined]


@pytest.fixture
def langsmith_api(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPServer]:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANGSMITH_ENDPOINT", httpserver.url_for("").rstrip("/"))
    monkeypatch.setenv("LANGSMITH_DISABLE_RUN_COMPRESSION", "true")
    httpserver.expect_request("/info").respond_with_json({"version": "loopback", "batch_ingest_config": {}})
    httpserver.expect_request("/runs/multipart", method="POST").respond_with_json({})
    httpserver.expect_request("/runs/batch", method="POST").respond_with_json({})
    httpserver.expect_request("/runs", method="POST").respond_with_json({})
    _clear_env_cache()
    run_trees._CLIENT = None  # the shared client reads the endpoint when first created
    yield httpserver
    wait_for_all_tracers()
    run_trees._CLIENT = None
    _clear_env_cache()


def _label(ollama_server: OllamaServer, **kwargs: object) -> None:
    ollama_server.responder = label_words_responder(lambda text: "PRODUCT_NAME")
    llm = create_chat_model(OllamaSettings(base_url=ollama_server.url, timeout_seconds=30), api_key=OLLAMA_KEY)
    details = parse_receipt_document(json.loads(FIXTURE.read_text()))
    result = label_receipt(details, llm=llm, **kwargs)  # type: ignore[arg-type]
    assert result.labels and result.llm_calls == 1


def _run_posts(server: HTTPServer) -> list[bytes]:
    return [req.get_data() for req, _ in server.log if req.path.startswith("/runs")]


def test_flag_and_key_trace_the_run_without_the_ollama_key(
    langsmith_api: HTTPServer, ollama_server: OllamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "true")
    monkeypatch.setenv("LANGCHAIN_API_KEY", "ls-test-key")
    _clear_env_cache()

    _label(ollama_server)
    wait_for_all_tracers()

    posts = _run_posts(langsmith_api)
    assert posts, "no trace reached the LangSmith endpoint"
    assert all(not req.headers.get("Content-Encoding") for req, _ in langsmith_api.log)
    body = b"".join(posts)
    assert b"label_receipt" in body and b"ChatOllama" in body  # the graph run and the model run
    assert OLLAMA_KEY.encode() not in body


def test_an_explicit_tracer_traces_without_any_environment_flag(
    langsmith_api: HTTPServer, ollama_server: OllamaServer
) -> None:
    client = Client(api_url=langsmith_api.url_for("").rstrip("/"), api_key="ls-explicit-key")
    tracer = LangChainTracer(client=client, project_name="receipt-labeling-test")

    _label(ollama_server, config={"callbacks": [tracer]})
    tracer.wait_for_futures()
    client.flush()

    body = b"".join(_run_posts(langsmith_api))
    assert b"label_receipt" in body
    assert OLLAMA_KEY.encode() not in body


def test_a_flag_without_a_key_sends_nothing(
    langsmith_api: HTTPServer, ollama_server: OllamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "true")
    _clear_env_cache()

    _label(ollama_server)
    wait_for_all_tracers()

    assert _run_posts(langsmith_api) == []
