"""receipt_label.pipeline.validate_receipt without AWS or a network: an in-memory store and a scripted chat model.

Only PENDING labels of this pipeline are judged; nothing pending means no LLM call; a failed judging
writes nothing; every write goes through ``set_label_validations`` (the conditional update).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest

from receipt_dynamo import (
    LabelJudgement,
    ReceiptDetails,
    ReceiptWordLabel,
    ValidationStatus,
    ValidationWriteResult,
)
from receipt_label import (
    PROPOSED_BY_PREFIX,
    LLMAuthError,
    LLMOutputError,
    LLMTransientError,
    TimeBudgetExceededError,
)
from receipt_label.budget import TimeBudget
from receipt_label.pipeline import FixedChatModel, ValidateReceiptEvent, ValidationResult, validate_receipt
from tests.helpers import fixture_receipt
from tests.scripted_chat import RecordingTracer, ScriptedChatModel

pytestmark = pytest.mark.unit

DETAILS = fixture_receipt()
IMAGE_ID, RECEIPT_ID = DETAILS.receipt.image_id, DETAILS.receipt.receipt_id
TS = "2026-01-02T03:04:05+00:00"
WORDS = [w for w in DETAILS.words if w.text.isalpha()]


def label(
    index: int,
    *,
    status: ValidationStatus = ValidationStatus.PENDING,
    by: str | None = f"{PROPOSED_BY_PREFIX}m",
    name: str = "PRODUCT_NAME",
) -> ReceiptWordLabel:
    word = WORDS[index]
    return ReceiptWordLabel(IMAGE_ID, RECEIPT_ID, word.line_id, word.word_id, name, "r", TS, status, by)


class MemoryStore:
    """The two data layer calls on one receipt in memory, with the conditional update's semantics."""

    def __init__(self, labels: list[ReceiptWordLabel]) -> None:
        self.labels = {(lbl.line_id, lbl.word_id, lbl.label): lbl for lbl in labels}
        self.calls: list[str] = []
        self.validated_by: list[str] = []

    def get_receipt_details(self, image_id: str, receipt_id: int, *, consistent_read: bool = True) -> ReceiptDetails:
        self.calls.append("read")
        assert consistent_read
        return replace(DETAILS, labels=list(self.labels.values()))

    def set_label_validations(
        self, judgements: Iterable[LabelJudgement], *, validated_by: str, validated_at: str | None = None
    ) -> ValidationWriteResult:
        self.calls.append("validations")
        self.validated_by.append(validated_by)
        result = ValidationWriteResult()
        for j in judgements:
            key = (j.line_id, j.word_id, j.label)
            current = self.labels.get(key)
            if (
                current is None
                or current.validation_status is not ValidationStatus.PENDING
                or not (current.label_proposed_by or "").startswith(PROPOSED_BY_PREFIX)
            ):
                result.skipped_changed.append(j)
                continue
            self.labels[key] = replace(
                current, validation_status=j.status, validation_reason=j.reason, validated_by=validated_by
            )
            result.updated.append(j)
        return result

    def status(self, lbl: ReceiptWordLabel) -> ValidationStatus:
        return self.labels[(lbl.line_id, lbl.word_id, lbl.label)].validation_status

    @property
    def writes(self) -> list[str]:
        return [c for c in self.calls if c != "read"]


def judged(labels: list[ReceiptWordLabel], status: str = "VALID") -> dict[str, Any]:
    return {
        "judgements": [
            {"line_id": lbl.line_id, "word_id": lbl.word_id, "label": lbl.label, "status": status, "reason": "ok"}
            for lbl in labels
        ]
    }


def scripted(*answers: Any) -> ScriptedChatModel:
    return ScriptedChatModel(answers=list(answers), model="judge")


def run(store: MemoryStore, llm: ScriptedChatModel, **kwargs: Any) -> ValidationResult:
    request = ValidateReceiptEvent(image_id=IMAGE_ID, receipt_id=RECEIPT_ID)
    return validate_receipt(request, dynamo=store, models=FixedChatModel(llm), **kwargs)


def judged_keys(llm: ScriptedChatModel) -> list[str]:
    """The ``[l:w] text -> LABEL`` lines of the first prompt's list of labels to judge."""
    prompt = llm.prompts[0]
    return [line for line in prompt.split("Labels to judge", 1)[1].splitlines()[1:] if line]


# ---- the happy path --------------------------------------------------------------------------------


def test_each_pending_label_is_judged_in_one_call_and_written_through_the_conditional_update() -> None:
    pending = [label(0), label(1), label(2)]
    store = MemoryStore(pending)
    answer = judged(pending)
    answer["judgements"][1]["status"] = "INVALID"
    answer["judgements"][2]["status"] = "NEEDS_REVIEW"

    result = run(store, scripted(answer))

    assert store.calls == ["read", "validations"] and store.validated_by == [f"{PROPOSED_BY_PREFIX}judge"]
    assert [store.status(lbl) for lbl in pending] == [
        ValidationStatus.VALID,
        ValidationStatus.INVALID,
        ValidationStatus.NEEDS_REVIEW,
    ]
    assert result.to_dict() == {
        "image_id": IMAGE_ID,
        "receipt_id": RECEIPT_ID,
        "labels_pending": 3,
        "labels_valid": 1,
        "labels_invalid": 1,
        "labels_needs_review": 1,
        "labels_skipped_changed": 0,
        "llm_calls": 1,
    }


def test_a_label_changed_between_the_read_and_the_write_is_counted_as_skipped() -> None:
    pending = [label(0), label(1)]
    store = MemoryStore(pending)

    def person_decides_first(messages: Any) -> dict[str, Any]:
        key = (pending[1].line_id, pending[1].word_id, pending[1].label)
        store.labels[key] = replace(pending[1], validation_status=ValidationStatus.VALID, validated_by="reviewer:ann")
        return judged(pending, "INVALID")

    result = run(store, scripted(person_decides_first))

    assert (result.labels_invalid, result.labels_skipped_changed) == (1, 1)
    assert store.status(pending[1]) is ValidationStatus.VALID  # the person's decision stands


# ---- what is judged, and when there is no call -------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param([], id="no-labels"),
        pytest.param(
            [label(0, status=ValidationStatus.VALID), label(1, status=ValidationStatus.INVALID)], id="decided"
        ),
        pytest.param([label(0, by="reviewer:alice"), label(1, by=None)], id="foreign-pending"),
        pytest.param([label(0, status=ValidationStatus.NONE)], id="none-status"),
    ],
)
def test_a_receipt_without_a_pending_label_of_this_pipeline_costs_no_call_and_no_write(
    labels: list[ReceiptWordLabel],
) -> None:
    store = MemoryStore(labels)
    llm = scripted()  # any call would fail: no answer is scripted

    result = run(store, llm)

    assert llm.calls == [] and store.writes == []
    assert result == ValidationResult(IMAGE_ID, RECEIPT_ID)
    assert {k: v for k, v in result.to_dict().items() if k not in ("image_id", "receipt_id")} == dict.fromkeys(
        ("labels_pending", "labels_valid", "labels_invalid", "labels_needs_review", "labels_skipped_changed"), 0
    ) | {"llm_calls": 0}


def test_only_pending_labels_of_this_pipeline_are_shown_to_judge_and_written() -> None:
    ours = label(0)
    decided = label(1, status=ValidationStatus.VALID)
    rejected = label(2, status=ValidationStatus.INVALID)
    foreign = label(3, by="reviewer:alice")
    store = MemoryStore([ours, decided, rejected, foreign])
    llm = scripted(judged([ours]))

    result = run(store, llm)

    word = WORDS[0]
    assert judged_keys(llm) == [f"[{word.line_id}:{word.word_id}] {word.text} -> PRODUCT_NAME"]
    assert result.labels_pending == 1 and result.labels_valid == 1
    assert [store.status(lbl) for lbl in (decided, rejected, foreign)] == [
        ValidationStatus.VALID,
        ValidationStatus.INVALID,
        ValidationStatus.PENDING,
    ]


def test_an_answer_judging_a_label_that_is_not_to_be_judged_is_repaired_not_written() -> None:
    ours, foreign = label(0), label(1, by="reviewer:alice")
    store = MemoryStore([ours, foreign])
    llm = scripted(judged([ours, foreign], "INVALID"), judged([ours], "INVALID"))

    result = run(store, llm)

    assert len(llm.calls) == 2 and "is not one of the labels to judge" in llm.prompts[1]
    assert result.labels_invalid == 1 and store.status(foreign) is ValidationStatus.PENDING


# ---- a failed judging writes nothing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "error"),
    [
        pytest.param(["not JSON", "still not JSON"], LLMOutputError, id="unusable-after-repair"),
        pytest.param([{"judgements": []}, {"judgements": []}], LLMOutputError, id="nothing-judged-twice"),
        pytest.param([LLMAuthError("HTTP 401")], LLMAuthError, id="auth"),
        pytest.param([LLMTransientError("HTTP 503")] * 2, LLMTransientError, id="transient"),
    ],
)
def test_a_failed_judging_writes_nothing(answers: list[Any], error: type[Exception]) -> None:
    pending = [label(0), label(1)]
    store = MemoryStore(pending)

    with pytest.raises(error):
        run(store, ScriptedChatModel(answers=answers, model="judge"))

    assert store.writes == [] and all(store.status(lbl) is ValidationStatus.PENDING for lbl in pending)


def test_one_bad_answer_then_a_good_one_takes_two_calls() -> None:
    pending = [label(0)]
    store = MemoryStore(pending)

    result = run(store, scripted("oops", judged(pending)))

    assert result.llm_calls == 2 and result.labels_valid == 1


def test_judging_stops_at_the_time_budget_without_a_call_or_a_write() -> None:
    pending = [label(0)]
    store = MemoryStore(pending)
    llm = scripted(judged(pending))

    with pytest.raises(TimeBudgetExceededError):
        run(store, llm, budget=TimeBudget.from_seconds(0))

    assert llm.calls == [] and store.writes == [] and store.status(pending[0]) is ValidationStatus.PENDING


# ---- tracing -------------------------------------------------------------------------------------------


def test_the_tracer_sees_the_judging_call_and_is_flushed_before_the_write() -> None:
    pending = [label(0)]
    store = MemoryStore(pending)
    events = store.calls  # the store's calls and the tracer's events, in one order

    run(store, scripted(judged(pending)), tracer=RecordingTracer(events))

    assert events == ["read", "chat", "wait", "flush", "validations"]


# ---- logs ------------------------------------------------------------------------------------------------


def test_every_line_of_a_receipt_names_it(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("validate_labels")
    with caplog.at_level(logging.INFO, logger="validate_labels"):
        run(MemoryStore([label(0)]), scripted(judged([label(0)])), log=log)
        run(MemoryStore([]), scripted(), log=log)
    records = [r for r in caplog.records if r.name == "validate_labels"]
    assert [r.getMessage() for r in records] == ["receipt validated", "no pending label of this pipeline; skipped"]
    assert all((r.image_id, r.receipt_id) == (IMAGE_ID, RECEIPT_ID) for r in records)
    assert records[0].labels_valid == 1 and records[0].llm_calls == 1
