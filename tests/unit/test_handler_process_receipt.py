"""ProcessReceipt handler, without AWS or an LLM: event validation, the per-container secret cache and the
error classes Step Functions sees. The orchestration itself: tests/unit/test_receipt_pipeline.py."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.stub import Stubber

from lambdas.process_receipt import handler
from receipt_dynamo import DynamoClient, DynamoThrottledError, ReceiptNotFoundError

pytestmark = pytest.mark.unit

IMAGE_ID = "4ba71ab7-ac05-44a5-acc6-be1805fdf179"
ONE_MB = "x" * (1 << 20)


def test_a_valid_event_parses_with_force_off_by_default() -> None:
    request = handler.parse_event({"image_id": IMAGE_ID, "receipt_id": 1})
    assert (request.image_id, request.receipt_id, request.force) == (IMAGE_ID, 1, False)
    assert handler.parse_event({"image_id": IMAGE_ID, "receipt_id": 99_999, "force": True}).force is True


def test_an_upper_case_uuid_is_normalised_to_the_tables_lower_case_form() -> None:
    assert handler.parse_event({"image_id": IMAGE_ID.upper(), "receipt_id": 2}).image_id == IMAGE_ID


def test_fields_the_contract_does_not_name_are_ignored() -> None:
    # The Distributed Map may pass more context than the handler needs.
    request = handler.parse_event({"image_id": IMAGE_ID, "receipt_id": 3, "execution_name": "run-1"})
    assert request.receipt_id == 3


@pytest.mark.parametrize(
    ("event", "fields"),
    [
        ({"receipt_id": 1}, ["image_id"]),
        ({"image_id": IMAGE_ID}, ["receipt_id"]),
        ({}, ["image_id", "receipt_id"]),
        ({"image_id": 42, "receipt_id": 1}, ["image_id"]),
        ({"image_id": IMAGE_ID, "receipt_id": "1"}, ["receipt_id"]),
        ({"image_id": IMAGE_ID, "receipt_id": 1.0}, ["receipt_id"]),
        ({"image_id": IMAGE_ID, "receipt_id": True}, ["receipt_id"]),
        ({"image_id": "not-a-uuid", "receipt_id": 1}, ["image_id"]),
        ({"image_id": "4ba71ab7-ac05-44a5-acc6-be1805fdf17g", "receipt_id": 1}, ["image_id"]),
        ({"image_id": IMAGE_ID, "receipt_id": 0}, ["receipt_id"]),
        ({"image_id": IMAGE_ID, "receipt_id": -7}, ["receipt_id"]),
        ({"image_id": IMAGE_ID, "receipt_id": 100_000}, ["receipt_id"]),
        ({"image_id": ONE_MB, "receipt_id": 1}, ["image_id"]),
        ({"image_id": IMAGE_ID, "receipt_id": ONE_MB}, ["receipt_id"]),
        ({"image_id": IMAGE_ID, "receipt_id": 1, "force": "yes"}, ["force"]),
        ({"image_id": None, "receipt_id": None}, ["image_id", "receipt_id"]),
    ],
)
def test_a_bad_event_raises_invalid_event_error_naming_the_fields(event: dict[str, Any], fields: list[str]) -> None:
    with pytest.raises(handler.InvalidEventError) as raised:
        handler.parse_event(event)
    message = str(raised.value)
    named = [f for f in ("image_id", "receipt_id", "force") if f"{f}:" in message]
    assert named == fields, message
    assert len(message) < 500, "the message never echoes the offending value"


@pytest.mark.parametrize("event", [None, [], "image_id", 7])
def test_an_event_that_is_not_an_object_is_invalid(event: Any) -> None:
    with pytest.raises(handler.InvalidEventError, match=r"^event: expected a JSON object"):
        handler.parse_event(event)


def test_the_invalid_event_error_class_name_is_what_step_functions_matches() -> None:
    assert handler.InvalidEventError.__name__ == "InvalidEventError"
    assert ReceiptNotFoundError.__name__ == "ReceiptNotFoundError"


def test_a_secret_is_fetched_once_per_container(monkeypatch: pytest.MonkeyPatch) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ollama-AbCdEf"
    client = boto3.client("secretsmanager", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_response(
        "get_secret_value", {"ARN": arn, "Name": "ollama", "SecretString": "k-123\n"}, {"SecretId": arn}
    )
    monkeypatch.setattr(handler, "_secrets", SecretsProvider(boto3_client=client))
    monkeypatch.setenv("OLLAMA_API_KEY_SECRET_ARN", arn)
    with stubber:
        values = [handler.read_secret("OLLAMA_API_KEY_SECRET_ARN") for _ in range(5)]
        stubber.assert_no_pending_responses()  # exactly one GetSecretValue (a second would fail the stub)
    assert values == ["k-123"] * 5


def test_no_secret_arn_means_no_key_and_no_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_API_KEY_SECRET_ARN", raising=False)
    client = boto3.client("secretsmanager", region_name="us-east-1")
    monkeypatch.setattr(handler, "_secrets", SecretsProvider(boto3_client=client))
    with Stubber(client):  # any call would raise: no response is queued
        assert handler.read_secret("OLLAMA_API_KEY_SECRET_ARN") is None


def test_no_langsmith_secret_means_no_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LANGSMITH_API_KEY_SECRET_ARN", raising=False)
    monkeypatch.setattr(handler, "_tracer", None)
    assert handler.tracer() is None


def test_without_a_lambda_context_the_handler_still_raises_the_typed_error() -> None:
    with pytest.raises(handler.InvalidEventError, match="receipt_id"):
        handler.lambda_handler({"image_id": IMAGE_ID}, None)


# ---- DynamoDB errors as Step Functions sees them -------------------------------------------------


class _Boto:
    """A boto3 DynamoDB client whose Query raises ``error`` (the data layer types it)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def query(self, **_: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"]
)
def test_read_throttling_reaches_step_functions_as_dynamo_throttled_error(
    code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # botocore raises its modeled class (its name would be the Lambda errorType); the data layer maps it.
    client = boto3.client("dynamodb", region_name="us-east-1")
    modeled = getattr(client.exceptions, code)({"Error": {"Code": code, "Message": "slow down"}}, "Query")
    assert type(modeled).__name__ == code
    monkeypatch.setattr(handler, "_dynamo", DynamoClient("t", client=_Boto(modeled)))
    with pytest.raises(DynamoThrottledError) as raised:
        handler.lambda_handler({"image_id": IMAGE_ID, "receipt_id": 1}, None)
    assert type(raised.value).__name__ == "DynamoThrottledError"
    assert (raised.value.operation, raised.value.code) == ("Query", code)
    assert raised.value.__cause__ is modeled


def test_other_dynamodb_errors_are_not_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    denied = client.exceptions.ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Query")
    monkeypatch.setattr(handler, "_dynamo", DynamoClient("t", client=_Boto(denied)))
    with pytest.raises(type(denied)) as raised:
        handler.lambda_handler({"image_id": IMAGE_ID, "receipt_id": 1}, None)
    assert raised.value is denied
