"""The exact DynamoDB requests DynamoClient sends (botocore Stubber, no network)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber

from receipt_dynamo import (
    AwsTransientError,
    DynamoClient,
    DynamoThrottledError,
    LabelWriteError,
    Receipt,
    ReceiptNotFoundError,
    ReceiptWord,
    ReceiptWordLabel,
    ValidationStatus,
)

pytestmark = pytest.mark.unit

IMAGE_ID = "0b7e3c52-6f1d-4a8e-9c3b-2d4f5a6b7c8d"
TS = "2026-11-29T03:15:36Z"


def label(word_id: int, name: str = "TAX") -> ReceiptWordLabel:
    return ReceiptWordLabel(IMAGE_ID, 1, 3, word_id, name, "why", TS, "PENDING", "receipt_label:m")


def test_iter_receipt_keys_queries_the_type_index_for_keys_and_marker_only_across_pages(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    request = {
        "TableName": "t",
        "IndexName": "GSITYPE",
        "KeyConditionExpression": "#t = :t",
        "ExpressionAttributeNames": {"#t": "TYPE", "#pk": "PK", "#sk": "SK", "#by": "labeled_by"},
        "ExpressionAttributeValues": {":t": {"S": "RECEIPT"}},
        "ProjectionExpression": "#pk, #sk, #by",
    }
    first = Receipt(IMAGE_ID, 1).key
    last_key = {**first, "TYPE": {"S": "RECEIPT"}}
    stubber.add_response("query", {"Items": [first], "LastEvaluatedKey": last_key}, request)
    stubber.add_response("query", {"Items": [Receipt(IMAGE_ID, 2).key]}, {**request, "ExclusiveStartKey": last_key})
    assert list(DynamoClient("t", client=client).iter_receipt_keys()) == [(IMAGE_ID, 1), (IMAGE_ID, 2)]


def test_iter_receipt_markers_returns_each_receipts_completion_marker(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    marked = {**Receipt(IMAGE_ID, 2).key, "labeled_by": {"S": "receipt_label:gpt-oss:120b"}}
    stubber.add_response("query", {"Items": [Receipt(IMAGE_ID, 1).key, marked]})
    assert list(DynamoClient("t", client=client).iter_receipt_markers()) == [
        (IMAGE_ID, 1, None),
        (IMAGE_ID, 2, "receipt_label:gpt-oss:120b"),
    ]


def details_request(consistent: bool) -> dict[str, Any]:
    return {
        "TableName": "t",
        "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
        "ExpressionAttributeNames": {"#pk": "PK", "#sk": "SK"},
        "ExpressionAttributeValues": {":pk": {"S": f"IMAGE#{IMAGE_ID}"}, ":prefix": {"S": "RECEIPT#00007"}},
        "ConsistentRead": consistent,
    }


def test_get_receipt_details_is_one_strongly_consistent_query_on_the_receipt_prefix(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    word = ReceiptWord(IMAGE_ID, 7, 1, 1, "MILK")
    stubber.add_response(
        "query",
        {"Items": [Receipt(IMAGE_ID, 7).to_item(), word.to_item(), {**word.key, "TYPE": {"S": "FUTURE_THING"}}]},
        details_request(consistent=True),
    )
    details = DynamoClient("t", client=client).get_receipt_details(IMAGE_ID, 7)
    assert details.words == [word] and details.lines == [] and details.labels == []


def test_get_receipt_details_reads_eventually_consistent_on_request(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response("query", {"Items": [Receipt(IMAGE_ID, 7).to_item()]}, details_request(consistent=False))
    DynamoClient("t", client=client).get_receipt_details(IMAGE_ID, 7, consistent_read=False)


def test_get_receipt_details_recognises_labels_by_sort_key_with_or_without_type(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    new = ReceiptWordLabel(IMAGE_ID, 7, 1, 1, "TAX", "why", TS, ValidationStatus.PENDING, "receipt_label:m")
    old = ReceiptWordLabel(IMAGE_ID, 7, 1, 2, "TAX", "why", TS, ValidationStatus.VALID, "reviewer:ana")
    untyped_word_key = ReceiptWord(IMAGE_ID, 7, 1, 3, "X").key  # not a label key, no TYPE: another feature's
    items = [
        Receipt(IMAGE_ID, 7).to_item(),
        new.to_item(),  # written by this version: no TYPE
        {**old.to_item(), "TYPE": {"S": "RECEIPT_WORD_LABEL"}},  # written by an earlier version
        untyped_word_key,
    ]
    assert "TYPE" not in items[1]
    stubber.add_response("query", {"Items": items}, details_request(consistent=True))
    details = DynamoClient("t", client=client).get_receipt_details(IMAGE_ID, 7)
    assert details.labels == [new, old] and details.words == []


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


# --- transient failures after botocore's retries ---------------------------------------------------


class Refusing:
    """A client whose every call fails with ``error`` (botocore transport errors cannot be stubbed)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        def call(**_: Any) -> Any:
            self.calls += 1
            raise self.error

        return call


def no_connection() -> EndpointConnectionError:
    return EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")


def test_a_marker_write_failing_with_internal_server_error_for_good_raises_aws_transient_error(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    for _ in range(3):
        stubber.add_client_error("update_item", "InternalServerError", "oops", http_status_code=500)
    sleeps: list[float] = []
    with pytest.raises(AwsTransientError) as info:
        DynamoClient("t", client=client, sleep=sleeps.append, max_attempts=3).mark_receipt_labeled(
            IMAGE_ID, 4, proposed_by="receipt_label:m", at=TS
        )
    assert (info.value.service, info.value.operation, info.value.code) == (
        "dynamodb",
        "UpdateItem",
        "InternalServerError",
    )
    assert info.value.http_status == 500
    assert isinstance(info.value.__cause__, ClientError)
    assert len(sleeps) == 2  # receipt_dynamo's rounds, as for throttling


def test_a_marker_write_without_a_connection_raises_aws_transient_error_at_once() -> None:
    refusing = Refusing(no_connection())
    sleeps: list[float] = []
    with pytest.raises(AwsTransientError) as info:
        DynamoClient("t", client=refusing, sleep=sleeps.append).mark_receipt_labeled(
            IMAGE_ID, 4, proposed_by="receipt_label:m", at=TS
        )
    assert (info.value.service, info.value.code) == ("dynamodb", "EndpointConnectionError")
    assert refusing.calls == 1 and sleeps == []  # botocore already retried the connection


def test_a_marker_write_denied_is_raised_as_botocore_s_error(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("update_item", "AccessDeniedException", "no dynamodb:UpdateItem")
    with pytest.raises(ClientError) as info:
        DynamoClient("t", client=client).mark_receipt_labeled(IMAGE_ID, 4, proposed_by="receipt_label:m", at=TS)
    assert not isinstance(info.value, AwsTransientError | DynamoThrottledError)


def test_label_writes_failing_with_internal_server_error_for_good_raise_label_write_error(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    for _ in range(2):
        stubber.add_client_error("put_item", "InternalServerError", "oops", http_status_code=500)
    with pytest.raises(LabelWriteError) as info:
        DynamoClient("t", client=client, sleep=lambda _: None, max_attempts=2, concurrency=1).add_receipt_word_labels(
            [label(1)]
        )
    assert str(info.value).startswith("PutItem still failing (InternalServerError) after 2 attempts")
    assert info.value.not_written == [label(1)]


def test_label_writes_without_a_connection_raise_label_write_error_naming_what_was_not_written() -> None:
    refusing = Refusing(no_connection())
    with pytest.raises(LabelWriteError) as info:
        DynamoClient("t", client=refusing, sleep=lambda _: None, concurrency=1).add_receipt_word_labels(
            [label(1), label(2)]
        )
    assert info.value.written == [] and info.value.not_written == [label(1), label(2)]
    assert isinstance(info.value.__cause__, EndpointConnectionError)
    assert refusing.calls == 2  # one round: botocore already retried each connection


def test_loading_without_a_connection_raises_aws_transient_error() -> None:
    with pytest.raises(AwsTransientError) as info:
        DynamoClient("t", client=Refusing(no_connection())).add_receipt(Receipt(IMAGE_ID, 1))
    assert info.value.code == "EndpointConnectionError"


@pytest.mark.parametrize(
    ("code", "status", "typed"),
    [
        ("ProvisionedThroughputExceededException", 400, DynamoThrottledError),
        ("ThrottlingException", 400, DynamoThrottledError),
        ("InternalServerError", 500, AwsTransientError),
    ],
)
def test_a_receipt_read_that_outlasts_the_retries_raises_the_typed_error(
    stubbed: tuple[Any, Stubber], code: str, status: int, typed: type[Exception]
) -> None:
    client, stubber = stubbed
    stubber.add_client_error("query", code, "no", http_status_code=status)
    with pytest.raises(typed) as raised:
        DynamoClient("t", client=client).get_receipt_details(IMAGE_ID, 1)
    assert isinstance(raised.value.__cause__, ClientError)
    assert "Query" in str(raised.value) and code in str(raised.value)


def test_a_receipt_read_denied_and_a_throttled_listing_are_raised_as_botocore_s_errors(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    stubber.add_client_error("query", "AccessDeniedException", "no", http_status_code=400)
    stubber.add_client_error("query", "ProvisionedThroughputExceededException", "no", http_status_code=400)
    with pytest.raises(ClientError, match="AccessDeniedException"):
        DynamoClient("t", client=client).get_receipt_details(IMAGE_ID, 1)
    with pytest.raises(ClientError, match="ProvisionedThroughputExceededException"):  # ListReceipts' contract
        list(DynamoClient("t", client=client).iter_receipt_keys())
