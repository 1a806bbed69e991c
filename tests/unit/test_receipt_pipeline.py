"""receipt_label.pipeline without AWS or a network: an in-memory store and a scripted chat model.

The order that makes a retry safe (read, skip only on this pipeline's marker unless ``force``,
label, write the labels, THEN the marker), nothing written when labeling fails, and the one retry
with a re-read key after an ``LLMAuthError`` (only when the key changed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest

from receipt_dynamo import (
    LabelWriteError,
    LabelWriteResult,
    Receipt,
    ReceiptDetails,
    ReceiptWordLabel,
    ValidationStatus,
)
from receipt_label import (
    PROPOSED_BY_PREFIX,
    LLMAuthError,
    LLMModelNotFoundError,
    LLMOutputError,
    LLMTransientError,
    TimeBudgetExceededError,
)
from receipt_label.budget import TimeBudget
from receipt_label.config import OllamaSettings
from receipt_label.pipeline import (
    DEFAULT_TIME_MARGIN_SECONDS,
    TRACE_FLUSH_SECONDS,
    FixedChatModel,
    KeyedChatModels,
    ProcessReceiptEvent,
    ReceiptResult,
    already_labeled,
    flush_traces,
    lambda_budget,
    langsmith_tracer,
    process_receipt,
    run_preflight,
    time_margin_seconds,
)
from tests.helpers import fixture_receipt
from tests.scripted_chat import RecordingTracer, ScriptedChatModel, well_formed_answer

pytestmark = pytest.mark.unit

DETAILS = fixture_receipt()
IMAGE_ID, RECEIPT_ID = DETAILS.receipt.image_id, DETAILS.receipt.receipt_id
MARKED_AT = "2026-01-02T03:04:05+00:00"


def alpha(word: Any) -> str | None:
    return "PRODUCT_NAME" if word.text.isalpha() else None


ANSWER = well_formed_answer(DETAILS, alpha)
ALPHA_WORDS = sum(1 for w in DETAILS.words if w.text.isalpha())


class MemoryStore:
    """The data layer's three calls on one receipt in memory; ``calls`` records them in order."""

    def __init__(self, details: ReceiptDetails = DETAILS, *, fail_label_writes: bool = False) -> None:
        self.receipt = details.receipt
        self.details = details
        self.labels = {(lab.line_id, lab.word_id, lab.label): lab for lab in details.labels}
        self.fail_label_writes = fail_label_writes
        self.calls: list[str] = []

    def get_receipt_details(self, image_id: str, receipt_id: int, *, consistent_read: bool = True) -> ReceiptDetails:
        self.calls.append("read")
        assert consistent_read, "a retry must see the marker and labels a previous attempt wrote"
        return replace(self.details, receipt=self.receipt, labels=list(self.labels.values()))

    def add_receipt_word_labels(self, labels: Iterable[ReceiptWordLabel]) -> LabelWriteResult:
        self.calls.append("labels")
        labels = list(labels)
        if self.fail_label_writes:
            raise LabelWriteError("PutItem still throttled", written=[], not_written=labels)
        result = LabelWriteResult()
        for label in labels:
            key = (label.line_id, label.word_id, label.label)
            (result.skipped_existing if key in self.labels else result.added).append(label)
            self.labels.setdefault(key, label)
        return result

    def mark_receipt_labeled(self, image_id: str, receipt_id: int, *, proposed_by: str) -> Receipt:
        self.calls.append("marker")
        self.receipt = Receipt(image_id, receipt_id, labeled_by=proposed_by, labeled_at=MARKED_AT)
        return self.receipt

    @property
    def writes(self) -> list[str]:
        return [call for call in self.calls if call != "read"]


def request(*, force: bool = False) -> ProcessReceiptEvent:
    return ProcessReceiptEvent(image_id=IMAGE_ID, receipt_id=RECEIPT_ID, force=force)


def scripted(*answers: Any) -> ScriptedChatModel:
    return ScriptedChatModel(answers=list(answers), model="m")


def run(store: MemoryStore, llm: ScriptedChatModel, *, force: bool = False) -> ReceiptResult:
    return process_receipt(request(force=force), dynamo=store, models=FixedChatModel(llm))


def label_of_this_pipeline(word_index: int) -> ReceiptWordLabel:
    word = [w for w in DETAILS.words if w.text.isalpha()][word_index]
    return ReceiptWordLabel(
        IMAGE_ID, RECEIPT_ID, word.line_id, word.word_id, "PRODUCT_NAME", "r", MARKED_AT, ValidationStatus.PENDING,
        f"{PROPOSED_BY_PREFIX}m",
    )  # fmt: skip


# ---- the order: labels, then the marker -----------------------------------------------------------


def test_the_labels_are_written_before_the_marker_and_the_result_counts_them() -> None:
    store = MemoryStore()

    result = run(store, scripted(ANSWER))

    assert store.calls == ["read", "labels", "marker"]
    assert store.receipt.labeled_by == f"{PROPOSED_BY_PREFIX}m"
    assert result.to_dict() == {
        "image_id": IMAGE_ID,
        "receipt_id": RECEIPT_ID,
        "labels_added": ALPHA_WORDS,
        "labels_skipped_existing": 0,
        "labels_rejected": 0,
        "llm_calls": 1,
        "already_labeled": False,
    }


def test_a_label_write_that_fails_leaves_no_marker_so_the_next_run_labels_again() -> None:
    store = MemoryStore(fail_label_writes=True)

    with pytest.raises(LabelWriteError):
        run(store, scripted(ANSWER))

    assert store.writes == ["labels"] and store.receipt.labeled_by is None
    store.fail_label_writes = False
    llm = scripted(ANSWER)
    assert run(store, llm).already_labeled is False and len(llm.calls) == 1


def test_a_receipt_with_nothing_to_label_is_still_marked_without_a_label_write() -> None:
    store = MemoryStore()

    result = run(store, scripted({"labels": []}, {"labels": []}))  # an empty answer gets one repair call

    assert store.writes == ["marker"]
    assert (result.labels_added, result.labels_skipped_existing, result.labels_rejected) == (0, 0, 0)


def test_a_label_another_run_wrote_meanwhile_is_counted_as_skipped_not_overwritten() -> None:
    store = MemoryStore()
    theirs = label_of_this_pipeline(0)

    def another_run_writes_first(messages: Any) -> dict[str, Any]:
        store.labels[(theirs.line_id, theirs.word_id, theirs.label)] = theirs
        return ANSWER

    result = run(store, scripted(another_run_writes_first))

    assert (result.labels_added, result.labels_skipped_existing) == (ALPHA_WORDS - 1, 1)
    assert store.labels[(theirs.line_id, theirs.word_id, theirs.label)] is theirs


def test_a_proposal_for_a_word_not_on_the_receipt_is_rejected_counted_and_not_written() -> None:
    store = MemoryStore()
    answer = {"labels": [*ANSWER["labels"], {"line_id": 999, "word_id": 1, "label": "PRODUCT_NAME", "reasoning": "x"}]}

    result = run(store, scripted(answer))

    assert (result.labels_added, result.labels_rejected) == (ALPHA_WORDS, 1)
    assert all(line_id != 999 for line_id, _, _ in store.labels)


# ---- skipping: this pipeline's marker, unless force ----------------------------------------------


def test_a_receipt_marked_by_this_pipeline_is_skipped_without_a_call_or_a_write() -> None:
    store = MemoryStore()
    store.receipt = Receipt(IMAGE_ID, RECEIPT_ID, labeled_by=f"{PROPOSED_BY_PREFIX}m", labeled_at=MARKED_AT)
    llm = scripted()

    result = run(store, llm)

    assert result == ReceiptResult(IMAGE_ID, RECEIPT_ID, already_labeled=True)
    assert store.calls == ["read"] and llm.calls == []


def test_labels_of_this_pipeline_without_a_marker_are_completed_not_skipped() -> None:
    store = MemoryStore(replace(DETAILS, labels=[label_of_this_pipeline(0), label_of_this_pipeline(1)]))
    llm = scripted(ANSWER)

    result = run(store, llm)

    assert result.already_labeled is False and len(llm.calls) == 1
    assert result.labels_added == ALPHA_WORDS - 2  # the two labeled words are context, not proposed again
    assert store.calls == ["read", "labels", "marker"]


def test_force_labels_a_marked_receipt_again_and_sets_the_marker_again() -> None:
    store = MemoryStore(replace(DETAILS, labels=[label_of_this_pipeline(0)]))
    store.receipt = Receipt(
        IMAGE_ID, RECEIPT_ID, labeled_by=f"{PROPOSED_BY_PREFIX}old", labeled_at="2020-01-01T00:00:00Z"
    )
    existing = dict(store.labels)
    llm = scripted(ANSWER)

    result = run(store, llm, force=True)

    assert result.already_labeled is False and len(llm.calls) == 1
    assert store.calls == ["read", "labels", "marker"]
    assert store.receipt.labeled_by == f"{PROPOSED_BY_PREFIX}m" and store.receipt.labeled_at == MARKED_AT
    assert all(store.labels[key] is label for key, label in existing.items())  # nothing overwritten


@pytest.mark.parametrize(
    ("labeled_by", "label_by", "skipped"),
    [
        ("receipt_label:gpt-oss:120b", "receipt_label:gpt-oss:120b", True),
        ("receipt_label:other-model", None, True),  # finished, with nothing to propose
        (None, "receipt_label:gpt-oss:120b", False),  # labels of a run that did not finish (or an older version)
        (None, None, False),
        ("reviewer:alice", "receipt_label:gpt-oss:120b", False),  # a marker, but not this pipeline's
    ],
)
def test_only_the_completion_marker_of_this_pipeline_counts_as_labeled(
    labeled_by: str | None, label_by: str | None, skipped: bool
) -> None:
    labels = [replace(label_of_this_pipeline(0), label_proposed_by=label_by)] if label_by else []
    at = MARKED_AT if labeled_by else None
    details = ReceiptDetails(Receipt(IMAGE_ID, RECEIPT_ID, labeled_by=labeled_by, labeled_at=at), labels=labels)
    assert already_labeled(details) is skipped


# ---- a failed labeling writes nothing -------------------------------------------------------------


@pytest.mark.parametrize(
    "answers",
    [
        pytest.param(["not JSON", "still not JSON"], id="unusable-after-repair"),
        pytest.param([LLMAuthError("HTTP 401")], id="auth"),
    ],
)
def test_a_failed_labeling_writes_nothing(answers: list[Any]) -> None:
    store = MemoryStore()

    with pytest.raises((LLMOutputError, LLMAuthError)):
        run(store, scripted(*answers))

    assert store.writes == [] and store.labels == {} and store.receipt.labeled_by is None


# ---- the key: re-read after an auth error, retried only when it changed -----------------------------


class Keys:
    """A secret: ``read(force)`` returns the cached key, or with ``force`` the stored one."""

    def __init__(self, key: str) -> None:
        self.cached = self.stored = key
        self.reads: list[bool] = []

    def read(self, force: bool) -> str:
        self.reads.append(force)
        if force:
            self.cached = self.stored
        return self.cached


def keyed(keys: Keys, accepted: str) -> tuple[KeyedChatModels, list[str]]:
    """Models built per key: the ``accepted`` key labels the receipt, any other is rejected (HTTP 401)."""
    built: list[str] = []

    def build(key: str | None) -> ScriptedChatModel:
        built.append(str(key))
        return scripted(ANSWER if key == accepted else LLMAuthError("HTTP 401 unauthorized"))

    return KeyedChatModels(build, keys.read), built


def test_a_rejected_key_is_re_read_and_a_changed_key_is_used_at_once() -> None:
    keys = Keys("old-key")
    models, built = keyed(keys, accepted="new-key")
    keys.stored = "new-key"  # rotated in the secret; the container still has the old one cached
    store = MemoryStore()

    result = process_receipt(request(), dynamo=store, models=models)

    assert built == ["old-key", "new-key"] and keys.reads == [False, True]
    assert result.labels_added == ALPHA_WORDS and store.calls == ["read", "labels", "marker"]


def test_an_unchanged_key_is_not_tried_again() -> None:
    keys = Keys("old-key")
    models, built = keyed(keys, accepted="new-key")
    store = MemoryStore()

    with pytest.raises(LLMAuthError):
        process_receipt(request(), dynamo=store, models=models)

    assert built == ["old-key"] and keys.reads == [False, True]  # re-read, same key: no second model, no call
    assert store.writes == []


def test_without_a_secret_the_model_is_built_once_without_a_key_and_an_auth_error_is_not_retried() -> None:
    built: list[str | None] = []

    def build(key: str | None) -> ScriptedChatModel:
        built.append(key)
        return scripted(LLMAuthError("HTTP 401 unauthorized"))

    models = KeyedChatModels(build, lambda force: None)

    with pytest.raises(LLMAuthError):
        process_receipt(request(), dynamo=MemoryStore(), models=models)
    assert built == [None]


def test_the_model_is_built_once_and_reused_while_the_key_is_accepted() -> None:
    keys = Keys("k")
    models, built = keyed(keys, accepted="k")

    assert models.current() is models.current()
    assert built == ["k"] and keys.reads == [False]


# ---- logs and tracing ---------------------------------------------------------------------------


def test_every_line_of_a_receipt_names_it(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("process_receipt")
    answer = {"labels": [*ANSWER["labels"]]}
    answer["labels"].append({"line_id": 999, "word_id": 1, "label": "PRODUCT_NAME", "reasoning": "x"})
    with caplog.at_level(logging.INFO, logger="process_receipt"):
        process_receipt(request(force=True), dynamo=MemoryStore(), models=FixedChatModel(scripted(answer)), log=log)

    records = [r for r in caplog.records if r.name == "process_receipt"]
    assert [r.getMessage() for r in records] == ["proposals rejected", "receipt labeled"]
    assert all((r.image_id, r.receipt_id, r.force) == (IMAGE_ID, RECEIPT_ID, True) for r in records)
    assert records[0].rejected_count == 1 and records[0].rejected[0]["line_id"] == 999
    assert records[1].labels_added == ALPHA_WORDS


def test_the_tracer_sees_the_labeling_call_and_is_flushed_before_the_writes() -> None:
    store = MemoryStore()
    events = store.calls  # the store's calls and the tracer's events, in one order
    tracer = RecordingTracer(events)

    process_receipt(request(), dynamo=store, models=FixedChatModel(scripted(ANSWER)), tracer=tracer)

    assert events == ["read", "chat", "wait", "flush", "labels", "marker"]
    assert tracer.flush_timeouts == [TRACE_FLUSH_SECONDS]  # a slow LangSmith holds a receipt 5 s at most


def test_a_failing_trace_flush_never_fails_the_receipt() -> None:
    tracer = RecordingTracer(flush_error=ConnectionError("LangSmith unreachable"))
    flush_traces(tracer)  # must not raise
    assert tracer.events == ["wait"]


def test_a_failing_trace_flush_is_a_warning_line_of_the_receipt_and_the_receipt_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    tracer = RecordingTracer(flush_error=ConnectionError("LangSmith unreachable"))
    log = logging.getLogger("process_receipt")

    with caplog.at_level(logging.INFO, logger="process_receipt"):
        result = process_receipt(
            request(), dynamo=store, models=FixedChatModel(scripted(ANSWER)), tracer=tracer, log=log
        )

    assert result.labels_added == ALPHA_WORDS and store.writes == ["labels", "marker"]
    (line,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert (line.name, line.image_id, line.receipt_id, line.error_type) == (
        "process_receipt",
        IMAGE_ID,
        RECEIPT_ID,
        "ConnectionError",
    )


def test_labeling_stops_at_the_time_budget_without_a_call_or_a_write() -> None:
    store = MemoryStore()
    llm = scripted(ANSWER)

    with pytest.raises(TimeBudgetExceededError):
        process_receipt(request(), dynamo=store, models=FixedChatModel(llm), budget=TimeBudget.from_seconds(0))

    assert llm.calls == [] and store.writes == []


# ---- the LangSmith tracer, the margin and the budget ---------------------------------------------------


class FakeLangSmithClient:
    """Records what ``langsmith.Client`` was built with (the real one starts a background thread)."""

    def __init__(self, api_url: str | None = None, *, api_key: str | None = None) -> None:
        self.api_url, self.api_key = api_url, api_key


def test_the_langsmith_tracer_holds_the_key_in_its_client_with_the_endpoint_and_project(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import langsmith

    monkeypatch.setattr(langsmith, "Client", FakeLangSmithClient)

    tracer = langsmith_tracer("ls-key", endpoint="http://127.0.0.1:9/ls", project="receipts-dev")
    default = langsmith_tracer("ls-key")

    assert isinstance(tracer.client, FakeLangSmithClient)
    assert (tracer.client.api_url, tracer.client.api_key, tracer.project_name) == (
        "http://127.0.0.1:9/ls",
        "ls-key",
        "receipts-dev",
    )
    assert (default.client.api_url, default.project_name) == (None, "receipt-labeling")  # LangSmith's own URL


@pytest.mark.parametrize(
    ("environ", "margin"),
    [
        ({}, DEFAULT_TIME_MARGIN_SECONDS),
        ({"TIME_MARGIN_SECONDS": "  "}, DEFAULT_TIME_MARGIN_SECONDS),
        ({"TIME_MARGIN_SECONDS": " 45 "}, 45.0),
        ({"TIME_MARGIN_SECONDS": "2.5"}, 2.5),
        ({"TIME_MARGIN_SECONDS": "0"}, 0.0),
        ({"TIME_MARGIN_SECONDS": "900"}, 900.0),
    ],
)
def test_the_time_margin_is_a_number_of_seconds_within_0_to_900_defaulting_to_30(
    environ: dict[str, str], margin: float
) -> None:
    assert DEFAULT_TIME_MARGIN_SECONDS == 30.0
    assert time_margin_seconds(environ) == margin


@pytest.mark.parametrize("raw", ["abc", "30s", "-1", "-0.5", "900.5", "1e6", "nan"])
def test_a_bad_time_margin_is_an_error_naming_the_variable(raw: str) -> None:
    with pytest.raises(RuntimeError, match="TIME_MARGIN_SECONDS"):
        time_margin_seconds({"TIME_MARGIN_SECONDS": raw})


def test_the_time_margin_is_read_from_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIME_MARGIN_SECONDS", "12")
    assert time_margin_seconds() == 12.0
    assert time_margin_seconds({}) == DEFAULT_TIME_MARGIN_SECONDS  # a given mapping wins over the environment


class _Context:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_the_budget_is_the_lambdas_remaining_time_minus_the_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIME_MARGIN_SECONDS", "10")

    budget = lambda_budget(_Context(100_000))

    assert budget is not None and budget.remaining() == pytest.approx(90.0, abs=0.05)


@pytest.mark.parametrize("context", [None, object()])
def test_outside_lambda_there_is_no_budget(context: Any) -> None:
    assert lambda_budget(context) is None


# ---- the preflight ------------------------------------------------------------------------------------

SETTINGS = OllamaSettings(base_url="https://ollama.example.com", model="gpt-oss:120b")
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ollama-AbCdEf"


def preflight(*answers: Any, **kwargs: Any) -> Any:
    return run_preflight(models=FixedChatModel(scripted(*answers)), settings=SETTINGS, **kwargs)


def test_the_preflight_makes_one_call_and_returns_the_model_and_endpoint() -> None:
    llm = scripted("{}")

    result = run_preflight(models=FixedChatModel(llm), settings=SETTINGS, key_secret=SECRET_ARN)

    assert len(llm.calls) == 1
    assert result.to_dict() == {
        "preflight": "ok",
        "model": "gpt-oss:120b",
        "base_url": "https://ollama.example.com",
        "llm_calls": 1,
    }


def test_a_rejected_key_at_the_preflight_names_the_secret_to_fix_and_keeps_its_class() -> None:
    with pytest.raises(LLMAuthError) as raised:
        preflight(LLMAuthError("HTTP 401 unauthorized", status_code=401), key_secret=SECRET_ARN)

    error = raised.value
    assert type(error) is LLMAuthError and (error.status_code, error.attempts) == (401, 1)
    message = str(error)
    assert message.startswith("HTTP 401 unauthorized -- ")
    assert SECRET_ARN in message and "put-secret-value" in message and SETTINGS.base_url in message


def test_a_model_the_endpoint_does_not_serve_is_named_with_the_fix() -> None:
    with pytest.raises(LLMModelNotFoundError) as raised:
        preflight(LLMModelNotFoundError("HTTP 404 model not found", status_code=404))

    assert type(raised.value) is LLMModelNotFoundError and raised.value.status_code == 404
    assert "'gpt-oss:120b'" in str(raised.value) and "ollama pull" in str(raised.value)


def test_an_unreachable_endpoint_at_the_preflight_stays_retryable_and_names_the_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("receipt_label.llm.time.sleep", lambda seconds: None)

    with pytest.raises(LLMTransientError) as raised:
        preflight(LLMTransientError("connection refused"), LLMTransientError("connection refused"))

    assert type(raised.value) is LLMTransientError and raised.value.attempts == 2
    assert SETTINGS.base_url in str(raised.value) and "ollama_base_url" in str(raised.value)


def test_a_preflight_retried_with_a_rotated_key_counts_both_calls() -> None:
    keys = Keys("old-key")
    keys.stored = "new-key"

    def build(key: str | None) -> ScriptedChatModel:
        return scripted("{}" if key == "new-key" else LLMAuthError("HTTP 401 unauthorized", status_code=401))

    result = run_preflight(models=KeyedChatModels(build, keys.read), settings=SETTINGS)

    assert result.llm_calls == 2 and keys.reads == [False, True]


def test_the_preflight_stops_at_the_time_budget_without_a_call() -> None:
    llm = scripted("{}")

    with pytest.raises(TimeBudgetExceededError):
        run_preflight(models=FixedChatModel(llm), settings=SETTINGS, budget=TimeBudget.from_seconds(0))

    assert llm.calls == []
