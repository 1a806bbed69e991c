"""What the two container handlers (process_receipt, validate_labels) wire the same way.

    wiring = ContainerWiring(globals())  # in the handler module
    dynamo, read_secret, chat_models, tracer = wiring.dynamo, wiring.read_secret, wiring.chat_models, wiring.tracer

    def lambda_handler(event, context):
        return wiring.handle(event, context, log=logger, model=ProcessReceiptEvent, work=pipeline.process_receipt)

The clients are created on first use and cached in the handler module's globals ``_dynamo``,
``_secrets``, ``_models``, ``_chat_model`` (a model to use instead of the configured one: local runs,
benchmarks) and ``_tracer``: one set per loaded module, i.e. per container, which tests replace.
Environment and secrets: docs/handlers.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol, TypeVar

from aws_lambda_powertools.utilities.parameters import SecretsProvider

from receipt_dynamo import DynamoClient, typed_aws_errors
from receipt_label import pipeline
from receipt_label.budget import TimeBudget
from receipt_label.config import OllamaSettings
from receipt_label.llm import create_chat_model
from receipt_label.pipeline import InvalidEventError, ValidateReceiptEvent, parse_event

# botocore logs response bodies at DEBUG, GetSecretValue's SecretString included: kept at INFO.
logging.getLogger("botocore.parsers").setLevel(logging.INFO)

#: Seconds a secret is reused: about one GetSecretValue per container, while a rotated key is still picked up.
SECRET_MAX_AGE_SECONDS = 3600
OLLAMA_KEY_ARN_ENV = "OLLAMA_API_KEY_SECRET_ARN"
LANGSMITH_KEY_ARN_ENV = "LANGSMITH_API_KEY_SECRET_ARN"
#: The handler module globals that hold the per-container clients (ContainerWiring sets missing ones to None).
CACHED = ("_dynamo", "_secrets", "_models", "_chat_model", "_tracer")

E = TypeVar("E", bound=ValidateReceiptEvent)


class Result(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def failure(error: BaseException) -> dict[str, str]:
    """The ``extra`` of a failure line: ``error`` (the message) and ``error_type`` (the class name)."""
    return {"error": str(error), "error_type": type(error).__name__}


class ContainerWiring:
    """The table, the secrets, the chat models, the tracer and the budget of one container handler."""

    def __init__(self, cache: MutableMapping[str, Any]) -> None:
        """``cache``: the handler module's ``globals()``; its per-container clients (``CACHED``) start as None."""
        for name in CACHED:
            cache.setdefault(name, None)
        self._cache = cache

    def dynamo(self) -> DynamoClient:
        """The table named by ``DYNAMODB_TABLE_NAME``."""
        if self._cache["_dynamo"] is None:
            if not (table := os.environ.get("DYNAMODB_TABLE_NAME")):
                raise RuntimeError("environment variable DYNAMODB_TABLE_NAME is not set")
            self._cache["_dynamo"] = DynamoClient(table)
        client: DynamoClient = self._cache["_dynamo"]
        return client

    def read_secret(self, arn_variable: str, *, force_fetch: bool = False) -> str | None:
        """The SecretString named by environment variable ``arn_variable`` (cached unless forced); None if unset."""
        if not (arn := os.environ.get(arn_variable)):
            return None
        if self._cache["_secrets"] is None:
            self._cache["_secrets"] = SecretsProvider()
        with typed_aws_errors():  # throttling and transient failures: AwsTransientError, which Step Functions retries
            value = self._cache["_secrets"].get(arn, max_age=SECRET_MAX_AGE_SECONDS, force_fetch=force_fetch)
        if not isinstance(value, str) or not value.strip():
            raise RuntimeError(f"the secret named by {arn_variable} has no SecretString")
        return value.strip()

    def chat_models(self) -> pipeline.ChatModels:
        """The Ollama model with the key from Secrets Manager, re-read after a 401/403 (or ``_chat_model``)."""
        if self._cache["_chat_model"] is not None:
            return pipeline.FixedChatModel(self._cache["_chat_model"])
        if self._cache["_models"] is None:
            self._cache["_models"] = pipeline.KeyedChatModels(
                lambda key: create_chat_model(OllamaSettings.from_env(), api_key=key),
                lambda force: self.read_secret(OLLAMA_KEY_ARN_ENV, force_fetch=force),
            )
        models: pipeline.ChatModels = self._cache["_models"]
        return models

    def tracer(self) -> Any:
        """The LangSmith tracer when LANGSMITH_API_KEY_SECRET_ARN is set (tracing is decided here), else None."""
        if self._cache["_tracer"] is None and os.environ.get(LANGSMITH_KEY_ARN_ENV):
            endpoint, project = os.environ.get("LANGSMITH_ENDPOINT"), os.environ.get("LANGSMITH_PROJECT")
            key = self.read_secret(LANGSMITH_KEY_ARN_ENV)
            self._cache["_tracer"] = pipeline.langsmith_tracer(key, endpoint=endpoint, project=project)
        return self._cache["_tracer"]

    @staticmethod
    def budget(context: Any) -> TimeBudget | None:
        """The LLM work's deadline from the Lambda context (None outside Lambda)."""
        return pipeline.lambda_budget(context)

    def preflight(self, context: Any, log: logging.Logger) -> dict[str, Any]:
        """The ``{"preflight": true}`` event: one capped chat call; a failure is logged and raised."""
        try:
            settings, secret = OllamaSettings.from_env(), os.environ.get(OLLAMA_KEY_ARN_ENV)
            result = pipeline.run_preflight(
                models=self.chat_models(), settings=settings, key_secret=secret, budget=self.budget(context), log=log
            )
        except Exception as error:
            log.error("preflight failed", extra={"preflight": True, **failure(error)})
            raise
        return result.to_dict()

    def handle(
        self, event: Any, context: Any, *, log: logging.Logger, model: type[E], work: Callable[..., Result]
    ) -> dict[str, Any]:
        """One invocation: the preflight event, or ``work`` on the receipt of ``event`` (parsed as ``model``).

        ``work(request, dynamo=, models=, tracer=, budget=, log=)``; its result's ``to_dict()`` is returned.
        A rejected event is one warning line, a failed receipt one error line with its keys; both re-raise.
        """
        if isinstance(event, dict) and event.get("preflight") is True:
            return self.preflight(context, log)
        try:
            request = parse_event(event, model)
        except InvalidEventError as error:
            log.warning("invalid event", extra=failure(error))
            raise
        try:
            result = work(
                request,
                dynamo=self.dynamo(),
                models=self.chat_models(),
                tracer=self.tracer(),
                budget=self.budget(context),
                log=log,
            )
        except Exception as error:  # logged with the receipt's keys, then re-raised for Step Functions
            pipeline.receipt_log(log, request).exception("receipt failed", extra=failure(error))
            raise
        return result.to_dict()
