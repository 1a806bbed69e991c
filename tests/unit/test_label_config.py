"""Settings from the environment, the ChatOllama factory, the error mapping and the tracing switch."""

from __future__ import annotations

import json

import httpx
import pytest
from langchain_ollama import ChatOllama
from langsmith.utils import tracing_is_enabled
from ollama import ResponseError
from pydantic import SecretStr

from receipt_dynamo import parse_receipt_document
from receipt_label import (
    ANSWER_JSON_SCHEMA,
    LLMRateLimitError,
    LLMRequestError,
    LLMTransientError,
    OllamaSettings,
    SettingsError,
    create_chat_model,
    label_receipt,
    tracing_enabled,
)
from receipt_label.errors import LLMAuthError, LLMModelNotFoundError, classify_llm_exception
from receipt_label.llm import BearerAuth
from tests.scripted_chat import ScriptedChatModel

pytestmark = pytest.mark.unit

SECRET = "sk-unit-test-0123456789abcdef"


def test_settings_defaults() -> None:
    settings = OllamaSettings.from_env({})
    assert settings.base_url == "https://ollama.com"
    assert settings.model == "gpt-oss:120b"
    assert settings.api_key is None
    assert settings.timeout_seconds == 120
    assert settings.num_ctx is None


def test_settings_from_environment() -> None:
    settings = OllamaSettings.from_env(
        {
            "OLLAMA_BASE_URL": "http://localhost:11434/",
            "OLLAMA_MODEL": "qwen3:8b",
            "OLLAMA_API_KEY": SECRET,
            "OLLAMA_TIMEOUT_SECONDS": "7.5",
            "OLLAMA_NUM_CTX": "32768",
        }
    )
    assert settings.base_url == "http://localhost:11434"
    assert settings.model == "qwen3:8b"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == SECRET
    assert settings.timeout_seconds == 7.5
    assert settings.num_ctx == 32768


def test_the_key_is_never_printed_by_the_settings() -> None:
    settings = OllamaSettings.from_env({"OLLAMA_API_KEY": SECRET})
    for text in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        json.dumps(settings.model_dump(), default=str),
    ):
        assert SECRET not in text


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OLLAMA_TIMEOUT_SECONDS": "soon"}, "OLLAMA_TIMEOUT_SECONDS"),
        ({"OLLAMA_TIMEOUT_SECONDS": "0"}, "OLLAMA_TIMEOUT_SECONDS"),
        ({"OLLAMA_BASE_URL": "ollama.com"}, "OLLAMA_BASE_URL"),
        ({"OLLAMA_BASE_URL": f"https://user:{SECRET}@ollama.com"}, "OLLAMA_BASE_URL"),
        ({"OLLAMA_NUM_CTX": "-1"}, "OLLAMA_NUM_CTX"),
    ],
)
def test_invalid_settings_name_the_variable_without_echoing_values(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        OllamaSettings.from_env({**env, "OLLAMA_API_KEY": SECRET})
    assert variable in str(info.value)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_chat_model_is_configured_for_labeling() -> None:
    settings = OllamaSettings(base_url="http://127.0.0.1:9", model="m:1b", timeout_seconds=3, num_ctx=8192)
    llm = create_chat_model(settings, api_key=SECRET)

    assert isinstance(llm, ChatOllama)
    assert llm.model == "m:1b"
    assert llm.base_url == "http://127.0.0.1:9"
    assert llm.temperature == 0
    assert llm.format == ANSWER_JSON_SCHEMA
    assert llm.num_ctx == 8192
    assert llm.client_kwargs is not None
    assert llm.client_kwargs["timeout"] == httpx.Timeout(3)
    # the key is only inside the auth object; the model's repr (what traces record) does not show it
    assert SECRET not in repr(llm) and SECRET not in str(llm.client_kwargs)
    request = httpx.Request("POST", "http://127.0.0.1:9/api/chat")
    flow = llm.client_kwargs["auth"].auth_flow(request)
    assert next(flow).headers["Authorization"] == f"Bearer {SECRET}"


def test_explicit_key_wins_over_settings_and_no_key_sends_no_auth() -> None:
    settings = OllamaSettings(api_key=SecretStr("from-settings"))
    llm = create_chat_model(settings, api_key=SECRET)
    request = next(llm.client_kwargs["auth"].auth_flow(httpx.Request("GET", "http://x")))  # type: ignore[index]
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert "auth" not in (create_chat_model(OllamaSettings()).client_kwargs or {})


def test_bearer_auth_hides_the_key() -> None:
    auth = BearerAuth(SECRET)
    assert SECRET not in repr(auth) and SECRET not in str(auth)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ResponseError("slow down", 429), LLMRateLimitError),
        (ResponseError("boom", 500), LLMTransientError),
        (ResponseError("bad gateway", 502), LLMTransientError),
        (ResponseError("unavailable", 503), LLMTransientError),
        (ResponseError("request timeout", 408), LLMTransientError),
        (ResponseError("model runner crashed"), LLMTransientError),  # an error line inside a stream
        (ResponseError("unauthorized", 401), LLMAuthError),
        (ResponseError("forbidden", 403), LLMAuthError),
        (ResponseError("model 'x' not found, try pulling it first", 404), LLMModelNotFoundError),
        (ResponseError("404 page not found", 404), LLMRequestError),  # a wrong base URL path, not the model
        (ResponseError("bad request", 400), LLMRequestError),
        (httpx.ReadTimeout("timed out"), LLMTransientError),
        (httpx.ConnectTimeout("timed out"), LLMTransientError),
        (httpx.ConnectError("refused"), LLMTransientError),
        (httpx.RemoteProtocolError("peer closed connection"), LLMTransientError),
        (httpx.ReadError("connection reset by peer"), LLMTransientError),
        (ConnectionError("Failed to connect to Ollama"), LLMTransientError),
        (json.JSONDecodeError("Unterminated string", '{"a', 2), LLMTransientError),
        (ValueError("No data received from Ollama stream."), LLMTransientError),
        (httpx.UnsupportedProtocol("ftp"), LLMRequestError),
    ],
)
def test_error_mapping(exc: BaseException, expected: type[Exception]) -> None:
    mapped = classify_llm_exception(exc)
    assert type(mapped) is expected


def test_programming_errors_are_not_mapped() -> None:
    assert classify_llm_exception(KeyError("x")) is None
    assert classify_llm_exception(ValueError("something else")) is None


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, False),
        ({"LANGCHAIN_TRACING_V2": "true"}, False),
        ({"LANGCHAIN_API_KEY": "ls-key"}, False),
        ({"LANGCHAIN_TRACING_V2": "true", "LANGCHAIN_API_KEY": "ls-key"}, True),
        ({"LANGSMITH_TRACING": "true", "LANGSMITH_API_KEY": "ls-key"}, True),
        ({"LANGCHAIN_TRACING_V2": "false", "LANGCHAIN_API_KEY": "ls-key"}, False),
    ],
)
def test_tracing_needs_the_flag_and_a_key(env: dict[str, str], enabled: bool) -> None:
    assert tracing_enabled(env) is enabled


def test_a_tracing_flag_without_a_key_turns_tracing_off_during_labeling(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "LANGSMITH_TRACING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "true")
    seen: list[object] = []

    def answer(_messages: object) -> str:
        seen.append(tracing_is_enabled())
        return '{"labels": []}'

    details = parse_receipt_document(
        {
            "image_id": "5d0c3a3e-8f55-4a8e-9a0c-1b2c3d4e5f60",
            "receipt_id": 1,
            "lines": [{"line_id": 1, "text": "A", "words": [{"word_id": 1, "text": "A"}]}],
        }
    )
    label_receipt(details, llm=ScriptedChatModel(answers=[answer]))
    assert seen == [False]
