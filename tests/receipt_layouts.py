"""Receipt documents that look like real OCR output, built from a printed-row spec, with their ground truth.

As Apple Vision does, a printed row is split into OCR lines (name left, price right), a block's lines
can be numbered column by column, coordinates carry float noise and overshoots, and the scan is
slightly rotated. :class:`Truth` says which OCR lines share a row. Spec: a list of :class:`Row` (top
to bottom) of :class:`Segment` (left to right); :class:`Layout` holds the options. Coordinates as in
``receipt_dynamo/document.py`` (y grows upwards). ``python -m tests.receipt_layouts --write`` rewrites
the fixtures in :data:`FIXTURES`; ``--check`` exits 1 when a committed file differs from the generator's.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from tests.helpers import REPO_ROOT

FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures"

#: How far outside 0..1 the parser accepts a coordinate (``receipt_dynamo.GEOMETRY_TOLERANCE``).
OUT_OF_RANGE_LIMIT = 0.01
#: How far outside 0..1 jitter alone may push an edge (real OCR noise stays around 0.002).
NATURAL_NOISE_LIMIT = 0.002
#: How far an :class:`Overshoot` may move its word (it is meant for a word already at the receipt's edge).
MAX_OVERSHOOT_SHIFT = 0.005
DECIMALS = 6

Numbering = Literal["reading order", "columns"]
Edge = Literal["left", "right", "bottom", "top"]


# --- the spec -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """The text of one OCR line and its left edge ``x`` (fraction of the width).

    ``column`` places the segment in a column of its block for "columns" numbering; by default a
    segment's column is its index in the row (give it when a row skips a column).
    """

    text: str
    x: float
    column: int | None = None


@dataclass(frozen=True)
class Row:
    """One printed row: its segments left to right.

    Consecutive rows with the same ``block`` name form a block, numbered column by column under
    "columns" numbering. ``gap_before`` is blank space above the row, in row heights.
    """

    segments: tuple[Segment, ...]
    block: str | None = None
    gap_before: float = 0.0


@dataclass(frozen=True)
class Overshoot:
    """Move one word's box so that one of its edges lands exactly on ``value``; its size is kept.

    ``row``/``segment``/``word`` index the spec (0-based). ``left``/``bottom`` set ``x``/``y`` to
    ``value`` unrounded, so ``-7e-09`` survives; ``right``/``top`` set ``x``/``y`` so that
    ``x + width`` / ``y + height`` is ``value``. The word must already be at that edge of the receipt
    (moved by at most ``MAX_OVERSHOOT_SHIFT``).
    """

    row: int
    segment: int
    word: int
    edge: Edge
    value: float


@dataclass(frozen=True)
class Layout:
    seed: int
    skew_degrees: float = 0.0
    numbering: Numbering = "reading order"
    #: Distance between printed rows (fraction of the height); None: the rows fill the margins.
    row_height: float | None = None
    #: A word box's height as a fraction of ``row_height``.
    text_height: float = 0.72
    #: One character of the monospace receipt font (fraction of the width).
    char_width: float = 0.021
    #: A printed row's physical height in character widths (sets the receipt's aspect ratio for the skew).
    line_spacing: float = 2.0
    margin_top: float = 0.02
    margin_bottom: float = 0.02
    #: Sigma of the coordinate jitter (fraction of the receipt).
    jitter: float = 0.0004
    overshoots: tuple[Overshoot, ...] = ()


def seg(text: str, x: float, column: int | None = None) -> Segment:
    return Segment(text, x, column)


def right_aligned(text: str, right: float, char_width: float, column: int | None = None) -> Segment:
    """A segment whose right edge is at ``right``."""
    return Segment(text, right - len(text) * char_width, column)


def centered(text: str, char_width: float) -> Segment:
    return Segment(text, 0.5 - len(text) * char_width / 2, None)


def row(*segments: Segment, block: str | None = None, gap_before: float = 0.0) -> Row:
    return Row(tuple(segments), block, gap_before)


# --- the ground truth -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RowTruth:
    """A printed row (``index`` in the spec, 0 = top): its OCR lines, left to right."""

    index: int
    line_ids: tuple[int, ...]
    texts: tuple[str, ...]
    block: str | None


@dataclass(frozen=True)
class Truth:
    rows: tuple[RowTruth, ...]

    def row_of(self, line_id: int) -> RowTruth:
        for r in self.rows:
            if line_id in r.line_ids:
                return r
        raise KeyError(line_id)


def printed_rows(truth: Truth) -> list[frozenset[int]]:
    """The line ids on each printed row, top to bottom (every line of the document in exactly one)."""
    return [frozenset(r.line_ids) for r in truth.rows]


def row_pairs(rows: Iterable[Iterable[int]]) -> set[tuple[int, int]]:
    """Every pair ``(a, b)``, ``a < b``, of line ids that share a row (3 lines on a row: 3 pairs)."""
    return {pair for row in rows for pair in combinations(sorted(set(row)), 2)}


def side_by_side_pairs(truth: Truth) -> set[tuple[int, int]]:
    """Every pair ``(a, b)``, ``a < b``, of OCR lines printed on the same row."""
    return row_pairs(r.line_ids for r in truth.rows)


def layout_score(rows: Iterable[Iterable[int]], truth: Truth) -> tuple[int, int, int]:
    """For rows of line ids (e.g. the prompt's): the side-by-side pairs printed, how many of them share
    a row, and how many pairs share a row that are not printed side by side."""
    expected, found = side_by_side_pairs(truth), row_pairs(rows)
    return len(expected), len(expected & found), len(found - expected)


# --- the generator --------------------------------------------------------------------------------


@dataclass
class _Box:
    x: float
    y: float
    w: float
    h: float


def _validate(rows: Sequence[Row], layout: Layout) -> None:
    if not rows:
        raise ValueError("a receipt needs at least one row")
    for i, r in enumerate(rows):
        if not r.segments:
            raise ValueError(f"row {i} has no segments")
        end = -math.inf
        columns: set[int] = set()
        for s, segment in enumerate(r.segments):
            if not segment.text.split():
                raise ValueError(f"row {i} segment {s} has no text")
            if segment.x < end:
                raise ValueError(f"row {i} segment {s} ({segment.text!r}) overlaps the one before it")
            end = segment.x + len(segment.text) * layout.char_width
            if segment.x < 0.0 or end > 1.0 + 1e-9:
                raise ValueError(f"row {i} segment {s} ({segment.text!r}) lies outside the receipt: {segment.x}..{end}")
            column = s if segment.column is None else segment.column
            if column in columns:
                raise ValueError(f"row {i} has two segments in column {column}")
            columns.add(column)
    for o in layout.overshoots:
        if not -OUT_OF_RANGE_LIMIT <= o.value <= 1.0 + OUT_OF_RANGE_LIMIT:
            raise ValueError(f"overshoot {o} lies beyond the parser's tolerance {OUT_OF_RANGE_LIMIT}")


def _line_order(rows: Sequence[Row], numbering: Numbering) -> list[tuple[int, int]]:
    """(row, segment) in line-id order."""
    order: list[tuple[int, int]] = []
    i = 0
    while i < len(rows):
        block = rows[i].block
        if numbering == "columns" and block is not None:
            j = i
            while j < len(rows) and rows[j].block == block:
                j += 1
            placed = {
                (r, s): (s if seg_.column is None else seg_.column)
                for r in range(i, j)
                for s, seg_ in enumerate(rows[r].segments)
            }
            for column in sorted(set(placed.values())):
                order.extend(key for key in sorted(placed) if placed[key] == column)
            i = j
        else:
            order.extend((i, s) for s in range(len(rows[i].segments)))
            i += 1
    return order


def _number(value: float) -> float:
    """Rounded to 6 decimals, without a ``-0.0``."""
    return round(value, DECIMALS) + 0.0


def build_receipt(
    image_id: str, rows: Sequence[Row], layout: Layout, *, receipt_id: int = 1
) -> tuple[dict[str, Any], Truth]:
    """The receipt document for ``rows`` and its ground truth (deterministic for a given ``layout.seed``)."""
    rows = tuple(rows)
    _validate(rows, layout)
    rng = random.Random(layout.seed)
    cw = layout.char_width
    total = len(rows) + sum(r.gap_before for r in rows)
    pitch = layout.row_height or (1.0 - layout.margin_top - layout.margin_bottom) / total
    text_h = pitch * layout.text_height

    # 1. nominal word boxes: words[row][segment] = [(text, box), ...]. Monospace: a word starts at
    # segment.x + offset * char_width and is len(word) * char_width wide; row i is centred at
    # 1 - margin_top - (i + 0.5) * row_height, plus any blank gap_before rows; y is a box's bottom edge.
    words: list[list[list[tuple[str, _Box]]]] = []
    offset = 0.0
    for spec_row in rows:
        offset += spec_row.gap_before
        centre_y = 1.0 - layout.margin_top - (offset + 0.5) * pitch
        offset += 1.0
        words.append(
            [
                [
                    (m.group(), _Box(s.x + m.start() * cw, centre_y - text_h / 2, len(m.group()) * cw, text_h))
                    for m in re.finditer(r"\S+", s.text)
                ]
                for s in spec_row.segments
            ]
        )
    boxes = [box for row_words in words for segment_words in row_words for _, box in segment_words]

    # 2. skew: rotate the centres about the receipt's centre in physical units (counter-clockwise:
    # positive lifts a row's right end; a row is line_spacing characters tall), boxes kept axis aligned
    # as OCR reports them, then scaled back onto the unrotated extents as the receipt's crop would be
    if layout.skew_degrees:
        aspect = layout.line_spacing * cw / pitch  # physical height / width
        before = _extents(boxes)
        theta = math.radians(layout.skew_degrees)
        cos, sin = math.cos(theta), math.sin(theta)
        for box in boxes:
            px, py = box.x + box.w / 2 - 0.5, (box.y + box.h / 2 - 0.5) * aspect
            qx, qy = px * cos - py * sin, px * sin + py * cos
            box.x, box.y = 0.5 + qx - box.w / 2, 0.5 + qy / aspect - box.h / 2
        after = _extents(boxes)
        sx = (before[1] - before[0]) / (after[1] - after[0])
        sy = (before[3] - before[2]) / (after[3] - after[2])
        for box in boxes:
            box.x, box.w = before[0] + (box.x - after[0]) * sx, box.w * sx
            box.y, box.h = before[2] + (box.y - after[2]) * sy, box.h * sy

    # 3. noise: jitter every edge (Gaussian, cut at 2.5 sigma), keep it within NATURAL_NOISE_LIMIT, round;
    # confidences lower for a word with Cyrillic letters (a look-alike misread); overshoots set exact edges
    def jitter() -> float:
        limit = 2.5 * layout.jitter
        return max(-limit, min(limit, rng.gauss(0.0, layout.jitter)))

    lo, hi = -NATURAL_NOISE_LIMIT, 1.0 + NATURAL_NOISE_LIMIT
    confidences: dict[int, float] = {}
    for box in boxes:
        left, right = box.x + jitter(), box.x + box.w + jitter()
        bottom, top = box.y + jitter(), box.y + box.h + jitter()
        left, right, bottom, top = (max(lo, min(hi, v)) for v in (left, right, bottom, top))
        box.x, box.y = _number(left), _number(bottom)
        box.w, box.h = _number(right - box.x), _number(top - box.y)
    for row_words in words:
        for segment_words in row_words:
            for text, box in segment_words:
                look_alike = any("\u0400" <= ch <= "\u04ff" for ch in text)
                low, high = (0.41, 0.66) if look_alike else (0.9, 0.995)
                confidences[id(box)] = round(rng.uniform(low, high), 3)
    for o in layout.overshoots:
        box = words[o.row][o.segment][o.word][1]
        before_x, before_y = box.x, box.y
        if o.edge == "left":
            box.x = o.value
        elif o.edge == "right":
            box.x = _number(o.value - box.w)
        elif o.edge == "bottom":
            box.y = o.value
        else:
            box.y = _number(o.value - box.h)
        shift = max(abs(box.x - before_x), abs(box.y - before_y))
        if shift > MAX_OVERSHOOT_SHIFT:
            raise ValueError(
                f"{o} moves its word by {shift:.4f}, more than {MAX_OVERSHOOT_SHIFT}: pick a word at the edge"
            )

    # 4. lines, numbered by layout.numbering: a line's box encloses its words, its confidence is their mean
    order = _line_order(rows, layout.numbering)
    line_id = {key: n for n, key in enumerate(order, start=1)}
    lines: list[dict[str, Any]] = []
    for r_index, s_index in order:
        entries = words[r_index][s_index]
        x0 = min(b.x for _, b in entries)
        y0 = min(b.y for _, b in entries)
        x1 = max(b.x + b.w for _, b in entries)
        y1 = max(b.y + b.h for _, b in entries)
        word_confidences = [confidences[id(b)] for _, b in entries]
        lines.append(
            {
                "line_id": line_id[(r_index, s_index)],
                "text": " ".join(text for text, _ in entries),
                "bounding_box": {"x": x0, "y": y0, "width": _number(x1 - x0), "height": _number(y1 - y0)},
                "confidence": round(sum(word_confidences) / len(word_confidences), 3),
                "words": [
                    {
                        "word_id": w,
                        "text": text,
                        "bounding_box": {"x": b.x, "y": b.y, "width": b.w, "height": b.h},
                        "confidence": confidences[id(b)],
                    }
                    for w, (text, b) in enumerate(entries, start=1)
                ],
            }
        )
    document = {"image_id": image_id, "receipt_id": receipt_id, "lines": lines}
    truth = Truth(
        tuple(
            RowTruth(
                index=r,
                line_ids=tuple(line_id[(r, s)] for s in range(len(spec.segments))),
                texts=tuple(" ".join(seg_.text.split()) for seg_ in spec.segments),
                block=spec.block,
            )
            for r, spec in enumerate(rows)
        )
    )
    return document, truth


def _extents(boxes: Iterable[_Box]) -> tuple[float, float, float, float]:
    boxes = list(boxes)
    return (
        min(b.x for b in boxes),
        max(b.x + b.w for b in boxes),
        min(b.y for b in boxes),
        max(b.y + b.h for b in boxes),
    )


def render(document: dict[str, Any]) -> str:
    """The fixture file's text: formatted as the other fixtures (indent 1, ASCII with \\u escapes), newline-ended."""
    return json.dumps(document, indent=1) + "\n"


# --- money ----------------------------------------------------------------------------------------


def usd(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def eur(cents: int) -> str:
    return f"{cents // 100},{cents % 100:02d}"


def tax_on(cents: int, rate_percent: str) -> int:
    """Sales tax on ``cents`` at ``rate_percent`` (``"6.25"``), rounded half up to the cent."""
    return int((Decimal(cents) * Decimal(rate_percent) / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- the fixtures ---------------------------------------------------------------------------------

SPLIT_ROWS_IMAGE_ID = "5d0e8a3c-7f41-4b96-a2d8-1c6e9b07f3a5"
SKEWED_SCAN_IMAGE_ID = "b2c4e6f8-3a5d-4c71-8e9f-0d2b4a6c8e1f"
LONG_300_IMAGE_ID = "7e13c95a-2b8d-4f06-9a47-e5d1c3b80f62"

#: Grocery items: (name, the quantity/weight row under it or None, price in cents, taxable). With a
#: quantity row the price is printed on that row, as grocery receipts do.
_GROCERY: tuple[tuple[str, str | None, int, bool], ...] = (
    ("BANANAS", "2.38 LB @ 0.64 /LB", 152, False),
    ("ORG BABY SPINACH", None, 399, False),
    ("MILK 2% GAL", None, 349, False),
    ("071 BREAD WHEAT", None, 279, False),
    ("EGGS LARGE 12CT", None, 429, False),
    ("GREEK YOGURT", "4 @ 1.25", 500, False),
    ("CHEDDAR SHARP 8OZ", None, 379, False),
    ("PAPER TOWELS 6PK", None, 899, True),
    ("218 DISH SOAP", None, 329, True),
    ("CHKN BREAST BNLS", None, 947, False),
    ("APPLES GALA 3LB", None, 449, False),
    ("COFFEE GROUND 12OZ", None, 799, False),
    ("PASTA PENNE", None, 149, False),
    ("TOMATO SAUCE", None, 219, False),
    ("CEREAL OAT", None, 459, False),
    ("ORANGE JUICE 52OZ", None, 399, False),
    ("ICE CREAM VANILLA", None, 549, False),
    ("TRASH BAGS 30CT", None, 699, True),
    ("SPARKLING WATER 8PK", None, 499, True),
    ("BUTTER UNSALTED", None, 479, False),
    ("AVOCADOS", "3 @ 1.00", 300, False),
    ("SHAMPOO 12OZ", None, 599, True),
    ("ONIONS YELLOW 3LB", None, 299, False),
)
_GROCERY_TAX_RATE = "6.25"


def split_rows_receipt() -> tuple[dict[str, Any], Truth]:
    """A grocery receipt, every printed row split into a left and a right OCR line, numbered in columns."""
    cw = 0.0235
    lx = 0.0  # the crop is tight: the text touches the receipt's edges
    price_right = 0.999 - 2 * cw  # prices right-aligned; a tax flag " A" sticks out to the right

    def price(cents: int, flag: bool) -> Segment:
        text = usd(cents)
        return Segment(f"{text} A" if flag else text, price_right - len(text) * cw)

    rows: list[Row] = [
        row(seg("FRESHWAY FOODS", lx), right_aligned("STORE 0412", 0.999, cw)),
        row(seg("2215 N MAIN ST", lx), right_aligned("(217) 555-0148", 0.999, cw)),
        row(seg("SPRINGFIELD IL 62702", lx)),
        row(seg("03/14/2025", lx), right_aligned("5:42 PM", 0.999, cw)),
        row(seg("REG 04 TRN 8812", lx), right_aligned("OP 117", 0.999, cw)),
        row(seg("STORE MGR DANA PRUITT", lx)),
    ]
    subtotal = taxable = 0
    for n, (name, detail, cents, flag) in enumerate(_GROCERY):
        gap = 0.6 if n == 0 else 0.0
        if detail is None:
            rows.append(row(seg(name, lx), price(cents, flag), block="items", gap_before=gap))
        else:
            rows.append(row(seg(name, lx), block="items", gap_before=gap))
            rows.append(row(seg(detail, lx + 2 * cw), price(cents, flag), block="items"))
        subtotal += cents
        taxable += cents if flag else 0
    tax = tax_on(taxable, _GROCERY_TAX_RATE)
    total = subtotal + tax
    rows += [
        row(seg("SUBTOTAL", lx + 8 * cw), price(subtotal, False), block="totals", gap_before=0.6),
        row(seg(f"TAX A {_GROCERY_TAX_RATE}%", lx + 8 * cw), price(tax, False), block="totals"),
        row(seg("**** TOTAL", lx + 8 * cw), price(total, False), block="totals"),
        row(seg("VISA TEND", lx + 8 * cw), price(total, False), block="totals"),
        row(seg("CHANGE DUE", lx + 8 * cw), price(0, False), block="totals"),
        row(seg(f"ITEMS SOLD {len(_GROCERY)}", lx), gap_before=0.6),
        row(seg("TC# 4471 0921 5530 8812", lx)),
        row(seg("THANK YOU FOR SHOPPING", lx)),
    ]
    overshoots = (
        # turned clockwise: the bottom-left and top-right words are the ones at the crop's edges
        Overshoot(len(rows) - 1, 0, 0, "left", -7e-09),  # "THANK"
        Overshoot(len(rows) - 2, 0, 0, "left", -0.00037),  # "TC#"
        Overshoot(0, 1, 1, "right", 1.0004),  # "0412" of "STORE 0412"
    )
    layout = Layout(
        seed=412,
        skew_degrees=-1.0,
        numbering="columns",
        char_width=cw,
        line_spacing=2.0,
        margin_top=0.012,
        margin_bottom=0.012,
        jitter=0.0003,
        overshoots=overshoots,
    )
    return build_receipt(SPLIT_ROWS_IMAGE_ID, rows, layout)


#: Café order: (bullet line without the bullet, price in cents).
_CAFE: tuple[tuple[str, int], ...] = (
    ("2 CAFÉ CRÈME", 780),
    ("1 LATTE OAT \u041cILK", 450),  # MILK with a Cyrillic EM (U+041C): a bad scan
    ("2 \u0421\u041e\u041a\u0415 33CL", 700),  # COKE in Cyrillic ES, O, KA, IE (U+0421 U+041E U+041A U+0415)
    ("1 CROISSANT", 220),
    ("1 PAIN AU CHOCOLAT", 240),
    ("1 TARTINE ½ BAGUETTE", 390),
    ("1 QUICHE LORRAINE", 950),
    ("1 SALADE NIÇOISE", 1290),
    ("1 TARTE CITRON", 520),
    ("1 EAU MINÉRALE 50CL", 300),
    ("1 COOKIE NOIX", 280),
)
_CAFE_VAT_PERCENT = 10


def skewed_scan_receipt() -> tuple[dict[str, Any], Truth]:
    """A Paris café bill scanned 2 degrees askew: € prices, bullets, ½, Cyrillic look-alikes; reading order."""
    cw = 0.0255
    lx = 0.012
    right = 0.988

    def euro(cents: int) -> Segment:
        return right_aligned(f"{eur(cents)} €", right, cw)

    rows: list[Row] = [
        row(centered("CAFÉ LUMIÈRE", cw)),
        row(centered("14 RUE DES ÉCOLES", cw)),
        row(centered("75005 PARIS", cw)),
        row(centered("TÉL 01 43 25 18 77", cw)),
        row(seg("TABLE 7", lx), right_aligned("14/03/2025 12:48", right, cw), gap_before=0.5),
        row(seg("SERVEUR: CLAIRE", lx), right_aligned("COUVERTS 2", right, cw)),
    ]
    total = 0
    for n, (text, cents) in enumerate(_CAFE):
        rows.append(row(seg(f"• {text}", lx), euro(cents), gap_before=0.5 if n == 0 else 0.0))
        total += cents
    vat = (total * _CAFE_VAT_PERCENT + (100 + _CAFE_VAT_PERCENT) // 2) // (100 + _CAFE_VAT_PERCENT)
    rows += [
        row(seg("TOTAL HT", lx), euro(total - vat), gap_before=0.5),
        row(seg(f"TVA {_CAFE_VAT_PERCENT},0%", lx), euro(vat)),
        row(seg("TOTAL TTC", lx), euro(total)),
        row(seg("CB VISA", lx), euro(total)),
        row(centered("• MERCI DE VOTRE VISITE •", cw), gap_before=0.5),
        row(centered("À BIENTÔT", cw)),
        row(centered("SIRET 832 114 507 00018", cw)),
    ]
    layout = Layout(
        seed=2025,
        skew_degrees=2.0,
        numbering="reading order",
        char_width=cw,
        line_spacing=1.9,
        text_height=0.78,
        margin_top=0.025,
        margin_bottom=0.0,
        jitter=0.0005,
        overshoots=(Overshoot(len(rows) - 1, 0, 0, "bottom", -0.00061),),  # "SIRET", lowest: the bottom-left word
    )
    return build_receipt(SKEWED_SCAN_IMAGE_ID, rows, layout)


#: Warehouse items: (code and name, quantity, unit price in cents, taxable, instant savings in cents).
_WAREHOUSE: tuple[tuple[str, int, int, bool, int], ...] = (
    ("1187342 KS BATH TISSUE", 1, 2399, True, 400),
    ("0412339 KS PAPER TOWEL", 1, 2199, True, 0),
    ("1650028 ORG EGGS 24CT", 2, 799, False, 0),
    ("0096716 KS MILK 2% 2PK", 2, 549, False, 0),
    ("1029184 STRAWBERRIES", 3, 599, False, 0),
    ("0004011 BANANAS 3LB", 2, 199, False, 0),
    ("1398112 ROTISSERIE CHKN", 1, 499, False, 0),
    ("0788245 KS OLIVE OIL 2L", 1, 1899, False, 300),
    ("1120057 GROUND BEEF 88%", 1, 1742, False, 0),
    ("0651303 SALMON FILLET", 1, 2631, False, 0),
    ("1466091 AVOCADOS 6CT", 1, 699, False, 0),
    ("0220310 KS ALMOND MILK", 2, 999, False, 0),
    ("1700452 SOURDOUGH 2PK", 1, 599, False, 0),
    ("0347789 CHEDDAR 2LB", 1, 899, False, 0),
    ("1503326 KS COFFEE 3LB", 1, 1699, False, 0),
    ("0832174 SPINACH 2.5LB", 2, 499, False, 0),
    ("1258890 DISH PODS 115CT", 1, 2199, True, 500),
    ("0915537 LAUNDRY DET 194", 1, 1999, True, 0),
    ("1377420 TRASH BAGS 200", 1, 1899, True, 0),
    ("0563398 SPARKLING WTR 35", 2, 999, True, 0),
    ("1684415 GREEK YOGURT 2PK", 3, 649, False, 0),
    ("0279012 MIXED NUTS 2.5LB", 1, 1599, False, 200),
    ("1041166 FROZEN BERRIES", 2, 1199, False, 0),
    ("0698823 KS BATTERIES AA", 1, 1799, True, 0),
    ("1522907 PROTEIN BARS 20", 1, 2299, False, 0),
    ("1129930 KS PAPER PLATES", 1, 1499, True, 0),
    ("0457781 RED GRAPES 4LB", 1, 799, False, 0),
    ("1600215 CHICKEN THIGHS", 1, 1488, False, 0),
    ("0833067 TORTILLA CHIPS", 2, 549, False, 0),
)
_WAREHOUSE_TAX_RATE = "8.265"


def long_300_receipt() -> tuple[dict[str, Any], Truth]:
    """A warehouse-club receipt of about 300 words with an ITEM/QTY/UNIT/AMOUNT block, 0.8 degrees askew."""
    cw = 0.0224
    lx = 0.001

    def at(chars: int) -> float:
        return lx + chars * cw

    def col(text: str, end_char: int, column: int) -> Segment:
        return right_aligned(text, at(end_char), cw, column)

    def amount(cents: int, flag: bool = False) -> Segment:
        text = usd(cents) if cents >= 0 else f"{usd(-cents)}-"
        return Segment(f"{text} A" if flag else text, at(42) - len(text) * cw, 3)

    rows: list[Row] = [
        row(centered("NORTHGATE WHOLESALE CLUB", cw)),
        row(centered("WAREHOUSE #0318", cw)),
        row(centered("4850 COMMERCE CENTER DR", cw)),
        row(centered("RENO NV 89502", cw)),
        row(centered("(775) 555-0193", cw)),
        row(seg("MEMBER 111 2298 4471", lx), right_aligned("EXECUTIVE", at(44), cw), gap_before=0.5),
        row(seg("03/22/2025 14:07", lx), right_aligned("REG 12 TRN 331", at(44), cw)),
        row(
            seg("ITEM", lx),
            col("QTY", 26, 1),
            col("UNIT", 34, 2),
            col("AMOUNT", 42, 3),
            block="items",
            gap_before=0.5,
        ),
    ]
    subtotal = taxable = savings = count = 0
    for name, qty, unit, flag, saved in _WAREHOUSE:
        rows.append(
            row(seg(name, lx), col(str(qty), 26, 1), col(usd(unit), 34, 2), amount(qty * unit, flag), block="items")
        )
        subtotal += qty * unit
        taxable += qty * unit if flag else 0
        count += qty
        if saved:
            rows.append(row(seg("INSTANT SAVINGS", at(2)), amount(-saved, flag), block="items"))
            subtotal -= saved
            taxable -= saved if flag else 0
            savings += saved
    tax = tax_on(taxable, _WAREHOUSE_TAX_RATE)
    total = subtotal + tax

    def summary(label: str, cents: int, gap: float = 0.0) -> Row:
        return row(seg(label, at(12)), right_aligned(usd(cents), at(42), cw), gap_before=gap)

    rows += [
        summary("SUBTOTAL", subtotal, 0.5),
        summary(f"TAX A {_WAREHOUSE_TAX_RATE}%", tax),
        summary("**** TOTAL", total),
        row(seg("XXXXXXXXXXXX4417", lx), right_aligned("CHIP READ", at(44), cw), gap_before=0.5),
        row(seg("AID A0000000031010", lx), right_aligned("VISA CREDIT", at(44), cw)),
        row(seg("SEQ# 331882", lx), right_aligned("APP# 093411", at(44), cw)),
        row(seg("RESP: APPROVED", lx), right_aligned("TRAN ID# 508100331", at(44), cw)),
        summary("VISA", total),
        summary("CHANGE", 0),
        row(seg(f"TOTAL NUMBER OF ITEMS SOLD = {count}", lx), gap_before=0.5),
        row(seg("INSTANT SAVINGS", lx), right_aligned(usd(savings), at(42), cw)),
        row(seg("03/22/2025 14:07 0318 12 331 88", lx)),
        row(centered("OP# 88 NAME: JORDAN", cw)),
        row(centered("THANK YOU! PLEASE COME AGAIN", cw), gap_before=0.5),
        row(centered("WWW.NORTHGATECLUB.COM", cw)),
    ]
    layout = Layout(
        seed=318,
        skew_degrees=0.8,
        numbering="columns",
        char_width=cw,
        line_spacing=2.0,
        margin_top=0.0,
        margin_bottom=0.008,
        jitter=0.0003,
        overshoots=(
            # turned counter-clockwise: the top row's right end and the highest left-column row are at the edges
            Overshoot(0, 0, 2, "top", 1.0009),  # "CLUB" of "NORTHGATE WHOLESALE CLUB"
            Overshoot(5, 0, 0, "left", -0.0019),  # "MEMBER"
        ),
    )
    return build_receipt(LONG_300_IMAGE_ID, rows, layout)


#: Fixture file name -> its builder (document and truth).
FIXTURES: dict[str, Callable[[], tuple[dict[str, Any], Truth]]] = {
    "receipt_split_rows.json": split_rows_receipt,
    "receipt_skewed_scan.json": skewed_scan_receipt,
    "receipt_long_300.json": long_300_receipt,
}


def write_fixtures(directory: Path = FIXTURE_DIR) -> list[Path]:
    written = []
    for name, build in FIXTURES.items():
        path = directory / name
        path.write_bytes(render(build()[0]).encode("utf-8"))
        written.append(path)
    return written


def stale_fixtures(directory: Path = FIXTURE_DIR) -> list[str]:
    """The fixture files that are missing or differ from what the generator builds."""
    stale = []
    for name, build in FIXTURES.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != render(build()[0]).encode("utf-8"):
            stale.append(name)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.receipt_layouts", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the fixture files")
    action.add_argument("--check", action="store_true", help="exit 1 when a fixture file differs from the generator")
    parser.add_argument("--dir", type=Path, default=FIXTURE_DIR, help="the fixtures directory (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_fixtures(args.dir):
            print(f"wrote {path}")
        return 0
    stale = stale_fixtures(args.dir)
    for name in stale:
        print(f"{name}: differs from the generator; run python -m tests.receipt_layouts --write", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
