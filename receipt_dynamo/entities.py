"""Receipt entities: dataclasses validated at construction, with DynamoDB item round trips.

``to_item()`` returns the low-level attribute-value form used by the boto3 *client*
(``{"PK": {"S": "IMAGE#..."}, ...}``); ``from_item()`` accepts the same form. ``.key`` is the
``{"PK": ..., "SK": ...}`` key in that form. Key strings come from :mod:`receipt_dynamo.keys` only.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Final, Self

from receipt_dynamo import keys
from receipt_dynamo.errors import EntityValidationError

Item = dict[str, dict[str, Any]]

BOUNDING_BOX_FIELDS = ("x", "y", "width", "height")
_LABEL_RE = re.compile(r"[A-Z][A-Z0-9_]*")


class ValidationStatus(StrEnum):
    NONE = "NONE"
    PENDING = "PENDING"
    VALID = "VALID"
    INVALID = "INVALID"
    NEEDS_REVIEW = "NEEDS_REVIEW"


#: The statuses a judgement may give a PENDING label.
JUDGED_STATUSES: Final = frozenset({ValidationStatus.VALID, ValidationStatus.INVALID, ValidationStatus.NEEDS_REVIEW})

#: ``label_proposed_by`` (and ``labeled_by``) of everything the labeling pipeline writes starts with this.
PIPELINE_PROPOSER_PREFIX: Final = "receipt_label:"


def utc_now_iso() -> str:
    """The current time as ISO 8601 UTC with an explicit offset, e.g. ``2026-11-29T03:15:36.123456+00:00``."""
    return datetime.now(UTC).isoformat()


# --- field validators (raise EntityValidationError naming the field) ---------------------------


def _fail(entity: str, name: str, problem: str) -> EntityValidationError:
    return EntityValidationError(entity, name, problem)


def _check_image_id(entity: str, value: object) -> None:
    if not isinstance(value, str):
        raise _fail(entity, "image_id", f"must be a UUID string, got {type(value).__name__}")
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise _fail(entity, "image_id", f"must be a UUID, got {value!r}") from None
    if str(parsed) != value:
        raise _fail(entity, "image_id", f"must be a lower-case hyphenated UUID, got {value!r}")


def _check_id(entity: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(entity, name, f"must be an integer, got {type(value).__name__}")
    if not 0 < value <= keys.MAX_ID:
        raise _fail(entity, name, f"must be between 1 and {keys.MAX_ID}, got {value}")


def _check_text(entity: str, name: str, value: object, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise _fail(entity, name, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _fail(entity, name, "must not be empty")


def _check_optional_text(entity: str, name: str, value: object) -> None:
    if value is not None:
        _check_text(entity, name, value)


#: The smallest positive magnitude a DynamoDB number can have.
DYNAMODB_MIN_POSITIVE_NUMBER = 1e-130

#: How far (as a fraction of the receipt's width or height: 0.01 = 1%) a bounding box may reach
#: outside the receipt, 0..1, and still be accepted, then clamped into it. Real OCR output carries
#: float noise from the perspective transform (``x = -7e-09``) and small overshoots (``x = -0.00037``,
#: an edge at ``1.0004``); a box further outside than this is wrong and is rejected.
GEOMETRY_TOLERANCE = 0.01


def _finite_number(entity: str, name: str, value: object) -> float:
    """``value`` as a float: a finite int or float (not a bool), else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(entity, name, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise _fail(entity, name, "must be a finite number, got an integer beyond the float range") from None
    if not math.isfinite(number):
        raise _fail(entity, name, f"must be a finite number, got {value}")
    return number


def _without_underflow(value: float) -> float:
    """0.0 for a value too small for DynamoDB (magnitude below 1e-130; it rejects the whole write), else the value."""
    return 0.0 if abs(value) < DYNAMODB_MIN_POSITIVE_NUMBER else value


def _unit_number(entity: str, name: str, value: object) -> float:
    """A number within 0..1 (no tolerance), with a DynamoDB underflow (``1e-200``) returned as 0.0."""
    number = _without_underflow(_finite_number(entity, name, value))
    if not 0.0 <= number <= 1.0:
        raise _fail(entity, name, f"must be between 0 and 1, got {value}")
    return number


def _clamp_unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _normalize_span(
    entity: str, start_name: str, size_name: str, edge: str, start: float, size: float
) -> tuple[float, float]:
    """Check one axis of a box (x/width or y/height) against the tolerance; return it clamped into 0..1.

    The near edge (``start``) and the far edge (``start + size``) are each clamped into 0..1 and the
    size is recomputed from them, so a box that overshoots keeps the edge that is inside the receipt.
    A span already inside 0..1 is returned unchanged (no float noise from recomputing the size).
    """
    tol = GEOMETRY_TOLERANCE
    if size < 0.0:
        raise _fail(entity, size_name, f"must not be negative, got {size}")
    if not -tol <= start <= 1.0 + tol:
        raise _fail(
            entity,
            start_name,
            f"is far outside the receipt: must be between 0 and 1 within the tolerance {tol:g}, got {start}",
        )
    far = start + size
    if far > 1.0 + tol:
        sum_text = f"{start_name.rsplit('.', 1)[-1]} + {size_name.rsplit('.', 1)[-1]}"
        raise _fail(
            entity,
            size_name,
            f"is far outside the receipt: the {edge} edge ({sum_text}) must be at most 1 "
            f"within the tolerance {tol:g}, got {far}",
        )
    near, far_clamped = _clamp_unit(start), _clamp_unit(far)
    if near != start or far_clamped != far:
        size = max(far_clamped - near, 0.0)
        while near + size > far_clamped:  # float rounding: keep the far edge inside 0..1
            size = math.nextafter(size, 0.0)
    return _without_underflow(near), _without_underflow(size)


def _normalize_bounding_box(entity: str, value: object) -> dict[str, float] | None:
    """Validate a bounding box and return a new dict clamped into the receipt (``None`` stays ``None``).

    Coordinates are normalized to the receipt, origin at its bottom-left, y growing upwards: ``x`` is
    the left edge, ``y`` the bottom edge, ``x + width`` the right edge and ``y + height`` the top edge.
    Each value must be a finite number and ``width`` / ``height`` must not be negative. ``x`` and ``y``
    may lie up to :data:`GEOMETRY_TOLERANCE` outside 0..1, and so may the right and top edges; the box
    is then clamped into 0..1 (:func:`_normalize_span`). Anything further outside is rejected. A
    value whose magnitude is below DynamoDB's smallest number (1e-130) is stored as 0.0.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(entity, "bounding_box", f"must be an object with {', '.join(BOUNDING_BOX_FIELDS)}")
    missing = [k for k in BOUNDING_BOX_FIELDS if k not in value]
    extra = sorted(str(k) for k in set(value) - set(BOUNDING_BOX_FIELDS))
    if missing or extra:
        raise _fail(entity, "bounding_box", f"missing {missing} / unexpected {extra}")
    x, y, width, height = (
        _without_underflow(_finite_number(entity, f"bounding_box.{k}", value[k])) for k in BOUNDING_BOX_FIELDS
    )
    x, width = _normalize_span(entity, "bounding_box.x", "bounding_box.width", "right", x, width)
    y, height = _normalize_span(entity, "bounding_box.y", "bounding_box.height", "top", y, height)
    return {"x": x, "y": y, "width": width, "height": height}


def _normalize_confidence(entity: str, value: object) -> float | None:
    """``None``, or a confidence within 0..1 (no tolerance; a DynamoDB underflow becomes 0.0)."""
    return None if value is None else _unit_number(entity, "confidence", value)


def _check_label(entity: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise _fail(entity, "label", "must be a non-empty string")
    if not _LABEL_RE.fullmatch(value):
        raise _fail(entity, "label", f"must be upper case (A-Z, 0-9, _), got {value!r}")


def _check_word_label_key(entity: str, item: ReceiptWordLabel | LabelJudgement) -> None:
    """The fields that name a word's label: image, receipt, line and word ids, and the label."""
    _check_image_id(entity, item.image_id)
    _check_id(entity, "receipt_id", item.receipt_id)
    _check_id(entity, "line_id", item.line_id)
    _check_id(entity, "word_id", item.word_id)
    _check_label(entity, item.label)


def _check_timestamp(entity: str, value: object, name: str = "timestamp_added") -> None:
    if not isinstance(value, str):
        raise _fail(entity, name, f"must be an ISO 8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(entity, name, f"must be ISO 8601, got {value!r}") from None
    if parsed.tzinfo is None or parsed.utcoffset() != UTC.utcoffset(None):
        raise _fail(entity, name, f"must be in UTC (Z or +00:00), got {value!r}")


def validation_stamp(validated_by: object, validated_at: object = None) -> tuple[str, str]:
    """``(validated_by, validated_at)``, checked (errors name the field); ``validated_at`` defaults to now."""
    _check_text("LabelJudgement", "validated_by", validated_by)
    at = utc_now_iso() if validated_at is None else validated_at
    _check_timestamp("LabelJudgement", at, "validated_at")
    return str(validated_by), str(at)


# --- attribute-value helpers ----------------------------------------------------------------------


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int | float) -> dict[str, str]:
    return {"N": repr(float(value)) if isinstance(value, float) else str(value)}


def _num(av: dict[str, Any]) -> float:
    return float(av["N"])


def _geometry_to_item(item: Item, bounding_box: dict[str, float] | None, confidence: float | None) -> None:
    if bounding_box is not None:
        item["bounding_box"] = {"M": {k: _n(bounding_box[k]) for k in BOUNDING_BOX_FIELDS}}
    if confidence is not None:
        item["confidence"] = _n(confidence)


def _geometry_from_item(item: Item) -> tuple[dict[str, float] | None, float | None]:
    box = item.get("bounding_box")
    bounding_box = {k: _num(box["M"][k]) for k in BOUNDING_BOX_FIELDS} if box and "M" in box else None
    conf = item.get("confidence")
    return bounding_box, (_num(conf) if conf and "N" in conf else None)


def _opt_s(item: Item, name: str) -> str | None:
    av = item.get(name)
    return av["S"] if av is not None and "S" in av else None


def _keys_of(
    item: Item, entity: str, expected_type: str, *, type_optional: bool = False
) -> tuple[str, int, int | None, int | None, str | None]:
    """Parse the item's keys; ``TYPE`` must be ``expected_type`` (or, with ``type_optional``, may be absent)."""
    try:
        if "TYPE" in item or not type_optional:
            item_type = item["TYPE"]["S"]
            if item_type != expected_type:
                raise ValueError(f"TYPE is {item_type!r}, expected {expected_type!r}")
        image_id = keys.parse_pk(item["PK"]["S"])
        return (image_id, *keys.parse_sk(item["SK"]["S"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(entity, "item", f"not a {expected_type} item: {exc}") from None


# --- entities --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """A receipt. ``labeled_by`` / ``labeled_at``: the completion marker of the labeling pipeline.

    ``labeled_by`` is the proposer that finished labeling the receipt (``receipt_label:<model>``)
    and ``labeled_at`` when (ISO 8601 UTC); both set or both None. The pipeline sets them with
    :meth:`DynamoClient.mark_receipt_labeled` after every label of the run is in the table.
    """

    image_id: str
    receipt_id: int
    labeled_by: str | None = None
    labeled_at: str | None = None

    TYPE: ClassVar[str] = keys.TYPE_RECEIPT

    def __post_init__(self) -> None:
        _check_image_id("Receipt", self.image_id)
        _check_id("Receipt", "receipt_id", self.receipt_id)
        _check_optional_text("Receipt", "labeled_by", self.labeled_by)
        if self.labeled_at is not None:
            _check_timestamp("Receipt", self.labeled_at, "labeled_at")
        if (self.labeled_by is None) != (self.labeled_at is None):
            missing = "labeled_at" if self.labeled_at is None else "labeled_by"
            raise _fail("Receipt", missing, "labeled_by and labeled_at are set together or not at all")

    @property
    def key(self) -> Item:
        return {"PK": _s(keys.image_pk(self.image_id)), "SK": _s(keys.receipt_sk(self.receipt_id))}

    def is_labeled_by(self, prefix: str) -> bool:
        """True when the completion marker names a proposer starting with ``prefix`` (e.g. ``receipt_label:``)."""
        return self.labeled_by is not None and self.labeled_by.startswith(prefix)

    def to_item(self) -> Item:
        item: Item = {**self.key, "TYPE": _s(self.TYPE)}
        if self.labeled_by is not None and self.labeled_at is not None:
            item["labeled_by"] = _s(self.labeled_by)
            item["labeled_at"] = _s(self.labeled_at)
        return item

    @classmethod
    def from_item(cls, item: Item) -> Self:
        image_id, receipt_id, line_id, _, _ = _keys_of(item, "Receipt", cls.TYPE)
        if line_id is not None:
            raise _fail("Receipt", "item", f"sort key {item['SK']['S']!r} is not a receipt key")
        return cls(
            image_id=image_id,
            receipt_id=receipt_id,
            labeled_by=_opt_s(item, "labeled_by"),
            labeled_at=_opt_s(item, "labeled_at"),
        )


@dataclass(frozen=True)
class ReceiptLine:
    """An OCR line. ``bounding_box`` (receipt-relative, y up) and ``confidence`` are optional.

    The constructor stores the box normalized by :func:`_normalize_bounding_box`: a new dict, clamped
    into 0..1 when it reaches at most :data:`GEOMETRY_TOLERANCE` outside the receipt.
    """

    image_id: str
    receipt_id: int
    line_id: int
    text: str
    bounding_box: dict[str, float] | None = None
    confidence: float | None = None

    TYPE: ClassVar[str] = keys.TYPE_RECEIPT_LINE

    def __post_init__(self) -> None:
        _check_image_id("ReceiptLine", self.image_id)
        _check_id("ReceiptLine", "receipt_id", self.receipt_id)
        _check_id("ReceiptLine", "line_id", self.line_id)
        _check_text("ReceiptLine", "text", self.text)
        # frozen: store the normalized geometry (a new dict; the caller's dict is left as it was)
        object.__setattr__(self, "bounding_box", _normalize_bounding_box("ReceiptLine", self.bounding_box))
        object.__setattr__(self, "confidence", _normalize_confidence("ReceiptLine", self.confidence))

    @property
    def key(self) -> Item:
        return {
            "PK": _s(keys.image_pk(self.image_id)),
            "SK": _s(keys.line_sk(self.receipt_id, self.line_id)),
        }

    def to_item(self) -> Item:
        item: Item = {**self.key, "TYPE": _s(self.TYPE), "text": _s(self.text)}
        _geometry_to_item(item, self.bounding_box, self.confidence)
        return item

    @classmethod
    def from_item(cls, item: Item) -> Self:
        image_id, receipt_id, line_id, word_id, _ = _keys_of(item, "ReceiptLine", cls.TYPE)
        if line_id is None or word_id is not None:
            raise _fail("ReceiptLine", "item", f"sort key {item['SK']['S']!r} is not a line key")
        bounding_box, confidence = _geometry_from_item(item)
        return cls(image_id, receipt_id, line_id, item["text"]["S"], bounding_box, confidence)


@dataclass(frozen=True)
class ReceiptWord:
    """An OCR word of a line; geometry as in :class:`ReceiptLine` (a word without a box: its line's box)."""

    image_id: str
    receipt_id: int
    line_id: int
    word_id: int
    text: str
    bounding_box: dict[str, float] | None = None
    confidence: float | None = None

    TYPE: ClassVar[str] = keys.TYPE_RECEIPT_WORD

    def __post_init__(self) -> None:
        _check_image_id("ReceiptWord", self.image_id)
        _check_id("ReceiptWord", "receipt_id", self.receipt_id)
        _check_id("ReceiptWord", "line_id", self.line_id)
        _check_id("ReceiptWord", "word_id", self.word_id)
        _check_text("ReceiptWord", "text", self.text)
        # frozen: store the normalized geometry (a new dict; the caller's dict is left as it was)
        object.__setattr__(self, "bounding_box", _normalize_bounding_box("ReceiptWord", self.bounding_box))
        object.__setattr__(self, "confidence", _normalize_confidence("ReceiptWord", self.confidence))

    @property
    def key(self) -> Item:
        return {
            "PK": _s(keys.image_pk(self.image_id)),
            "SK": _s(keys.word_sk(self.receipt_id, self.line_id, self.word_id)),
        }

    def to_item(self) -> Item:
        item: Item = {**self.key, "TYPE": _s(self.TYPE), "text": _s(self.text)}
        _geometry_to_item(item, self.bounding_box, self.confidence)
        return item

    @classmethod
    def from_item(cls, item: Item) -> Self:
        image_id, receipt_id, line_id, word_id, label = _keys_of(item, "ReceiptWord", cls.TYPE)
        if line_id is None or word_id is None or label is not None:
            raise _fail("ReceiptWord", "item", f"sort key {item['SK']['S']!r} is not a word key")
        bounding_box, confidence = _geometry_from_item(item)
        return cls(image_id, receipt_id, line_id, word_id, item["text"]["S"], bounding_box, confidence)


#: The optional attributes a judgement sets on a label (stored only when set).
_VALIDATION_FIELDS = ("validation_reason", "validated_by", "validated_at")


@dataclass(frozen=True)
class ReceiptWordLabel:
    """A word label. Its item carries no ``TYPE`` attribute, so it is not in the GSITYPE index (only
    GSI3, by validation status): the sort key (``...#LABEL#<LABEL>``) says what it is. Items written
    by earlier versions carry ``TYPE = RECEIPT_WORD_LABEL``; :meth:`from_item` reads both.

    ``validation_reason``, ``validated_by`` and ``validated_at`` (ISO 8601 UTC) are set by
    :meth:`DynamoClient.set_label_validations` when a PENDING label is judged.
    """

    image_id: str
    receipt_id: int
    line_id: int
    word_id: int
    label: str
    reasoning: str
    timestamp_added: str
    validation_status: ValidationStatus
    label_proposed_by: str | None = None
    label_consolidated_from: str | None = None
    validation_reason: str | None = None
    validated_by: str | None = None
    validated_at: str | None = None

    #: The TYPE of label items written by earlier versions (new label items carry no TYPE).
    TYPE: ClassVar[str] = keys.TYPE_RECEIPT_WORD_LABEL

    def __post_init__(self) -> None:
        entity = "ReceiptWordLabel"
        _check_word_label_key(entity, self)
        _check_text(entity, "reasoning", self.reasoning, allow_empty=True)
        _check_timestamp(entity, self.timestamp_added)
        status: object = self.validation_status
        if not isinstance(status, ValidationStatus):
            try:
                status = ValidationStatus(str(status)) if isinstance(status, str) else None
            except ValueError:
                status = None
            if status is None:
                allowed = ", ".join(s.value for s in ValidationStatus)
                raise _fail(entity, "validation_status", f"must be one of {allowed}, got {self.validation_status!r}")
            object.__setattr__(self, "validation_status", status)
        _check_optional_text(entity, "label_proposed_by", self.label_proposed_by)
        _check_optional_text(entity, "label_consolidated_from", self.label_consolidated_from)
        if self.validation_reason is not None:
            _check_text(entity, "validation_reason", self.validation_reason, allow_empty=True)
        _check_optional_text(entity, "validated_by", self.validated_by)
        if self.validated_at is not None:
            _check_timestamp(entity, self.validated_at, "validated_at")

    @property
    def key(self) -> Item:
        return {
            "PK": _s(keys.image_pk(self.image_id)),
            "SK": _s(keys.label_sk(self.receipt_id, self.line_id, self.word_id, self.label)),
        }

    @property
    def word_key(self) -> tuple[int, int]:
        return (self.line_id, self.word_id)

    def gsi3_key(self) -> Item:
        return {
            "GSI3PK": _s(keys.validation_status_pk(self.validation_status.value)),
            "GSI3SK": _s(
                keys.validation_status_sk(self.image_id, self.receipt_id, self.line_id, self.word_id, self.label)
            ),
        }

    def describe(self) -> str:
        """Short identification for messages: ``<image_id>/1/3/2/TAX``."""
        return f"{self.image_id}/{self.receipt_id}/{self.line_id}/{self.word_id}/{self.label}"

    def to_item(self) -> Item:
        item: Item = {
            **self.key,  # no TYPE: a label is in GSI3 only (see the class docstring)
            **self.gsi3_key(),
            "label": _s(self.label),
            "reasoning": _s(self.reasoning),
            "timestamp_added": _s(self.timestamp_added),
            "validation_status": _s(self.validation_status.value),
        }
        if self.label_proposed_by is not None:
            item["label_proposed_by"] = _s(self.label_proposed_by)
        if self.label_consolidated_from is not None:
            item["label_consolidated_from"] = _s(self.label_consolidated_from)
        for name in _VALIDATION_FIELDS:
            value = getattr(self, name)
            if value is not None:
                item[name] = _s(value)
        return item

    @classmethod
    def from_item(cls, item: Item) -> Self:
        image_id, receipt_id, line_id, word_id, label = _keys_of(item, "ReceiptWordLabel", cls.TYPE, type_optional=True)
        if line_id is None or word_id is None or label is None:
            raise _fail("ReceiptWordLabel", "item", f"sort key {item['SK']['S']!r} is not a label key")
        return cls(
            image_id=image_id,
            receipt_id=receipt_id,
            line_id=line_id,
            word_id=word_id,
            label=label,
            reasoning=item["reasoning"]["S"] if "reasoning" in item else "",
            timestamp_added=item["timestamp_added"]["S"],
            validation_status=ValidationStatus(item["validation_status"]["S"]),
            label_proposed_by=_opt_s(item, "label_proposed_by"),
            label_consolidated_from=_opt_s(item, "label_consolidated_from"),
            validation_reason=_opt_s(item, "validation_reason"),
            validated_by=_opt_s(item, "validated_by"),
            validated_at=_opt_s(item, "validated_at"),
        )


@dataclass(frozen=True)
class LabelJudgement:
    """A decision on one PENDING label: ``status`` VALID, INVALID or NEEDS_REVIEW, with a short ``reason``."""

    image_id: str
    receipt_id: int
    line_id: int
    word_id: int
    label: str
    status: ValidationStatus
    reason: str = ""

    def __post_init__(self) -> None:
        entity = "LabelJudgement"
        _check_word_label_key(entity, self)
        _check_text(entity, "reason", self.reason, allow_empty=True)
        try:
            status: ValidationStatus | None = ValidationStatus(self.status)
        except (ValueError, TypeError):
            status = None
        if status not in JUDGED_STATUSES:
            allowed = ", ".join(sorted(JUDGED_STATUSES))
            raise _fail(entity, "status", f"must be one of {allowed}, got {self.status!r}")
        object.__setattr__(self, "status", status)

    @classmethod
    def of(cls, label: ReceiptWordLabel, status: ValidationStatus, reason: str = "") -> Self:
        """The judgement of ``label``."""
        return cls(label.image_id, label.receipt_id, label.line_id, label.word_id, label.label, status, reason)

    @property
    def key(self) -> Item:
        """The judged label's key."""
        return {
            "PK": _s(keys.image_pk(self.image_id)),
            "SK": _s(keys.label_sk(self.receipt_id, self.line_id, self.word_id, self.label)),
        }

    def describe(self) -> str:
        """``<image_id>/1/3/2/TAX=VALID``."""
        return f"{self.image_id}/{self.receipt_id}/{self.line_id}/{self.word_id}/{self.label}={self.status.value}"


@dataclass
class ReceiptDetails:
    """One receipt with its lines, words and labels, each list sorted by ids."""

    receipt: Receipt
    lines: list[ReceiptLine] = field(default_factory=list)
    words: list[ReceiptWord] = field(default_factory=list)
    labels: list[ReceiptWordLabel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lines = sorted(self.lines, key=lambda x: x.line_id)
        self.words = sorted(self.words, key=lambda x: (x.line_id, x.word_id))
        self.labels = sorted(self.labels, key=lambda x: (x.line_id, x.word_id, x.label))
