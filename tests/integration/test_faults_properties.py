"""Property-based abuse: any receipt document, any handler event.

Every input either succeeds or raises one of the documented errors, and a failed call never
leaves a partial write (the moto table / bucket is compared before and after each example).
Bounded example counts keep ``make test`` fast.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from receipt_dynamo import (
    GEOMETRY_TOLERANCE,
    DocumentValidationError,
    DynamoClient,
    ReceiptNotFoundError,
    parse_receipt_document,
)
from receipt_dynamo.schema import create_table_kwargs
from tests.fault_injection import BUCKET, TABLE, ProcessWorld, process_world
from tests.helpers import LIST_HANDLER, load_handler
from tests.ollama_server import OllamaServer, label_words_responder

pytestmark = pytest.mark.integration

PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def scan(client: Any) -> dict[tuple[str, str], dict[str, Any]]:
    items = client.scan(TableName=TABLE)["Items"]
    return {(i["PK"]["S"], i["SK"]["S"]): i for i in items}


# ---- receipt documents ------------------------------------------------------------------------------


@st.composite
def _box(draw: st.DrawFn) -> dict[str, float]:
    """A box inside the receipt, or overshooting it by at most the documented tolerance (then clamped)."""
    slack = draw(st.sampled_from([0.0, GEOMETRY_TOLERANCE]))
    x, y = draw(st.floats(-slack, 1 + slack)), draw(st.floats(-slack, 1 + slack))
    return {
        "x": x,
        "y": y,
        "width": draw(st.floats(0, max(0.0, 1 + slack - x - 1e-9))),
        "height": draw(st.floats(0, max(0.0, 1 + slack - y - 1e-9))),
    }


BOX = _box()


@st.composite
def valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    lines = []
    for line_id in range(1, draw(st.integers(1, 4)) + 1):
        words = []
        for word_id in range(1, draw(st.integers(0, 4)) + 1):
            word: dict[str, Any] = {"word_id": word_id, "text": draw(st.text(min_size=1, max_size=12))}
            if draw(st.booleans()):
                word["bounding_box"] = draw(BOX)
            if draw(st.booleans()):
                word["confidence"] = draw(st.floats(0, 1))
            words.append(word)
        lines.append({"line_id": line_id, "text": draw(st.text(min_size=1, max_size=30)), "words": words})
    return {"image_id": str(uuid.UUID(int=draw(st.integers(0, 2**122)), version=4)), "receipt_id": 1, "lines": lines}


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, (*path, index))


@st.composite
def abused_documents(draw: st.DrawFn) -> Any:
    """A valid document with 0-3 abuses: a value replaced by any JSON, a key dropped or added, an id repeated."""
    doc: Any = draw(valid_documents())
    for _ in range(draw(st.integers(0, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "drop", "add", "duplicate"]))
        if not path:
            doc = draw(JSON) if action == "replace" else doc
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        if action == "replace":
            parent[last] = draw(JSON | st.sampled_from([0, -1, 100_000, 1.5, "1", "", None, True]))
        elif action == "drop" and isinstance(parent, dict):
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(JSON)
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return doc


@pytest.fixture
def table() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(**create_table_kwargs(TABLE))
        yield client


@PROPERTY_SETTINGS
@given(doc=abused_documents())
def test_any_document_loads_completely_or_raises_document_validation_error_and_writes_nothing(
    table: Any, doc: Any
) -> None:
    loader = DynamoClient(TABLE, client=table)
    try:
        details = loader.load_receipt_document(doc)
    except DocumentValidationError as error:
        assert error.path and str(error).startswith(error.path)  # the message names the bad field
        assert scan(table) == {}  # validation happens before the first write
        return
    items = scan(table)
    try:
        back = loader.get_receipt_details(details.receipt.image_id, details.receipt.receipt_id)
        assert (back.receipt, back.lines, back.words) == (details.receipt, details.lines, details.words)
        assert len(items) == 1 + len(details.lines) + len(details.words)
        assert details == parse_receipt_document(doc)
    finally:
        for pk, sk in items:
            table.delete_item(TableName=TABLE, Key={"PK": {"S": pk}, "SK": {"S": sk}})


# ---- ProcessReceipt events -------------------------------------------------------------------------

KNOWN_IMAGE = "4ba71ab7-ac05-44a5-acc6-be1805fdf179"  # tests/fixtures/receipt_grocery.json


OTHER_UUID = "0f0e0d0c-0b0a-4908-8706-050403020100"


def image_ids() -> st.SearchStrategy[Any]:
    spelled = st.sampled_from([KNOWN_IMAGE, KNOWN_IMAGE.upper(), OTHER_UUID])
    broken = st.sampled_from([KNOWN_IMAGE[:-1], KNOWN_IMAGE.replace("-", ""), "", " " * 36, "../" * 12])
    return st.one_of(spelled, spelled, broken, JSON)


def receipt_ids() -> st.SearchStrategy[Any]:
    odd = st.sampled_from([2, 0, -1, 99_999, 100_000, 1.0, "1", True, None, 2**63])
    return st.one_of(st.just(1), st.just(1), odd, JSON)


WELL_SHAPED = st.fixed_dictionaries(
    {"image_id": image_ids(), "receipt_id": receipt_ids()},
    optional={"force": st.booleans() | JSON, "extra": JSON},
)
VALID = st.fixed_dictionaries(
    {
        "image_id": st.sampled_from([KNOWN_IMAGE, KNOWN_IMAGE.upper(), OTHER_UUID]),
        "receipt_id": st.sampled_from([1, 2]),
    },
    optional={"force": st.booleans(), "extra": JSON},
)
PROCESS_EVENTS = st.one_of(
    VALID,
    WELL_SHAPED,
    st.dictionaries(st.sampled_from(["image_id", "receipt_id", "force"]), JSON, max_size=3),
    JSON,
)


@pytest.fixture
def process(ollama_server: OllamaServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcessWorld]:
    ollama_server.responder = label_words_responder(lambda text: "PRODUCT_NAME" if text.isalpha() else None)
    with process_world(ollama_server, monkeypatch, name="faults_properties") as world:
        world.load("receipt_grocery.json")
        yield world


@PROPERTY_SETTINGS
@given(payload=PROCESS_EVENTS)
def test_any_process_event_succeeds_or_raises_a_documented_error_and_a_failure_writes_nothing(
    process: ProcessWorld, payload: Any
) -> None:
    writes_before = len(process.calls.writes())  # write API calls of the handler's DynamoDB client
    try:
        result = process.invoke(copy.deepcopy(payload))
    except (process.handler.InvalidEventError, ReceiptNotFoundError) as error:
        event(type(error).__name__)
        assert len(process.calls.writes()) == writes_before  # not even an attempt to write
        return
    # Success is only possible for the one receipt in the table, however its id was spelled.
    assert isinstance(payload, dict) and str(payload["image_id"]).lower() == KNOWN_IMAGE
    assert payload["receipt_id"] == 1
    assert set(result) == {
        "image_id",
        "receipt_id",
        "labels_added",
        "labels_skipped_existing",
        "labels_rejected",
        "llm_calls",
        "already_labeled",
    }
    event("labeled" if result["labels_added"] else "succeeded")
    writes = process.calls.writes()[writes_before:]
    if result["already_labeled"]:  # the completion marker says this pipeline finished: nothing written
        assert writes == []
        return
    # one conditional PutItem per label, then the completion marker (one UpdateItem), last
    assert writes == ["PutItem"] * (result["labels_added"] + result["labels_skipped_existing"]) + ["UpdateItem"]


# ---- ListReceipts events ---------------------------------------------------------------------------

LIST_EVENTS = (
    st.fixed_dictionaries({}, optional={"limit": st.integers(-2, 10) | JSON, "execution_name": st.text() | JSON}) | JSON
)


@pytest.fixture
def lister(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    with mock_aws():
        boto3.client("dynamodb").create_table(**create_table_kwargs(TABLE))
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        DynamoClient(TABLE).load_receipt_document(
            {"image_id": KNOWN_IMAGE, "receipt_id": 1, "lines": [{"line_id": 1, "text": "A", "words": []}]}
        )
        monkeypatch.setenv("DYNAMODB_TABLE_NAME", TABLE)
        monkeypatch.setenv("MANIFEST_BUCKET", BUCKET)
        yield load_handler(LIST_HANDLER, "list_receipts_handler_properties"), s3


@PROPERTY_SETTINGS
@given(event=LIST_EVENTS)
def test_any_list_event_writes_one_complete_manifest_or_raises_invalid_event_error_and_writes_nothing(
    lister: tuple[Any, Any], event: Any
) -> None:
    handler, s3 = lister
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    try:
        result = handler.lambda_handler(copy.deepcopy(event), None)
    except handler.InvalidEventError:
        assert {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])} == before
        return
    text = s3.get_object(Bucket=BUCKET, Key=result["manifest_key"])["Body"].read().decode()
    body = [json.loads(line) for line in text.splitlines()]  # JSON Lines: one object per line
    assert text.endswith("\n")
    assert result["receipt_count"] == len(body) == 1
    assert body == [{"image_id": KNOWN_IMAGE, "receipt_id": 1}]
    assert result["manifest_key"].startswith("manifests/") and ".." not in result["manifest_key"]
