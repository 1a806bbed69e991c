"""receipt_label.validation: the judging prompt, the answer's schema and checks, the one repair call."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from receipt_dynamo import LabelJudgement, ReceiptWordLabel, ValidationStatus
from receipt_label import LLMOutputError, OllamaSettings, create_chat_model, prompts
from receipt_label.graph import existing_labels
from receipt_label.validation import (
    JUDGEMENT_JSON_SCHEMA,
    JudgingOptions,
    judge_receipt,
    judgement_json_schema,
    labels_to_judge,
    review_judgements,
)
from tests.helpers import fixture_receipt
from tests.scripted_chat import ScriptedChatModel

pytestmark = pytest.mark.unit

BASE = fixture_receipt()
TS = "2026-01-02T03:04:05+00:00"
WORDS = [w for w in BASE.words if w.text.isalpha()]


def label(index: int, name: str = "PRODUCT_NAME", **overrides: Any) -> ReceiptWordLabel:
    w = WORDS[index]
    fields: dict[str, Any] = {"validation_status": ValidationStatus.PENDING, "label_proposed_by": "receipt_label:m"}
    fields.update(overrides)
    return ReceiptWordLabel(w.image_id, w.receipt_id, w.line_id, w.word_id, name, "r", TS, **fields)


PENDING = [label(0, "MERCHANT_NAME"), label(1, "MERCHANT_NAME"), label(5)]
DETAILS = replace(BASE, labels=[*PENDING, label(6, validation_status=ValidationStatus.VALID)])


def item(lbl: ReceiptWordLabel, status: str = "VALID", reason: str = "fits") -> dict[str, Any]:
    return {"line_id": lbl.line_id, "word_id": lbl.word_id, "label": lbl.label, "status": status, "reason": reason}


def answer(*items: dict[str, Any]) -> str:
    return json.dumps({"judgements": list(items)})


# ---- the prompt ------------------------------------------------------------------------------------------


def test_the_prompt_shows_the_whole_receipt_as_printed_then_the_labels_to_judge() -> None:
    llm = ScriptedChatModel(answers=[answer(*(item(lbl) for lbl in PENDING))])
    judge_receipt(DETAILS, llm=llm)
    system, user = llm.calls[0]
    assert isinstance(system, SystemMessage) and isinstance(user, HumanMessage)
    text = str(user.content)
    # the receipt exactly as the labeling prompt lists it: every row, every label as context
    assert prompts.receipt_view(DETAILS, existing_labels(DETAILS)).listing in text
    assert all(f"[{w.line_id}:{w.word_id}]" in text for w in BASE.words)
    to_judge = text.split("Labels to judge (3):\n", 1)[1].splitlines()
    assert to_judge == [
        f"[{lbl.line_id}:{lbl.word_id}] {WORDS[i].text} -> {lbl.label}"
        for i, lbl in zip((0, 1, 5), PENDING, strict=True)
    ]
    for status in ("VALID", "INVALID", "NEEDS_REVIEW"):
        assert f"- {status}:" in str(system.content)


def test_only_pending_labels_of_this_pipeline_are_to_be_judged() -> None:
    foreign = label(2, label_proposed_by="reviewer:alice")
    none = label(3, label_proposed_by=None)
    decided = label(4, validation_status=ValidationStatus.INVALID)
    details = replace(BASE, labels=[*PENDING, foreign, none, decided])
    assert labels_to_judge(details) == sorted(PENDING, key=lambda x: (x.line_id, x.word_id, x.label))


# ---- the schema --------------------------------------------------------------------------------------


def test_the_schema_asks_for_every_field_and_limits_label_and_status() -> None:
    schema = judgement_json_schema(["TAX", "MERCHANT_NAME", "TAX"])
    entry = schema["properties"]["judgements"]["items"]
    assert entry["required"] == ["line_id", "word_id", "label", "status", "reason"]
    assert entry["properties"]["label"]["enum"] == ["MERCHANT_NAME", "TAX"]
    assert entry["properties"]["status"]["enum"] == ["VALID", "INVALID", "NEEDS_REVIEW"]
    assert entry["additionalProperties"] is False and schema["required"] == ["judgements"]
    assert "GRAND_TOTAL" in JUDGEMENT_JSON_SCHEMA["properties"]["judgements"]["items"]["properties"]["label"]["enum"]


def test_an_ollama_model_is_asked_for_the_judgement_schema_of_the_receipts_labels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    llm = create_chat_model(OllamaSettings(base_url="http://127.0.0.1:9"))
    sent: list[Any] = []

    def fake_invoke(self: Any, messages: Any, config: Any = None, **kwargs: Any) -> Any:
        sent.append(self.kwargs["format"])
        raise AssertionError("stop before the network")

    monkeypatch.setattr(type(llm.bind(format={})), "invoke", fake_invoke)
    with pytest.raises(AssertionError, match="stop before the network"):
        judge_receipt(DETAILS, llm=llm)
    assert sent == [judgement_json_schema(["MERCHANT_NAME", "PRODUCT_NAME"])]


# ---- checking an answer ----------------------------------------------------------------------------------


def test_a_complete_answer_gives_one_judgement_per_label_in_key_order() -> None:
    text = answer(
        item(PENDING[2], "invalid", "a  fruit,\nnot a product"), item(PENDING[0]), item(PENDING[1], "needs review")
    )
    review = review_judgements(text, PENDING)
    assert review.errors == []
    assert review.judgements == [
        LabelJudgement.of(PENDING[0], ValidationStatus.VALID, "fits"),
        LabelJudgement.of(PENDING[1], ValidationStatus.NEEDS_REVIEW, "fits"),
        LabelJudgement.of(PENDING[2], ValidationStatus.INVALID, "a fruit, not a product"),
    ]


def test_prose_around_the_json_object_is_accepted() -> None:
    text = "Here you go:\n" + answer(*(item(lbl) for lbl in PENDING)) + "\nDone."
    assert len(review_judgements(text, PENDING).judgements) == 3


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        pytest.param([item(PENDING[0]), item(PENDING[1])], "is not judged", id="missing"),
        pytest.param(
            [*(item(lbl) for lbl in PENDING), item(PENDING[0], "INVALID")], "judged more than once", id="twice"
        ),
        pytest.param([*(item(lbl) for lbl in PENDING), item(label(7))], "not one of the labels to judge", id="extra"),
        pytest.param(
            [item(PENDING[0]), item(PENDING[1]), {**item(PENDING[2]), "label": "TAX"}],
            "not one of the labels to judge",
            id="wrong-label",
        ),
        pytest.param([item(PENDING[0]), item(PENDING[1]), item(PENDING[2], "MAYBE")], "status 'MAYBE'", id="status"),
        pytest.param([item(PENDING[0]), item(PENDING[1]), {"line_id": "x"}], "item 2 is malformed", id="malformed"),
    ],
)
def test_an_answer_that_does_not_judge_each_label_exactly_once_is_not_used(
    items: list[dict[str, Any]], problem: str
) -> None:
    review = review_judgements(answer(*items), PENDING)
    assert review.judgements == []
    assert any(problem in error for error in review.errors), review.errors


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"labels": []}'])
def test_an_unusable_answer_is_one_error(text: str) -> None:
    review = review_judgements(text, PENDING)
    assert review.judgements == [] and len(review.errors) == 1


def test_a_long_reason_is_cut() -> None:
    review = review_judgements(answer(item(PENDING[0], reason="x" * 1000)), PENDING[:1], max_reason_chars=40)
    assert review.judgements[0].reason == "x" * 40


# ---- calls: one, one repair, then LLMOutputError ---------------------------------------------------------


def test_a_good_answer_is_one_call() -> None:
    llm = ScriptedChatModel(answers=[answer(*(item(lbl) for lbl in PENDING))], model="judge-model")
    result = judge_receipt(DETAILS, llm=llm)
    assert (result.llm_calls, result.repaired, result.model_name) == (1, False, "judge-model")
    assert [j.status for j in result.judgements] == [ValidationStatus.VALID] * 3


def test_a_bad_answer_gets_one_repair_call_that_shows_the_model_its_errors() -> None:
    first = answer(item(PENDING[0]), item(PENDING[1]))
    llm = ScriptedChatModel(answers=[first, answer(*(item(lbl) for lbl in PENDING))])
    result = judge_receipt(DETAILS, llm=llm)
    assert result.llm_calls == 2 and result.repaired and len(result.judgements) == 3
    repair = llm.prompts[1]
    assert "could not be used" in repair and "is not judged" in repair
    assert str(llm.calls[1][-2].content) == first  # the bad answer is part of the conversation


def test_two_bad_answers_raise_llm_output_error_after_two_calls() -> None:
    llm = ScriptedChatModel(answers=["nope", answer(item(PENDING[0]))])
    with pytest.raises(LLMOutputError) as info:
        judge_receipt(DETAILS, llm=llm, options=JudgingOptions(retry_delay_seconds=0))
    assert info.value.llm_calls == 2 and len(llm.calls) == 2
    assert any("is not judged" in e for e in info.value.errors)


def test_no_pending_label_means_no_call() -> None:
    llm = ScriptedChatModel(answers=[])
    result = judge_receipt(replace(BASE, labels=[label(0, validation_status=ValidationStatus.VALID)]), llm=llm)
    assert result.judgements == [] and result.llm_calls == 0 and llm.calls == []
