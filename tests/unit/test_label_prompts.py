"""Prompt content and size: word addressing, taxonomy, context labels, linear growth, repair message."""

from __future__ import annotations

import pytest

from receipt_dynamo import ReceiptDetails, ReceiptWordLabel, ValidationStatus, parse_receipt_document
from receipt_label import ANSWER_JSON_SCHEMA, CORE_LABELS, prompts
from receipt_label.graph import existing_labels

pytestmark = pytest.mark.unit

IMAGE_ID = "0b6f2d8e-5a4c-4b3a-8d2e-1f0e9d8c7b6a"

DESIGN_TAXONOMY = [
    "MERCHANT_NAME",
    "STORE_HOURS",
    "PHONE_NUMBER",
    "WEBSITE",
    "LOYALTY_ID",
    "ADDRESS_LINE",
    "DATE",
    "TIME",
    "PAYMENT_METHOD",
    "COUPON",
    "DISCOUNT",
    "PRODUCT_NAME",
    "QUANTITY",
    "UNIT_PRICE",
    "LINE_TOTAL",
    "SUBTOTAL",
    "TAX",
    "GRAND_TOTAL",
]


def receipt(lines: list[list[str]]) -> ReceiptDetails:
    return parse_receipt_document(
        {
            "image_id": IMAGE_ID,
            "receipt_id": 2,
            "lines": [
                {"line_id": i, "text": " ".join(ws), "words": [{"word_id": j, "text": t} for j, t in enumerate(ws, 1)]}
                for i, ws in enumerate(lines, 1)
            ],
        }
    )


def synthetic(n_words: int, per_line: int = 8) -> ReceiptDetails:
    lines = []
    for start in range(0, n_words, per_line):
        lines.append([f"W{k:05d}" for k in range(start, min(n_words, start + per_line))])
    return receipt(lines)


def prompt_size(details: ReceiptDetails) -> int:
    return prompts.prompt_chars(prompts.initial_messages(details, existing_labels(details)))


def test_taxonomy_is_the_design_list_each_with_a_one_line_definition() -> None:
    assert list(CORE_LABELS) == DESIGN_TAXONOMY
    for label, definition in CORE_LABELS.items():
        assert definition.strip() and "\n" not in definition, label


def test_system_prompt_lists_every_label_with_its_definition() -> None:
    system = prompts.system_prompt()
    for label, definition in CORE_LABELS.items():
        assert f"- {label}: {definition}" in system


def test_answer_schema_restricts_labels_to_the_taxonomy_and_requires_ids() -> None:
    item = ANSWER_JSON_SCHEMA["properties"]["labels"]["items"]
    assert item["properties"]["label"]["enum"] == DESIGN_TAXONOMY
    assert item["required"] == ["line_id", "word_id", "label", "reasoning"]
    assert item["properties"]["line_id"]["type"] == item["properties"]["word_id"]["type"] == "integer"


def test_words_are_listed_with_their_ids_one_receipt_line_per_prompt_line() -> None:
    details = receipt([["TRADER", "JOE'S"], ["BANANAS", "$5.00"], ["APPLES", "$5.00"]])
    user = prompts.user_prompt(details, {})
    listing = user.split("\n\n", 1)[1]
    assert listing.splitlines() == [
        "[1:1] TRADER  [1:2] JOE'S",
        "[2:1] BANANAS  [2:2] $5.00",
        "[3:1] APPLES  [3:2] $5.00",
    ]


def test_whitespace_inside_a_word_cannot_break_the_listing() -> None:
    details = receipt([["A\nB", "C\tD"]])
    assert prompts.receipt_listing(details, {}) == "[1:1] A B  [1:2] C D"


def test_existing_labels_are_marked_on_their_words() -> None:
    details = receipt([["TRADER", "JOE'S"]])
    details.labels = [
        ReceiptWordLabel(IMAGE_ID, 2, 1, 2, "MERCHANT_NAME", "", "2026-01-01T00:00:00+00:00", ValidationStatus.VALID),
        ReceiptWordLabel(IMAGE_ID, 2, 1, 2, "PRODUCT_NAME", "", "2026-01-01T00:00:00+00:00", ValidationStatus.INVALID),
    ]
    listing = prompts.receipt_listing(details, existing_labels(details))
    assert listing == "[1:1] TRADER  [1:2] JOE'S {MERCHANT_NAME, PRODUCT_NAME}"


def test_prompt_size_grows_linearly_with_the_number_of_words() -> None:
    sizes = {n: prompt_size(synthetic(n)) for n in (250, 500, 1000, 2000)}
    per_word = [(sizes[b] - sizes[a]) / (b - a) for a, b in ((250, 500), (500, 1000), (1000, 2000))]
    # the marginal cost of a word is constant: each doubling costs the same per added word
    assert max(per_word) / min(per_word) < 1.1, per_word
    # and it is small: a word costs its text plus its ids and separators
    assert per_word[-1] < len("[100:10] W00000  ") + 2


def test_repair_prompt_lists_the_problems_and_caps_them() -> None:
    problems = [f"problem {i}" for i in range(100)]
    text = prompts.repair_prompt(problems)
    assert "- problem 0" in text and f"- problem {prompts.MAX_ERRORS_SHOWN - 1}" in text
    assert f"- problem {prompts.MAX_ERRORS_SHOWN}" not in text
    assert f"and {100 - prompts.MAX_ERRORS_SHOWN} more" in text
    assert "complete JSON" in text
