"""The receipt document's JSON Schema agrees with the loader (``parse_receipt_document``).

The loader is the reference. The schema must never reject a document the loader accepts (so the
schema can be handed to producers of documents), and it must reject every document that breaks a
rule it can express (type, range, required key, unknown key). Rules it cannot express (duplicate
ids, right / top edges past 1.01, ...) are listed in its ``$comment``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import receipt_dynamo
from receipt_dynamo import DocumentValidationError, parse_receipt_document, receipt_document_schema
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.unit

FIXTURE_FILES = sorted((REPO_ROOT / "tests/fixtures").glob("*.json"))
SCHEMA_FILE = REPO_ROOT / "receipt_dynamo" / receipt_dynamo.RECEIPT_DOCUMENT_SCHEMA

SCHEMA = receipt_document_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def schema_accepts(doc: Any) -> bool:
    return VALIDATOR.is_valid(doc)


def loader_accepts(doc: Any) -> bool:
    try:
        parse_receipt_document(doc)
    except DocumentValidationError:
        return False
    return True


# ---- the schema file -----------------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_loader_returns_the_packaged_file_as_a_fresh_dict() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == SCHEMA
    first = receipt_document_schema()
    first["properties"].clear()
    assert receipt_document_schema() == SCHEMA


def test_schema_lists_what_only_the_loader_checks() -> None:
    comment = SCHEMA["$comment"]
    for rule in ("line_id repeated", "word_id repeated", "x + width", "y + height", "1.01"):
        assert rule in comment


def test_schema_is_strict_about_keys_and_ranges() -> None:
    defs = SCHEMA["$defs"]
    assert SCHEMA["additionalProperties"] is False
    assert SCHEMA["required"] == ["image_id", "receipt_id", "lines"]
    assert SCHEMA["properties"]["lines"]["minItems"] == 1
    for name in ("line", "word", "bounding_box"):
        assert defs[name]["additionalProperties"] is False
    assert (defs["id"]["minimum"], defs["id"]["maximum"]) == (1, 99999)
    assert (defs["coordinate"]["minimum"], defs["coordinate"]["maximum"]) == (-0.01, 1.01)
    assert defs["confidence"]["maximum"] == 1
    assert defs["text"]["minLength"] == 1


def test_image_id_pattern_matches_the_loader() -> None:
    pattern = SCHEMA["properties"]["image_id"]["pattern"]
    assert re.search(pattern, "3f2b7c9e-1a4d-4e8b-9c21-5d6e7f8a9b0c")
    for bad in ("3F2B7C9E-1A4D-4E8B-9C21-5D6E7F8A9B0C", "{3f2b7c9e-1a4d-4e8b-9c21-5d6e7f8a9b0c}", "3f2b7c9e"):
        assert not re.search(pattern, bad)


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_every_fixture_validates_against_the_schema(path: Path) -> None:
    doc = json.loads(path.read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]
    assert errors == []
    assert loader_accepts(doc)


def test_there_are_fixtures() -> None:
    assert len(FIXTURE_FILES) >= 5


def test_data_layer_doc_links_the_schema() -> None:
    doc = REPO_ROOT / "docs/data-layer.md"
    targets = re.findall(r"\]\(([^)\s]+)\)", doc.read_text())
    linked = [t for t in targets if t.split("#")[0].endswith(SCHEMA_FILE.name)]
    assert linked, "docs/data-layer.md does not link the receipt document schema"
    for target in linked:
        assert (doc.parent / target.split("#")[0]).resolve() == SCHEMA_FILE.resolve()


# ---- generated documents -------------------------------------------------------------------------

ids = st.integers(min_value=1, max_value=99999)
texts = st.text(min_size=1, max_size=8).filter(lambda s: s.strip() != "")
confidences = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def boxes(draw: st.DrawFn) -> dict[str, float]:
    """A box the loader accepts: x / y within -0.01..1, the right / top edges at most 1."""
    box: dict[str, float] = {}
    for start, size in (("x", "width"), ("y", "height")):
        origin = draw(st.floats(min_value=-0.01, max_value=1.0))
        box[start] = origin
        box[size] = draw(st.floats(min_value=0.0, max_value=1.0 - max(origin, 0.0)))
    return box


def _optional_geometry(draw: st.DrawFn, entry: dict[str, Any]) -> None:
    if draw(st.booleans()):
        entry["bounding_box"] = draw(boxes())
    if draw(st.booleans()):
        entry["confidence"] = draw(confidences)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A document the loader accepts (unique line ids, unique word ids per line)."""
    lines = []
    for line_id in draw(st.lists(ids, min_size=1, max_size=3, unique=True)):
        words = []
        for word_id in draw(st.lists(ids, max_size=3, unique=True)):
            word: dict[str, Any] = {"word_id": word_id, "text": draw(texts)}
            _optional_geometry(draw, word)
            words.append(word)
        line: dict[str, Any] = {"line_id": line_id, "text": draw(texts)}
        _optional_geometry(draw, line)
        line["words"] = words
        lines.append(line)
    return {"image_id": str(draw(st.uuids())), "receipt_id": draw(ids), "lines": lines}


@dataclass(frozen=True)
class Slot:
    """One value of a document: ``container[key]``, of kind ``kind`` (which rule governs it)."""

    container: dict[str, Any]
    key: str
    kind: str


REQUIRED = {
    "document": ("image_id", "receipt_id", "lines"),
    "line": ("line_id", "text", "words"),
    "word": ("word_id", "text"),
}
REQUIRED["bounding_box"] = ("x", "y", "width", "height")
KIND_OF = {
    "image_id": "image_id",
    "receipt_id": "id",
    "line_id": "id",
    "word_id": "id",
    "text": "text",
    "lines": "lines",
    "words": "words",
    "bounding_box": "bounding_box",
    "confidence": "confidence",
    "x": "coordinate",
    "y": "coordinate",
    "width": "size",
    "height": "size",
}


def objects_and_slots(doc: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], list[Slot]]:
    """Every object of ``doc`` (with its kind) and every value slot in it."""
    objects: list[tuple[str, dict[str, Any]]] = [("document", doc)]
    for line in doc["lines"]:
        objects.append(("line", line))
        objects.extend(("word", word) for word in line["words"])
    for _, obj in list(objects):
        if isinstance(obj.get("bounding_box"), dict):
            objects.append(("bounding_box", obj["bounding_box"]))
    slots = [Slot(obj, key, KIND_OF[key]) for _, obj in objects for key in obj]
    return objects, slots


NOT_A_NUMBER: list[Any] = [None, True, False, "0.5", "1", [], {}, [0.5]]
NOT_A_STRING: list[Any] = [None, True, 0, 1.5, [], {}, ["TEXT"]]
#: Values each kind must not have, that a schema can express: the schema and the loader reject them.
EXPRESSIBLY_INVALID: dict[str, list[Any]] = {
    "image_id": [
        *NOT_A_STRING,
        "",
        "3f2b7c9e",
        "3F2B7C9E-1A4D-4E8B-9C21-5D6E7F8A9B0C",
        "{3f2b7c9e-1a4d-4e8b-9c21-5d6e7f8a9b0c}",
        "urn:uuid:3f2b7c9e-1a4d-4e8b-9c21-5d6e7f8a9b0c",
        "3f2b7c9e1a4d4e8b9c215d6e7f8a9b0c",
        " 3f2b7c9e-1a4d-4e8b-9c21-5d6e7f8a9b0c",
    ],
    "id": [*NOT_A_NUMBER, 0, -1, 100000, 10**30, 1.5, -0.5],
    "text": [*NOT_A_STRING, "", " ", "\t\n", "\u3000", "\xa0 "],
    "lines": [None, True, 1, "line", {}, []],
    "words": [None, True, 1, "word", {}],
    "bounding_box": [True, 1, "box", [], [0.1, 0.1, 0.1, 0.1], {"x": 0.1, "y": 0.1, "width": 0.1}],
    "confidence": [True, "0.5", [], {}, -0.01, -1e-100, 1.0000001, 2, -1],
    "coordinate": [*NOT_A_NUMBER, -0.0101, -0.05, 1.0101, 1.2, -1, 2, 10**400],
    "size": [*NOT_A_NUMBER, -0.001, -1e-100, -1],
}
#: Boundary values, and values the loader rejects for reasons a schema cannot express (1.0 as an id,
#: NaN, an edge past 1.01 once combined with the other values of the box, ...): only the implication
#: "loader accepts => schema accepts" is checked for these.
ANY_VALUE: list[Any] = [
    0,
    1,
    1.0,
    99999,
    99999.0,
    0.0,
    -0.0,
    1e-200,
    -1e-200,
    1e-130,
    -1e-130,
    -0.01,
    1.01,
    0.999,
    1.0099,
    -0.0099,
    float("nan"),
    float("inf"),
    float("-inf"),
    "X",
    "3f2b7c9e-1a4d-4e8b-9c21-5d6e7f8a9b0c",
    "3f2b7c9e-1a4d-4e8b-9c21-5d6e7f8a9b0c\n",
    None,
]


@dataclass(frozen=True)
class Mutation:
    describe: str
    apply: Callable[[dict[str, Any]], None]
    expressible: bool  # the schema can express the broken rule: both must reject


@st.composite
def mutations(draw: st.DrawFn, doc: dict[str, Any]) -> Mutation:
    """One change to one field of ``doc`` (which is then mutated in place by ``apply``)."""
    objects, slots = objects_and_slots(doc)
    kind = draw(st.sampled_from(["wrong value", "unknown key", "missing key", "any value"]))
    if kind == "unknown key":
        _, obj = draw(st.sampled_from(objects))
        key = draw(st.sampled_from(["word_Id", "lineId", "extra", "Text", "labels", ""]))
        return Mutation(f"add {key!r}", lambda _: obj.__setitem__(key, 1), expressible=True)
    if kind == "missing key":
        obj_kind, obj = draw(st.sampled_from(objects))
        key = draw(st.sampled_from(REQUIRED[obj_kind]))
        return Mutation(f"drop {obj_kind}.{key}", lambda _: obj.pop(key), expressible=True)
    slot = draw(st.sampled_from(slots))
    pool = EXPRESSIBLY_INVALID[slot.kind] if kind == "wrong value" else ANY_VALUE
    value = copy.deepcopy(draw(st.sampled_from(pool)))
    return Mutation(
        f"{slot.key} = {value!r}", lambda _: slot.container.__setitem__(slot.key, value), kind == "wrong value"
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_generated_valid_documents_pass_both(doc: dict[str, Any]) -> None:
    assert loader_accepts(copy.deepcopy(doc))
    assert schema_accepts(doc), list(VALIDATOR.iter_errors(doc))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_schema_invalid_implies_loader_invalid(data: st.DataObject) -> None:
    """Schema rejects => loader rejects (equivalently: loader accepts => schema accepts), and both
    reject a document broken in a way the schema can express."""
    doc = data.draw(documents())
    mutation = data.draw(mutations(doc))
    mutation.apply(doc)
    in_schema = schema_accepts(doc)
    in_loader = loader_accepts(copy.deepcopy(doc))
    if not in_schema:
        assert not in_loader, f"{mutation.describe}: the schema rejects a document the loader accepts"
    if mutation.expressible:
        assert not in_loader, f"{mutation.describe}: the loader accepts it"
        assert not in_schema, f"{mutation.describe}: the schema accepts it"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("lines", 0, "bounding_box"), None),
        (("lines", 0, "confidence"), None),
        (("lines", 0, "confidence"), -1e-200),
        (("lines", 0, "bounding_box"), {"x": -0.01, "y": 1.01, "width": 1e-200, "height": -1e-200}),
        (("lines", 0, "bounding_box"), {"x": 1.005, "y": -0.005, "width": 0.005, "height": 0.5}),
        (("lines", 0, "words"), []),
        (("image_id",), "00000000-0000-0000-0000-000000000000"),
        (("lines", 0, "text"), " x "),
    ],
    ids=repr,
)
def test_edge_cases_the_loader_accepts_pass_the_schema(path: tuple[Any, ...], value: Any) -> None:
    doc: dict[str, Any] = {
        "image_id": "3f2b7c9e-1a4d-4e8b-9c21-5d6e7f8a9b0c",
        "receipt_id": 1,
        "lines": [{"line_id": 1, "text": "TOTAL", "words": [{"word_id": 1, "text": "TOTAL"}]}],
    }
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    assert loader_accepts(copy.deepcopy(doc))
    assert schema_accepts(doc), list(VALIDATOR.iter_errors(doc))


@pytest.mark.parametrize(
    ("describe", "mutate"),
    [
        ("duplicate line_id", lambda d: d["lines"].append(copy.deepcopy(d["lines"][0]))),
        ("duplicate word_id", lambda d: d["lines"][0]["words"].append({"word_id": 1, "text": "X"})),
        (
            "right edge past 1.01",
            lambda d: d["lines"][0].__setitem__("bounding_box", {"x": 0.5, "y": 0, "width": 0.6, "height": 0}),
        ),
        ("integral float id", lambda d: d.__setitem__("receipt_id", 1.0)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_rules_only_the_loader_checks(describe: str, mutate: Callable[[dict[str, Any]], None]) -> None:
    """What the ``$comment`` lists: the schema accepts these, the loader rejects them."""
    doc: dict[str, Any] = {
        "image_id": "3f2b7c9e-1a4d-4e8b-9c21-5d6e7f8a9b0c",
        "receipt_id": 1,
        "lines": [{"line_id": 1, "text": "TOTAL", "words": [{"word_id": 1, "text": "TOTAL"}]}],
    }
    mutate(doc)
    assert schema_accepts(doc)
    assert not loader_accepts(doc)
