"""Fault injection, ListReceipts side: the S3 manifest write fails, or the receipt keys cannot be read.

Rows of the README "Failure behaviour" table. The real list handler on moto, faults at the HTTP
layer (tests/fault_injection.py). What the operator must see: the execution fails in ListReceipts
with the S3/DynamoDB error named, and no manifest (so no map run over a partial list).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from receipt_dynamo import DynamoClient
from receipt_dynamo.schema import create_table_kwargs
from tests.fault_injection import BUCKET, FIXTURES, TABLE, HttpFaults, s3_error
from tests.helpers import LIST_HANDLER, load_handler

pytestmark = pytest.mark.integration


@dataclass
class ListWorld:
    handler: ModuleType
    s3: Any
    ddb: Any
    receipts: int

    def objects(self) -> list[str]:
        listing = boto3.client("s3").list_objects_v2(Bucket=BUCKET)
        return [o["Key"] for o in listing.get("Contents", [])]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[ListWorld]:
    monkeypatch.setattr(time, "sleep", lambda _: None)  # botocore's retry sleeps
    with mock_aws():
        boto3.client("dynamodb").create_table(**create_table_kwargs(TABLE))
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        loader = DynamoClient(TABLE)
        paths = sorted(FIXTURES.glob("receipt_*.json"))
        for path in paths:
            loader.load_receipt_document(json.loads(path.read_text()))
        monkeypatch.setenv("DYNAMODB_TABLE_NAME", TABLE)
        monkeypatch.setenv("MANIFEST_BUCKET", BUCKET)
        handler = load_handler(LIST_HANDLER, "list_receipts_handler_faults")
        s3, ddb = boto3.client("s3"), boto3.client("dynamodb")
        handler._s3_client = s3
        handler._dynamo = DynamoClient(TABLE, client=ddb)
        yield ListWorld(handler, s3, ddb, len(paths))


def test_manifest_write_failing_for_good_fails_the_run_and_leaves_no_manifest(world: ListWorld) -> None:
    faults = HttpFaults(world.s3, "PutObject", when=lambda n: True, error=s3_error("SlowDown", "Reduce rate", 503))

    with pytest.raises(Exception) as raised:
        world.handler.lambda_handler({"execution_name": "run-1"}, None)

    assert type(raised.value).__name__ == "ClientError"  # Step Functions: Error "ClientError"
    assert "(SlowDown) when calling the PutObject operation (reached max retries: 2)" in str(raised.value)
    assert faults.seen == 3  # bounded by botocore's standard retry mode
    assert world.objects() == []


def test_manifest_write_denied_fails_at_once_naming_the_cause(world: ListWorld) -> None:
    faults = HttpFaults(
        world.s3, "PutObject", when=lambda n: True, error=s3_error("AccessDenied", "Access Denied", 403)
    )

    with pytest.raises(Exception) as raised:
        world.handler.lambda_handler({"execution_name": "run-1"}, None)

    assert type(raised.value).__name__ == "AccessDenied"  # botocore names the error class after the code
    assert "(AccessDenied) when calling the PutObject operation: Access Denied" in str(raised.value)
    assert faults.seen == 1  # not retried: a permission error does not pass
    assert world.objects() == []


def test_missing_manifest_bucket_fails_with_no_such_bucket(world: ListWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANIFEST_BUCKET", "bucket-that-was-deleted")

    with pytest.raises(Exception) as raised:
        world.handler.lambda_handler({"execution_name": "run-1"}, None)

    assert type(raised.value).__name__ == "NoSuchBucket"
    assert "PutObject" in str(raised.value)


def test_manifest_write_throttled_for_a_moment_still_writes_the_whole_manifest(world: ListWorld) -> None:
    faults = HttpFaults(world.s3, "PutObject", when=lambda n: n <= 2, error=s3_error("SlowDown", "Reduce rate", 503))

    result = world.handler.lambda_handler({"execution_name": "run-1"}, None)

    assert faults.failed == 2
    body = world.s3.get_object(Bucket=BUCKET, Key=result["manifest_key"])["Body"].read().decode()
    lines = body.split("\n")
    assert lines[-1] == ""  # the last line is terminated: the retried upload is complete, not cut short
    items = [json.loads(line) for line in lines[:-1]]
    assert result["receipt_count"] == len(items) == world.receipts
    assert all(set(item) == {"image_id", "receipt_id"} for item in items)


def test_listing_throttled_for_good_fails_before_any_manifest_is_written(world: ListWorld) -> None:
    faults = HttpFaults(world.ddb, "Query", when=lambda n: True)

    with pytest.raises(Exception) as raised:
        world.handler.lambda_handler({"execution_name": "run-1"}, None)

    assert type(raised.value).__name__ == "ProvisionedThroughputExceededException"
    assert "Query operation (reached max retries: 3)" in str(raised.value)
    assert faults.seen == 4
    assert world.objects() == []  # no manifest over a partial list


def test_listing_throttled_for_a_moment_lists_every_receipt(world: ListWorld) -> None:
    faults = HttpFaults(world.ddb, "Query", when=lambda n: n <= 2)

    result = world.handler.lambda_handler({"execution_name": "run-1"}, None)

    assert faults.failed == 2 and result["receipt_count"] == world.receipts
