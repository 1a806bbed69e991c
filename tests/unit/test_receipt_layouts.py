"""The OCR-like receipt fixtures: built by tests/receipt_layouts.py, with the traits real OCR output has."""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
import uuid
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from receipt_dynamo import parse_receipt_document
from tests.receipt_layouts import (
    FIXTURE_DIR,
    FIXTURES,
    Layout,
    Overshoot,
    Truth,
    build_receipt,
    main,
    printed_rows,
    render,
    row,
    seg,
    side_by_side_pairs,
)

pytestmark = pytest.mark.unit

TOLERANCE = 0.01  # how far outside 0..1 the parser accepts a coordinate
IMAGE_ID = "0b8f3c1a-6d2e-4f5a-9b7c-1e2d3f4a5b6c"
# Cyrillic letters that look like Latin ones (A, B, E, K, M, H, O, P, C, T, X) -> those Latin letters
CYRILLIC_LOOK_ALIKES = str.maketrans(
    "\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425", "ABEKMHOPCTX"
)


def build(name: str) -> tuple[dict[str, Any], Truth]:
    return FIXTURES[name]()


def lines_by_id(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {line["line_id"]: line for line in doc["lines"]}


def all_words(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [word for line in doc["lines"] for word in line["words"]]


def boxes(doc: dict[str, Any]) -> list[dict[str, float]]:
    return [box for line in doc["lines"] for box in [line["bounding_box"], *(w["bounding_box"] for w in line["words"])]]


def edges(box: dict[str, float]) -> tuple[float, float, float, float]:
    """left, bottom, right, top (y grows upwards)."""
    return box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]


def centre_y(box: dict[str, float]) -> float:
    return box["y"] + box["height"] / 2


def mean_word_height(doc: dict[str, Any]) -> float:
    heights = [w["bounding_box"]["height"] for w in all_words(doc)]
    return sum(heights) / len(heights)


def row_tilt(doc: dict[str, Any], line_ids: tuple[int, ...]) -> tuple[float, float]:
    """(horizontal span, rise) from the first word of a row's left line to the last word of its right line."""
    lines = lines_by_id(doc)
    first = lines[line_ids[0]]["words"][0]["bounding_box"]
    last = lines[line_ids[-1]]["words"][-1]["bounding_box"]
    return edges(last)[2] - first["x"], centre_y(last) - centre_y(first)


def cents(text: str) -> int:
    """``"8.99 A"`` / ``"4,50 €"`` / ``"4.00- A"`` -> cents."""
    amount = text.split()[0]
    value = int(Decimal(amount.rstrip("-").replace(",", ".")) * 100)
    return -value if amount.endswith("-") else value


def tax(amount_cents: int, rate_percent: str) -> int:
    exact = Decimal(amount_cents) * Decimal(rate_percent) / 100
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def rows_by_first_text(truth: Truth) -> dict[str, tuple[int, ...]]:
    return {r.texts[0]: r.line_ids for r in truth.rows}


# --- the files are what the generator builds ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_file_is_what_the_generator_builds_byte_for_byte(name: str) -> None:
    doc, _ = build(name)
    committed = (FIXTURE_DIR / name).read_bytes()
    assert committed == render(doc).encode("utf-8"), f"run python -m tests.receipt_layouts --write ({name})"
    assert committed.endswith(b"}\n")
    assert json.loads(committed) == doc


def test_the_generator_is_deterministic() -> None:
    for name, builder in FIXTURES.items():
        assert builder() == builder(), name


def test_write_and_check_commands(tmp_path: Path) -> None:
    assert main(["--check"]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 1  # nothing there yet
    assert main(["--write", "--dir", str(tmp_path)]) == 0
    for name in FIXTURES:
        assert (tmp_path / name).read_bytes() == (FIXTURE_DIR / name).read_bytes()
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "receipt_long_300.json").write_text("{}\n")
    assert main(["--check", "--dir", str(tmp_path)]) == 1


def test_files_are_formatted_like_the_other_fixtures() -> None:
    grocery = (FIXTURE_DIR / "receipt_grocery.json").read_text()
    assert grocery == json.dumps(json.loads(grocery), indent=1) + "\n"  # the convention render() follows
    reference = json.loads(grocery)
    for name in FIXTURES:
        doc = json.loads((FIXTURE_DIR / name).read_text(encoding="utf-8"))
        assert list(doc) == list(reference)
        assert list(doc["lines"][0]) == list(reference["lines"][0])
        assert list(doc["lines"][0]["words"][0]) == list(reference["lines"][0]["words"][0])
        assert list(doc["lines"][0]["bounding_box"]) == list(reference["lines"][0]["bounding_box"])


# --- every fixture: a well-formed document and a truth that covers it -----------------------------


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_document_is_well_formed_and_the_truth_covers_it(name: str) -> None:
    doc, truth = build(name)
    assert uuid.UUID(doc["image_id"]).version == 4
    assert str(uuid.UUID(doc["image_id"])) == doc["image_id"]
    assert doc["receipt_id"] == 1
    ids = [line["line_id"] for line in doc["lines"]]
    assert ids == list(range(1, len(ids) + 1))  # OCR order: line ids run 1.. in the file
    for line in doc["lines"]:
        assert [w["word_id"] for w in line["words"]] == list(range(1, len(line["words"]) + 1))
        assert line["text"] == " ".join(w["text"] for w in line["words"])
        assert all(w["text"] == w["text"].upper() and w["text"].strip() == w["text"] for w in line["words"])
        left, bottom, right, top = edges(line["bounding_box"])
        for word in line["words"]:
            w_left, w_bottom, w_right, w_top = edges(word["bounding_box"])
            assert left <= w_left and bottom <= w_bottom, (name, word)
            assert w_right <= right + 1e-6 and w_top <= top + 1e-6, (name, word)  # the line encloses its words
        # words run left to right with a gap between them
        for a, b in itertools.pairwise(line["words"]):
            assert edges(a["bounding_box"])[2] < b["bounding_box"]["x"]
        assert 0 < line["confidence"] <= 1 and all(0 < w["confidence"] <= 1 for w in line["words"])
    for box in boxes(doc):
        assert box["width"] > 0 and box["height"] > 0
        assert all(-TOLERANCE <= v <= 1 + TOLERANCE for v in edges(box)), box
    # the truth: every line on exactly one printed row; rows top to bottom; a row's lines side by side
    rows = printed_rows(truth)
    assert sorted(i for r in rows for i in r) == ids
    lines = lines_by_id(doc)
    tops = [centre_y(lines[r.line_ids[0]]["words"][0]["bounding_box"]) for r in truth.rows]
    assert tops == sorted(tops, reverse=True)  # y grows upwards: the first printed row is highest
    for r in truth.rows:
        assert r.texts == tuple(lines[i]["text"] for i in r.line_ids)
        spans = [edges(lines[i]["bounding_box"]) for i in r.line_ids]
        for a, b in itertools.pairwise(spans):
            assert a[2] < b[0]  # left to right, no overlap
            assert min(a[3], b[3]) > max(a[1], b[1])  # and at the same height: their y ranges overlap
    assert side_by_side_pairs(truth) == {(a, b) for r in rows for a in r for b in r if a < b}, (
        "all pairs of lines on a row"
    )


# --- the generator --------------------------------------------------------------------------------


def test_numbering_columns_and_reading_order_with_the_truth() -> None:
    spec = [
        row(seg("STORE", 0.1)),
        row(seg("MILK", 0.1), seg("3.49", 0.8), block="items"),
        row(seg("BREAD", 0.1), block="items"),
        row(seg("2 @ 1.25", 0.15), seg("2.50", 0.8), block="items"),
        row(seg("TOTAL", 0.1), seg("5.99", 0.8), block="totals"),
        row(seg("CASH", 0.1), seg("10.00", 0.8), block="totals"),
        row(seg("QTY", 0.1), seg("UNIT", 0.4), seg("AMOUNT", 0.7)),
    ]
    doc, truth = build_receipt(IMAGE_ID, spec, Layout(seed=1, numbering="columns"))
    assert [r.line_ids for r in truth.rows] == [(1,), (2, 5), (3,), (4, 6), (7, 9), (8, 10), (11, 12, 13)]
    assert [line["text"] for line in doc["lines"]] == [
        "STORE",
        "MILK",
        "BREAD",
        "2 @ 1.25",
        "3.49",
        "2.50",
        "TOTAL",
        "CASH",
        "5.99",
        "10.00",
        "QTY",
        "UNIT",
        "AMOUNT",
    ]
    assert printed_rows(truth) == [
        frozenset({1}),
        frozenset({2, 5}),
        frozenset({3}),
        frozenset({4, 6}),
        frozenset({7, 9}),
        frozenset({8, 10}),
        frozenset({11, 12, 13}),
    ]
    assert side_by_side_pairs(truth) == {(2, 5), (4, 6), (7, 9), (8, 10), (11, 12), (11, 13), (12, 13)}
    assert truth.row_of(5).texts == ("MILK", "3.49")

    _, reading = build_receipt(IMAGE_ID, spec, Layout(seed=1, numbering="reading order"))
    assert [r.line_ids for r in reading.rows] == [(1,), (2, 3), (4,), (5, 6), (7, 8), (9, 10), (11, 12, 13)]


def test_word_boxes_follow_the_monospace_font_without_skew_or_noise() -> None:
    cw = 0.02
    spec = [row(seg("ORG  BABY SPINACH", 0.05), seg("3.99", 0.85))]
    doc, _ = build_receipt(IMAGE_ID, spec, Layout(seed=3, char_width=cw, jitter=0.0, row_height=0.05))
    words = doc["lines"][0]["words"]
    assert [w["text"] for w in words] == ["ORG", "BABY", "SPINACH"]
    assert doc["lines"][0]["text"] == "ORG BABY SPINACH"
    # a word starts at its character offset (two spaces: two characters of gap) and is as wide as its characters
    assert [w["bounding_box"]["x"] for w in words] == pytest.approx([0.05, 0.05 + 5 * cw, 0.05 + 10 * cw])
    assert [w["bounding_box"]["width"] for w in words] == pytest.approx([3 * cw, 4 * cw, 7 * cw])
    # the top row sits under the top margin (0.02); y is the bottom edge: centre 0.955, height 0.72 rows
    assert all(w["bounding_box"]["y"] == pytest.approx(0.955 - 0.018) for w in words)
    assert all(w["bounding_box"]["height"] == pytest.approx(0.036) for w in words)
    assert doc["lines"][0]["bounding_box"] == pytest.approx({"x": 0.05, "y": 0.937, "width": 0.34, "height": 0.036})


def test_skew_lifts_the_right_end_of_a_row_and_overshoots_are_exact() -> None:
    spec = [row(seg("LEFT", 0.0), seg("RIGHT", 1.0 - 5 * 0.021))] * 3  # the default char width
    flat, _ = build_receipt(IMAGE_ID, spec, Layout(seed=5, jitter=0.0))
    overshoots = (Overshoot(0, 0, 0, "left", -7e-09), Overshoot(2, 1, 0, "right", 1.0004))
    tilted, truth = build_receipt(IMAGE_ID, spec, Layout(seed=5, jitter=0.0, skew_degrees=3, overshoots=overshoots))
    assert row_tilt(flat, truth.rows[1].line_ids)[1] == pytest.approx(0, abs=1e-6)
    assert row_tilt(tilted, truth.rows[1].line_ids)[1] > 0
    assert tilted["lines"][0]["words"][0]["bounding_box"]["x"] == -7e-09
    assert tilted["lines"][0]["bounding_box"]["x"] == -7e-09
    assert edges(tilted["lines"][5]["words"][0]["bounding_box"])[2] == pytest.approx(1.0004, abs=1e-9)


@pytest.mark.parametrize(
    ("spec", "overshoots", "problem"),
    [
        ([row(seg("MILK", 0.1), seg("3.49", 0.12))], (), "overlaps"),
        ([row(seg("TOO LONG FOR THE RECEIPT", 0.9))], (), "outside the receipt"),
        ([row(seg("MILK", 0.1))], (Overshoot(0, 0, 0, "left", -0.05),), "tolerance"),
        ([row(seg("MILK", 0.1, column=1), seg("3.49", 0.8))], (), "two segments in column 1"),
        ([row(seg("MILK", 0.1))], (Overshoot(0, 0, 0, "left", -0.001),), "pick a word at the edge"),
    ],
)
def test_a_bad_spec_is_refused(spec: list[Any], overshoots: tuple[Overshoot, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        build_receipt(IMAGE_ID, spec, Layout(seed=0, overshoots=overshoots))


# --- receipt_split_rows.json ----------------------------------------------------------------------


def test_split_rows_prices_are_numbered_far_from_their_items() -> None:
    doc, truth = build("receipt_split_rows.json")
    items = [r for r in truth.rows if r.block == "items"]
    priced = [r for r in items if len(r.line_ids) == 2]
    assert len(priced) >= 20
    assert all(right - left >= 15 for left, right in (r.line_ids for r in priced))
    # all the item block's left lines come first, then all its right lines (as OCR numbers them)
    left_ids = [r.line_ids[0] for r in items]
    right_ids = [r.line_ids[1] for r in priced]
    assert left_ids == list(range(left_ids[0], left_ids[0] + len(left_ids)))
    assert right_ids == list(range(left_ids[-1] + 1, left_ids[-1] + 1 + len(right_ids)))
    for r in priced:
        assert re.fullmatch(r"\d+\.\d\d( A)?", r.texts[1]), r.texts
    # the header, date/time and totals rows are split too
    by_text = rows_by_first_text(truth)
    for first in ("FRESHWAY FOODS", "2215 N MAIN ST", "03/14/2025", "SUBTOTAL", "TAX A 6.25%", "**** TOTAL"):
        assert len(by_text[first]) == 2, first
    assert re.fullmatch(r"\d{1,2}:\d\d PM", lines_by_id(doc)[by_text["03/14/2025"][1]]["text"])


def test_split_rows_amounts_add_up() -> None:
    _, truth = build("receipt_split_rows.json")
    amounts = {r.texts[0]: r.texts[1] for r in truth.rows if len(r.texts) == 2}
    items = [r.texts[1] for r in truth.rows if r.block == "items" and len(r.texts) == 2]
    subtotal = sum(cents(t) for t in items)
    taxable = sum(cents(t) for t in items if t.endswith(" A"))
    assert cents(amounts["SUBTOTAL"]) == subtotal
    assert cents(amounts["TAX A 6.25%"]) == tax(taxable, "6.25") > 0
    assert cents(amounts["**** TOTAL"]) == subtotal + cents(amounts["TAX A 6.25%"]) == cents(amounts["VISA TEND"])
    assert amounts["2.38 LB @ 0.64 /LB"] == "1.52" and amounts["4 @ 1.25"] == "5.00"
    sold = next(r.texts[0] for r in truth.rows if r.texts[0].startswith("ITEMS SOLD"))
    assert sold == f"ITEMS SOLD {len(items)}"


def test_split_rows_geometry_carries_ocr_noise() -> None:
    doc, _ = build("receipt_split_rows.json")
    xs = [w["bounding_box"]["x"] for w in all_words(doc)]
    assert -7e-09 in xs and -0.00037 in xs
    assert any(abs(edges(w["bounding_box"])[2] - 1.0004) < 1e-9 for w in all_words(doc))
    outside = [v for box in boxes(doc) for v in edges(box) if not 0 <= v <= 1]
    assert outside and all(-TOLERANCE <= v <= 1 + TOLERANCE for v in outside)
    raw = (FIXTURE_DIR / "receipt_split_rows.json").read_text()
    assert '"x": -7e-09' in raw and '"x": -0.00037' in raw


# --- receipt_skewed_scan.json ---------------------------------------------------------------------


def test_skewed_scan_rows_really_tilt() -> None:
    doc, truth = build("receipt_skewed_scan.json")
    height = mean_word_height(doc)
    split = [r for r in truth.rows if len(r.line_ids) == 2]
    tilts = [row_tilt(doc, r.line_ids) for r in split]
    assert all(rise > 0 for _, rise in tilts)  # 2 degrees counter-clockwise: every row climbs to the right
    span, rise = max(tilts)
    assert span > 0.9
    assert rise > 0.5 * height  # across the receipt the right end is more than half a word higher
    # so some line overlaps vertically with a line printed on a neighbouring row: grouping lines by y
    # overlap alone would merge rows
    lines = lines_by_id(doc)
    row_of = {i: r.index for r in truth.rows for i in r.line_ids}

    def overlap(a: int, b: int) -> float:
        (_, a_bottom, _, a_top), (_, b_bottom, _, b_top) = (edges(lines[i]["bounding_box"]) for i in (a, b))
        return min(a_top, b_top) - max(a_bottom, b_bottom)

    assert any(overlap(a, b) > 0.3 * height for a in lines for b in lines if row_of[a] != row_of[b])


def test_skewed_scan_is_numbered_in_reading_order() -> None:
    _, truth = build("receipt_skewed_scan.json")
    ids = [i for r in truth.rows for i in r.line_ids]
    assert ids == list(range(1, len(ids) + 1))


def test_skewed_scan_has_euro_prices_bullets_a_half_and_cyrillic_look_alikes() -> None:
    doc, truth = build("receipt_skewed_scan.json")
    texts = [w["text"] for w in all_words(doc)]
    assert texts.count("€") >= 10 and "4,50" in texts
    assert texts.count("•") >= 10 and "½" in texts
    assert {"CAFÉ", "NIÇOISE"} <= set(texts)
    cyrillic = [w for w in all_words(doc) if any("CYRILLIC" in unicodedata.name(ch, "") for ch in w["text"])]
    assert 2 <= len(cyrillic) <= 3
    assert {w["text"].translate(CYRILLIC_LOOK_ALIKES) for w in cyrillic} == {"MILK", "COKE"}
    assert "\u041cILK" in [w["text"] for w in cyrillic]  # MILK with a Cyrillic EM
    assert all(w["confidence"] < 0.7 for w in cyrillic)  # a bad scan: OCR was unsure
    # prices add up: items = TOTAL TTC = HT + TVA, TVA 10 % included
    amounts = {r.texts[0]: cents(r.texts[1]) for r in truth.rows if len(r.texts) == 2 and r.texts[1].endswith("€")}
    items = sum(c for text, c in amounts.items() if text.startswith("•"))
    assert amounts["TOTAL TTC"] == items == amounts["TOTAL HT"] + amounts["TVA 10,0%"] == amounts["CB VISA"]
    included = (Decimal(items) * 10 / 110).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert amounts["TVA 10,0%"] == int(included)


# --- receipt_long_300.json ------------------------------------------------------------------------


def test_long_receipt_has_about_300_words_and_a_multi_column_block() -> None:
    doc, truth = build("receipt_long_300.json")
    assert 280 <= len(all_words(doc)) <= 320
    block = [r for r in truth.rows if r.block == "items"]
    assert block[0].texts == ("ITEM", "QTY", "UNIT", "AMOUNT")
    four = [r for r in block[1:] if len(r.line_ids) == 4]
    assert len(four) >= 25
    for r in four:
        _, qty, unit, amount = r.texts
        assert re.fullmatch(r"\d+", qty) and re.fullmatch(r"\d+\.\d\d", unit), r.texts
        assert int(qty) * cents(unit) == cents(amount), r.texts
    assert any(int(r.texts[1]) >= 2 for r in four)
    single = [r for r in four if r.texts[1] == "1"]
    assert len(single) >= 10 and all(r.texts[3].split()[0] == r.texts[2] for r in single)  # unit = line total
    # each column is one run of line ids: a row's QTY, UNIT and AMOUNT lines are far from its name
    for column in range(4):
        ids = [r.line_ids[column] for r in block if len(r.line_ids) == 4]
        assert ids == sorted(ids)
    assert all(r.line_ids[1] - r.line_ids[0] >= 15 for r in four)


def test_long_receipt_amounts_add_up() -> None:
    _, truth = build("receipt_long_300.json")
    block = [r for r in truth.rows if r.block == "items"][1:]
    amounts = [cents(r.texts[-1]) for r in block]
    taxable = sum(cents(r.texts[-1]) for r in block if r.texts[-1].endswith(" A"))
    assert any(a < 0 for a in amounts)  # instant savings
    totals = {
        r.texts[0]: cents(r.texts[1])
        for r in truth.rows
        if r.block is None and len(r.texts) == 2 and re.fullmatch(r"\d+\.\d\d", r.texts[1])
    }
    assert totals["SUBTOTAL"] == sum(amounts)
    assert totals["TAX A 8.265%"] == tax(taxable, "8.265")
    assert totals["**** TOTAL"] == totals["SUBTOTAL"] + totals["TAX A 8.265%"] == totals["VISA"]
    assert totals["INSTANT SAVINGS"] == -sum(a for a in amounts if a < 0)
    sold = sum(int(r.texts[1]) for r in block if len(r.texts) == 4)
    assert any(r.texts[0] == f"TOTAL NUMBER OF ITEMS SOLD = {sold}" for r in truth.rows)


def test_long_receipt_is_slightly_skewed_and_noisy() -> None:
    doc, truth = build("receipt_long_300.json")
    height = mean_word_height(doc)
    tilts = [row_tilt(doc, r.line_ids) for r in truth.rows if len(r.line_ids) == 4]
    assert all(0.15 * height < rise < height for _, rise in tilts)  # 0.8 degrees: visible, under a word
    words = all_words(doc)
    assert any(w["bounding_box"]["x"] == -0.0019 for w in words)
    assert any(abs(edges(w["bounding_box"])[3] - 1.0009) < 1e-9 for w in words)


# --- the parser accepts them (needs the geometry tolerance in receipt_dynamo) ---------------------


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_parses_with_coordinates_clamped_into_the_receipt(name: str) -> None:
    doc = json.loads((FIXTURE_DIR / name).read_text(encoding="utf-8"))
    details = parse_receipt_document(doc)
    assert len(details.lines) == len(doc["lines"])
    assert len(details.words) == len(all_words(doc))
    parsed = [line.bounding_box for line in details.lines] + [word.bounding_box for word in details.words]
    for box in parsed:
        assert box is not None
        assert all(0 <= v <= 1 for v in edges(box)), box
    # the noise was there to clamp: the raw file reaches outside 0..1
    assert any(not 0 <= v <= 1 for box in boxes(doc) for v in edges(box))
