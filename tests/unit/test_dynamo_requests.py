"""The exact DynamoDB requests DynamoClient sends (botocore Stubber, no network)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from receipt_dynamo import (
    DynamoClient,
    DynamoThrottledError,
    LabelWriteError,
    Receipt,
    ReceiptNotFoundError,
    ReceiptWord,
    ReceiptWordLabel,
)

pytestmark = pytest.mark.unit

IMAGE_ID = "0b7e3c52-6f1d-4a8e-9c3b-2d4f5a6b7c8d"
TS = "2026-11-29T03:15:36Z"


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("dynamodb", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def label(word_id: int, name: str = "TAX") -> ReceiptWordLabel:
    return ReceiptWordLabel(IMAGE_ID, 1, 3, word_id, name, "why", TS, "PENDING", "receipt_label:m")


def test_iter_receipt_keys_queries_the_type_index_for_keys_only_across_pages(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    request = {
        "TableName": "t",
        "IndexName": "GSITYPE",
        "KeyConditionExpression": "#t = :t",
        "ExpressionAttributeNames": {"#t": "TYPE", "#pk": "PK", "#sk": "SK"},
        "ExpressionAttributeValues": {":t": {"S": "RECEIPT"}},
        "ProjectionExpression": "#pk, #sk",
    }
    first = Receipt(IMAGE_ID, 1).key
    last_key = {**first, "TYPE": {"S": "RECEIPT"}}
    stubber.add_response("query", {"Items": [first], "LastEvaluatedKey": last_key}, request)
    stubber.add_response("query", {"Items": [Receipt(IMAGE_ID, 2).key]}, {**request, "ExclusiveStartKey": last_key})
    assert list(DynamoClient("t", client=client).iter_receipt_keys()) == [(IMAGE_ID, 1), (IMAGE_ID, 2)]


def test_get_receipt_details_is_one_query_on_the_receipt_prefix(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    word = ReceiptWord(IMAGE_ID, 7, 1, 1, "MILK")
    stubber.add_response(
        "query",
        {"Items": [Receipt(IMAGE_ID, 7).to_item(), word.to_item(), {**word.key, "TYPE": {"S": "FUTURE_THING"}}]},
        {
            "TableName": "t",
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
            "ExpressionAttributeNames": {"#pk": "PK", "#sk": "SK"},
            "ExpressionAttributeValues": {":pk": {"S": f"IMAGE#{IMAGE_ID}"}, ":prefix": {"S": "RECEIPT#00007"}},
            "ConsistentRead": False,
        },
    )
    details = DynamoClient("t", client=client).get_receipt_details(IMAGE_ID, 7)
    assert details.words == [word] and details.lines == [] and details.labels == []


def test_each_label_is_a_put_conditional_on_the_key_not_existing(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    labels = [label(1), label(2), label(3)]
    for lbl in labels:
        expected = {
            "TableName": "t",
            "Item": lbl.to_item(),
            "ConditionExpression": "attribute_not_exists(#pk)",
            "ExpressionAttributeNames": {"#pk": "PK"},
        }
        if lbl is labels[1]:
            stubber.add_client_error("put_item", "ConditionalCheckFailedException", expected_params=expected)
        elif lbl is labels[2]:
            stubber.add_client_error("put_item", "ThrottlingException", expected_params=expected)
        else:
            stubber.add_response("put_item", {}, expected)
    stubber.add_response("put_item", {}, None)  # the throttled label, next round
    sleeps: list[float] = []
    result = DynamoClient("t", client=client, sleep=sleeps.append, concurrency=1).add_receipt_word_labels(labels)
    assert result.added == [labels[0], labels[2]]
    assert result.skipped_existing == [labels[1]]
    assert len(sleeps) == 1


def test_access_denied_is_not_retried_and_names_what_was_not_written(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response("put_item", {})
    stubber.add_client_error("put_item", "AccessDeniedException", "no dynamodb:PutItem")
    sleeps: list[float] = []
    with pytest.raises(LabelWriteError) as info:
        DynamoClient("t", client=client, sleep=sleeps.append, concurrency=1).add_receipt_word_labels(
            [label(1), label(2)]
        )
    assert info.value.written == [label(1)] and info.value.not_written == [label(2)]
    assert "AccessDeniedException" in str(info.value) and label(2).describe() in str(info.value)
    assert sleeps == []


def test_labels_must_be_receipt_word_labels() -> None:
    with pytest.raises(TypeError, match="ReceiptWordLabel"):
        DynamoClient("t", client=object()).add_receipt_word_labels([{"label": "TAX"}])  # type: ignore[list-item]


def test_table_name_is_required() -> None:
    with pytest.raises(ValueError, match="table_name"):
        DynamoClient(" ")


def marker_request(at: str, by: str = "receipt_label:m") -> dict[str, Any]:
    return {
        "TableName": "t",
        "Key": Receipt(IMAGE_ID, 4).key,
        "UpdateExpression": "SET #by = :by, #at = :at",
        "ConditionExpression": "attribute_exists(#pk)",
        "ExpressionAttributeNames": {"#pk": "PK", "#by": "labeled_by", "#at": "labeled_at"},
        "ExpressionAttributeValues": {":by": {"S": by}, ":at": {"S": at}},
    }


def test_mark_receipt_labeled_is_one_conditional_update_of_the_two_marker_attributes(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    stubber.add_response("update_item", {}, marker_request(TS))
    marked = DynamoClient("t", client=client).mark_receipt_labeled(IMAGE_ID, 4, proposed_by="receipt_label:m", at=TS)
    assert marked == Receipt(IMAGE_ID, 4, labeled_by="receipt_label:m", labeled_at=TS)


def test_mark_receipt_labeled_defaults_to_now_in_utc(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response("update_item", {}, None)
    marked = DynamoClient("t", client=client).mark_receipt_labeled(IMAGE_ID, 4, proposed_by="receipt_label:m")
    assert marked.labeled_at is not None and marked.labeled_at.endswith("+00:00")


def test_mark_receipt_labeled_on_a_missing_receipt_raises_receipt_not_found(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("update_item", "ConditionalCheckFailedException", expected_params=marker_request(TS))
    with pytest.raises(ReceiptNotFoundError):
        DynamoClient("t", client=client).mark_receipt_labeled(IMAGE_ID, 4, proposed_by="receipt_label:m", at=TS)


def test_mark_receipt_labeled_retries_throttling_then_raises_dynamo_throttled_error(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    stubber.add_client_error("update_item", "ProvisionedThroughputExceededException")
    stubber.add_response("update_item", {}, marker_request(TS))
    sleeps: list[float] = []
    DynamoClient("t", client=client, sleep=sleeps.append).mark_receipt_labeled(
        IMAGE_ID, 4, proposed_by="receipt_label:m", at=TS
    )
    assert len(sleeps) == 1
    for _ in range(3):
        stubber.add_client_error("update_item", "ThrottlingException")
    with pytest.raises(DynamoThrottledError) as info:
        DynamoClient("t", client=client, sleep=sleeps.append, max_attempts=3).mark_receipt_labeled(
            IMAGE_ID, 4, proposed_by="receipt_label:m", at=TS
        )
    assert (info.value.operation, info.value.code) == ("UpdateItem", "ThrottlingException")
    assert type(info.value).__name__ == "DynamoThrottledError"
    assert len(sleeps) == 1 + 2


def test_mark_receipt_labeled_validates_before_any_request() -> None:
    with pytest.raises(ValueError, match="labeled_at"):
        DynamoClient("t", client=object()).mark_receipt_labeled(IMAGE_ID, 4, proposed_by="m", at="2026-11-29T03:15:36")
    with pytest.raises(ValueError, match="labeled_by"):
        DynamoClient("t", client=object()).mark_receipt_labeled(IMAGE_ID, 4, proposed_by=" ")
