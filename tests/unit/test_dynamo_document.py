"""Receipt documents: the fixtures parse; each invalid field is reported with its JSON path."""

from __future__ import annotations

import copy
import itertools
import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from receipt_dynamo import (
    GEOMETRY_TOLERANCE,
    DocumentValidationError,
    ReceiptLine,
    ReceiptWord,
    parse_receipt_document,
    receipt_document,
)
from receipt_dynamo.cli import main, read_documents
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.unit

FIXTURES = REPO_ROOT / "tests" / "fixtures"
FIXTURE_FILES = sorted(FIXTURES.glob("receipt_*.json"))


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


def test_there_are_the_five_fixture_kinds() -> None:
    names = {p.stem for p in FIXTURE_FILES}
    assert {"receipt_grocery", "receipt_restaurant", "receipt_gas_station", "receipt_pharmacy"} <= names
    assert len(names) >= 5


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_fixture_is_a_valid_ocr_like_document(path: Path) -> None:
    doc = json.loads(path.read_text())
    details = parse_receipt_document(doc)
    assert uuid.UUID(details.receipt.image_id).version == 4
    assert details.labels == []
    assert len(details.words) >= 40
    for word in details.words:
        assert word.text == word.text.upper(), word.text
    # each line's text is its words joined, as OCR produced them
    by_line = {line.line_id: line.text for line in details.lines}
    for line_id, text in by_line.items():
        assert " ".join(w.text for w in details.words if w.line_id == line_id) == text
    assert_same_document_but_boxes_clamped(receipt_document(details), doc)


def _inside(box: dict[str, float]) -> bool:
    return min(box.values()) >= 0.0 and box["x"] + box["width"] <= 1.0 and box["y"] + box["height"] <= 1.0


def assert_same_document_but_boxes_clamped(stored: dict[str, Any], doc: dict[str, Any]) -> None:
    """``stored`` is ``doc`` exactly, except that a box reaching outside the receipt is clamped into it."""

    def entries(d: dict[str, Any]) -> list[dict[str, Any]]:
        return [entry for line in d["lines"] for entry in (line, *line["words"])]

    def without_boxes(d: dict[str, Any]) -> Any:
        return json.loads(json.dumps(d), object_hook=lambda o: {k: v for k, v in o.items() if k != "bounding_box"})

    assert without_boxes(stored) == without_boxes(doc)
    for kept, given in zip(entries(stored), entries(doc), strict=True):
        if "bounding_box" not in given or _inside(given["bounding_box"]):
            assert kept.get("bounding_box") == given.get("bounding_box")
            continue
        box, before = kept["bounding_box"], given["bounding_box"]
        assert _inside(box), (before, box)
        for start, size in (("x", "width"), ("y", "height")):
            assert box[start] == min(max(before[start], 0.0), 1.0)
            edge = min(max(before[start] + before[size], 0.0), 1.0)
            assert box[start] + box[size] == pytest.approx(edge, abs=1e-12)


def test_fixtures_have_distinct_images_a_long_receipt_split_prices_and_repeated_amounts() -> None:
    parsed = [parse_receipt_document(json.loads(p.read_text())) for p in FIXTURE_FILES]
    assert len({d.receipt.image_id for d in parsed}) == len(parsed)
    assert max(len(d.words) for d in parsed) >= 150
    texts = [[w.text for w in d.words] for d in parsed]
    assert any(t.count("$5.00") >= 2 for t in texts)
    # a price split by OCR: "$" then the amount, or "4" then ".49"
    split = re.compile(r"\.\d\d")
    assert any(
        (a == "$" and split.search(b)) or (a.isdigit() and re.fullmatch(r"\.\d\d", b))
        for t in texts
        for a, b in itertools.pairwise(t)
    )
    restaurant = " ".join(texts[[p.stem for p in FIXTURE_FILES].index("receipt_restaurant")])
    assert "TIP" in restaurant


def test_the_design_example_parses() -> None:
    doc = {
        "image_id": str(uuid.uuid4()),
        "receipt_id": 1,
        "lines": [
            {
                "line_id": 1,
                "text": "TRADER JOE'S",
                "words": [{"word_id": 1, "text": "TRADER"}, {"word_id": 2, "text": "JOE'S"}],
            }
        ],
    }
    details = parse_receipt_document(doc)
    assert [w.text for w in details.words] == ["TRADER", "JOE'S"]
    assert details.lines[0].bounding_box is None


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with value=..., delete) the field at a JSON path like lines[2].words[0].word_id."""
    target: Any = doc
    parts: list[Any] = [int(p[1:-1]) if p.startswith("[") else p for p in re.findall(r"[A-Za-z_]+|\[\d+\]", path)]
    for part in parts[:-1]:
        target = target[part]
    last = parts[-1]
    if value is ...:
        del target[last]
    else:
        target[last] = value


BAD_FIELDS = [
    ("image_id", "IMG-1", "image_id"),
    ("image_id", ..., "image_id"),
    ("receipt_id", 0, "receipt_id"),
    ("receipt_id", "1", "receipt_id"),
    ("lines", {}, "lines"),
    ("lines", [], "lines"),
    ("lines[2]", "TOTAL", "lines[2]"),
    ("lines[2].line_id", -4, "lines[2].line_id"),
    ("lines[2].line_id", 1, "lines[2].line_id"),  # duplicate of line 1
    ("lines[2].text", "", "lines[2].text"),
    ("lines[2].words", None, "lines[2].words"),
    ("lines[2].words", ..., "lines[2].words"),
    ("lines[2].confidence", 7, "lines[2].confidence"),
    ("lines[2].bounding_box", {"x": 0.1}, "lines[2].bounding_box"),
    ("lines[2].colour", "red", "lines[2].colour"),
    ("lines[2].words[0].word_id", None, "lines[2].words[0].word_id"),
    ("lines[2].words[0].word_id", True, "lines[2].words[0].word_id"),
    ("lines[2].words[1].word_id", 1, "lines[2].words[1].word_id"),  # duplicate in the line
    ("lines[2].words[0].text", 5.0, "lines[2].words[0].text"),
    ("lines[2].words[0].text", ..., "lines[2].words[0].text"),
    ("lines[2].words[0].confidence", "high", "lines[2].words[0].confidence"),
    (
        "lines[2].words[0].bounding_box",
        {"x": 0.1, "y": 0.2, "width": 0.3, "height": -1},
        "lines[2].words[0].bounding_box.height",
    ),
    ("lines[2].words[0].bounding_box.x", float("nan"), "lines[2].words[0].bounding_box.x"),
    ("lines[2].words[0].bounding_box.y", float("inf"), "lines[2].words[0].bounding_box.y"),
    ("lines[2].words[0].bounding_box.x", True, "lines[2].words[0].bounding_box.x"),
    ("lines[2].words[0].bounding_box.width", -1e-9, "lines[2].words[0].bounding_box.width"),
    ("lines[2].bounding_box.height", -0.004, "lines[2].bounding_box.height"),
    ("lines[2].words[0].bounding_box.x", -0.05, "lines[2].words[0].bounding_box.x"),
    (
        "lines[2].words[0].bounding_box",
        {"x": 0.5, "y": 0.2, "width": 0.7, "height": 0.02},  # x + width = 1.2
        "lines[2].words[0].bounding_box.width",
    ),
    (
        "lines[2].bounding_box",
        {"x": 0.1, "y": 0.99, "width": 0.3, "height": 0.05},  # y + height = 1.04
        "lines[2].bounding_box.height",
    ),
    ("lines[2].words[0].confidence", float("nan"), "lines[2].words[0].confidence"),
    ("lines[2].words[0].word_Id", 3, "lines[2].words[0].word_Id"),
]


@pytest.mark.parametrize(("path", "value", "reported"), BAD_FIELDS)
def test_invalid_field_is_reported_with_its_json_path(path: str, value: Any, reported: str) -> None:
    doc = copy.deepcopy(load("receipt_grocery.json"))
    _set(doc, path, value)
    with pytest.raises(DocumentValidationError) as info:
        parse_receipt_document(doc)
    assert info.value.path == reported
    assert str(info.value).startswith(f"{reported}: ")


@pytest.mark.parametrize(
    "name", ["receipt_grocery.json", "receipt_long_warehouse.json", "receipt_pharmacy.json", "receipt_restaurant.json"]
)
def test_fixture_geometry_is_y_up_so_the_first_line_is_highest(name: str) -> None:
    lines = parse_receipt_document(load(name)).lines
    ys = [line.bounding_box["y"] for line in lines if line.bounding_box is not None]
    assert len(ys) == len(lines)
    assert ys[0] == max(ys)
    assert ys == sorted(ys, reverse=True)  # these receipts' lines run down the page: y falls


def noisy(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as real OCR exports it: float noise on every box, small overshoots at the receipt's edges."""
    doc = copy.deepcopy(doc)
    lines = doc["lines"]
    for i, line in enumerate(lines):
        boxes = [line["bounding_box"], *(word["bounding_box"] for word in line["words"])]
        for box in boxes:
            box["x"] -= 7e-09  # the perspective transform's float noise
            box["y"] += 7e-09
        first, last = boxes[1], boxes[-1]
        first["width"] += first["x"] + 0.00037  # left edge to -0.00037, right edge kept
        first["x"] = -0.00037
        last["width"] = 1.005 - last["x"]  # right edge to 1.005
        for box in boxes:
            if i == 0:
                box["height"] = 1.0004 - box["y"]  # top edge of the first line to 1.0004
            if i == len(lines) - 1:
                box["height"] += box["y"] + 0.002  # bottom edge of the last line to -0.002
                box["y"] = -0.002
        line["bounding_box"]["x"], line["bounding_box"]["width"] = first["x"], last["x"] + last["width"] - first["x"]
    return doc


@pytest.mark.parametrize("name", ["receipt_grocery.json", "receipt_long_warehouse.json"])
def test_a_document_whose_every_word_is_noisy_loads_with_its_boxes_clamped_into_the_receipt(name: str) -> None:
    clean = load(name)
    doc = noisy(clean)
    before = copy.deepcopy(doc)
    details = parse_receipt_document(doc)
    assert doc == before  # the caller's document is left as it was
    assert [(w.line_id, w.word_id, w.text) for w in details.words] == [
        (w.line_id, w.word_id, w.text) for w in parse_receipt_document(clean).words
    ]
    entities: list[ReceiptLine | ReceiptWord] = [*details.lines, *details.words]
    for entity in entities:
        item = entity.to_item()
        box = {k: float(v["N"]) for k, v in item["bounding_box"]["M"].items()}  # what DynamoDB stores
        assert all(0.0 <= v <= 1.0 for v in box.values()), (entity, box)
        assert box["x"] + box["width"] <= 1.0 and box["y"] + box["height"] <= 1.0, (entity, box)
    first_word = details.words[0].bounding_box
    assert first_word is not None and first_word["x"] == 0.0
    assert first_word["x"] + first_word["width"] == pytest.approx(
        clean["lines"][0]["words"][0]["bounding_box"]["x"] + clean["lines"][0]["words"][0]["bounding_box"]["width"]
    )  # the right edge, inside the receipt, is kept
    # only the boxes reaching outside changed, and the stored (clamped) document parses to the same entities
    assert_same_document_but_boxes_clamped(receipt_document(details), doc)
    assert parse_receipt_document(receipt_document(details)) == details


def test_a_box_far_outside_the_receipt_is_reported_with_the_value_and_the_tolerance() -> None:
    doc = copy.deepcopy(load("receipt_grocery.json"))
    doc["lines"][2]["words"][0]["bounding_box"]["x"] = -0.05
    with pytest.raises(DocumentValidationError) as info:
        parse_receipt_document(doc)
    assert info.value.path == "lines[2].words[0].bounding_box.x"
    assert "-0.05" in info.value.problem and f"tolerance {GEOMETRY_TOLERANCE:g}" in info.value.problem
    doc = copy.deepcopy(load("receipt_grocery.json"))
    doc["lines"][2]["words"][0]["bounding_box"] = {"x": 0.5, "y": 0.2, "width": 0.7, "height": 0.02}
    with pytest.raises(DocumentValidationError, match=r"bounding_box.width: .*right edge.*tolerance 0.01, got 1.2"):
        parse_receipt_document(doc)


def test_a_document_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(DocumentValidationError, match="must be an object"):
        parse_receipt_document([])  # type: ignore[arg-type]


def test_cli_reports_every_bad_file_by_name_and_path_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = FIXTURES / "receipt_grocery.json"
    bad = tmp_path / "bad.json"
    doc = load("receipt_grocery.json")
    doc["lines"][2]["words"][0]["word_id"] = 0
    bad.write_text(json.dumps(doc))
    broken = tmp_path / "broken.json"
    broken.write_text('{"image_id": ')
    missing = tmp_path / "missing.json"

    def no_client(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no client may be created when a file is invalid")

    code = main(
        ["load", str(good), str(bad), str(broken), str(missing), "--table", "t"],
        client_factory=no_client,
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}: lines[2].words[0].word_id: must be between 1 and 99999" in err
    assert f"{broken}: invalid JSON at line 1 column 14" in err
    assert f"{missing}: cannot read" in err
    assert "nothing written: 3 of 4 file(s) invalid" in err
    docs, errors = read_documents([str(good)])
    assert [p for p, _ in docs] == [str(good)] and errors == []


class RecordingDynamoDB:
    """A DynamoDB client that takes every BatchWriteItem (the only call ``load`` makes without --create-table)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        for requests in RequestItems.values():
            self.items.extend(request["PutRequest"]["Item"] for request in requests)
        return {"UnprocessedItems": {}}


def noisy_grocery_file(tmp_path: Path) -> Path:
    """The grocery fixture with OCR noise (coordinates just outside 0..1), written to ``tmp_path``."""
    path = tmp_path / "noisy.json"
    path.write_text(json.dumps(noisy(load("receipt_grocery.json"))))
    return path


def test_cli_loads_a_noisy_file_and_writes_its_boxes_clamped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noisy_file = noisy_grocery_file(tmp_path)
    good = FIXTURES / "receipt_pharmacy.json"
    dynamodb = RecordingDynamoDB()
    code = main(["load", str(noisy_file), str(good), "--table", "t"], client_factory=lambda *a, **k: dynamodb)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "loaded 2 receipt(s)" in captured.out
    words = [ReceiptWord.from_item(item) for item in dynamodb.items if item["TYPE"]["S"] == "RECEIPT_WORD"]
    assert len(words) == len(parse_receipt_document(load("receipt_grocery.json")).words) + len(
        parse_receipt_document(load("receipt_pharmacy.json")).words
    )
    for item in dynamodb.items:
        if "bounding_box" in item:
            assert all(0.0 <= float(v["N"]) <= 1.0 for v in item["bounding_box"]["M"].values()), item


def test_cli_reports_only_the_bad_file_of_a_batch_with_a_noisy_one_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noisy_file = noisy_grocery_file(tmp_path)
    far_outside = tmp_path / "far_outside.json"
    doc = load("receipt_restaurant.json")
    doc["lines"][3]["words"][1]["bounding_box"]["x"] = -0.05
    far_outside.write_text(json.dumps(doc))

    def no_client(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no client may be created when a file is invalid")

    code = main(["load", str(noisy_file), str(far_outside), "--table", "t"], client_factory=no_client)
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {far_outside}: lines[3].words[1].bounding_box.x: is far outside the receipt" in err
    assert str(noisy_file) not in err
    assert "nothing written: 1 of 2 file(s) invalid" in err


def test_cli_progress_falls_back_to_a_plain_counter_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from receipt_dynamo import cli

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    stream = io.StringIO()
    assert list(cli._progress(["a.json", "b.json"], stream=stream, desc="loading")) == ["a.json", "b.json"]
    assert stream.getvalue() == "loading: 1/2\nloading: 2/2\n"
