"""Judging PENDING labels in the data layer: the three validation fields, the exact requests of
``iter_pending_receipts`` and ``set_label_validations`` (botocore Stubber, no network) and their errors."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from receipt_dynamo import (
    PIPELINE_PROPOSER_PREFIX,
    AwsTransientError,
    DynamoClient,
    DynamoThrottledError,
    EntityValidationError,
    LabelJudgement,
    ReceiptWordLabel,
    ValidationStatus,
    keys,
)

pytestmark = pytest.mark.unit

IMAGE_ID = "0b7e3c52-6f1d-4a8e-9c3b-2d4f5a6b7c8d"
OTHER_IMAGE = "9d1c7a44-2b3e-4f5a-8c6d-7e8f9a0b1c2d"
TS = "2026-11-29T03:15:36Z"
JUDGED_AT = "2026-12-01T10:00:00+00:00"
BY = "receipt_label:gpt-oss:120b"


def judgement(word_id: int, status: ValidationStatus = ValidationStatus.VALID, reason: str = "fits") -> LabelJudgement:
    return LabelJudgement(IMAGE_ID, 1, 3, word_id, "TAX", status, reason)


def update_request(j: LabelJudgement, *, at: str = JUDGED_AT) -> dict[str, Any]:
    return {
        "TableName": "t",
        "Key": {
            "PK": {"S": f"IMAGE#{IMAGE_ID}"},
            "SK": {"S": f"RECEIPT#00001#LINE#00003#WORD#{j.word_id:05d}#LABEL#TAX"},
        },
        "UpdateExpression": "SET #status = :status, #gsi3pk = :gsi3pk, #reason = :reason, #by = :by, #at = :at",
        "ConditionExpression": "#status = :pending AND begins_with(#proposed_by, :pipeline)",
        "ExpressionAttributeNames": {
            "#status": "validation_status",
            "#gsi3pk": "GSI3PK",
            "#reason": "validation_reason",
            "#by": "validated_by",
            "#at": "validated_at",
            "#proposed_by": "label_proposed_by",
        },
        "ExpressionAttributeValues": {
            ":status": {"S": j.status.value},
            ":gsi3pk": {"S": f"VALIDATION_STATUS#{j.status.value}"},
            ":reason": {"S": j.reason},
            ":by": {"S": BY},
            ":at": {"S": at},
            ":pending": {"S": "PENDING"},
            ":pipeline": {"S": "receipt_label:"},
        },
    }


def client_for(client: Any, **kwargs: Any) -> DynamoClient:
    return DynamoClient("t", client=client, concurrency=1, **kwargs)


# --- the entity fields --------------------------------------------------------------------------------


def pending_label(**overrides: Any) -> ReceiptWordLabel:
    fields: dict[str, Any] = {
        "image_id": IMAGE_ID,
        "receipt_id": 1,
        "line_id": 3,
        "word_id": 2,
        "label": "TAX",
        "reasoning": "why",
        "timestamp_added": TS,
        "validation_status": ValidationStatus.PENDING,
        "label_proposed_by": BY,
    }
    return ReceiptWordLabel(**{**fields, **overrides})


def test_the_validation_fields_round_trip_and_are_absent_when_unset() -> None:
    judged = pending_label(
        validation_status=ValidationStatus.INVALID,
        validation_reason="a date, not a tax",
        validated_by=BY,
        validated_at=JUDGED_AT,
    )
    item = judged.to_item()
    assert (item["validation_reason"], item["validated_by"], item["validated_at"]) == (
        {"S": "a date, not a tax"},
        {"S": BY},
        {"S": JUDGED_AT},
    )
    assert ReceiptWordLabel.from_item(item) == judged
    plain = pending_label().to_item()
    assert not {"validation_reason", "validated_by", "validated_at"} & plain.keys()
    assert ReceiptWordLabel.from_item(plain).validated_by is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"validated_at": "2026-12-01T10:00:00"}, "validated_at"),  # no offset
        ({"validated_at": "yesterday"}, "validated_at"),
        ({"validated_by": " "}, "validated_by"),
        ({"validation_reason": 7}, "validation_reason"),
    ],
)
def test_the_validation_fields_are_validated(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(EntityValidationError) as info:
        pending_label(**overrides)
    assert info.value.field == field


@pytest.mark.parametrize("status", ["PENDING", "NONE", "valid", "DONE", None])
def test_a_judgement_is_valid_invalid_or_needs_review_only(status: Any) -> None:
    with pytest.raises(EntityValidationError) as info:
        LabelJudgement(IMAGE_ID, 1, 3, 2, "TAX", status)
    assert info.value.field == "status"


def test_a_judgement_names_the_key_of_its_label() -> None:
    j = LabelJudgement.of(pending_label(), ValidationStatus.NEEDS_REVIEW, "unclear")
    assert j.key == pending_label().key and j.status is ValidationStatus.NEEDS_REVIEW
    assert LabelJudgement(IMAGE_ID, 1, 3, 2, "TAX", "VALID").status is ValidationStatus.VALID  # type: ignore[arg-type]
    assert PIPELINE_PROPOSER_PREFIX == "receipt_label:"


# --- iter_pending_receipts -------------------------------------------------------------------------------


def index_entry(image_id: str, receipt_id: int, line_id: int, label: str = "TAX") -> dict[str, Any]:
    return {
        "PK": {"S": keys.image_pk(image_id)},
        "SK": {"S": keys.label_sk(receipt_id, line_id, 1, label)},
    }


def test_iter_pending_receipts_queries_gsi3_for_keys_only_and_lists_each_receipt_once_across_pages(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    request = {
        "TableName": "t",
        "IndexName": "GSI3",
        "KeyConditionExpression": "#status = :status",
        "ExpressionAttributeNames": {"#status": "GSI3PK", "#pk": "PK", "#sk": "SK"},
        "ExpressionAttributeValues": {":status": {"S": "VALIDATION_STATUS#PENDING"}},
        "ProjectionExpression": "#pk, #sk",
        "Limit": 3,
    }
    page_one = [index_entry(IMAGE_ID, 1, 1), index_entry(IMAGE_ID, 1, 2), index_entry(IMAGE_ID, 2, 1)]
    page_two = [index_entry(IMAGE_ID, 2, 5), index_entry(OTHER_IMAGE, 1, 1)]  # receipt 2 continues on page two
    last = {**page_one[-1], "GSI3PK": {"S": "VALIDATION_STATUS#PENDING"}, "GSI3SK": {"S": "x"}}
    stubber.add_response("query", {"Items": page_one, "LastEvaluatedKey": last}, request)
    stubber.add_response("query", {"Items": page_two}, {**request, "ExclusiveStartKey": last})
    listed = list(DynamoClient("t", client=client).iter_pending_receipts(page_size=3))
    assert listed == [(IMAGE_ID, 1), (IMAGE_ID, 2), (OTHER_IMAGE, 1)]


def test_iter_pending_receipts_lets_botocore_s_errors_through(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("query", "ProvisionedThroughputExceededException")
    with pytest.raises(ClientError):
        list(DynamoClient("t", client=client).iter_pending_receipts())


# --- set_label_validations ---------------------------------------------------------------------------------


def test_each_judgement_is_one_update_conditional_on_a_pending_label_of_the_pipeline(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    first, second = judgement(1), judgement(2, ValidationStatus.NEEDS_REVIEW, "smudged")
    stubber.add_response("update_item", {}, update_request(first))
    stubber.add_response("update_item", {}, update_request(second))
    result = client_for(client).set_label_validations([first, second], validated_by=BY, validated_at=JUDGED_AT)
    assert result.updated == [first, second] and result.skipped_changed == []


def test_a_failed_condition_is_reported_as_skipped_not_raised(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    changed, kept = judgement(1, ValidationStatus.INVALID), judgement(2)
    stubber.add_client_error("update_item", "ConditionalCheckFailedException", expected_params=update_request(changed))
    stubber.add_response("update_item", {}, update_request(kept))
    result = client_for(client).set_label_validations([changed, kept], validated_by=BY, validated_at=JUDGED_AT)
    assert result.updated == [kept] and result.skipped_changed == [changed]


def test_validated_at_defaults_to_now_in_utc(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    seen: list[str] = []
    client.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem",
        lambda params, **_: seen.append(params["ExpressionAttributeValues"][":at"]["S"]),
    )
    stubber.add_response("update_item", {}, None)
    client_for(client).set_label_validations([judgement(1)], validated_by=BY)
    (at,) = seen
    assert at.endswith("+00:00")


def test_throttling_is_retried_in_rounds_then_raises_dynamo_throttled_error(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("update_item", "ThrottlingException")
    stubber.add_response("update_item", {}, update_request(judgement(1)))
    for _ in range(3):
        stubber.add_client_error("update_item", "ProvisionedThroughputExceededException")
    sleeps: list[float] = []
    store = client_for(client, sleep=sleeps.append, max_attempts=3)
    assert store.set_label_validations([judgement(1)], validated_by=BY, validated_at=JUDGED_AT).updated
    with pytest.raises(DynamoThrottledError) as info:
        store.set_label_validations([judgement(2)], validated_by=BY, validated_at=JUDGED_AT)
    assert (info.value.operation, info.value.code) == ("UpdateItem", "ProvisionedThroughputExceededException")
    assert len(sleeps) == 1 + 2


def test_a_server_error_for_good_raises_aws_transient_error(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    for _ in range(2):
        stubber.add_client_error("update_item", "InternalServerError", "oops", http_status_code=500)
    with pytest.raises(AwsTransientError) as info:
        client_for(client, sleep=lambda _: None, max_attempts=2).set_label_validations(
            [judgement(1)], validated_by=BY, validated_at=JUDGED_AT
        )
    assert (info.value.operation, info.value.code) == ("UpdateItem", "InternalServerError")


def test_access_denied_is_raised_as_botocore_s_error(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("update_item", "AccessDeniedException", "no dynamodb:UpdateItem")
    with pytest.raises(ClientError) as info:
        client_for(client).set_label_validations([judgement(1)], validated_by=BY, validated_at=JUDGED_AT)
    assert not isinstance(info.value, AwsTransientError | DynamoThrottledError)


@pytest.mark.parametrize(
    ("judgements", "kwargs", "error"),
    [
        ([judgement(1), judgement(1, ValidationStatus.INVALID)], {"validated_by": BY}, "judged twice"),
        (["TAX"], {"validated_by": BY}, "expected LabelJudgement"),
        ([judgement(1)], {"validated_by": ""}, "validated_by"),
        ([judgement(1)], {"validated_by": BY, "validated_at": "2026-12-01 10:00"}, "validated_at"),
    ],
)
def test_bad_arguments_fail_before_any_request(judgements: list[Any], kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises((ValueError, TypeError), match=error):
        DynamoClient("t", client=object()).set_label_validations(judgements, **kwargs)
