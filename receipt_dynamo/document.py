"""The receipt document (docs/data-layer.md, "Receipt document"): JSON -> validated entities.

```json
{"image_id": "<uuid4>", "receipt_id": 1,
 "lines": [{"line_id": 1, "text": "TRADER JOE'S",
            "words": [{"word_id": 1, "text": "TRADER"}, {"word_id": 2, "text": "JOE'S"}]}]}
```
Optional per line and per word: ``bounding_box`` {x, y, width, height} and ``confidence`` (0..1).
A word without a box lies within its line: its line's box stands for it.
Unknown keys are rejected so that a typo (``"word_Id"``) is reported rather than silently dropped.

Coordinates (Apple Vision's normalized, receipt-relative coordinates): normalized to the receipt,
0..1 on each axis, origin at the receipt's **bottom-left**, **y grows upwards**. ``x`` is the left
edge of the box and ``x + width`` its right edge; ``y`` is the **bottom** edge and ``y + height`` the
top edge, so the first line of a receipt has the largest ``y``.

Real OCR boxes come with float noise and small overshoots (``x = -7e-09``, ``x = -0.00037``, a right
edge at ``1.0004``). When the document is parsed (so the values stored are the clamped ones):

- each of x, y, width, height must be a finite number (not a bool, NaN or infinity), and width and
  height must not be negative;
- x and y may lie up to ``GEOMETRY_TOLERANCE`` (0.01, 1% of the receipt) outside 0..1, and the right
  and top edges (``x + width``, ``y + height``) may reach up to 1.01; the box is then clamped into
  the receipt: x and y into 0..1, the right and top edges into 0..1, width and height recomputed
  from the clamped edges (a box that overshoots keeps its edge that lies inside the receipt);
- anything further outside is rejected with the JSON path: ``x = -0.05`` at
  ``lines[2].words[0].bounding_box.x``, ``x + width = 1.2`` at ``...bounding_box.width``;
- ``confidence`` must lie within 0..1, no tolerance;
- a value whose magnitude is below DynamoDB's smallest number (1e-130) is stored as 0.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Final

from receipt_dynamo.entities import Receipt, ReceiptDetails, ReceiptLine, ReceiptWord
from receipt_dynamo.errors import DocumentValidationError, EntityValidationError

_TOP_KEYS = {"image_id", "receipt_id", "lines"}
_LINE_KEYS = {"line_id", "text", "words", "bounding_box", "confidence"}
_WORD_KEYS = {"word_id", "text", "bounding_box", "confidence"}
_REQUIRED_TOP = ("image_id", "receipt_id", "lines")
_REQUIRED_LINE = ("line_id", "text", "words")
_REQUIRED_WORD = ("word_id", "text")

#: The JSON Schema (draft 2020-12) of the receipt document: a resource of this package.
RECEIPT_DOCUMENT_SCHEMA: Final = "receipt_document.schema.json"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_object(value: Any, path: str, allowed: set[str], required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DocumentValidationError(path or "$", f"must be an object, got {type(value).__name__}")
    for name in required:
        if name not in value:
            raise DocumentValidationError(_join(path, name), "is required")
    for name in sorted(value):
        if name not in allowed:
            raise DocumentValidationError(_join(path, str(name)), "unknown field")
    return value


def _build(path: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return factory(*args, **kwargs)
    except EntityValidationError as exc:
        raise DocumentValidationError(_join(path, exc.field), exc.problem) from None


def receipt_document_schema() -> dict[str, Any]:
    """The receipt document's JSON Schema (:data:`RECEIPT_DOCUMENT_SCHEMA`), a new dict on every call.

    It states what a schema can express of :func:`parse_receipt_document`'s rules (types, ranges,
    required and unknown keys); its ``$comment`` lists the checks only the loader makes (duplicate
    ids, right and top edges at most 1.01, ...).
    """
    text = resources.files("receipt_dynamo").joinpath(RECEIPT_DOCUMENT_SCHEMA).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def parse_receipt_document(doc: dict[str, Any]) -> ReceiptDetails:
    """Validate a receipt document and return its entities (``labels`` empty).

    Raises :class:`DocumentValidationError` whose ``path`` names the bad field, e.g. ``lines[2].words[0].word_id``.
    """
    _check_object(doc, "", _TOP_KEYS, _REQUIRED_TOP)
    receipt: Receipt = _build("", Receipt, doc["image_id"], doc["receipt_id"])
    raw_lines = doc["lines"]
    if not isinstance(raw_lines, list):
        raise DocumentValidationError("lines", f"must be an array, got {type(raw_lines).__name__}")
    if not raw_lines:
        raise DocumentValidationError("lines", "must contain at least one line")
    lines: list[ReceiptLine] = []
    words: list[ReceiptWord] = []
    seen_lines: set[int] = set()
    for i, raw_line in enumerate(raw_lines):
        lpath = f"lines[{i}]"
        _check_object(raw_line, lpath, _LINE_KEYS, _REQUIRED_LINE)
        line: ReceiptLine = _build(
            lpath,
            ReceiptLine,
            receipt.image_id,
            receipt.receipt_id,
            raw_line["line_id"],
            raw_line["text"],
            bounding_box=raw_line.get("bounding_box"),
            confidence=raw_line.get("confidence"),
        )
        if line.line_id in seen_lines:
            raise DocumentValidationError(f"{lpath}.line_id", f"duplicate line_id {line.line_id}")
        seen_lines.add(line.line_id)
        lines.append(line)
        raw_words = raw_line["words"]
        if not isinstance(raw_words, list):
            raise DocumentValidationError(f"{lpath}.words", f"must be an array, got {type(raw_words).__name__}")
        seen_words: set[int] = set()
        for j, raw_word in enumerate(raw_words):
            wpath = f"{lpath}.words[{j}]"
            _check_object(raw_word, wpath, _WORD_KEYS, _REQUIRED_WORD)
            word: ReceiptWord = _build(
                wpath,
                ReceiptWord,
                receipt.image_id,
                receipt.receipt_id,
                line.line_id,
                raw_word["word_id"],
                raw_word["text"],
                bounding_box=raw_word.get("bounding_box"),
                confidence=raw_word.get("confidence"),
            )
            if word.word_id in seen_words:
                raise DocumentValidationError(f"{wpath}.word_id", f"duplicate word_id {word.word_id} in line")
            seen_words.add(word.word_id)
            words.append(word)
    return ReceiptDetails(receipt=receipt, lines=lines, words=words, labels=[])


def receipt_document(details: ReceiptDetails) -> dict[str, Any]:
    """The inverse of :func:`parse_receipt_document` (labels are not part of the document)."""
    by_line: dict[int, list[dict[str, Any]]] = {line.line_id: [] for line in details.lines}
    for word in details.words:
        entry: dict[str, Any] = {"word_id": word.word_id, "text": word.text}
        if word.bounding_box is not None:
            entry["bounding_box"] = dict(word.bounding_box)
        if word.confidence is not None:
            entry["confidence"] = word.confidence
        by_line.setdefault(word.line_id, []).append(entry)
    lines = []
    for line in details.lines:
        raw: dict[str, Any] = {"line_id": line.line_id, "text": line.text}
        if line.bounding_box is not None:
            raw["bounding_box"] = dict(line.bounding_box)
        if line.confidence is not None:
            raw["confidence"] = line.confidence
        raw["words"] = by_line.get(line.line_id, [])
        lines.append(raw)
    return {"image_id": details.receipt.image_id, "receipt_id": details.receipt.receipt_id, "lines": lines}
