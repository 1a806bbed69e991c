"""ProcessReceipt handler, without AWS or an LLM: event validation and the per-container secret cache."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.stub import Stubber

from tests.lambda_handlers import load_handler as load_handler_file

pytestmark = pytest.mark.unit

HANDLER = Path(__file__).resolve().parents[2] / "lambdas" / "process_receipt" / "handler.py"
IMAGE_ID = "4ba71ab7-ac05-44a5-acc6-be1805fdf179"
ONE_MB = "x" * (1 << 20)


def load_handler() -> ModuleType:
    return load_handler_file(HANDLER, "process_receipt_handler_unit")


handler = load_handler()


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
    assert handler.ReceiptNotFoundError.__name__ == "ReceiptNotFoundError"


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
    assert handler.langsmith_tracer() is None


def test_a_failing_trace_flush_never_fails_the_receipt() -> None:
    class BrokenClient:
        def flush(self, timeout: float | None = None) -> None:
            raise ConnectionError("LangSmith unreachable")

    class Tracer:
        client = BrokenClient()
        waited = False

        def wait_for_futures(self) -> None:
            self.waited = True

    tracer = Tracer()
    handler._flush_traces(tracer)  # must not raise
    assert tracer.waited


def test_without_a_lambda_context_the_handler_still_raises_the_typed_error() -> None:
    with pytest.raises(handler.InvalidEventError, match="receipt_id"):
        handler.lambda_handler({"image_id": IMAGE_ID}, None)


# ---- completion marker and DynamoDB throttling ------------------------------------------------------


def _details(*, labeled_by: str | None, label_by: str | None) -> Any:
    from receipt_dynamo import Receipt, ReceiptDetails, ReceiptWordLabel, ValidationStatus

    labels = []
    if label_by is not None:
        labels = [
            ReceiptWordLabel(IMAGE_ID, 1, 1, 1, "TAX", "r", "2026-01-02T03:04:05Z", ValidationStatus.PENDING, label_by)
        ]
    at = "2026-01-02T03:04:05Z" if labeled_by is not None else None
    return ReceiptDetails(Receipt(IMAGE_ID, 1, labeled_by=labeled_by, labeled_at=at), labels=labels)


@pytest.mark.parametrize(
    ("labeled_by", "label_by", "skipped"),
    [
        ("receipt_label:gpt-oss:120b", "receipt_label:gpt-oss:120b", True),
        ("receipt_label:other-model", None, True),  # finished, with nothing to propose
        (None, "receipt_label:gpt-oss:120b", False),  # labels of a run that did not finish (or an older version)
        (None, None, False),
        ("reviewer:alice", "receipt_label:gpt-oss:120b", False),  # a marker, but not this pipeline's
    ],
)
def test_only_the_completion_marker_of_this_pipeline_skips_a_receipt(
    labeled_by: str | None, label_by: str | None, skipped: bool
) -> None:
    assert handler.already_labeled(_details(labeled_by=labeled_by, label_by=label_by)) is skipped


class _Dynamo:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_receipt_details(self, image_id: str, receipt_id: int, **_: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"]
)
def test_read_throttling_reaches_step_functions_as_dynamo_throttled_error(
    code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # botocore raises its modeled class (its name would be the Lambda errorType); the handler maps it.
    client = boto3.client("dynamodb", region_name="us-east-1")
    modeled = getattr(client.exceptions, code)({"Error": {"Code": code, "Message": "slow down"}}, "Query")
    assert type(modeled).__name__ == code
    monkeypatch.setattr(handler, "_dynamo", _Dynamo(modeled))
    with pytest.raises(handler.DynamoThrottledError) as raised:
        handler.lambda_handler({"image_id": IMAGE_ID, "receipt_id": 1}, None)
    assert type(raised.value).__name__ == "DynamoThrottledError"
    assert (raised.value.operation, raised.value.code) == ("Query", code)
    assert raised.value.__cause__ is modeled


def test_other_dynamodb_errors_are_not_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    denied = client.exceptions.ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Query")
    monkeypatch.setattr(handler, "_dynamo", _Dynamo(denied))
    with pytest.raises(type(denied)) as raised:
        handler.lambda_handler({"image_id": IMAGE_ID, "receipt_id": 1}, None)
    assert raised.value is denied
