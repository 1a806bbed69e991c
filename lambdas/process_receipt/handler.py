"""ProcessReceipt Lambda (container image): propose PENDING word labels for one receipt.

Event ``{"image_id", "receipt_id", "force"?}`` or ``{"preflight": true}``; the environment, the
result and the error classes Step Functions sees are in docs/handlers.md. The work itself is
``receipt_label.pipeline``; this module wires the table, the secrets, the tracer and the time budget.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider

from receipt_dynamo import DynamoClient, typed_aws_errors
from receipt_label import OllamaSettings, create_chat_model, pipeline
from receipt_label.pipeline import InvalidEventError, parse_event

#: Seconds a secret is reused: about one GetSecretValue per container, while a rotated key is still picked up.
SECRET_MAX_AGE_SECONDS = 3600
OLLAMA_KEY_ARN_ENV = "OLLAMA_API_KEY_SECRET_ARN"
LANGSMITH_KEY_ARN_ENV = "LANGSMITH_API_KEY_SECRET_ARN"

logger = logging.getLogger("process_receipt")
# botocore logs response bodies at DEBUG, GetSecretValue's SecretString included: kept at INFO.
logging.getLogger("botocore.parsers").setLevel(logging.INFO)

# Created on first use, once per container; tests replace them. _chat_model: a model to use instead
# of the configured one (local runs, benchmarks).
_dynamo: DynamoClient | None = None
_secrets: SecretsProvider | None = None
_models: pipeline.KeyedChatModels | None = None
_chat_model: Any = None
_tracer: Any = None


def dynamo() -> DynamoClient:
    global _dynamo
    if _dynamo is None:
        if not (table := os.environ.get("DYNAMODB_TABLE_NAME")):
            raise RuntimeError("environment variable DYNAMODB_TABLE_NAME is not set")
        _dynamo = DynamoClient(table)
    return _dynamo


def read_secret(arn_variable: str, *, force_fetch: bool = False) -> str | None:
    """The SecretString named by environment variable ``arn_variable`` (cached unless forced); None if unset."""
    global _secrets
    if not (arn := os.environ.get(arn_variable)):
        return None
    if _secrets is None:
        _secrets = SecretsProvider()
    with typed_aws_errors():  # throttling and transient failures: AwsTransientError, which Step Functions retries
        value = _secrets.get(arn, max_age=SECRET_MAX_AGE_SECONDS, force_fetch=force_fetch)
    if not isinstance(value, str) or not value.strip():
        raise RuntimeError(f"the secret named by {arn_variable} has no SecretString")
    return value.strip()


def chat_models() -> pipeline.ChatModels:
    """The Ollama model with the key from Secrets Manager, re-read after a 401/403."""
    global _models
    if _chat_model is not None:
        return pipeline.FixedChatModel(_chat_model)
    if _models is None:
        _models = pipeline.KeyedChatModels(
            lambda key: create_chat_model(OllamaSettings.from_env(), api_key=key),
            lambda force: read_secret(OLLAMA_KEY_ARN_ENV, force_fetch=force),
        )
    return _models


def tracer() -> Any:
    """The LangSmith tracer when LANGSMITH_API_KEY_SECRET_ARN is set (tracing is decided here), else None."""
    global _tracer
    if _tracer is None and os.environ.get(LANGSMITH_KEY_ARN_ENV):
        endpoint, project = os.environ.get("LANGSMITH_ENDPOINT"), os.environ.get("LANGSMITH_PROJECT")
        _tracer = pipeline.langsmith_tracer(read_secret(LANGSMITH_KEY_ARN_ENV), endpoint=endpoint, project=project)
    return _tracer


def _failure(error: Exception) -> dict[str, str]:
    return {"error": str(error), "error_type": type(error).__name__}


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point (``handler.lambda_handler``)."""
    if isinstance(event, dict) and event.get("preflight") is True:
        try:
            settings, secret = OllamaSettings.from_env(), os.environ.get(OLLAMA_KEY_ARN_ENV)
            budget = pipeline.lambda_budget(context)
            return pipeline.run_preflight(
                models=chat_models(), settings=settings, key_secret=secret, budget=budget, log=logger
            ).to_dict()
        except Exception as error:
            logger.error("preflight failed", extra={"preflight": True, **_failure(error)})
            raise
    try:
        request = parse_event(event)
    except InvalidEventError as error:
        logger.warning("invalid event", extra=_failure(error))
        raise
    try:
        result = pipeline.process_receipt(
            request,
            dynamo=dynamo(),
            models=chat_models(),
            tracer=tracer(),
            budget=pipeline.lambda_budget(context),
            log=logger,
        )
    except Exception as error:  # logged with the receipt's keys, then re-raised for Step Functions
        pipeline.receipt_log(logger, request).exception("receipt failed", extra=_failure(error))
        raise
    return result.to_dict()
