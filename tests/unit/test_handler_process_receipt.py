"""ProcessReceipt handler, without AWS or an LLM: event validation, the per-container secret cache and the
error classes Step Functions sees. The orchestration itself: tests/unit/test_receipt_pipeline.py."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.stub import Stubber

from lambdas.process_receipt import handler
from receipt_dynamo import (
    DynamoClient,
    DynamoThrottledError,
    LabelWriteResult,
    Receipt,
    ReceiptDetails,
    ReceiptNotFoundError,
    ReceiptWordLabel,
)
from receipt_label import TimeBudgetExceededError
from tests.helpers import LambdaContext, cold_container, fixture_receipt
from tests.scripted_chat import RecordingTracer, ScriptedChatModel, well_formed_answer

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


@pytest.mark.parametrize(("event", "kind"), [(None, "NoneType"), ([], "list"), ("image_id", "str"), (7, "int")])
def test_an_event_that_is_not_an_object_is_invalid_and_its_type_is_named(event: Any, kind: str) -> None:
    with pytest.raises(handler.InvalidEventError, match=r"^event: expected a JSON object") as raised:
        handler.parse_event(event)
    assert str(raised.value).endswith(f"got {kind}")


@pytest.mark.parametrize("image_id", ["not-a-uuid", "4ba71ab7-ac05-44a5-acc6-be1805fdf17g"])
def test_a_bad_image_id_is_explained_as_a_uuid_without_echoing_it(image_id: str) -> None:
    with pytest.raises(handler.InvalidEventError) as raised:
        handler.parse_event({"image_id": image_id, "receipt_id": 1})
    assert "image_id: must be a UUID" in str(raised.value) and image_id not in str(raised.value)


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


# ---- one receipt through the handler: the context's budget, the container's tracer, the function's logs ---

DETAILS = fixture_receipt()
RECEIPT_KEYS = (DETAILS.receipt.image_id, DETAILS.receipt.receipt_id)
ANSWER = well_formed_answer(DETAILS, lambda word: "PRODUCT_NAME" if word.text.isalpha() else None)


class Store:
    """The three data layer calls on the fixture receipt; ``writes`` records the write calls."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def get_receipt_details(self, image_id: str, receipt_id: int, *, consistent_read: bool = True) -> ReceiptDetails:
        return DETAILS

    def add_receipt_word_labels(self, labels: Iterable[ReceiptWordLabel]) -> LabelWriteResult:
        self.writes.append("labels")
        return LabelWriteResult(added=list(labels))

    def mark_receipt_labeled(self, image_id: str, receipt_id: int, *, proposed_by: str) -> Receipt:
        self.writes.append("marker")
        return Receipt(image_id, receipt_id, labeled_by=proposed_by, labeled_at="2026-01-02T03:04:05Z")


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch) -> Store:
    """A container whose table and model are replaced (as local runs replace them); no tracer, default margin."""
    store = Store()
    cold_container(monkeypatch, handler, store)
    monkeypatch.setattr(handler, "_chat_model", ScriptedChatModel(answers=[ANSWER, "{}"], model="m"))
    monkeypatch.delenv("TIME_MARGIN_SECONDS", raising=False)
    return store


def receipt_event() -> dict[str, Any]:
    return {"image_id": RECEIPT_KEYS[0], "receipt_id": RECEIPT_KEYS[1]}


def test_a_receipt_is_labeled_under_the_lambda_contexts_time_budget(container: Store) -> None:
    assert handler.lambda_handler(receipt_event(), LambdaContext())["labels_added"] > 0
    assert container.writes == ["labels", "marker"]


def test_less_time_left_than_the_margin_stops_the_labeling_call_and_writes_nothing(
    container: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = ScriptedChatModel(answers=[ANSWER])
    monkeypatch.setattr(handler, "_chat_model", llm)

    with pytest.raises(TimeBudgetExceededError):
        handler.lambda_handler(receipt_event(), LambdaContext(timeout_seconds=5.0))  # 5 s left, 30 s margin

    assert llm.calls == [] and container.writes == []


@pytest.mark.usefixtures("container")
def test_the_preflight_runs_under_the_lambda_contexts_time_budget(caplog: pytest.LogCaptureFixture) -> None:
    assert handler.lambda_handler({"preflight": True}, LambdaContext())["llm_calls"] == 1

    with caplog.at_level(logging.INFO, logger="process_receipt"), pytest.raises(TimeBudgetExceededError) as raised:
        handler.lambda_handler({"preflight": True}, LambdaContext(timeout_seconds=5.0))

    (line,) = [r for r in caplog.records if r.name == "process_receipt" and r.levelno == logging.ERROR]
    assert (line.error_type, line.error) == ("TimeBudgetExceededError", str(raised.value))


@pytest.mark.usefixtures("container")
def test_a_passed_preflight_is_logged_on_the_functions_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        handler.lambda_handler({"preflight": True}, None)

    assert [r for r in caplog.records if r.name == "process_receipt"]
    assert not [r for r in caplog.records if r.name == "receipt_label.pipeline"]


def test_the_containers_tracer_sees_the_labeling_call_and_is_flushed(
    container: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracer = RecordingTracer()
    monkeypatch.setattr(handler, "_tracer", tracer)

    handler.lambda_handler(receipt_event(), None)

    assert tracer.events == ["chat", "wait", "flush"]


@pytest.mark.usefixtures("container")
def test_a_labeled_receipt_is_logged_on_the_functions_logger_with_its_keys(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        handler.lambda_handler(receipt_event(), None)

    ours = [r for r in caplog.records if r.name == "process_receipt"]
    assert ours and all((r.image_id, r.receipt_id) == RECEIPT_KEYS for r in ours)
    assert not [r for r in caplog.records if r.name == "receipt_label.pipeline"]
