"""receipt_dynamo entities: validation at construction, item round trips, key strings as in docs/data-layer.md."""

from __future__ import annotations

import ast
import copy
import dataclasses
import math
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receipt_dynamo import (
    GEOMETRY_TOLERANCE,
    EntityValidationError,
    Receipt,
    ReceiptDetails,
    ReceiptLine,
    ReceiptWord,
    ReceiptWordLabel,
    ValidationStatus,
    keys,
)
from receipt_dynamo.schema import GLOBAL_SECONDARY_INDEXES

pytestmark = pytest.mark.unit

IMAGE_ID = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
TS = "2026-11-29T03:15:36.123456+00:00"
BOX = {"x": 0.1, "y": 0.25, "width": 0.3, "height": 0.02}


def make_label(**overrides: Any) -> ReceiptWordLabel:
    fields: dict[str, Any] = {
        "image_id": IMAGE_ID,
        "receipt_id": 1,
        "line_id": 2,
        "word_id": 3,
        "label": "GRAND_TOTAL",
        "reasoning": "amount on the TOTAL line",
        "timestamp_added": TS,
        "validation_status": ValidationStatus.PENDING,
        "label_proposed_by": "receipt_label:gpt-oss:120b",
        "label_consolidated_from": None,
    }
    fields.update(overrides)
    return ReceiptWordLabel(**fields)


ENTITIES = [
    Receipt(IMAGE_ID, 1),
    Receipt(IMAGE_ID, 2, labeled_by="receipt_label:gpt-oss:120b", labeled_at=TS),
    ReceiptLine(IMAGE_ID, 1, 7, "TOTAL $ 21.80"),
    ReceiptLine(IMAGE_ID, 12, 99999, "TOTAL $ 21.80", bounding_box=BOX, confidence=0.973),
    ReceiptWord(IMAGE_ID, 1, 7, 3, "21.80"),
    ReceiptWord(IMAGE_ID, 1, 7, 3, "$5.00", bounding_box={"x": 0, "y": 0, "width": 1, "height": 1}, confidence=1),
    make_label(),
    make_label(validation_status=ValidationStatus.VALID, label_proposed_by=None),
    make_label(label_consolidated_from="TOTAL", reasoning="", timestamp_added="2026-01-02T03:04:05Z"),
]


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: type(e).__name__)
def test_entity_round_trips_through_its_item(entity: Any) -> None:
    item = entity.to_item()
    assert type(entity).from_item(item) == entity
    assert {k: item[k] for k in ("PK", "SK")} == entity.key
    # every attribute value is in the low-level client form
    assert all(len(v) == 1 and next(iter(v)) in {"S", "N", "M"} for v in item.values())


def test_key_strings_match_design_character_for_character() -> None:
    pk = f"IMAGE#{IMAGE_ID}"
    assert Receipt(IMAGE_ID, 1).to_item() == {"PK": {"S": pk}, "SK": {"S": "RECEIPT#00001"}, "TYPE": {"S": "RECEIPT"}}
    line = ReceiptLine(IMAGE_ID, 1, 1, "TRADER JOE'S").to_item()
    assert (line["PK"]["S"], line["SK"]["S"], line["TYPE"]["S"]) == (pk, "RECEIPT#00001#LINE#00001", "RECEIPT_LINE")
    word = ReceiptWord(IMAGE_ID, 1, 1, 1, "TRADER").to_item()
    assert (word["PK"]["S"], word["SK"]["S"], word["TYPE"]["S"]) == (
        pk,
        "RECEIPT#00001#LINE#00001#WORD#00001",
        "RECEIPT_WORD",
    )
    label = make_label(receipt_id=1, line_id=1, word_id=1, label="MERCHANT_NAME").to_item()
    assert (label["PK"]["S"], label["SK"]["S"]) == (pk, "RECEIPT#00001#LINE#00001#WORD#00001#LABEL#MERCHANT_NAME")
    assert "TYPE" not in label  # labels are not in the GSITYPE index
    assert label["GSI3PK"] == {"S": "VALIDATION_STATUS#PENDING"}
    assert label["GSI3SK"] == {"S": f"IMAGE#{IMAGE_ID}#RECEIPT#00001#LINE#00001#WORD#00001#LABEL#MERCHANT_NAME"}
    wide = make_label(receipt_id=12, line_id=345, word_id=99999, label="TAX", validation_status="NEEDS_REVIEW")
    assert wide.key["SK"]["S"] == "RECEIPT#00012#LINE#00345#WORD#99999#LABEL#TAX"
    assert wide.to_item()["GSI3PK"]["S"] == "VALIDATION_STATUS#NEEDS_REVIEW"


def test_receipt_completion_marker_is_stored_only_when_set() -> None:
    marked = Receipt(IMAGE_ID, 1, "receipt_label:gpt-oss:120b", "2026-11-29T03:15:36Z")  # positional still works
    item = marked.to_item()
    assert item["labeled_by"] == {"S": "receipt_label:gpt-oss:120b"}
    assert item["labeled_at"] == {"S": "2026-11-29T03:15:36Z"}
    assert {k: item[k] for k in ("PK", "SK", "TYPE")} == Receipt(IMAGE_ID, 1).to_item()  # keys unchanged
    assert set(Receipt(IMAGE_ID, 1).to_item()) == {"PK", "SK", "TYPE"}
    assert Receipt.from_item(Receipt(IMAGE_ID, 1).to_item()).labeled_by is None  # an item from before the marker
    assert marked.is_labeled_by("receipt_label:") and not marked.is_labeled_by("reviewer:")
    assert not Receipt(IMAGE_ID, 1).is_labeled_by("receipt_label:")


@pytest.mark.parametrize(
    ("labeled_by", "labeled_at", "field"),
    [
        ("receipt_label:m", None, "labeled_at"),
        (None, TS, "labeled_by"),
        ("", TS, "labeled_by"),
        ("   ", TS, "labeled_by"),
        (7, TS, "labeled_by"),
        ("receipt_label:m", "yesterday", "labeled_at"),
        ("receipt_label:m", "2026-11-29T03:15:36", "labeled_at"),  # no offset
        ("receipt_label:m", "2026-11-29T03:15:36+01:00", "labeled_at"),  # not UTC
        ("receipt_label:m", 1764386136, "labeled_at"),
    ],
)
def test_receipt_completion_marker_is_validated(labeled_by: Any, labeled_at: Any, field: str) -> None:
    with pytest.raises(EntityValidationError) as info:
        Receipt(IMAGE_ID, 1, labeled_by=labeled_by, labeled_at=labeled_at)
    assert info.value.field == field


def test_label_item_carries_every_field() -> None:
    item = make_label(label_consolidated_from="TOTAL").to_item()
    assert item["label"] == {"S": "GRAND_TOTAL"}
    assert item["reasoning"] == {"S": "amount on the TOTAL line"}
    assert item["timestamp_added"] == {"S": TS}
    assert item["validation_status"] == {"S": "PENDING"}
    assert item["label_proposed_by"] == {"S": "receipt_label:gpt-oss:120b"}
    assert item["label_consolidated_from"] == {"S": "TOTAL"}
    assert "label_proposed_by" not in make_label(label_proposed_by=None).to_item()


def index_entries(item: dict[str, Any]) -> list[str]:
    """The global secondary indexes an item is written to: those whose key attributes it carries."""
    return [name for name, pk, sk in GLOBAL_SECONDARY_INDEXES if pk in item and (sk is None or sk in item)]


def test_a_new_label_item_is_in_the_validation_status_index_only() -> None:
    assert index_entries(make_label().to_item()) == ["GSI3"]  # 1 table write + 1 index write
    # lines, words and receipts keep TYPE (GSITYPE lists receipts; lines and words are written once, at load)
    assert index_entries(Receipt(IMAGE_ID, 1).to_item()) == ["GSITYPE"]
    assert index_entries(ReceiptLine(IMAGE_ID, 1, 1, "X").to_item()) == ["GSITYPE"]
    assert index_entries(ReceiptWord(IMAGE_ID, 1, 1, 1, "X").to_item()) == ["GSITYPE"]


def test_a_label_item_written_by_an_earlier_version_with_type_is_still_read() -> None:
    label = make_label(label_consolidated_from="TOTAL")
    old_item = {**label.to_item(), "TYPE": {"S": "RECEIPT_WORD_LABEL"}}
    assert ReceiptWordLabel.from_item(old_item) == label


def test_a_label_item_with_another_type_is_rejected() -> None:
    item = {**make_label().to_item(), "TYPE": {"S": "RECEIPT_WORD"}}
    with pytest.raises(EntityValidationError, match="RECEIPT_WORD_LABEL"):
        ReceiptWordLabel.from_item(item)


def test_an_item_without_type_is_a_label_only_if_its_sort_key_is_a_label_key() -> None:
    word_item = {k: v for k, v in ReceiptWord(IMAGE_ID, 1, 1, 1, "X").to_item().items() if k != "TYPE"}
    with pytest.raises(EntityValidationError, match="not a label key"):
        ReceiptWordLabel.from_item({**make_label().to_item(), "SK": word_item["SK"]})
    with pytest.raises(EntityValidationError, match="RECEIPT_WORD"):
        ReceiptWord.from_item(word_item)  # lines and words still need their TYPE
    assert keys.is_label_sk(make_label().key["SK"]["S"])
    assert not keys.is_label_sk(word_item["SK"]["S"])
    assert not keys.is_label_sk("RECEIPT#00001#LINE#00001#WORD#00001#LABEL#TAX#EXTRA")
    assert not keys.is_label_sk("SOMETHING#ELSE")


def test_keys_parse_what_they_build() -> None:
    sk = keys.label_sk(3, 45, 678, "UNIT_PRICE")
    assert keys.parse_sk(sk) == (3, 45, 678, "UNIT_PRICE")
    assert keys.parse_sk(keys.receipt_sk(9)) == (9, None, None, None)
    assert keys.parse_pk(keys.image_pk(IMAGE_ID)) == IMAGE_ID
    with pytest.raises(ValueError, match="RECEIPT#1"):
        keys.parse_sk("RECEIPT#1")


def test_validation_status_is_a_str_enum_accepting_strings() -> None:
    assert [s.value for s in ValidationStatus] == ["NONE", "PENDING", "VALID", "INVALID", "NEEDS_REVIEW"]
    assert isinstance(ValidationStatus.VALID, str) and ValidationStatus.VALID == "VALID"
    assert make_label(validation_status="VALID").validation_status is ValidationStatus.VALID


INVALID_FIELDS: list[tuple[str, Any, dict[str, Any], str]] = [
    # (entity, factory, overrides, field named in the error)
    ("Receipt", Receipt, {"image_id": "not-a-uuid"}, "image_id"),
    ("Receipt", Receipt, {"image_id": IMAGE_ID.upper()}, "image_id"),
    ("Receipt", Receipt, {"image_id": 42}, "image_id"),
    ("Receipt", Receipt, {"receipt_id": 0}, "receipt_id"),
    ("Receipt", Receipt, {"receipt_id": True}, "receipt_id"),
    ("Receipt", Receipt, {"receipt_id": "1"}, "receipt_id"),
    ("Receipt", Receipt, {"receipt_id": 100000}, "receipt_id"),
    ("ReceiptLine", ReceiptLine, {"line_id": -1}, "line_id"),
    ("ReceiptLine", ReceiptLine, {"text": "   "}, "text"),
    ("ReceiptLine", ReceiptLine, {"text": None}, "text"),
    ("ReceiptLine", ReceiptLine, {"bounding_box": {"x": 0.1, "y": 0.1, "width": 0.2}}, "bounding_box"),
    ("ReceiptLine", ReceiptLine, {"bounding_box": [0.1, 0.1, 0.2, 0.2]}, "bounding_box"),
    ("ReceiptLine", ReceiptLine, {"bounding_box": {**BOX, "height": 1.5}}, "bounding_box.height"),
    ("ReceiptLine", ReceiptLine, {"confidence": 1.01}, "confidence"),
    ("ReceiptLine", ReceiptLine, {"confidence": float("nan")}, "confidence"),
    ("ReceiptWord", ReceiptWord, {"word_id": 0}, "word_id"),
    ("ReceiptWord", ReceiptWord, {"line_id": 2.0}, "line_id"),
    ("ReceiptWord", ReceiptWord, {"text": ""}, "text"),
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "x": "0.1"}}, "bounding_box.x"),
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "x": True}}, "bounding_box.x"),
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "x": float("nan")}}, "bounding_box.x"),
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "y": float("inf")}}, "bounding_box.y"),
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "width": float("-inf")}}, "bounding_box.width"),
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "height": float("nan")}}, "bounding_box.height"),
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "x": 10**400}}, "bounding_box.x"),  # beyond float
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "width": -0.01}}, "bounding_box.width"),
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "height": -1e-9}}, "bounding_box.height"),
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "x": -0.05}}, "bounding_box.x"),
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "y": 1.02}}, "bounding_box.y"),
    ("ReceiptWord", ReceiptWord, {"bounding_box": {**BOX, "width": 1.1}}, "bounding_box.width"),  # x + width 1.2
    ("ReceiptLine", ReceiptLine, {"bounding_box": {**BOX, "y": 0.99, "height": 0.03}}, "bounding_box.height"),
    ("ReceiptWord", ReceiptWord, {"confidence": -0.1}, "confidence"),
    ("ReceiptWord", ReceiptWord, {"confidence": -1e-9}, "confidence"),  # no tolerance on confidence
    ("ReceiptWord", ReceiptWord, {"confidence": 1.0004}, "confidence"),
    ("ReceiptWord", ReceiptWord, {"confidence": True}, "confidence"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"image_id": ""}, "image_id"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"receipt_id": -3}, "receipt_id"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"line_id": None}, "line_id"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"word_id": 0}, "word_id"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"label": ""}, "label"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"label": "grand_total"}, "label"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"label": "TOTAL#X"}, "label"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"reasoning": None}, "reasoning"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"timestamp_added": "yesterday"}, "timestamp_added"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"timestamp_added": "2026-11-29T03:15:36"}, "timestamp_added"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"timestamp_added": "2026-11-29T03:15:36-05:00"}, "timestamp_added"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"validation_status": "APPROVED"}, "validation_status"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"validation_status": None}, "validation_status"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"label_proposed_by": ""}, "label_proposed_by"),
    ("ReceiptWordLabel", ReceiptWordLabel, {"label_consolidated_from": 5}, "label_consolidated_from"),
]

VALID_ARGS: dict[str, dict[str, Any]] = {
    "Receipt": {"image_id": IMAGE_ID, "receipt_id": 1},
    "ReceiptLine": {"image_id": IMAGE_ID, "receipt_id": 1, "line_id": 1, "text": "TOTAL 5.00"},
    "ReceiptWord": {"image_id": IMAGE_ID, "receipt_id": 1, "line_id": 1, "word_id": 1, "text": "TOTAL"},
    "ReceiptWordLabel": dataclasses.asdict(make_label()),
}


@pytest.mark.parametrize(("entity", "factory", "overrides", "field"), INVALID_FIELDS)
def test_each_invalid_field_raises_an_error_naming_it(
    entity: str, factory: Any, overrides: dict[str, Any], field: str
) -> None:
    factory(**VALID_ARGS[entity])  # the baseline is valid
    with pytest.raises(EntityValidationError) as info:
        factory(**{**VALID_ARGS[entity], **overrides})
    assert info.value.field == field
    assert str(info.value).startswith(f"{entity}.{field}: ")
    assert isinstance(info.value, ValueError)


def test_from_item_rejects_an_item_of_another_type() -> None:
    with pytest.raises(EntityValidationError, match="RECEIPT_WORD"):
        ReceiptWord.from_item(ReceiptLine(IMAGE_ID, 1, 1, "X").to_item())


def test_receipt_details_sorts_by_ids() -> None:
    words = [ReceiptWord(IMAGE_ID, 1, line, word, "W") for line, word in [(2, 1), (1, 10), (1, 2), (10, 1)]]
    labels = [make_label(line_id=2, word_id=1, label="TAX"), make_label(line_id=1, word_id=1, label="TAX")]
    details = ReceiptDetails(Receipt(IMAGE_ID, 1), lines=[], words=words, labels=labels)
    assert [(w.line_id, w.word_id) for w in details.words] == [(1, 2), (1, 10), (2, 1), (10, 1)]
    assert [(x.line_id, x.word_id) for x in details.labels] == [(1, 1), (2, 1)]


def test_entities_are_immutable() -> None:
    label = make_label()
    with pytest.raises(dataclasses.FrozenInstanceError):
        label.label = "TAX"  # type: ignore[misc]
    assert uuid.UUID(label.image_id)


def test_runtime_modules_import_only_stdlib_and_boto3() -> None:
    """The zip Lambda ships receipt_dynamo with boto3 only; tqdm is imported lazily by the CLI alone."""
    package = Path(__file__).resolve().parents[2] / "receipt_dynamo"
    allowed = set(sys.stdlib_module_names) | {"boto3", "botocore", "receipt_dynamo"}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        for node in top_level:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name} at module level"


# --- geometry: OCR noise and small overshoots are clamped, boxes far outside are rejected -----------

GEOMETRY_ENTITIES = [
    pytest.param(lambda box, conf=None: ReceiptLine(IMAGE_ID, 1, 1, "TOTAL 5.00", box, conf), id="ReceiptLine"),
    pytest.param(lambda box, conf=None: ReceiptWord(IMAGE_ID, 1, 1, 1, "TOTAL", box, conf), id="ReceiptWord"),
]


def stored_box(entity: ReceiptLine | ReceiptWord) -> dict[str, float]:
    """The bounding box as written to DynamoDB (the item's number strings, read as floats)."""
    return {k: float(v["N"]) for k, v in entity.to_item()["bounding_box"]["M"].items()}


def assert_inside_the_receipt(box: dict[str, float]) -> None:
    assert all(0.0 <= box[k] <= 1.0 for k in ("x", "y", "width", "height")), box
    assert box["x"] + box["width"] <= 1.0 and box["y"] + box["height"] <= 1.0, box


def clamp(value: float) -> float:
    return min(max(value, 0.0), 1.0)


NEAR_EDGE = st.floats(min_value=-0.009, max_value=1.009)  # inside the tolerance, with a margin for rounding


@st.composite
def boxes_within_tolerance(draw: st.DrawFn) -> dict[str, float]:
    """Boxes reaching at most 0.009 outside the receipt on any side: OCR noise and small overshoots."""
    x, y = draw(NEAR_EDGE), draw(NEAR_EDGE)
    width = draw(st.floats(min_value=0.0, max_value=max(1.009 - x, 0.0)))
    height = draw(st.floats(min_value=0.0, max_value=max(1.009 - y, 0.0)))
    return {"x": x, "y": y, "width": width, "height": height}


def test_the_geometry_tolerance_is_one_percent_of_the_receipt() -> None:
    assert GEOMETRY_TOLERANCE == 0.01


@pytest.mark.parametrize("make", GEOMETRY_ENTITIES)
def test_float_noise_from_the_perspective_transform_is_clamped_not_rejected(make: Any) -> None:
    entity = make({"x": -7e-09, "y": 0.5, "width": 0.2, "height": 0.01})
    box = stored_box(entity)
    assert box["x"] == 0.0
    assert box["x"] + box["width"] == pytest.approx(-7e-09 + 0.2, abs=1e-15)  # the right edge stays put
    assert (box["y"], box["height"]) == (0.5, 0.01)  # the other axis is untouched
    assert entity.bounding_box == box
    assert_inside_the_receipt(box)


SLIGHTLY_OUTSIDE = [
    pytest.param({"x": -0.00037, "y": 0.4, "width": 0.3, "height": 0.02}, id="left edge at -0.00037"),
    pytest.param({"x": 0.1, "y": -0.002, "width": 0.3, "height": 0.02}, id="bottom edge at -0.002"),
    pytest.param({"x": 0.1, "y": 0.98, "width": 0.3, "height": 0.0204}, id="top edge at 1.0004"),
    pytest.param({"x": 0.9, "y": 0.1, "width": 0.105, "height": 0.02}, id="right edge at 1.005"),
    pytest.param({"x": 1.0004, "y": 0.5, "width": 0.0, "height": 0.01}, id="x at 1.0004"),
    pytest.param({"x": -0.01, "y": -0.01, "width": 1.02, "height": 1.02}, id="every edge at the tolerance"),
    pytest.param({"x": -0.004, "y": 0.2, "width": 0.003, "height": 0.01}, id="a box entirely left of 0"),
]


@pytest.mark.parametrize("make", GEOMETRY_ENTITIES)
@pytest.mark.parametrize("given_box", SLIGHTLY_OUTSIDE)
def test_a_box_slightly_outside_the_receipt_is_clamped_and_keeps_its_edges_inside(
    make: Any, given_box: dict[str, float]
) -> None:
    box = stored_box(make(given_box))
    assert_inside_the_receipt(box)
    for start, size in (("x", "width"), ("y", "height")):
        assert box[start] == clamp(given_box[start])
        far = given_box[start] + given_box[size]
        assert box[start] + box[size] == pytest.approx(clamp(far), abs=1e-15)


@pytest.mark.parametrize("make", GEOMETRY_ENTITIES)
def test_a_box_inside_the_receipt_is_stored_exactly_as_given(make: Any) -> None:
    given_box = {"x": 0.1, "y": 0.3, "width": 0.3, "height": 0.7}  # edges at 0.4 and 1.0: no clamping
    entity = make(given_box)
    assert entity.bounding_box == given_box
    assert stored_box(entity) == given_box  # no float noise from recomputing a size


@pytest.mark.parametrize("make", GEOMETRY_ENTITIES)
@pytest.mark.parametrize(
    ("given_box", "field", "value"),
    [
        ({"x": -0.05, "y": 0.1, "width": 0.2, "height": 0.02}, "bounding_box.x", "-0.05"),
        ({"x": 0.1, "y": 1.02, "width": 0.2, "height": 0.0}, "bounding_box.y", "1.02"),
        ({"x": 0.5, "y": 0.1, "width": 0.7, "height": 0.02}, "bounding_box.width", "1.2"),  # x + width
        ({"x": 0.1, "y": 0.9, "width": 0.2, "height": 0.15}, "bounding_box.height", "1.05"),  # y + height
        ({"x": -0.0101, "y": 0.1, "width": 0.2, "height": 0.02}, "bounding_box.x", "-0.0101"),  # just beyond
    ],
)
def test_a_box_far_outside_the_receipt_is_rejected_naming_the_field_the_value_and_the_tolerance(
    make: Any, given_box: dict[str, float], field: str, value: str
) -> None:
    with pytest.raises(EntityValidationError) as info:
        make(given_box)
    assert info.value.field == field
    assert value in info.value.problem and "tolerance 0.01" in info.value.problem


@pytest.mark.parametrize("make", GEOMETRY_ENTITIES)
@pytest.mark.parametrize("size", ["width", "height"])
@pytest.mark.parametrize("negative", [-1e-9, -0.004, -1.0])
def test_a_negative_size_is_rejected_however_small(make: Any, size: str, negative: float) -> None:
    with pytest.raises(EntityValidationError) as info:
        make({**BOX, size: negative})
    assert info.value.field == f"bounding_box.{size}"
    assert "negative" in info.value.problem


@pytest.mark.parametrize("make", GEOMETRY_ENTITIES)
def test_a_value_too_small_for_dynamodb_is_stored_as_zero(make: Any) -> None:
    # DynamoDB rejects the whole write ("Number underflow") for a magnitude below 1e-130
    entity = make({"x": 1e-140, "y": 0.5, "width": 5e-131, "height": -1e-200}, 1e-200)
    assert entity.bounding_box == {"x": 0.0, "y": 0.5, "width": 0.0, "height": 0.0}
    assert entity.confidence == 0.0
    item = entity.to_item()
    assert item["bounding_box"]["M"]["x"] == {"N": "0.0"} and item["confidence"] == {"N": "0.0"}
    # clamping never leaves an underflow behind: an edge 1e-140 past the receipt clamps to a zero width
    assert make({"x": 1.0, "y": 0.5, "width": 1e-140, "height": 0.01}).bounding_box["width"] == 0.0


@pytest.mark.parametrize("make", GEOMETRY_ENTITIES)
def test_the_callers_bounding_box_dict_is_left_untouched(make: Any) -> None:
    given_box = {"x": -0.00037, "y": 0.98, "width": 0.3, "height": 0.0204}
    before = copy.deepcopy(given_box)
    entity = make(given_box)
    assert given_box == before
    assert entity.bounding_box is not given_box and entity.bounding_box != given_box
    clean = dict(BOX)
    assert make(clean).bounding_box is not clean  # a new dict even when nothing is clamped


@pytest.mark.parametrize("make", GEOMETRY_ENTITIES)
def test_an_item_read_back_from_dynamodb_goes_through_the_same_normalization(make: Any) -> None:
    entity = make(dict(BOX), 0.9)
    item = entity.to_item()
    item["bounding_box"]["M"]["x"] = {"N": "-7e-09"}  # an item written by hand or by another tool
    read = type(entity).from_item(item)
    assert read.bounding_box["x"] == 0.0
    assert read.bounding_box["width"] == pytest.approx(BOX["width"] - 7e-09, abs=1e-15)  # right edge kept
    assert type(entity).from_item(read.to_item()) == read  # clamping is idempotent
    item["bounding_box"]["M"]["x"] = {"N": "-0.05"}
    with pytest.raises(EntityValidationError) as info:
        type(entity).from_item(item)
    assert info.value.field == "bounding_box.x"


@settings(max_examples=200, deadline=None)
@given(box=boxes_within_tolerance())
def test_any_box_within_the_tolerance_is_clamped_into_the_receipt_keeping_its_far_edges(
    box: dict[str, float],
) -> None:
    word = ReceiptWord(IMAGE_ID, 1, 1, 1, "X", box)
    stored = stored_box(word)
    assert_inside_the_receipt(stored)
    for start, size in (("x", "width"), ("y", "height")):
        assert stored[start] == (0.0 if clamp(box[start]) < 1e-130 else clamp(box[start]))
        assert stored[start] + stored[size] == pytest.approx(clamp(box[start] + box[size]), abs=1e-12)
    assert ReceiptWord.from_item(word.to_item()) == word
    assert not any(math.isnan(v) for v in stored.values())


ids = st.integers(min_value=1, max_value=99999)
unit = st.floats(min_value=0.0, max_value=1.0)  # a DynamoDB underflow (below 1e-130) is stored as 0
boxes = st.none() | boxes_within_tolerance()
texts = st.text(min_size=1, max_size=40).filter(str.strip)


@settings(max_examples=60, deadline=None)
@given(
    image=st.uuids(version=4).map(str),
    receipt_id=ids,
    line_id=ids,
    word_id=ids,
    text=texts,
    box=boxes,
    confidence=st.none() | unit,
    label=st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True),
    status=st.sampled_from(list(ValidationStatus)),
    proposed=st.none() | texts,
)
def test_any_valid_entity_round_trips(
    image: str,
    receipt_id: int,
    line_id: int,
    word_id: int,
    text: str,
    box: dict[str, float] | None,
    confidence: float | None,
    label: str,
    status: ValidationStatus,
    proposed: str | None,
) -> None:
    line = ReceiptLine(image, receipt_id, line_id, text, box, confidence)
    word = ReceiptWord(image, receipt_id, line_id, word_id, text, box, confidence)
    lbl = ReceiptWordLabel(image, receipt_id, line_id, word_id, label, text, TS, status, proposed)
    for entity in (line, word, lbl):
        assert type(entity).from_item(entity.to_item()) == entity
    if box is not None:  # the stored box is inside the receipt, whatever noise it came with
        assert_inside_the_receipt(stored_box(word))
    assert lbl.key["SK"]["S"].startswith(word.key["SK"]["S"] + "#LABEL#")
    assert word.key["SK"]["S"].startswith(line.key["SK"]["S"] + "#WORD#")
