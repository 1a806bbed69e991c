"""receipt_label.lambda_wiring without AWS or a network: a fresh ``ContainerWiring`` over a plain namespace.

What a container builds once from its environment (the table, the secrets provider, the chat models with
the key from Secrets Manager, the LangSmith tracer) and the preflight's failure line. The handlers'
use of it: tests/unit/test_handler_process_receipt.py and test_handler_validate_labels.py.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx
import langsmith
import pytest

from receipt_dynamo import DynamoClient
from receipt_label import LLMAuthError, lambda_wiring
from receipt_label.lambda_wiring import SECRET_MAX_AGE_SECONDS, ContainerWiring
from receipt_label.pipeline import FixedChatModel
from tests.scripted_chat import ScriptedChatModel

pytestmark = pytest.mark.unit

OLLAMA_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ollama-AbCdEf"
LANGSMITH_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:langsmith-AbCdEf"
ENDPOINT = "http://127.0.0.1:9/ollama"


class FakeSecrets:
    """Powertools' ``SecretsProvider.get`` semantics in memory: a cached value unless ``force_fetch``."""

    def __init__(self, stored: dict[str, Any]) -> None:
        self.stored = stored
        self.cached: dict[str, Any] = {}
        self.gets: list[dict[str, Any]] = []
        self.providers = 0  # SecretsProvider() instances created

    def get(self, name: str, *, max_age: int | None = None, force_fetch: bool = False) -> Any:
        self.gets.append({"name": name, "max_age": max_age, "force_fetch": force_fetch})
        if force_fetch or name not in self.cached:
            self.cached[name] = self.stored[name]
        return self.cached[name]


class FakeLangSmithClient:
    """Records what ``langsmith.Client`` was built with (the real one starts a background thread)."""

    def __init__(self, api_url: str | None = None, *, api_key: str | None = None) -> None:
        self.api_url, self.api_key = api_url, api_key


@pytest.fixture
def namespace() -> dict[str, Any]:
    """A handler module's globals as a fresh container has them."""
    return {}


@pytest.fixture
def wiring(namespace: dict[str, Any]) -> ContainerWiring:
    return ContainerWiring(namespace)


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> FakeSecrets:
    """The secrets every ``SecretsProvider()`` the wiring creates reads; ``providers`` counts them."""
    fake = FakeSecrets({OLLAMA_ARN: "k-1", LANGSMITH_ARN: "ls-1"})

    def provider() -> FakeSecrets:
        fake.providers += 1
        return fake

    monkeypatch.setattr(lambda_wiring, "SecretsProvider", provider)
    for name in ("OLLAMA_API_KEY_SECRET_ARN", "LANGSMITH_API_KEY_SECRET_ARN", "OLLAMA_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return fake


def bearer(llm: Any) -> str | None:
    """The Authorization header the chat model's HTTP client would send (None: no auth)."""
    auth = llm.client_kwargs.get("auth")
    if auth is None:
        return None
    request = next(auth.auth_flow(httpx.Request("POST", f"{ENDPOINT}/api/chat")))
    return str(request.headers["Authorization"])


# ---- the table ----------------------------------------------------------------------------------


def test_the_table_client_is_created_once_from_dynamodb_table_name(
    wiring: ContainerWiring, namespace: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYNAMODB_TABLE_NAME", "receipts")

    client = wiring.dynamo()

    assert isinstance(client, DynamoClient) and client.table_name == "receipts"
    assert wiring.dynamo() is client and namespace["_dynamo"] is client


def test_a_missing_table_name_is_an_error_naming_the_variable(
    wiring: ContainerWiring, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DYNAMODB_TABLE_NAME", raising=False)
    with pytest.raises(RuntimeError, match="DYNAMODB_TABLE_NAME"):
        wiring.dynamo()


# ---- secrets --------------------------------------------------------------------------------------


def test_a_secret_is_read_through_one_provider_and_cached_for_an_hour(
    wiring: ContainerWiring, secrets: FakeSecrets, namespace: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY_SECRET_ARN", OLLAMA_ARN)

    values = [wiring.read_secret("OLLAMA_API_KEY_SECRET_ARN") for _ in range(3)]

    assert values == ["k-1"] * 3
    assert secrets.providers == 1 and namespace["_secrets"] is secrets
    assert secrets.gets == [{"name": OLLAMA_ARN, "max_age": SECRET_MAX_AGE_SECONDS, "force_fetch": False}] * 3
    assert SECRET_MAX_AGE_SECONDS == 3600


def test_a_forced_read_bypasses_the_cache_and_returns_the_rotated_value(
    wiring: ContainerWiring, secrets: FakeSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY_SECRET_ARN", OLLAMA_ARN)
    assert wiring.read_secret("OLLAMA_API_KEY_SECRET_ARN") == "k-1"
    secrets.stored[OLLAMA_ARN] = " k-2\n"

    assert wiring.read_secret("OLLAMA_API_KEY_SECRET_ARN") == "k-1"  # cached
    assert wiring.read_secret("OLLAMA_API_KEY_SECRET_ARN", force_fetch=True) == "k-2"
    assert [get["force_fetch"] for get in secrets.gets] == [False, False, True]


@pytest.mark.parametrize("value", ["", "  \n", b"binary-key"], ids=["empty", "blank", "secret-binary"])
def test_a_secret_without_a_usable_secret_string_is_an_error_naming_the_variable(
    wiring: ContainerWiring, secrets: FakeSecrets, monkeypatch: pytest.MonkeyPatch, value: Any
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY_SECRET_ARN", OLLAMA_ARN)
    secrets.stored[OLLAMA_ARN] = value
    with pytest.raises(RuntimeError, match="OLLAMA_API_KEY_SECRET_ARN"):
        wiring.read_secret("OLLAMA_API_KEY_SECRET_ARN")


# ---- chat models ----------------------------------------------------------------------------------


@pytest.fixture
def ollama_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_BASE_URL", ENDPOINT)
    monkeypatch.setenv("OLLAMA_MODEL", "model-from-env")


@pytest.mark.usefixtures("ollama_env")
def test_the_chat_models_are_built_once_with_the_configured_model_and_the_secrets_key(
    wiring: ContainerWiring, secrets: FakeSecrets, namespace: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY_SECRET_ARN", OLLAMA_ARN)

    models = wiring.chat_models()
    llm = models.current()

    assert wiring.chat_models() is models and namespace["_models"] is models and models.current() is llm
    assert (llm.model, llm.base_url) == ("model-from-env", ENDPOINT)
    assert bearer(llm) == "Bearer k-1"
    assert "k-1" not in os.environ.values()  # the key lives in the model only


@pytest.mark.usefixtures("ollama_env")
def test_after_a_rejected_key_a_rotated_secret_builds_a_model_with_the_new_key(
    wiring: ContainerWiring, secrets: FakeSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY_SECRET_ARN", OLLAMA_ARN)
    models = wiring.chat_models()
    models.current()

    assert models.after_auth_error() is None  # re-read, same key: no retry
    secrets.stored[OLLAMA_ARN] = "k-2"
    fresh = models.after_auth_error()

    assert fresh is not None and bearer(fresh) == "Bearer k-2"
    assert [get["force_fetch"] for get in secrets.gets] == [False, True, True]


@pytest.mark.usefixtures("ollama_env")
def test_without_an_ollama_secret_no_key_is_sent_and_no_secret_is_read(
    wiring: ContainerWiring, secrets: FakeSecrets
) -> None:
    models = wiring.chat_models()

    assert bearer(models.current()) is None
    assert models.after_auth_error() is None
    assert secrets.gets == [] and secrets.providers == 0


def test_a_model_set_on_the_container_is_used_instead_of_the_configured_one(
    wiring: ContainerWiring, namespace: dict[str, Any]
) -> None:
    scripted = ScriptedChatModel(answers=["{}"])
    namespace["_chat_model"] = scripted

    models = wiring.chat_models()

    assert isinstance(models, FixedChatModel) and models.current() is scripted
    assert namespace["_models"] is None


# ---- the tracer -----------------------------------------------------------------------------------


def test_the_tracer_is_built_once_from_the_langsmith_secret_endpoint_and_project(
    wiring: ContainerWiring, secrets: FakeSecrets, namespace: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(langsmith, "Client", FakeLangSmithClient)
    monkeypatch.setenv("LANGSMITH_API_KEY_SECRET_ARN", LANGSMITH_ARN)
    monkeypatch.setenv("LANGSMITH_ENDPOINT", "http://127.0.0.1:9/langsmith")
    monkeypatch.setenv("LANGSMITH_PROJECT", "receipts-dev")

    tracer = wiring.tracer()

    assert tracer is not None and wiring.tracer() is tracer and namespace["_tracer"] is tracer
    assert isinstance(tracer.client, FakeLangSmithClient)
    assert (tracer.client.api_url, tracer.client.api_key, tracer.project_name) == (
        "http://127.0.0.1:9/langsmith",
        "ls-1",
        "receipts-dev",
    )
    assert [get["name"] for get in secrets.gets] == [LANGSMITH_ARN]  # read once, for the first tracer


def test_without_a_langsmith_secret_there_is_no_tracer_and_no_secret_read(
    wiring: ContainerWiring, secrets: FakeSecrets
) -> None:
    assert wiring.tracer() is None
    assert secrets.gets == []


# ---- the preflight ----------------------------------------------------------------------------------


def test_a_failed_preflight_names_the_configured_secret_and_logs_one_error_line(
    wiring: ContainerWiring,
    namespace: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY_SECRET_ARN", OLLAMA_ARN)
    namespace["_chat_model"] = ScriptedChatModel(answers=[LLMAuthError("HTTP 401", status_code=401)])
    log = logging.getLogger("process_receipt")

    with caplog.at_level(logging.INFO, logger="process_receipt"), pytest.raises(LLMAuthError) as raised:
        wiring.preflight(None, log)

    assert OLLAMA_ARN in str(raised.value)
    (line,) = [r for r in caplog.records if r.name == "process_receipt" and r.levelno == logging.ERROR]
    assert (line.error_type, line.error) == ("LLMAuthError", str(raised.value))
