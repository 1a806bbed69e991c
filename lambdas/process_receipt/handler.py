"""ProcessReceipt Lambda (container image): propose PENDING word labels for one receipt.

Contract (docs/handlers.md):

- event: ``{"image_id": "<uuid>", "receipt_id": <int 1..99999>}``, optional ``"force": true`` to
  label a receipt this pipeline has finished labeling before (existing labels are still never
  overwritten). Other fields are ignored.
- preflight event: ``{"preflight": true}``: one chat call capped at one token proves the endpoint
  answers, accepts the key and serves the model; returns ``{"preflight": "ok", "model",
  "base_url", "llm_calls"}``; reads and writes no receipt. The state machine runs it once before
  the map, so a rejected key or an unknown model fails the run there, not once per receipt.
- environment: ``DYNAMODB_TABLE_NAME``; ``OLLAMA_BASE_URL``, ``OLLAMA_MODEL``,
  ``OLLAMA_TIMEOUT_SECONDS``, ``OLLAMA_NUM_PREDICT`` (read by ``receipt_label.OllamaSettings``);
  ``TIME_MARGIN_SECONDS`` (default 30: LLM work stops this long before the Lambda's time runs
  out, leaving time for the writes);
  ``OLLAMA_API_KEY_SECRET_ARN`` (Secrets Manager secret whose SecretString is the Ollama key;
  unset: no key is sent); ``LANGSMITH_API_KEY_SECRET_ARN`` (optional: trace the LLM calls to
  LangSmith, project ``LANGSMITH_PROJECT``, default ``receipt-labeling``, endpoint
  ``LANGSMITH_ENDPOINT``, default LangSmith's); Powertools' own
  ``POWERTOOLS_SERVICE_NAME`` and ``POWERTOOLS_LOG_LEVEL``.
- returns ``{"image_id", "receipt_id", "labels_added", "labels_skipped_existing",
  "labels_rejected", "llm_calls", "already_labeled"}``; ``already_labeled`` is true when the
  receipt was skipped because its completion marker says this pipeline finished labeling it (no
  LLM call, no write).
- raises, never returns an error payload, so Step Functions sees the class name:
  ``InvalidEventError``, ``ReceiptNotFoundError``, ``LLMRateLimitError``, ``LLMTransientError``,
  ``LLMOutputError``, ``LLMAuthError`` (after one re-read of the secret that bypasses the cache),
  ``LLMModelNotFoundError``, ``LLMRequestError``; ``TimeBudgetExceededError`` when LLM work reaches
  the margin before the Lambda's timeout (retryable, nothing written); ``LabelWriteError`` if
  DynamoDB keeps refusing label writes; ``DynamoThrottledError`` if DynamoDB keeps throttling the
  read or the marker write; ``AwsTransientError`` for other transient AWS failures (5xx, connection
  errors) of DynamoDB or Secrets Manager once botocore's retries are spent. A receipt whose labeling
  fails gets no write.

Completion marker: the labels are written first (conditional puts, never overwriting), then
``mark_receipt_labeled`` sets ``labeled_by = receipt_label:<model>`` / ``labeled_at`` on the
Receipt item. A run that stops in between (``LabelWriteError``, a timeout, a crash) leaves no
marker, so the next run (a Step Functions retry or the next execution) labels the receipt again:
only words without a label are proposed for, existing labels are skipped, and the marker is set
at the end. A receipt labeled before the marker existed has labels but no marker: it is labeled
once more the same way (nothing overwritten), then skipped.

Secrets are read once per container through Powertools parameters (cached); when the endpoint
rejects the key (HTTP 401/403) the secret is read again bypassing the cache, and a changed key is
used at once (one more call). The keys never go into an environment variable, a log line, the
LangGraph state or a trace.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from receipt_dynamo import (
    AwsTransientError,
    DynamoClient,
    DynamoThrottledError,
    LabelWriteError,
    ReceiptDetails,
    ReceiptDynamoError,
    ReceiptNotFoundError,
    retryable_aws_error,
)
from receipt_label import (
    LLMAuthError,
    LLMError,
    LLMModelNotFoundError,
    LLMOutputError,
    LLMRateLimitError,
    LLMRequestError,
    LLMTransientError,
    OllamaSettings,
    TimeBudget,
    TimeBudgetExceededError,
    check_endpoint,
    create_chat_model,
    label_receipt,
    time_budget,
)

__all__ = [
    "AwsTransientError",
    "DynamoThrottledError",
    "InvalidEventError",
    "LLMAuthError",
    "LLMModelNotFoundError",
    "LLMOutputError",
    "LLMRateLimitError",
    "LLMRequestError",
    "LLMTransientError",
    "LabelWriteError",
    "ProcessReceiptEvent",
    "ReceiptNotFoundError",
    "TimeBudgetExceededError",
    "lambda_handler",
]

#: label_proposed_by of every label this pipeline writes, and its completion marker (Receipt.labeled_by),
#: start with this.
PIPELINE_PREFIX = "receipt_label:"
#: Seconds a secret read from Secrets Manager is reused. A container lives for hours at most, so
#: this is about one GetSecretValue per container, while a rotated key is still picked up.
SECRET_MAX_AGE_SECONDS = 3600
TRACE_FLUSH_SECONDS = 5.0
MAX_LOGGED_REJECTIONS = 50
MAX_RECEIPT_ID = 99_999  # ids are zero-padded to 5 digits in the table's sort keys
#: Seconds kept free before the Lambda's timeout when LLM work stops: the label writes, the marker
#: and the log flush need them (about 300 conditional puts at ~10 ms each, with room to spare).
DEFAULT_TIME_MARGIN_SECONDS = 30.0
PREFLIGHT_FIELD = "preflight"

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "process_receipt"))
# botocore logs every response body at DEBUG, GetSecretValue's SecretString (the Ollama key) included:
# that logger stays at INFO even when the function's or the root log level is DEBUG.
logging.getLogger("botocore.parsers").setLevel(logging.INFO)


class InvalidEventError(ValueError):
    """The event does not match the contract; the message names the offending field(s)."""


def _canonical_uuid(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # the str type check below reports it
    if len(value) != 36:
        raise ValueError("must be a UUID like 3f2a6c1e-8b7d-4e51-9a0c-2d4b6e8f1a3c")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("must be a UUID like 3f2a6c1e-8b7d-4e51-9a0c-2d4b6e8f1a3c") from None


class ProcessReceiptEvent(BaseModel):
    """The event of one Distributed Map item."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    image_id: Annotated[str, BeforeValidator(_canonical_uuid), Field(min_length=36, max_length=36)]
    receipt_id: Annotated[StrictInt, Field(gt=0, le=MAX_RECEIPT_ID)]
    force: StrictBool = False


def parse_event(event: Any) -> ProcessReceiptEvent:
    """Validate the event; raise InvalidEventError whose message names every bad field.

    The message never echoes the offending value (it may be megabytes long or sensitive).
    """
    if not isinstance(event, dict):
        raise InvalidEventError(f"event: expected a JSON object, got {type(event).__name__}")
    try:
        return ProcessReceiptEvent.model_validate(event)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_input=False, include_url=False):
            field = ".".join(str(part) for part in item["loc"]) or "event"
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(f"{field}: {message}")
        raise InvalidEventError("invalid event: " + "; ".join(problems)) from None


# Created on first use, once per container; tests replace them.
_dynamo: DynamoClient | None = None
_secrets: SecretsProvider | None = None
_chat_model: Any = None
_tracer: Any = None


def dynamo() -> DynamoClient:
    global _dynamo
    if _dynamo is None:
        table = os.environ.get("DYNAMODB_TABLE_NAME", "")
        if not table:
            raise RuntimeError("environment variable DYNAMODB_TABLE_NAME is not set")
        _dynamo = DynamoClient(table)
    return _dynamo


def secrets() -> SecretsProvider:
    global _secrets
    if _secrets is None:
        _secrets = SecretsProvider()
    return _secrets


T = TypeVar("T")


@contextmanager
def aws_errors() -> Iterator[None]:
    """Throttling and transient AWS failures that outlasted botocore's retries -> the contract's typed errors."""
    try:
        yield
    except ReceiptDynamoError:  # already the contract's answer (LabelWriteError, DynamoThrottledError, ...)
        raise
    except Exception as error:
        typed = retryable_aws_error(error)
        if typed is None:
            raise
        raise typed from error


def read_secret(arn_variable: str, *, force_fetch: bool = False) -> str | None:
    """The SecretString of the secret named by environment variable ``arn_variable`` (cached unless forced)."""
    arn = os.environ.get(arn_variable)
    if not arn:
        return None
    with aws_errors():
        value = secrets().get(arn, max_age=SECRET_MAX_AGE_SECONDS, force_fetch=force_fetch)
    if not isinstance(value, str) or not value.strip():
        raise RuntimeError(f"the secret named by {arn_variable} has no SecretString")
    return value.strip()


def _fingerprint(key: str | None) -> str | None:
    return None if key is None else hashlib.sha256(key.encode()).hexdigest()


_chat_model_key: str | None = None  # sha256 of the key the current model sends, never the key


def _use_key(key: str | None) -> Any:
    """Build the container's ChatOllama with ``key`` and remember which key it sends (by hash)."""
    global _chat_model, _chat_model_key
    _chat_model = create_chat_model(OllamaSettings.from_env(), api_key=key)
    _chat_model_key = _fingerprint(key)
    return _chat_model


def chat_model() -> Any:
    """The ChatOllama model, built once per container with the key from Secrets Manager."""
    return _chat_model if _chat_model is not None else _use_key(read_secret("OLLAMA_API_KEY_SECRET_ARN"))


def chat_model_with_fresh_key() -> Any | None:
    """After a 401/403: re-read the key bypassing the cache; a new model if it changed, else None."""
    key = read_secret("OLLAMA_API_KEY_SECRET_ARN", force_fetch=True)
    if _chat_model is not None and _fingerprint(key) == _chat_model_key:
        logger.warning("the endpoint rejected the key and the secret still holds the same key")
        return None
    logger.info("the endpoint rejected the key; the secret holds a new key, retrying with it")
    return _use_key(key)


def with_fresh_key_on_auth_error(call: Callable[[Any], T]) -> T:
    """``call(model)``; on ``LLMAuthError`` once more with a re-read key if the secret changed."""
    try:
        return call(chat_model())
    except LLMAuthError:
        fresh = chat_model_with_fresh_key()
        if fresh is None:
            raise
        return call(fresh)


def langsmith_tracer() -> Any:
    """A LangSmith tracer when LANGSMITH_API_KEY_SECRET_ARN is set; the key stays in memory only."""
    global _tracer
    if _tracer is None and os.environ.get("LANGSMITH_API_KEY_SECRET_ARN"):
        from langchain_core.tracers.langchain import LangChainTracer  # only paid for when tracing
        from langsmith import Client

        client = Client(
            api_url=os.environ.get("LANGSMITH_ENDPOINT") or None,
            api_key=read_secret("LANGSMITH_API_KEY_SECRET_ARN"),
        )
        _tracer = LangChainTracer(client=client, project_name=os.environ.get("LANGSMITH_PROJECT", "receipt-labeling"))
    return _tracer


def _flush_traces(tracer: Any) -> None:
    """Send the traces before the container is frozen; a slow or failing LangSmith never fails a receipt."""
    try:
        tracer.wait_for_futures()
        tracer.client.flush(timeout=TRACE_FLUSH_SECONDS)
    except Exception as error:  # tracing is best effort
        logger.warning("could not flush LangSmith traces", error_type=type(error).__name__)


def already_labeled(details: ReceiptDetails) -> bool:
    """True when the receipt's completion marker says this pipeline finished labeling it.

    Labels alone are not enough: a run that wrote part of its labels and then failed leaves labels
    of this pipeline but no marker, and the receipt must be labeled again to complete it.
    """
    return details.receipt.is_labeled_by(PIPELINE_PREFIX)


def read_details(request: ProcessReceiptEvent) -> ReceiptDetails:
    """The receipt, its words and labels (a strongly consistent read: it sees a marker just written)."""
    with aws_errors():
        return dynamo().get_receipt_details(request.image_id, request.receipt_id, consistent_read=True)


def time_margin_seconds() -> float:
    raw = os.environ.get("TIME_MARGIN_SECONDS", "").strip()
    if not raw:
        return DEFAULT_TIME_MARGIN_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeError(
            f"environment variable TIME_MARGIN_SECONDS must be a number of seconds, got {raw!r}"
        ) from None
    if not 0 <= value <= 900:
        raise RuntimeError(f"environment variable TIME_MARGIN_SECONDS must be within 0..900, got {raw!r}")
    return value


def budget_for(context: Any) -> TimeBudget | None:
    """The LLM work's deadline: the Lambda's remaining time minus the margin (None outside Lambda)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return TimeBudget.from_seconds(remaining() / 1000.0 - time_margin_seconds())


def _explained(error: LLMError, hint: str) -> LLMError:
    """The same error class (so the same retrier matches), its message followed by the fix."""
    explained = type(error)(f"{error} -- {hint}")
    explained.attempts = error.attempts
    if isinstance(error, LLMRequestError) and isinstance(explained, LLMRequestError):
        explained.status_code = error.status_code
    return explained


def preflight(budget: TimeBudget | None) -> dict[str, Any]:
    """One capped chat call: the endpoint answers, takes the key, serves the model; typed errors name the fix."""
    settings = OllamaSettings.from_env()
    secret = os.environ.get("OLLAMA_API_KEY_SECRET_ARN") or "(no secret configured)"
    hints: dict[type[LLMError], str] = {
        LLMAuthError: f"the endpoint {settings.base_url} rejected the API key. Fix: store the key in secret "
        f"{secret} (aws secretsmanager put-secret-value --secret-id <that ARN> --secret-string <key>); "
        "the next run reads it at once.",
        # still the retried class: Step Functions tries again first
        LLMTransientError: f"the endpoint {settings.base_url} did not answer. Fix: check that it is up and "
        "reachable from the Lambda over the internet, or deploy with -c ollama_base_url=<its https URL>.",
        LLMModelNotFoundError: f"the endpoint {settings.base_url} does not serve model {settings.model!r}. Fix: "
        "pull it there (ollama pull <model>) or deploy with -c ollama_model=<a model the endpoint serves>.",
    }
    calls = 0

    def check(model: Any) -> int:
        nonlocal calls
        try:
            made = check_endpoint(model)
        except LLMAuthError as error:  # the one failure tried again (with a re-read key)
            calls += error.attempts
            raise
        calls += made
        return made

    try:
        with time_budget(budget):
            with_fresh_key_on_auth_error(check)
    except (LLMAuthError, LLMTransientError, LLMModelNotFoundError) as error:
        raise _explained(error, hints[type(error)]) from error
    logger.info("preflight passed", model=settings.model, base_url=settings.base_url, llm_calls=calls)
    return {"preflight": "ok", "model": settings.model, "base_url": settings.base_url, "llm_calls": calls}


def _result(request: ProcessReceiptEvent, **counts: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "image_id": request.image_id,
        "receipt_id": request.receipt_id,
        "labels_added": 0,
        "labels_skipped_existing": 0,
        "labels_rejected": 0,
        "llm_calls": 0,
        "already_labeled": False,
    }
    base.update(counts)
    return base


def process(request: ProcessReceiptEvent, budget: TimeBudget | None = None) -> dict[str, Any]:
    details = read_details(request)
    if already_labeled(details) and not request.force:
        logger.info(
            "receipt already labeled by this pipeline; skipped",
            existing_labels=len(details.labels),
            labeled_by=details.receipt.labeled_by,
            labeled_at=details.receipt.labeled_at,
        )
        return _result(request, already_labeled=True)
    tracer = langsmith_tracer()
    config: RunnableConfig | None = {"callbacks": [tracer]} if tracer is not None else None
    try:
        with time_budget(budget):
            labeling = with_fresh_key_on_auth_error(lambda llm: label_receipt(details, llm=llm, config=config))
    finally:
        if tracer is not None:
            _flush_traces(tracer)
    if labeling.rejected:
        logger.info(
            "proposals rejected",
            rejected_count=len(labeling.rejected),
            rejected=[
                {"line_id": r.line_id, "word_id": r.word_id, "label": r.label, "reason": r.reason}
                for r in labeling.rejected[:MAX_LOGGED_REJECTIONS]
            ],
        )
    with aws_errors():
        written = dynamo().add_receipt_word_labels(labeling.labels) if labeling.labels else None
        # Last: the marker says every label of this run is in the table (a failure above leaves none).
        dynamo().mark_receipt_labeled(
            request.image_id, request.receipt_id, proposed_by=f"{PIPELINE_PREFIX}{labeling.model_name}"
        )
    result = _result(
        request,
        labels_added=len(written.added) if written else 0,
        labels_skipped_existing=len(written.skipped_existing) if written else 0,
        labels_rejected=len(labeling.rejected),
        llm_calls=labeling.llm_calls,
    )
    logger.info("receipt labeled", **{k: v for k, v in result.items() if k not in ("image_id", "receipt_id")})
    return result


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point (``handler.lambda_handler``)."""
    if context is None:  # called outside Lambda (a script, a test): the same, without the context's log keys
        logger.clear_state()
        return _handle(event, context)
    return _handle_in_lambda(event, context)


def _handle(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and event.get(PREFLIGHT_FIELD) is True:
        logger.append_keys(preflight=True)
        try:
            return preflight(budget_for(context))
        except Exception as error:
            logger.error("preflight failed", error=str(error), error_type=type(error).__name__)
            raise
    try:
        request = parse_event(event)
    except InvalidEventError as error:
        logger.warning("invalid event", error=str(error), error_type="InvalidEventError")
        raise
    logger.append_keys(image_id=request.image_id, receipt_id=request.receipt_id, force=request.force)
    try:
        return process(request, budget_for(context))
    except Exception as error:  # logged with the receipt's keys, then re-raised for Step Functions
        logger.exception("receipt failed", error_type=type(error).__name__)
        raise


#: With the Lambda context: its request id, function name and cold-start flag on every log line.
_handle_in_lambda = logger.inject_lambda_context(clear_state=True)(_handle)
