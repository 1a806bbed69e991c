"""One logging convention for the three handlers, checked with the Lambda runtime's own JSON formatter.

Every function that runs our code is deployed with Lambda's JSON log format; the runtime (awslambdaric, the
same code in the managed Python runtime and the AWS base images) then formats each stdlib record with its
``JsonFormatter`` and stamps the request id on it. These tests attach that formatter to the root logger as
the runtime does and read the lines back.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from aws_cdk.assertions import Template
from awslambdaric.lambda_runtime_log_utils import JsonFormatter

from lambdas.image_build_trigger import handler as trigger
from lambdas.list_receipts import handler as list_handler
from lambdas.process_receipt import handler as process_handler
from lambdas.validate_labels import handler as validate_handler
from receipt_dynamo import DynamoClient

pytestmark = pytest.mark.unit

IMAGE_ID = "4ba71ab7-ac05-44a5-acc6-be1805fdf179"
REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e812345678"
#: Keys the runtime's formatter writes on every line.
RUNTIME_KEYS = {"timestamp", "level", "message", "logger", "requestId"}


class _RequestId(logging.Filter):
    """What the runtime's LambdaLoggerFilter does: the invocation's request id on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = REQUEST_ID
        return True


@pytest.fixture
def lambda_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Reads the JSON lines Lambda would write for the records logged so far (root at INFO, as deployed)."""
    stream = io.StringIO()
    sink = logging.StreamHandler(stream)
    sink.setFormatter(JsonFormatter())
    sink.addFilter(_RequestId())
    root = logging.getLogger()
    level = root.level
    root.addHandler(sink)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    finally:
        root.removeHandler(sink)
        root.setLevel(level)


class _FailingQuery:
    """A DynamoDB client whose Query fails the way botocore reports a missing table."""

    def query(self, **_: Any) -> Any:
        client = boto3.client("dynamodb", region_name="us-east-1")
        raise client.exceptions.ResourceNotFoundException(
            {"Error": {"Code": "ResourceNotFoundException", "Message": "Requested resource not found"}}, "Query"
        )


def test_every_function_running_our_code_uses_the_json_log_format_at_info(synthesized: Any) -> None:
    functions = Template.from_json(synthesized.stacks[0].template).find_resources("AWS::Lambda::Function")
    # CDK's provider framework functions (handler framework.*) log at its own FATAL level.
    ours = {n: f for n, f in functions.items() if not str(f["Properties"].get("Handler", "")).startswith("framework.")}
    entry_points = sorted(
        str(f["Properties"].get("Handler", f["Properties"].get("PackageType"))) for f in ours.values()
    )
    # Per state machine: the list function (zip) and the worker (image); per image: the trigger's two functions.
    assert (
        entry_points
        == ["Image"] * 2 + ["handler.is_complete"] * 2 + ["handler.lambda_handler"] * 2 + ["handler.on_event"] * 2
    )
    for name, function in ours.items():
        config = function["Properties"]["LoggingConfig"]
        assert (config["LogFormat"], config["ApplicationLogLevel"], config["SystemLogLevel"]) == (
            "JSON",
            "INFO",
            "WARN",
        ), name


@pytest.mark.parametrize(
    ("logger", "module"), [("process_receipt", process_handler), ("validate_labels", validate_handler)]
)
def test_container_lines_carry_the_receipt_keys_the_request_id_and_the_error_type(
    lambda_lines: Callable[[], list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch, logger: str, module: Any
) -> None:
    monkeypatch.setattr(module, "_dynamo", DynamoClient("t", client=_FailingQuery()))
    with pytest.raises(Exception, match="Requested resource not found"):
        module.lambda_handler({"image_id": IMAGE_ID, "receipt_id": 7}, None)
    lines = [line for line in lambda_lines() if line["logger"] == logger]
    assert lines, "the failed receipt logged nothing"
    for line in lines:
        assert line.keys() >= RUNTIME_KEYS and line["requestId"] == REQUEST_ID
        assert (line["image_id"], line["receipt_id"]) == (IMAGE_ID, 7)
    (failed,) = [line for line in lines if line["level"] == "ERROR"]
    assert failed["error_type"] == "ResourceNotFoundException"


@pytest.mark.parametrize(
    ("logger", "call"),
    [
        ("process_receipt", lambda: process_handler.lambda_handler({"image_id": "x", "receipt_id": 7}, None)),
        ("validate_labels", lambda: validate_handler.lambda_handler({"image_id": "x", "receipt_id": 7}, None)),
        ("list_receipts", lambda: list_handler.lambda_handler({"limit": 0}, None)),
    ],
)
def test_a_rejected_event_is_one_warning_line_naming_the_error_on_the_functions_logger(
    lambda_lines: Callable[[], list[dict[str, Any]]], logger: str, call: Callable[[], Any]
) -> None:
    with pytest.raises(Exception) as raised:
        call()
    error = type(raised.value).__name__
    assert error == "InvalidEventError"
    (line,) = [line for line in lambda_lines() if line["logger"] == logger]
    assert line.keys() >= RUNTIME_KEYS and line["requestId"] == REQUEST_ID
    assert (line["level"], line["message"], line["error_type"]) == ("WARNING", "invalid event", error)
    assert line["error"] == str(raised.value)


def test_trigger_lines_use_its_logger_with_the_request_in_extra(
    lambda_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    event = {"RequestType": "Create", "LogicalResourceId": "Trigger", "ResourceProperties": {"ImageTag": "abc"}}
    with pytest.raises(KeyError):  # the entry point logs the request before it reads the other properties
        trigger.on_event(event, None)
    (line,) = [line for line in lambda_lines() if line["logger"] == "image_build_trigger"]
    assert line.keys() >= RUNTIME_KEYS
    assert (line["request_type"], line["logical_resource_id"], line["image_tag"]) == ("Create", "Trigger", "abc")
