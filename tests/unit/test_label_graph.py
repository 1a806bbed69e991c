"""The labeling workflow with a scripted fake chat model: calls, validation, repair, labels."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from receipt_dynamo import ReceiptDetails, ReceiptWordLabel, ValidationStatus, parse_receipt_document
from receipt_label import (
    LabelingOptions,
    LLMOutputError,
    LLMRateLimitError,
    LLMRequestError,
    LLMTransientError,
    label_receipt,
)
from receipt_label.graph import review_answer
from tests.helpers import REPO_ROOT
from tests.scripted_chat import ScriptedChatModel, well_formed_answer

pytestmark = pytest.mark.unit

FIXTURES = REPO_ROOT / "tests" / "fixtures"
IMAGE_ID = "3f8a6c1e-1d2b-4c5d-9e7f-0a1b2c3d4e5f"
NO_DELAY = LabelingOptions(retry_delay_seconds=0.0)


def receipt(lines: list[list[str]], *, image_id: str = IMAGE_ID) -> ReceiptDetails:
    return parse_receipt_document(
        {
            "image_id": image_id,
            "receipt_id": 1,
            "lines": [
                {
                    "line_id": i,
                    "text": " ".join(words),
                    "words": [{"word_id": j, "text": t} for j, t in enumerate(words, start=1)],
                }
                for i, words in enumerate(lines, start=1)
            ],
        }
    )


def item(line_id: int, word_id: int, label: str, reasoning: str = "because") -> dict[str, Any]:
    return {"line_id": line_id, "word_id": word_id, "label": label, "reasoning": reasoning}


SHOP = [
    ["TRADER", "JOE'S"],
    ["BANANAS", "$5.00"],
    ["APPLES", "$5.00"],
    ["TOTAL", "$10.00"],
]


def good_shop_answer() -> dict[str, Any]:
    return {
        "labels": [
            item(1, 1, "MERCHANT_NAME", "store name at the top"),
            item(1, 2, "MERCHANT_NAME", "store name at the top"),
            item(2, 1, "PRODUCT_NAME"),
            item(2, 2, "LINE_TOTAL", "price of bananas"),
            item(3, 1, "PRODUCT_NAME"),
            item(3, 2, "LINE_TOTAL", "price of apples"),
            item(4, 2, "GRAND_TOTAL", "amount after TOTAL"),
        ]
    }


def test_happy_path_is_one_call_and_gives_pending_labels_named_after_the_model() -> None:
    details = receipt(SHOP)
    llm = ScriptedChatModel(answers=[good_shop_answer()], model="gpt-oss:120b")

    result = label_receipt(details, llm=llm)

    assert result.llm_calls == 1
    assert len(llm.calls) == 1
    assert result.rejected == []
    assert [(lab.line_id, lab.word_id, lab.label) for lab in result.labels] == [
        (1, 1, "MERCHANT_NAME"),
        (1, 2, "MERCHANT_NAME"),
        (2, 1, "PRODUCT_NAME"),
        (2, 2, "LINE_TOTAL"),
        (3, 1, "PRODUCT_NAME"),
        (3, 2, "LINE_TOTAL"),
        (4, 2, "GRAND_TOTAL"),
    ]
    for lab in result.labels:
        assert isinstance(lab, ReceiptWordLabel)
        assert lab.validation_status is ValidationStatus.PENDING
        assert lab.label_proposed_by == "receipt_label:gpt-oss:120b"
        assert (lab.image_id, lab.receipt_id) == (IMAGE_ID, 1)
        assert datetime.fromisoformat(lab.timestamp_added).utcoffset() == UTC.utcoffset(None)
    assert result.labels[3].reasoning == "price of bananas"
    system, user = llm.calls[0]
    assert isinstance(system, SystemMessage) and isinstance(user, HumanMessage)


def test_model_name_override_names_the_proposer() -> None:
    llm = ScriptedChatModel(answers=[good_shop_answer()])
    result = label_receipt(receipt(SHOP), llm=llm, model_name="qwen3:8b")
    assert {lab.label_proposed_by for lab in result.labels} == {"receipt_label:qwen3:8b"}


def test_malformed_json_then_a_good_answer_takes_two_calls_and_shows_the_model_its_error() -> None:
    bad = '{"labels": [{"line_id": 1, "word_id": 1, "label": "MERCHANT_NAME"'
    llm = ScriptedChatModel(answers=[bad, good_shop_answer()])

    result = label_receipt(receipt(SHOP), llm=llm)

    assert result.llm_calls == 2
    assert result.repaired
    assert len(result.labels) == 7
    assert "not valid JSON" in result.errors[0]
    repair_messages = llm.calls[1]
    # the repair call repeats the conversation, then the bad answer, then the problems
    assert repair_messages[:2] == llm.calls[0]
    assert isinstance(repair_messages[2], AIMessage) and repair_messages[2].content == bad
    assert isinstance(repair_messages[3], HumanMessage)
    assert "not valid JSON" in str(repair_messages[3].content)


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(json.dumps([item(1, 1, "MERCHANT_NAME")]), id="array-not-object"),
        pytest.param(json.dumps({"proposals": []}), id="no-labels-key"),
        pytest.param(json.dumps({"labels": "MERCHANT_NAME"}), id="labels-not-array"),
        pytest.param("", id="empty"),
        pytest.param("Sure! Here are the labels you asked for.", id="prose"),
    ],
)
def test_wrong_schema_then_good_answer_takes_two_calls(wrong: str) -> None:
    llm = ScriptedChatModel(answers=[wrong, good_shop_answer()])
    result = label_receipt(receipt(SHOP), llm=llm)
    assert result.llm_calls == 2
    assert len(result.labels) == 7


def test_two_bad_answers_raise_llm_output_error_after_two_calls() -> None:
    llm = ScriptedChatModel(answers=["not json", '{"labels": 3}', good_shop_answer()])

    with pytest.raises(LLMOutputError) as info:
        label_receipt(receipt(SHOP), llm=llm)

    assert len(llm.calls) == 2
    assert info.value.llm_calls == 2
    assert any("labels" in e for e in info.value.errors)


def test_unknown_word_ids_and_labels_are_rejected_with_reasons_in_one_call() -> None:
    answer = good_shop_answer()
    answer["labels"] += [item(9, 1, "TAX", "tax line"), item(4, 1, "TOTAL_LABEL", "word TOTAL")]
    llm = ScriptedChatModel(answers=[answer])

    result = label_receipt(receipt(SHOP), llm=llm)

    assert result.llm_calls == 1
    assert len(result.labels) == 7
    reasons = {(r.line_id, r.word_id): r.reason for r in result.rejected}
    assert reasons == {
        (9, 1): "no word [9:1] on this receipt",
        (4, 1): "unknown label 'TOTAL_LABEL'",
    }
    assert {(r.line_id, r.word_id, r.label) for r in result.rejected} == {(9, 1, "TAX"), (4, 1, "TOTAL_LABEL")}


def test_two_identical_price_words_label_exactly_the_word_the_model_named() -> None:
    details = receipt(SHOP)
    assert [w.text for w in details.words if w.text == "$5.00"] == ["$5.00", "$5.00"]
    llm = ScriptedChatModel(answers=[{"labels": [item(3, 2, "LINE_TOTAL", "price of apples")]}])

    result = label_receipt(details, llm=llm)

    assert [(lab.line_id, lab.word_id, lab.label) for lab in result.labels] == [(3, 2, "LINE_TOTAL")]
    # both words are in the prompt, each with its own ids
    assert "[2:2] $5.00" in llm.prompts[0] and "[3:2] $5.00" in llm.prompts[0]


def test_words_already_labeled_are_shown_as_context_and_not_proposed_again() -> None:
    details = receipt(SHOP)
    details.labels = [
        ReceiptWordLabel(
            IMAGE_ID, 1, 1, 1, "MERCHANT_NAME", "human", "2026-01-01T00:00:00+00:00", ValidationStatus.VALID
        ),
        ReceiptWordLabel(IMAGE_ID, 1, 4, 2, "TAX", "wrong", "2026-01-01T00:00:00+00:00", ValidationStatus.INVALID),
    ]
    llm = ScriptedChatModel(answers=[good_shop_answer()])

    result = label_receipt(details, llm=llm)

    assert "[1:1] TRADER {MERCHANT_NAME}" in llm.prompts[0]
    assert "[4:2] $10.00 {TAX}" in llm.prompts[0]
    keys = {(lab.line_id, lab.word_id) for lab in result.labels}
    assert (1, 1) not in keys and (4, 2) not in keys
    assert len(result.labels) == 5
    assert {(r.line_id, r.word_id): r.reason for r in result.rejected} == {
        (1, 1): "word already labeled MERCHANT_NAME (context only)",
        (4, 2): "word already labeled TAX (context only)",
    }
    assert result.llm_calls == 1  # ignoring context words is harmless: no repair


def test_one_proposal_per_word_duplicates_dropped_conflicts_rejected() -> None:
    answer = {
        "labels": [
            item(1, 1, "MERCHANT_NAME"),
            item(1, 1, "MERCHANT_NAME"),  # duplicate: one label kept
            item(2, 2, "LINE_TOTAL"),
            item(2, 2, "DISCOUNT"),  # a forbidden pair: neither kept
            item(4, 2, "GRAND_TOTAL"),
        ]
    }
    result = label_receipt(receipt(SHOP), llm=ScriptedChatModel(answers=[answer]))

    assert [(lab.line_id, lab.word_id, lab.label) for lab in result.labels] == [
        (1, 1, "MERCHANT_NAME"),
        (4, 2, "GRAND_TOTAL"),
    ]
    reasons = sorted((r.line_id, r.word_id, r.label, r.reason) for r in result.rejected)
    assert reasons == [
        (1, 1, "MERCHANT_NAME", "duplicate of an earlier proposal"),
        (2, 2, "DISCOUNT", "conflicting labels for one word: DISCOUNT, LINE_TOTAL"),
        (2, 2, "LINE_TOTAL", "conflicting labels for one word: DISCOUNT, LINE_TOTAL"),
    ]


def test_the_single_price_of_a_one_item_row_gets_both_unit_price_and_line_total() -> None:
    """The taxonomy's one compatible pair: both labels are kept, each its own PENDING label."""
    answer = {
        "labels": [
            item(2, 2, "UNIT_PRICE"),
            item(2, 2, "LINE_TOTAL"),
            item(2, 2, "LINE_TOTAL"),  # a repeat of a kept label is still a duplicate
            item(4, 2, "GRAND_TOTAL"),
        ]
    }
    result = label_receipt(receipt(SHOP), llm=ScriptedChatModel(answers=[answer]))

    assert [(lab.line_id, lab.word_id, lab.label) for lab in result.labels] == [
        (2, 2, "LINE_TOTAL"),
        (2, 2, "UNIT_PRICE"),
        (4, 2, "GRAND_TOTAL"),
    ]
    assert len({lab.key["SK"]["S"] for lab in result.labels}) == 3  # one item per label: the key holds it
    assert [(r.line_id, r.word_id, r.label, r.reason) for r in result.rejected] == [
        (2, 2, "LINE_TOTAL", "duplicate of an earlier proposal")
    ]


def test_three_labels_on_one_word_conflict_even_when_two_of_them_are_a_permitted_pair() -> None:
    answer = {"labels": [item(2, 2, "UNIT_PRICE"), item(2, 2, "LINE_TOTAL"), item(2, 2, "SUBTOTAL")]}
    review = review_answer(json.dumps(answer), {(2, 2)}, {})

    assert review.accepted == [] and review.invalid == 3
    assert {r.reason for r in review.rejected} == {"conflicting labels for one word: LINE_TOTAL, SUBTOTAL, UNIT_PRICE"}


def test_too_many_invalid_items_trigger_one_repair_and_the_repaired_answer_is_used() -> None:
    shifted = {"labels": [item(line, 3, "PRODUCT_NAME") for line in range(1, 5)]}  # word ids that do not exist
    llm = ScriptedChatModel(answers=[shifted, good_shop_answer()])

    result = label_receipt(receipt(SHOP), llm=llm)

    assert result.llm_calls == 2
    assert len(result.labels) == 7 and result.rejected == []
    repair_text = str(llm.calls[1][-1].content)
    assert "4 of 4 items are invalid" in repair_text
    assert "no word [1:3] on this receipt" in repair_text


def test_too_many_invalid_items_twice_is_an_output_error() -> None:
    garbage = {"labels": [item(50 + i, 1, "PRODUCT_NAME") for i in range(5)]}
    llm = ScriptedChatModel(answers=[garbage, garbage])
    with pytest.raises(LLMOutputError):
        label_receipt(receipt(SHOP), llm=llm)
    assert len(llm.calls) == 2


def test_a_malformed_item_costs_that_item_only() -> None:
    answer = good_shop_answer()
    answer["labels"].append({"line_id": "two", "word_id": 1, "label": "TAX", "reasoning": ""})
    result = label_receipt(receipt(SHOP), llm=ScriptedChatModel(answers=[answer]))
    assert len(result.labels) == 7
    assert len(result.rejected) == 1 and "malformed" in result.rejected[0].reason


def test_labels_are_normalized_and_fenced_json_is_accepted() -> None:
    answer = "```json\n" + json.dumps({"labels": [item(4, 2, "grand total")]}) + "\n```"
    result = label_receipt(receipt(SHOP), llm=ScriptedChatModel(answers=[answer]))
    assert [(lab.line_id, lab.word_id, lab.label) for lab in result.labels] == [(4, 2, "GRAND_TOTAL")]


def test_a_json_object_wrapped_in_prose_is_used_without_a_repair() -> None:
    answer = "Here are the labels:\n" + json.dumps({"labels": [item(4, 2, "GRAND_TOTAL")]}) + "\nHope this helps."
    llm = ScriptedChatModel(answers=[answer])
    result = label_receipt(receipt(SHOP), llm=llm)
    assert len(llm.calls) == 1
    assert [(lab.line_id, lab.word_id) for lab in result.labels] == [(4, 2)]


def test_a_runaway_answer_is_not_parsed_and_gets_a_repair() -> None:
    huge = json.dumps({"labels": [item(1, 1, "MERCHANT_NAME", "x" * 5_000_000)]})
    llm = ScriptedChatModel(answers=[huge, good_shop_answer()])
    result = label_receipt(receipt(SHOP), llm=llm)
    assert result.llm_calls == 2
    assert "characters long" in result.errors[0]
    assert len(result.labels) == 7


def test_a_receipt_whose_words_all_have_labels_costs_no_call() -> None:
    details = receipt([["TOTAL", "$1.00"]])
    details.labels = [
        ReceiptWordLabel(IMAGE_ID, 1, 1, w, lab, "", "2026-01-01T00:00:00+00:00", ValidationStatus.VALID)
        for w, lab in ((1, "GRAND_TOTAL"), (2, "GRAND_TOTAL"))
    ]
    llm = ScriptedChatModel(answers=[])
    result = label_receipt(details, llm=llm)
    assert result.llm_calls == 0 and llm.calls == []
    assert result.labels == [] and result.rejected == []


def test_an_empty_first_answer_gets_one_repair_and_an_empty_second_answer_is_accepted() -> None:
    lazy: dict[str, list[Any]] = {"labels": []}
    llm = ScriptedChatModel(answers=[lazy, good_shop_answer()])
    result = label_receipt(receipt(SHOP), llm=llm)
    assert result.llm_calls == 2 and len(result.labels) == 7
    assert "labels no word" in str(llm.calls[1][-1].content)

    llm = ScriptedChatModel(answers=[lazy, lazy])
    result = label_receipt(receipt(SHOP), llm=llm)
    assert result.llm_calls == 2 and result.labels == []


def test_an_empty_answer_for_a_tiny_receipt_is_accepted_in_one_call() -> None:
    llm = ScriptedChatModel(answers=[{"labels": []}])
    result = label_receipt(receipt([["THANK", "YOU"]]), llm=llm)
    assert result.llm_calls == 1 and result.labels == []


def test_transient_error_is_retried_once_in_process() -> None:
    llm = ScriptedChatModel(answers=[httpx.ConnectError("refused"), good_shop_answer()])
    result = label_receipt(receipt(SHOP), llm=llm, options=NO_DELAY)
    assert result.llm_calls == 2
    assert len(result.labels) == 7


def test_transient_errors_beyond_the_in_process_attempts_raise_llm_transient_error() -> None:
    llm = ScriptedChatModel(answers=[LLMTransientError("500"), LLMTransientError("500"), good_shop_answer()])
    with pytest.raises(LLMTransientError):
        label_receipt(receipt(SHOP), llm=llm, options=NO_DELAY)
    assert len(llm.calls) == 2


def test_rate_limit_is_left_to_the_state_machine() -> None:
    llm = ScriptedChatModel(answers=[LLMRateLimitError("429"), good_shop_answer()])
    with pytest.raises(LLMRateLimitError):
        label_receipt(receipt(SHOP), llm=llm, options=NO_DELAY)
    assert len(llm.calls) == 1


def test_request_errors_are_not_retried() -> None:
    from ollama import ResponseError

    llm = ScriptedChatModel(answers=[ResponseError("unauthorized", 401), good_shop_answer()])
    with pytest.raises(LLMRequestError) as info:
        label_receipt(receipt(SHOP), llm=llm, options=NO_DELAY)
    assert info.value.status_code == 401
    assert len(llm.calls) == 1


def test_unexpected_exceptions_propagate_unchanged() -> None:
    llm = ScriptedChatModel(answers=[RuntimeError("bug")])
    with pytest.raises(RuntimeError, match="bug"):
        label_receipt(receipt(SHOP), llm=llm)


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_is_labeled_in_one_call_with_well_formed_answers(fixture: str) -> None:
    details = parse_receipt_document(json.loads((FIXTURES / fixture).read_text()))
    answer = well_formed_answer(details, lambda w: "PRODUCT_NAME")
    llm = ScriptedChatModel(answers=[answer])

    result = label_receipt(details, llm=llm)

    assert result.llm_calls == 1
    assert len(result.labels) == len(details.words)
    assert {(lab.line_id, lab.word_id) for lab in result.labels} == {(w.line_id, w.word_id) for w in details.words}


def test_a_thousand_word_receipt_is_labeled_in_one_call() -> None:
    lines = [[f"ITEM{i}W{j}" for j in range(1, 11)] for i in range(100)]
    details = receipt(lines, image_id=str(uuid.uuid4()))
    assert len(details.words) == 1000
    llm = ScriptedChatModel(answers=[well_formed_answer(details, lambda w: "PRODUCT_NAME")])

    result = label_receipt(details, llm=llm)

    assert result.llm_calls == 1
    assert len(result.labels) == 1000
    assert "[100:10] ITEM99W10" in llm.prompts[0]
