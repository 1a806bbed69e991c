"""ListReceipts handler against moto: receipts loaded with receipt_dynamo go into a JSON Lines manifest in S3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from receipt_dynamo import DynamoClient
from receipt_dynamo.schema import create_table_kwargs
from tests.helpers import LIST_HANDLER, REPO_ROOT, load_handler

pytestmark = pytest.mark.integration

FIXTURES = sorted((REPO_ROOT / "tests" / "fixtures").glob("receipt_*.json"))
TABLE = "receipts-test"
BUCKET = "manifests-test"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Any, DynamoClient]]:
    with mock_aws():
        boto3.client("dynamodb").create_table(**create_table_kwargs(TABLE))
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        monkeypatch.setenv("DYNAMODB_TABLE_NAME", TABLE)
        monkeypatch.setenv("MANIFEST_BUCKET", BUCKET)
        handler = load_handler(
            LIST_HANDLER, "list_receipts_handler_integration"
        )  # fresh module: its clients are created inside the mock
        yield handler, s3, DynamoClient(TABLE)


def manifest_body(s3: Any, key: str) -> bytes:
    body: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


def manifest(s3: Any, key: str) -> list[dict[str, Any]]:
    """The manifest's items: one JSON object per ``\\n``-terminated line, nothing else."""
    text = manifest_body(s3, key).decode("utf-8")
    assert text == "" or text.endswith("\n")
    lines = text.split("\n")[:-1] if text else []
    items = [json.loads(line) for line in lines]
    assert all(isinstance(item, dict) and set(item) == {"image_id", "receipt_id"} for item in items), lines
    return items


def test_every_loaded_receipt_is_in_the_manifest(aws: tuple[ModuleType, Any, DynamoClient]) -> None:
    handler, s3, client = aws
    expected = []
    for path in FIXTURES:
        details = client.load_receipt_document(json.loads(path.read_text()))
        expected.append({"image_id": details.receipt.image_id, "receipt_id": details.receipt.receipt_id})
    assert len(expected) >= 5

    result = handler.lambda_handler({"execution_name": "exec-0001"}, None)

    assert result == {
        "receipt_count": len(expected),
        "receipts_to_label": len(expected),
        "manifest_bucket": BUCKET,
        "manifest_key": "manifests/exec-0001/receipts.jsonl",
    }
    body = manifest(s3, result["manifest_key"])
    key = lambda m: (m["image_id"], m["receipt_id"])  # noqa: E731
    assert sorted(body, key=key) == sorted(expected, key=key)
    head = s3.head_object(Bucket=BUCKET, Key=result["manifest_key"])
    assert head["ContentType"] == "application/jsonl"
    assert head["ContentLength"] == len(manifest_body(s3, result["manifest_key"]))


def test_limit_and_empty_table(aws: tuple[ModuleType, Any, DynamoClient]) -> None:
    handler, s3, client = aws
    empty = handler.lambda_handler({}, None)
    assert empty["receipt_count"] == 0 and manifest_body(s3, empty["manifest_key"]) == b""

    for path in FIXTURES:
        client.load_receipt_document(json.loads(path.read_text()))
    everything = manifest(s3, handler.lambda_handler({}, None)["manifest_key"])
    limited = handler.lambda_handler({"limit": 2}, None)
    assert limited["receipt_count"] == 2
    assert manifest(s3, limited["manifest_key"]) == everything[:2]  # the first two in index order
    assert limited["manifest_key"] != empty["manifest_key"]


def test_bad_event_writes_no_manifest(aws: tuple[ModuleType, Any, DynamoClient]) -> None:
    handler, s3, _ = aws
    with pytest.raises(handler.InvalidEventError, match=r"^limit:"):
        handler.lambda_handler({"limit": "all"}, None)
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0


def test_receipts_this_pipeline_finished_are_listed_but_not_counted_as_to_label(
    aws: tuple[ModuleType, Any, DynamoClient],
) -> None:
    """A re-run over a labeled table lists every receipt (the map confirms each one) but reports nothing to
    label, so the state machine skips the LLM preflight. Another proposer's marker does not count as done."""
    from receipt_label import PROPOSED_BY_PREFIX

    handler, s3, client = aws
    loaded = [client.load_receipt_document(json.loads(path.read_text())).receipt for path in FIXTURES[:3]]
    assert handler.LABELING_PIPELINE_PREFIX == PROPOSED_BY_PREFIX
    client.mark_receipt_labeled(loaded[0].image_id, loaded[0].receipt_id, proposed_by=f"{PROPOSED_BY_PREFIX}m")
    client.mark_receipt_labeled(loaded[1].image_id, loaded[1].receipt_id, proposed_by="other_tool:v2")

    result = handler.lambda_handler({"execution_name": "rerun"}, None)

    assert (result["receipt_count"], result["receipts_to_label"]) == (3, 2)
    assert len(manifest(s3, result["manifest_key"])) == 3
