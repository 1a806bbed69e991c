"""The receipt as printed: OCR lines grouped into the visual rows they sit on.

OCR splits a printed row into separate lines (an item name at the left, its price at the right)
and numbers them in separate runs, so line order alone loses which price belongs to which item.
When every word has a bounding box (its own, or its line's), `visual_rows` puts each OCR line on
the printed row it belongs to, top to bottom, and the lines of a row left to right.

Geometry follows the receipt document format: normalized to the receipt, origin bottom-left, y
growing upwards. The algorithm, per receipt:

1. Skew: the median slope of the lines' word centres (lines of at least two words), limited to
   ``MAX_SLOPE``; every centre is then measured along that slope, so a row stays level on a scan
   rotated by a few degrees.
2. Each OCR line gets its levelled centre height and its height (median over its words).
3. Lines are taken top to bottom; a line joins the current row when its centre is within
   ``ROW_TOLERANCE`` of the row's own line heights from the row's centre and it does not overlap a
   line already in the row horizontally (two stacked lines are two rows, however tight).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from receipt_dynamo import ReceiptDetails, ReceiptWord

MAX_SLOPE = 0.2
"""The steepest skew corrected (about 11 degrees); steeper estimates are clamped (a bad scan, not a tilt)."""
ROW_TOLERANCE = 0.5
"""A line joins a row when its centre is at most this share of a line height from the row's centre."""
HORIZONTAL_OVERLAP = 0.25
"""Two lines overlapping by more than this share of the narrower one's width are never on one row."""


@dataclass(frozen=True)
class _Line:
    line_id: int
    words: tuple[ReceiptWord, ...]
    left: float
    right: float
    centre: float  # levelled: measured along the receipt's skew
    height: float


def _box(word: ReceiptWord, line_boxes: Mapping[int, Mapping[str, float]]) -> Mapping[str, float] | None:
    return word.bounding_box or line_boxes.get(word.line_id)


def _slope(lines: Mapping[int, list[tuple[float, float]]]) -> float:
    """The receipt's skew: the median least-squares slope of the word centres of each line."""
    slopes = []
    for centres in lines.values():
        if len(centres) < 2:
            continue
        xs = [x for x, _ in centres]
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(y for _, y in centres)
        spread = sum((x - mean_x) ** 2 for x in xs)
        if spread <= 1e-9:
            continue
        slopes.append(sum((x - mean_x) * (y - mean_y) for x, y in centres) / spread)
    if not slopes:
        return 0.0
    return max(-MAX_SLOPE, min(MAX_SLOPE, statistics.median(slopes)))


def visual_rows(details: ReceiptDetails) -> list[list[ReceiptWord]] | None:
    """The words as printed, row by row (top to bottom, left to right); None when geometry is missing.

    Every word needs a box, its own or its line's; otherwise the caller keeps the OCR line order.
    """
    if not details.words:
        return None
    line_boxes = {line.line_id: line.bounding_box for line in details.lines if line.bounding_box is not None}
    boxes: dict[tuple[int, int], Mapping[str, float]] = {}
    for word in details.words:
        box = _box(word, line_boxes)
        if box is None:
            return None
        boxes[(word.line_id, word.word_id)] = box

    def centre(word: ReceiptWord) -> tuple[float, float]:
        box = boxes[(word.line_id, word.word_id)]
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    by_line: dict[int, list[ReceiptWord]] = {}
    for word in details.words:
        by_line.setdefault(word.line_id, []).append(word)
    own_boxes = {
        line_id: [centre(w) for w in words if w.bounding_box is not None] for line_id, words in by_line.items()
    }
    slope = _slope(own_boxes)

    lines: list[_Line] = []
    for line_id, words in by_line.items():
        lefts = [boxes[(w.line_id, w.word_id)]["x"] for w in words]
        rights = [boxes[(w.line_id, w.word_id)]["x"] + boxes[(w.line_id, w.word_id)]["width"] for w in words]
        levelled = [y - slope * (x - 0.5) for x, y in map(centre, words)]
        heights = [boxes[(w.line_id, w.word_id)]["height"] for w in words]
        lines.append(
            _Line(
                line_id=line_id,
                words=tuple(sorted(words, key=lambda w: (centre(w)[0], w.word_id))),
                left=min(lefts),
                right=max(rights),
                centre=statistics.median(levelled),
                height=max(statistics.median(heights), 1e-6),
            )
        )
    lines.sort(key=lambda line: (-line.centre, line.left, line.line_id))  # y grows upwards: top first

    rows: list[list[_Line]] = []
    for line in lines:
        row = rows[-1] if rows else None
        if row is not None and _joins(row, line):
            row.append(line)
        else:
            rows.append([line])
    return [[word for line in sorted(row, key=lambda x: (x.left, x.line_id)) for word in line.words] for row in rows]


def _joins(row: Sequence[_Line], line: _Line) -> bool:
    row_centre = statistics.fmean(member.centre for member in row)
    row_height = statistics.median(member.height for member in row)
    if abs(line.centre - row_centre) > ROW_TOLERANCE * min(row_height, line.height):
        return False
    for member in row:
        overlap = min(member.right, line.right) - max(member.left, line.left)
        narrower = min(member.right - member.left, line.right - line.left)
        if overlap > HORIZONTAL_OVERLAP * max(narrower, 1e-6):
            return False
    return True
