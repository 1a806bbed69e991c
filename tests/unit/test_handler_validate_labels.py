"""ValidateLabels handler, without AWS or an LLM: the event, the wiring it shares with ProcessReceipt, its
result and the error classes Step Functions sees. The orchestration: tests/unit/test_validate_pipeline.py."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.stub import Stubber

from lambdas.process_receipt import handler as process_handler
from lambdas.validate_labels import handler
from receipt_dynamo import (
    DynamoClient,
    DynamoThrottledError,
    LabelJudgement,
    ReceiptDetails,
    ReceiptWordLabel,
    ValidationStatus,
    ValidationWriteResult,
)
from receipt_label import LLMOutputError, TimeBudgetExceededError
from receipt_label.lambda_wiring import ContainerWiring
from tests.helpers import LambdaContext, cold_container, fixture_receipt
from tests.scripted_chat import ScriptedChatModel

pytestmark = pytest.mark.unit

DETAILS = fixture_receipt()
IMAGE_ID = DETAILS.receipt.image_id
WORD = DETAILS.words[0]
PENDING = ReceiptWordLabel(
    IMAGE_ID, 1, WORD.line_id, WORD.word_id, "MERCHANT_NAME", "r", "2026-01-02T03:04:05Z", "PENDING", "receipt_label:m"
)  # fmt: skip
RESULT_KEYS = {
    "image_id",
    "receipt_id",
    "labels_pending",
    "labels_valid",
    "labels_invalid",
    "labels_needs_review",
    "labels_skipped_changed",
    "llm_calls",
}


class Store:
    def __init__(self) -> None:
        self.written: list[LabelJudgement] = []

    def get_receipt_details(self, image_id: str, receipt_id: int, *, consistent_read: bool = True) -> ReceiptDetails:
        return replace(DETAILS, labels=[PENDING])

    def set_label_validations(
        self, judgements: Iterable[LabelJudgement], *, validated_by: str, validated_at: str | None = None
    ) -> ValidationWriteResult:
        self.written = list(judgements)
        return ValidationWriteResult(updated=self.written)


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch) -> Store:
    """A fresh container: no cached client; the table and the model replaced as local runs replace them."""
    store = Store()
    cold_container(monkeypatch, handler, store)
    return store


def judging(status: str) -> ScriptedChatModel:
    item = {"line_id": WORD.line_id, "word_id": WORD.word_id, "label": "MERCHANT_NAME", "status": status, "reason": "x"}
    return ScriptedChatModel(answers=[{"judgements": [item]}], model="judge")


def test_a_receipt_is_judged_and_the_result_has_the_contracts_keys(
    container: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler, "_chat_model", judging("INVALID"))
    result = handler.lambda_handler({"image_id": IMAGE_ID, "receipt_id": 1}, LambdaContext())
    assert set(result) == RESULT_KEYS
    assert (result["labels_pending"], result["labels_invalid"], result["llm_calls"]) == (1, 1, 1)
    assert [j.status for j in container.written] == [ValidationStatus.INVALID]


@pytest.mark.parametrize("force", [True, "yes"])
def test_force_is_not_part_of_the_event_and_is_ignored(
    container: Store, monkeypatch: pytest.MonkeyPatch, force: Any
) -> None:
    monkeypatch.setattr(handler, "_chat_model", judging("VALID"))
    assert handler.lambda_handler({"image_id": IMAGE_ID, "receipt_id": 1, "force": force}, None)["labels_valid"] == 1


def test_less_time_left_than_the_margin_stops_the_judging_call_and_writes_nothing(
    container: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = judging("VALID")
    monkeypatch.setattr(handler, "_chat_model", llm)
    monkeypatch.delenv("TIME_MARGIN_SECONDS", raising=False)

    with pytest.raises(TimeBudgetExceededError):
        handler.lambda_handler({"image_id": IMAGE_ID, "receipt_id": 1}, LambdaContext(timeout_seconds=5.0))

    assert llm.calls == [] and container.written == []


@pytest.mark.parametrize(
    ("event", "field"),
    [({"receipt_id": 1}, "image_id"), ({"image_id": IMAGE_ID, "receipt_id": 0}, "receipt_id"), ([], "event")],
)
def test_a_bad_event_raises_invalid_event_error_naming_the_field(event: Any, field: str) -> None:
    with pytest.raises(handler.InvalidEventError, match=field) as info:
        handler.lambda_handler(event, None)
    assert type(info.value).__name__ == "InvalidEventError"


def test_the_preflight_is_the_process_functions_preflight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler, "_chat_model", ScriptedChatModel(answers=["{}"], model="probe"))
    result = handler.lambda_handler({"preflight": True}, LambdaContext())
    assert result["preflight"] == "ok" and result["llm_calls"] == 1


def test_an_unusable_answer_fails_the_receipt_with_llm_output_error_and_writes_nothing(
    container: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(handler, "_chat_model", ScriptedChatModel(answers=["no", "still no"]))
    with caplog.at_level(logging.INFO, logger="validate_labels"), pytest.raises(LLMOutputError):
        handler.lambda_handler({"image_id": IMAGE_ID, "receipt_id": 1}, None)
    assert container.written == []
    (line,) = [r for r in caplog.records if r.name == "validate_labels" and r.levelno == logging.ERROR]
    assert (line.getMessage(), line.error_type, line.image_id, line.receipt_id) == (
        "receipt failed",
        "LLMOutputError",
        IMAGE_ID,
        1,
    )


class _Boto:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def query(self, **_: Any) -> Any:
        raise self.error


def test_read_throttling_reaches_step_functions_as_dynamo_throttled_error(monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    code = "ProvisionedThroughputExceededException"
    modeled = getattr(client.exceptions, code)({"Error": {"Code": code, "Message": "slow down"}}, "Query")
    monkeypatch.setattr(handler, "_dynamo", DynamoClient("t", client=_Boto(modeled)))
    with pytest.raises(DynamoThrottledError) as raised:
        handler.lambda_handler({"image_id": IMAGE_ID, "receipt_id": 1}, None)
    assert (raised.value.operation, raised.value.code) == ("Query", code)


# ---- one wiring for both container handlers ---------------------------------------------------------------


def test_both_container_handlers_use_the_one_shared_wiring() -> None:
    for module in (handler, process_handler):
        assert isinstance(module.wiring, ContainerWiring)
        for name in ("dynamo", "read_secret", "chat_models", "tracer"):
            assert getattr(module, name).__func__ is getattr(ContainerWiring, name), (module.__name__, name)
    assert handler.logger.name == "validate_labels" and process_handler.logger.name == "process_receipt"


def test_each_handler_module_keeps_its_own_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNAMODB_TABLE_NAME", "receipts")
    monkeypatch.setattr(handler, "_dynamo", None)
    monkeypatch.setattr(process_handler, "_dynamo", None)
    ours = handler.dynamo()
    assert handler.dynamo() is ours and handler._dynamo is ours
    assert process_handler.dynamo() is not ours


def test_a_secret_is_fetched_once_per_container(monkeypatch: pytest.MonkeyPatch) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ollama-AbCdEf"
    client = boto3.client("secretsmanager", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_response("get_secret_value", {"ARN": arn, "Name": "o", "SecretString": "k-1"}, {"SecretId": arn})
    monkeypatch.setattr(handler, "_secrets", SecretsProvider(boto3_client=client))
    monkeypatch.setenv("OLLAMA_API_KEY_SECRET_ARN", arn)
    with stubber:
        assert [handler.read_secret("OLLAMA_API_KEY_SECRET_ARN") for _ in range(3)] == ["k-1"] * 3
        stubber.assert_no_pending_responses()


def test_the_wiring_declares_the_per_container_clients_and_keeps_ones_already_set() -> None:
    preset = object()
    namespace: dict[str, object] = {"_dynamo": preset}
    ContainerWiring(namespace)
    assert namespace == {"_dynamo": preset, "_secrets": None, "_models": None, "_chat_model": None, "_tracer": None}
