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

from receipt_dynamo import DocumentValidationError, parse_receipt_document, receipt_document
from receipt_dynamo.cli import main, read_documents

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
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
    assert receipt_document(details) == doc


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


def test_cli_progress_falls_back_to_a_plain_counter_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from receipt_dynamo import cli

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    stream = io.StringIO()
    assert list(cli._progress(["a.json", "b.json"], stream=stream, desc="loading")) == ["a.json", "b.json"]
    assert stream.getvalue() == "loading: 1/2\nloading: 2/2\n"
