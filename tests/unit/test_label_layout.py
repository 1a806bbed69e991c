"""The printed layout in the prompt (receipt_label.layout): OCR lines grouped into the rows they sit on."""

from __future__ import annotations

import math
from typing import Any

import pytest

from receipt_dynamo import ReceiptDetails, parse_receipt_document
from receipt_label import prompts
from receipt_label.graph import existing_labels
from receipt_label.layout import visual_rows

pytestmark = pytest.mark.unit

IMAGE_ID = "5e0c3b7a-9d41-4c2e-8f6a-1b2c3d4e5f60"
ROW_HEIGHT = 0.02


def line(line_id: int, texts: list[str], *, x: float, top: float, skew_deg: float = 0.0) -> dict[str, Any]:
    """An OCR line of ``texts`` starting at ``x``, its top at ``top`` (y grows upwards), rotated by ``skew_deg``."""
    words, cursor = [], x
    slope = math.tan(math.radians(skew_deg))
    for word_id, text in enumerate(texts, 1):
        width = 0.018 * len(text)
        centre_x = cursor + width / 2
        y = top - ROW_HEIGHT + slope * (centre_x - 0.5)
        words.append(
            {"word_id": word_id, "text": text, "bounding_box": {"x": cursor, "y": y, "width": width, "height": 0.018}}
        )
        cursor += width + 0.012
    return {"line_id": line_id, "text": " ".join(texts), "words": words}


def receipt(lines: list[dict[str, Any]]) -> ReceiptDetails:
    return parse_receipt_document({"image_id": IMAGE_ID, "receipt_id": 1, "lines": lines})


def rows_as_ids(details: ReceiptDetails) -> list[list[tuple[int, int]]]:
    rows = visual_rows(details)
    assert rows is not None
    return [[(w.line_id, w.word_id) for w in row] for row in rows]


def split_rows_receipt(skew_deg: float = 0.0) -> ReceiptDetails:
    """Items on lines 1-4 at the left, their prices on lines 11-14 at the right, as OCR numbers them."""
    items = [["BANANAS"], ["WHOLE", "MILK", "1L"], ["EGGS", "12CT"], ["BREAD"]]
    prices = [["0.69"], ["1.29", "A"], ["3.49"], ["2.99"]]
    lines = [line(1 + i, t, x=0.05, top=0.9 - 0.04 * i, skew_deg=skew_deg) for i, t in enumerate(items)]
    lines += [line(11 + i, t, x=0.78, top=0.9 - 0.04 * i, skew_deg=skew_deg) for i, t in enumerate(prices)]
    return receipt(lines)


def test_an_items_price_split_into_a_far_away_ocr_line_shares_its_printed_row() -> None:
    assert rows_as_ids(split_rows_receipt()) == [
        [(1, 1), (11, 1)],
        [(2, 1), (2, 2), (2, 3), (12, 1), (12, 2)],
        [(3, 1), (3, 2), (13, 1)],
        [(4, 1), (14, 1)],
    ]


@pytest.mark.parametrize("skew_deg", [-3.0, -1.5, 1.5, 3.0])
def test_rows_stay_whole_on_a_scan_skewed_by_a_few_degrees(skew_deg: float) -> None:
    """At 3 degrees the price's end of a row is 0.04 off its item's end: two row pitches, undone by the skew fit."""
    assert rows_as_ids(split_rows_receipt(skew_deg)) == rows_as_ids(split_rows_receipt())


def test_tightly_stacked_lines_that_overlap_horizontally_are_never_one_row() -> None:
    details = receipt([line(1, ["SUBTOTAL"], x=0.1, top=0.5), line(2, ["TAX"], x=0.1, top=0.5 - 0.011)])
    assert rows_as_ids(details) == [[(1, 1)], [(2, 1)]]


def test_a_multi_column_block_keeps_quantity_unit_price_and_amount_on_their_row() -> None:
    header = [line(1, ["QTY"], x=0.05, top=0.8), line(2, ["UNIT"], x=0.4, top=0.8), line(3, ["AMOUNT"], x=0.7, top=0.8)]
    body = [
        line(4 + 3 * i + k, [text], x=(0.05, 0.4, 0.7)[k], top=0.76 - 0.04 * i)
        for i, row in enumerate((["2", "4.99", "9.98"], ["1", "12.49", "12.49"]))
        for k, text in enumerate(row)
    ]
    assert rows_as_ids(receipt(header + body)) == [
        [(1, 1), (2, 1), (3, 1)],
        [(4, 1), (5, 1), (6, 1)],
        [(7, 1), (8, 1), (9, 1)],
    ]


def test_a_word_without_a_box_uses_its_lines_box_and_without_either_the_line_order_is_kept() -> None:
    with_line_box = split_rows_receipt()
    document_lines: list[dict[str, Any]] = [
        {
            "line_id": 1,
            "text": "TOTAL",
            "bounding_box": {"x": 0.05, "y": 0.5, "width": 0.2, "height": 0.018},
            "words": [{"word_id": 1, "text": "TOTAL"}],
        },
        line(9, ["9.99"], x=0.8, top=0.518),
    ]
    assert rows_as_ids(receipt(document_lines)) == [[(1, 1), (9, 1)]]
    document_lines[0].pop("bounding_box")
    assert visual_rows(receipt(document_lines)) is None
    assert visual_rows(with_line_box) is not None


def test_the_prompt_shows_printed_rows_with_every_tag_at_one_character_per_merged_line() -> None:
    details = split_rows_receipt(skew_deg=2.0)
    existing = existing_labels(details)
    listing = prompts.receipt_listing(details, existing)
    assert listing.splitlines() == [
        "[1:1] BANANAS  [11:1] 0.69",
        "[2:1] WHOLE  [2:2] MILK  [2:3] 1L  [12:1] 1.29  [12:2] A",
        "[3:1] EGGS  [3:2] 12CT  [13:1] 3.49",
        "[4:1] BREAD  [14:1] 2.99",
    ]
    user = prompts.user_prompt(details, existing)
    assert "8 OCR lines in 4 rows" in user and "as printed" in user
    no_geometry = receipt(
        [{"line_id": w.line_id, "text": w.text, "words": [{"word_id": 1, "text": w.text}]} for w in details.words[:1]]
    )
    assert "one OCR line per line" in prompts.user_prompt(no_geometry, {})
    # The same word renderings as the line-order listing; a merged line swaps a newline for two spaces.
    by_line = "\n".join(
        "  ".join(f"[{w.line_id}:{w.word_id}] {w.text}" for w in details.words if w.line_id == line_id)
        for line_id in sorted({w.line_id for w in details.words})
    )
    assert sorted(listing.replace("\n", "  ").split("  ")) == sorted(by_line.replace("\n", "  ").split("  "))
    assert len(listing) - len(by_line) == len(details.lines) - len(listing.splitlines())


# ---- the fixtures modelled on real receipts (tests/receipt_layouts.py holds their printed rows) ----------
def side_by_side_share(details: ReceiptDetails, truth: Any) -> tuple[int, int, int]:
    """(pairs of OCR lines printed side by side, of them sharing one prompt row, prompt pairs not printed so)."""
    from tests.receipt_layouts import layout_score

    rows = visual_rows(details)
    assert rows is not None
    return layout_score(([w.line_id for w in row] for row in rows), truth)


@pytest.mark.parametrize("name", ["receipt_split_rows.json", "receipt_skewed_scan.json", "receipt_long_300.json"])
def test_every_side_by_side_line_of_the_real_world_fixtures_shares_its_prompt_row(name: str) -> None:
    """Split rows numbered in far-apart runs, a 2 degree skew, a four-column QTY/UNIT/AMOUNT block."""
    from tests.receipt_layouts import FIXTURES

    document, truth = FIXTURES[name]()
    details = parse_receipt_document(document)
    expected, kept, extra = side_by_side_share(details, truth)
    assert expected > 0 and (kept, extra) == (expected, 0)
    listing = prompts.receipt_listing(details, {})
    tags = [f"[{w.line_id}:{w.word_id}]" for w in details.words]
    assert all(listing.count(tag + " ") == 1 for tag in tags)  # every word once, with its ids
