"""Shim 8 end to end: a Distributed Map in moto reads a JSON Lines object from S3, one item per line.

A minimal state machine (the map over ``s3:getObject`` with ``InputType: JSONL``, a Pass state per
item) so the map's own behaviour is seen without the pipeline's Lambdas: the items in order, the
child executions counted, ``MaxItems``, an empty file, a bad line failing the execution with
``States.ItemReaderFailed``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local_pipeline.moto_shims import ITEM_READER_FAILED, installed

pytestmark = pytest.mark.integration

BUCKET = "jsonl-manifests"
KEY = "manifests/run-1/receipts.jsonl"
ROLE = "arn:aws:iam::123456789012:role/sfn"
MOTO_CONFIG: dict[str, Any] = {"stepfunctions": {"execute_state_machine": True}}
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})


def definition(**reader_config: Any) -> dict[str, Any]:
    return {
        "StartAt": "Items",
        "States": {
            "Items": {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "JSONL", **reader_config},
                    "Parameters": {"Bucket": BUCKET, "Key": KEY},
                },
                "ItemSelector": {"index.$": "$$.Map.Item.Index", "value.$": "$$.Map.Item.Value"},
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Echo",
                    "States": {"Echo": {"Type": "Pass", "End": True}},
                },
                "MaxConcurrency": 2,
                "End": True,
            }
        },
    }


@dataclass
class Execution:
    status: str
    output: Any
    error: str | None
    cause: str | None


@pytest.fixture
def sfn() -> Iterator[Any]:
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[call-overload]
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield boto3.client("stepfunctions")


def run(sfn: Any, body: bytes, **reader_config: Any) -> Execution:
    boto3.client("s3").put_object(Bucket=BUCKET, Key=KEY, Body=body)
    with installed():
        arn = sfn.create_state_machine(
            name=f"jsonl-{time.monotonic_ns()}", definition=json.dumps(definition(**reader_config)), roleArn=ROLE
        )["stateMachineArn"]
        execution = sfn.start_execution(stateMachineArn=arn, name="run-1")["executionArn"]
        deadline = time.monotonic() + 60
        while (described := sfn.describe_execution(executionArn=execution))["status"] not in TERMINAL:
            assert time.monotonic() < deadline, "the execution did not finish within 60 s"
            time.sleep(0.05)
    output = json.loads(described["output"]) if "output" in described else None
    return Execution(described["status"], output, described.get("error"), described.get("cause"))


def lines(*items: Any) -> bytes:
    return b"".join(json.dumps(item, separators=(",", ":")).encode() + b"\n" for item in items)


def test_one_child_execution_per_line_in_file_order(sfn: Any) -> None:
    items = [{"image_id": f"img-{n}", "receipt_id": n} for n in range(1, 6)]

    result = run(sfn, lines(*items))

    assert result.status == "SUCCEEDED", result
    assert result.output == [{"index": n, "value": item} for n, item in enumerate(items)]


def test_max_items_limits_the_items_read(sfn: Any) -> None:
    result = run(sfn, lines(*({"n": n} for n in range(10))), MaxItems=3)

    assert result.status == "SUCCEEDED", result
    assert [entry["value"] for entry in result.output] == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_an_empty_manifest_is_a_map_over_no_items(sfn: Any) -> None:
    result = run(sfn, b"")

    assert (result.status, result.output) == ("SUCCEEDED", [])


def test_a_line_that_is_not_json_fails_the_execution_with_item_reader_failed(sfn: Any) -> None:
    body = lines({"n": 1}) + b'{"n": 2,\n' + lines({"n": 3})

    result = run(sfn, body)

    assert result.status == "FAILED"
    assert result.error == ITEM_READER_FAILED
    assert result.cause is not None and "line 2 of the JSONL file is not valid JSON" in result.cause
