"""ListReceipts handler against moto: receipts loaded with receipt_dynamo go into an S3 manifest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from receipt_dynamo import DynamoClient
from receipt_dynamo.schema import create_table_kwargs
from tests.lambda_handlers import load_handler as load_handler_file

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
HANDLER = REPO_ROOT / "lambdas" / "list_receipts" / "handler.py"
FIXTURES = sorted((REPO_ROOT / "tests" / "fixtures").glob("receipt_*.json"))
TABLE = "receipts-test"
BUCKET = "manifests-test"


def load_handler() -> ModuleType:
    return load_handler_file(HANDLER, "list_receipts_handler_integration")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Any, DynamoClient]]:
    with mock_aws():
        boto3.client("dynamodb").create_table(**create_table_kwargs(TABLE))
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        monkeypatch.setenv("DYNAMODB_TABLE_NAME", TABLE)
        monkeypatch.setenv("MANIFEST_BUCKET", BUCKET)
        handler = load_handler()  # fresh module: its clients are created inside the mock
        yield handler, s3, DynamoClient(TABLE)


def manifest(s3: Any, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


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
        "manifest_bucket": BUCKET,
        "manifest_key": "manifests/exec-0001/receipts.json",
    }
    body = manifest(s3, result["manifest_key"])
    key = lambda m: (m["image_id"], m["receipt_id"])  # noqa: E731
    assert sorted(body, key=key) == sorted(expected, key=key)
    head = s3.head_object(Bucket=BUCKET, Key=result["manifest_key"])
    assert head["ContentType"] == "application/json"


def test_limit_and_empty_table(aws: tuple[ModuleType, Any, DynamoClient]) -> None:
    handler, s3, client = aws
    empty = handler.lambda_handler({}, None)
    assert empty["receipt_count"] == 0 and manifest(s3, empty["manifest_key"]) == []

    for path in FIXTURES:
        client.load_receipt_document(json.loads(path.read_text()))
    limited = handler.lambda_handler({"limit": 2}, None)
    assert limited["receipt_count"] == 2
    assert len(manifest(s3, limited["manifest_key"])) == 2
    assert limited["manifest_key"] != empty["manifest_key"]


def test_bad_event_writes_no_manifest(aws: tuple[ModuleType, Any, DynamoClient]) -> None:
    handler, s3, _ = aws
    with pytest.raises(handler.InvalidEventError, match=r"^limit:"):
        handler.lambda_handler({"limit": "all"}, None)
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0
