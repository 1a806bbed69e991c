"""The per-receipt work of both pipelines, with its collaborators passed in (docs/handlers.md).

    request = parse_event({"image_id": "...", "receipt_id": 1})
    result = process_receipt(request, dynamo=DynamoClient(table), models=KeyedChatModels(build, read_key))
    result.to_dict()  # the Lambda's return value

``process_receipt`` reads the receipt, skips it when this pipeline's completion marker is set
(unless ``force``), labels it, writes the labels (never overwriting) and only then sets the marker.
``validate_receipt`` judges the receipt's PENDING labels of this pipeline and records each judgement
(never over a person's decision). ``run_preflight`` is the one capped chat call run before a map.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar, overload

from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from receipt_dynamo import (
    LabelJudgement,
    LabelWriteResult,
    Receipt,
    ReceiptDetails,
    ReceiptWordLabel,
    ValidationStatus,
    ValidationWriteResult,
)
from receipt_label.budget import TimeBudget, time_budget
from receipt_label.config import OllamaSettings
from receipt_label.errors import LLMAuthError, LLMError, LLMModelNotFoundError, LLMRequestError, LLMTransientError
from receipt_label.graph import PROPOSED_BY_PREFIX
from receipt_label.labeler import label_receipt
from receipt_label.llm import check_endpoint
from receipt_label.validation import judge_receipt, labels_to_judge

MAX_RECEIPT_ID = 99_999  # ids are zero-padded to 5 digits in the table's sort keys
MAX_LOGGED_REJECTIONS = 50
TRACE_FLUSH_SECONDS = 5.0
#: Seconds kept free before the Lambda's timeout when LLM work stops (the writes, the marker, the logs).
DEFAULT_TIME_MARGIN_SECONDS = 30.0

logger = logging.getLogger(__name__)
T = TypeVar("T")
ChatModel = Runnable[Any, Any]


# ---- the event ----------------------------------------------------------------------------------


class InvalidEventError(ValueError):
    """The event does not match the contract; the message names the offending field(s)."""


def _canonical_uuid(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # the str type check reports it
    try:
        if len(value) == 36:
            return str(uuid.UUID(value))
    except ValueError:
        pass
    raise ValueError("must be a UUID like 3f2a6c1e-8b7d-4e51-9a0c-2d4b6e8f1a3c")


class ValidateReceiptEvent(BaseModel):
    """The event of one Distributed Map item of ValidatePendingLabels: the receipt's keys."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    image_id: Annotated[str, BeforeValidator(_canonical_uuid), Field(min_length=36, max_length=36)]
    receipt_id: Annotated[StrictInt, Field(gt=0, le=MAX_RECEIPT_ID)]


class ProcessReceiptEvent(ValidateReceiptEvent):
    """The event of one Distributed Map item of CreateLabels: the receipt's keys and ``force``."""

    force: StrictBool = False


E = TypeVar("E", bound=ValidateReceiptEvent)


@overload
def parse_event(event: Any) -> ProcessReceiptEvent: ...
@overload
def parse_event(event: Any, model: type[E]) -> E: ...
def parse_event(event: Any, model: type[ValidateReceiptEvent] = ProcessReceiptEvent) -> ValidateReceiptEvent:
    """Validate the event as ``model``; raise InvalidEventError naming every bad field, never echoing a value."""
    if not isinstance(event, dict):
        raise InvalidEventError(f"event: expected a JSON object, got {type(event).__name__}")
    try:
        return model.model_validate(event)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_input=False, include_url=False):
            field = ".".join(str(part) for part in item["loc"]) or "event"
            problems.append(f"{field}: {str(item['msg']).removeprefix('Value error, ')}")
        raise InvalidEventError("invalid event: " + "; ".join(problems)) from None


# ---- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptResult:
    """What ``process_receipt`` did; ``to_dict()`` is the Lambda's return value."""

    image_id: str
    receipt_id: int
    labels_added: int = 0
    labels_skipped_existing: int = 0
    labels_rejected: int = 0
    llm_calls: int = 0
    already_labeled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PreflightResult:
    """What ``run_preflight`` checked; ``to_dict()`` is the Lambda's return value."""

    model: str
    base_url: str
    llm_calls: int

    def to_dict(self) -> dict[str, Any]:
        return {"preflight": "ok", "model": self.model, "base_url": self.base_url, "llm_calls": self.llm_calls}


@dataclass(frozen=True)
class ValidationResult:
    """What ``validate_receipt`` did; ``to_dict()`` is the Lambda's return value.

    The four status counts add up to ``labels_pending``: each judged label was updated or skipped.
    """

    image_id: str
    receipt_id: int
    labels_pending: int = 0
    labels_valid: int = 0
    labels_invalid: int = 0
    labels_needs_review: int = 0
    labels_skipped_changed: int = 0
    llm_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- collaborators ------------------------------------------------------------------------------


class ReceiptStore(Protocol):
    """The data layer calls the pipeline makes (``receipt_dynamo.DynamoClient``)."""

    def get_receipt_details(
        self, image_id: str, receipt_id: int, *, consistent_read: bool = True
    ) -> ReceiptDetails: ...

    def add_receipt_word_labels(self, labels: Iterable[ReceiptWordLabel]) -> LabelWriteResult: ...

    def mark_receipt_labeled(self, image_id: str, receipt_id: int, *, proposed_by: str) -> Receipt: ...


class JudgementStore(Protocol):
    """The data layer calls ``validate_receipt`` makes (``receipt_dynamo.DynamoClient``)."""

    def get_receipt_details(
        self, image_id: str, receipt_id: int, *, consistent_read: bool = True
    ) -> ReceiptDetails: ...

    def set_label_validations(
        self, judgements: Iterable[LabelJudgement], *, validated_by: str, validated_at: str | None = None
    ) -> ValidationWriteResult: ...


class ChatModels(Protocol):
    """The chat model to call, and after an ``LLMAuthError`` one built with a re-read key (None: same key)."""

    def current(self) -> ChatModel: ...

    def after_auth_error(self) -> ChatModel | None: ...


@dataclass
class FixedChatModel:
    """One model and no key to re-read (a local model, a scripted one in tests)."""

    model: ChatModel

    def current(self) -> ChatModel:
        return self.model

    def after_auth_error(self) -> ChatModel | None:
        return None


def _fingerprint(key: str | None) -> str | None:
    return None if key is None else hashlib.sha256(key.encode()).hexdigest()


class KeyedChatModels:
    """A model built with the key ``read_key(False)`` returns (cached by the caller), rebuilt after an
    auth error only when ``read_key(True)`` (a forced re-read) returns another key.

    Only the key's sha256 is kept for the comparison; the key itself lives in the model alone.
    """

    def __init__(self, build: Callable[[str | None], ChatModel], read_key: Callable[[bool], str | None]) -> None:
        self._build = build
        self._read_key = read_key
        self._model: ChatModel | None = None
        self._key_hash: str | None = None

    def _use(self, key: str | None) -> ChatModel:
        self._model = self._build(key)
        self._key_hash = _fingerprint(key)
        return self._model

    def current(self) -> ChatModel:
        return self._model if self._model is not None else self._use(self._read_key(False))

    def after_auth_error(self) -> ChatModel | None:
        key = self._read_key(True)
        if self._model is not None and _fingerprint(key) == self._key_hash:
            return None
        return self._use(key)


class _ContextLog(logging.LoggerAdapter):
    """Adds fixed ``extra`` keys to every record, merged with the call's own ``extra``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def receipt_log(base: logging.Logger, request: ValidateReceiptEvent) -> logging.LoggerAdapter:
    """``base`` with the event's fields on every record (``image_id``, ``receipt_id``, and ``force`` if any)."""
    return _ContextLog(base, request.model_dump())


def preflight_log(base: logging.Logger) -> logging.LoggerAdapter:
    """``base`` with ``preflight: true`` on every record."""
    return _ContextLog(base, {"preflight": True})


def _with_fresh_key(models: ChatModels, call: Callable[[ChatModel], T], log: logging.LoggerAdapter) -> T:
    """``call(model)``; on ``LLMAuthError`` once more with the model ``after_auth_error`` gives, if any."""
    try:
        return call(models.current())
    except LLMAuthError:
        fresh = models.after_auth_error()
        if fresh is None:
            log.warning("the endpoint rejected the key and the secret still holds the same key")
            raise
        log.info("the endpoint rejected the key; the secret holds a new key, retrying with it")
        return call(fresh)


# ---- tracing and time ---------------------------------------------------------------------------


def langsmith_tracer(api_key: str | None, *, endpoint: str | None = None, project: str | None = None) -> Any:
    """A LangSmith tracer whose client holds ``api_key`` in memory only (never in the environment).

    ``endpoint``: LangSmith's by default; ``project``: ``receipt-labeling`` by default.
    """
    from langchain_core.tracers.langchain import LangChainTracer  # only paid for when tracing
    from langsmith import Client

    client = Client(api_url=endpoint or None, api_key=api_key)
    return LangChainTracer(client=client, project_name=project or "receipt-labeling")


def flush_traces(tracer: Any, log: logging.Logger | logging.LoggerAdapter = logger) -> None:
    """Send the traces before the container is frozen; a slow or failing LangSmith never fails a receipt."""
    try:
        tracer.wait_for_futures()
        tracer.client.flush(timeout=TRACE_FLUSH_SECONDS)
    except Exception as error:  # tracing is best effort
        log.warning("could not flush LangSmith traces", extra={"error_type": type(error).__name__})


def time_margin_seconds(environ: Mapping[str, str] | None = None) -> float:
    """``TIME_MARGIN_SECONDS`` (0..900, default 30); RuntimeError names a bad value."""
    raw = (os.environ if environ is None else environ).get("TIME_MARGIN_SECONDS", "").strip()
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


def lambda_budget(context: Any) -> TimeBudget | None:
    """The LLM work's deadline: the Lambda's remaining time minus the margin (None outside Lambda)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return TimeBudget.from_seconds(remaining() / 1000.0 - time_margin_seconds())


# ---- the preflight ------------------------------------------------------------------------------


def _preflight_hints(settings: OllamaSettings, key_secret: str | None) -> dict[type[LLMError], str]:
    url, secret = settings.base_url, key_secret or "(no secret configured)"
    return {
        LLMAuthError: f"the endpoint {url} rejected the API key. Fix: store the key in secret {secret} "
        "(aws secretsmanager put-secret-value --secret-id <that ARN> --secret-string <key>); "
        "the next run reads it at once.",
        # still the retried class: Step Functions tries again first
        LLMTransientError: f"the endpoint {url} did not answer. Fix: check that it is up and reachable from the "
        "Lambda over the internet, or deploy with -c ollama_base_url=<its https URL>.",
        LLMModelNotFoundError: f"the endpoint {url} does not serve model {settings.model!r}. Fix: pull it there "
        "(ollama pull <model>) or deploy with -c ollama_model=<a model the endpoint serves>.",
    }


def _explained(error: LLMError, hint: str) -> LLMError:
    """The same error class (so the same retrier matches), its message followed by the fix."""
    explained = type(error)(f"{error} -- {hint}")
    explained.attempts = error.attempts
    if isinstance(error, LLMRequestError) and isinstance(explained, LLMRequestError):
        explained.status_code = error.status_code
    return explained


def run_preflight(
    *,
    models: ChatModels,
    settings: OllamaSettings,
    key_secret: str | None = None,
    budget: TimeBudget | None = None,
    log: logging.Logger = logger,
) -> PreflightResult:
    """One chat call capped at one token: the endpoint answers, takes the key and serves the model.

    ``key_secret`` names the key's secret in the fix an ``LLMAuthError`` carries; an
    ``LLMTransientError`` or ``LLMModelNotFoundError`` names its fix too (same classes).
    """
    out = preflight_log(log)
    calls = 0

    def check(model: ChatModel) -> int:
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
            _with_fresh_key(models, check, out)
    except (LLMAuthError, LLMTransientError, LLMModelNotFoundError) as error:
        raise _explained(error, _preflight_hints(settings, key_secret)[type(error)]) from error
    out.info("preflight passed", extra={"model": settings.model, "base_url": settings.base_url, "llm_calls": calls})
    return PreflightResult(model=settings.model, base_url=settings.base_url, llm_calls=calls)


# ---- one receipt --------------------------------------------------------------------------------


def already_labeled(details: ReceiptDetails) -> bool:
    """True when the receipt's completion marker says this pipeline finished labeling it.

    Labels alone are not enough: a run that wrote part of its labels and then failed leaves labels
    but no marker, and the receipt must be labeled again to complete it.
    """
    return details.receipt.is_labeled_by(PROPOSED_BY_PREFIX)


def _ask(
    work: Callable[[ChatModel, RunnableConfig | None], T],
    models: ChatModels,
    tracer: Any,
    budget: TimeBudget | None,
    log: logging.LoggerAdapter,
) -> T:
    """``work(model, config)`` under the budget, with a re-read key after an auth error; traces flushed."""
    config: RunnableConfig | None = {"callbacks": [tracer]} if tracer is not None else None
    try:
        with time_budget(budget):
            return _with_fresh_key(models, lambda llm: work(llm, config), log)
    finally:
        if tracer is not None:
            flush_traces(tracer, log)


def _log_counts(out: logging.LoggerAdapter, message: str, result: ReceiptResult | ValidationResult) -> None:
    """``message`` with the result's counts: its fields but the receipt's keys, which ``out`` carries."""
    out.info(message, extra={k: v for k, v in result.to_dict().items() if k not in ("image_id", "receipt_id")})


def process_receipt(
    request: ProcessReceiptEvent,
    *,
    dynamo: ReceiptStore,
    models: ChatModels,
    tracer: Any = None,
    budget: TimeBudget | None = None,
    log: logging.Logger = logger,
) -> ReceiptResult:
    """Label one receipt: skip on this pipeline's marker (unless ``force``), label, write, then mark.

    A failure before the writes writes nothing; a failure between the label writes and the
    marker leaves no marker, so the next run completes the receipt. ``tracer``: a LangChain
    callback traced and flushed around the labeling; ``budget``: the LLM work's deadline.
    Raises the data layer's and ``label_receipt``'s typed errors.
    """
    out = receipt_log(log, request)
    details = dynamo.get_receipt_details(request.image_id, request.receipt_id, consistent_read=True)
    if already_labeled(details) and not request.force:
        receipt = details.receipt
        skipped = {"existing_labels": len(details.labels), "labeled_by": receipt.labeled_by}
        out.info(
            "receipt already labeled by this pipeline; skipped", extra={**skipped, "labeled_at": receipt.labeled_at}
        )
        return ReceiptResult(request.image_id, request.receipt_id, already_labeled=True)
    labeling = _ask(lambda llm, config: label_receipt(details, llm=llm, config=config), models, tracer, budget, out)
    if labeling.rejected:
        rejected = [
            {"line_id": r.line_id, "word_id": r.word_id, "label": r.label, "reason": r.reason}
            for r in labeling.rejected[:MAX_LOGGED_REJECTIONS]
        ]
        out.info("proposals rejected", extra={"rejected_count": len(labeling.rejected), "rejected": rejected})
    written = dynamo.add_receipt_word_labels(labeling.labels) if labeling.labels else None
    # Last: the marker says every label of this run is in the table (a failure above leaves none).
    proposed_by = f"{PROPOSED_BY_PREFIX}{labeling.model_name}"
    dynamo.mark_receipt_labeled(request.image_id, request.receipt_id, proposed_by=proposed_by)
    result = ReceiptResult(
        request.image_id,
        request.receipt_id,
        labels_added=len(written.added) if written else 0,
        labels_skipped_existing=len(written.skipped_existing) if written else 0,
        labels_rejected=len(labeling.rejected),
        llm_calls=labeling.llm_calls,
    )
    _log_counts(out, "receipt labeled", result)
    return result


# ---- one receipt's PENDING labels --------------------------------------------------------------


def validate_receipt(
    request: ValidateReceiptEvent,
    *,
    dynamo: JudgementStore,
    models: ChatModels,
    tracer: Any = None,
    budget: TimeBudget | None = None,
    log: logging.Logger = logger,
) -> ValidationResult:
    """Judge the receipt's PENDING labels of this pipeline, then record the judgements.

    No such label: no LLM call, no write. A judging failure raises before any write. The writes
    are ``set_label_validations`` only (conditional: a label changed since the read is skipped).
    ``tracer`` and ``budget`` as in :func:`process_receipt`.
    """
    out = receipt_log(log, request)
    details = dynamo.get_receipt_details(request.image_id, request.receipt_id, consistent_read=True)
    pending = labels_to_judge(details)
    if not pending:
        out.info("no pending label of this pipeline; skipped", extra={"labels": len(details.labels)})
        return ValidationResult(request.image_id, request.receipt_id)
    judging = _ask(lambda llm, config: judge_receipt(details, llm=llm, config=config), models, tracer, budget, out)
    written = dynamo.set_label_validations(judging.judgements, validated_by=f"{PROPOSED_BY_PREFIX}{judging.model_name}")
    statuses = [j.status for j in written.updated]
    result = ValidationResult(
        request.image_id,
        request.receipt_id,
        labels_pending=len(pending),
        labels_valid=statuses.count(ValidationStatus.VALID),
        labels_invalid=statuses.count(ValidationStatus.INVALID),
        labels_needs_review=statuses.count(ValidationStatus.NEEDS_REVIEW),
        labels_skipped_changed=len(written.skipped_changed),
        llm_calls=judging.llm_calls,
    )
    _log_counts(out, "receipt validated", result)
    return result
