"""DynamoClient against moto: pagination, label writes that never overwrite, retries, the load CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from receipt_dynamo import (
    DynamoClient,
    DynamoThrottledError,
    ItemWriteError,
    LabelJudgement,
    LabelWriteError,
    Receipt,
    ReceiptLine,
    ReceiptNotFound,
    ReceiptNotFoundError,
    ReceiptWord,
    ReceiptWordLabel,
    ValidationStatus,
    ValidationWriteResult,
    parse_receipt_document,
)
from receipt_dynamo.cli import main as cli_main
from receipt_dynamo.schema import create_table_kwargs
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.integration

TABLE = "receipts-test"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
TS = "2026-11-29T03:15:36+00:00"


@pytest.fixture
def ddb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(**create_table_kwargs(TABLE))
        yield client


class Calls:
    """Counts DynamoDB operations made through a client (botocore event hook)."""

    def __init__(self, client: Any) -> None:
        self.counter: Counter[str] = Counter()
        client.meta.events.register("before-call.dynamodb.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.counter[model.name] += 1


def no_sleep_recorder() -> tuple[list[float], Callable[[float], None]]:
    sleeps: list[float] = []
    return sleeps, sleeps.append


def fixture_doc(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"receipt_{name}.json").read_text()))


def proposal(word: ReceiptWord, label: str = "PRODUCT_NAME", **overrides: Any) -> ReceiptWordLabel:
    fields: dict[str, Any] = {
        "image_id": word.image_id,
        "receipt_id": word.receipt_id,
        "line_id": word.line_id,
        "word_id": word.word_id,
        "label": label,
        "reasoning": f"{word.text} looks like a {label.lower()}",
        "timestamp_added": TS,
        "validation_status": ValidationStatus.PENDING,
        "label_proposed_by": "receipt_label:test-model",
    }
    fields.update(overrides)
    return ReceiptWordLabel(**fields)


def stored_labels(ddb: Any, image_id: str) -> list[dict[str, Any]]:
    """Every label item of the image (labels are told apart by their sort key: they carry no TYPE)."""
    pages = ddb.get_paginator("query").paginate(
        TableName=TABLE,
        KeyConditionExpression="PK = :pk",
        FilterExpression="contains(SK, :label)",
        ExpressionAttributeValues={":pk": {"S": f"IMAGE#{image_id}"}, ":label": {"S": "#LABEL#"}},
    )
    return [item for page in pages for item in page["Items"]]


def index_count(ddb: Any, index: str, condition: str, values: dict[str, Any], **kwargs: Any) -> int:
    """How many entries of ``index`` match the key condition (every page)."""
    pages = ddb.get_paginator("query").paginate(
        TableName=TABLE, IndexName=index, KeyConditionExpression=condition, ExpressionAttributeValues=values, **kwargs
    )
    return sum(page["Count"] for page in pages)


# --- reads ----------------------------------------------------------------------------------------


def test_load_then_read_every_fixture_back_sorted(ddb: Any) -> None:
    dynamo = DynamoClient(TABLE, client=ddb)
    loaded = {}
    for path in sorted(FIXTURES.glob("receipt_*.json")):
        details = dynamo.load_receipt_document(json.loads(path.read_text()))
        loaded[(details.receipt.image_id, details.receipt.receipt_id)] = details
    assert sorted(dynamo.iter_receipt_keys()) == sorted(loaded)
    for (image_id, receipt_id), expected in loaded.items():
        calls = Calls(ddb)
        got = dynamo.get_receipt_details(image_id, receipt_id)
        assert got == expected
        assert [ln.line_id for ln in got.lines] == sorted(ln.line_id for ln in got.lines)
        assert calls.counter == Counter({"Query": 1})


def test_iter_receipt_keys_pages_through_the_type_index_and_never_scans(ddb: Any) -> None:
    dynamo = DynamoClient(TABLE, client=ddb)
    expected = set()
    for n in range(23):
        image_id = str(uuid.uuid4())
        receipt_id = n % 3 + 1
        dynamo.add_receipt(Receipt(image_id, receipt_id))
        dynamo.add_receipt_words([ReceiptWord(image_id, receipt_id, 1, 1, "NOISE")])
        expected.add((image_id, receipt_id))
    calls = Calls(ddb)
    keys = list(dynamo.iter_receipt_keys(page_size=5))
    assert len(keys) == len(expected) and set(keys) == expected
    assert calls.counter["Query"] >= 5
    assert calls.counter["Scan"] == 0


def test_get_receipt_details_pages_past_one_megabyte(ddb: Any) -> None:
    image_id = str(uuid.uuid4())
    dynamo = DynamoClient(TABLE, client=ddb)
    dynamo.add_receipt(Receipt(image_id, 1))
    lines = [ReceiptLine(image_id, 1, line_id, "X" * 900) for line_id in range(1, 41)]
    # 40 lines x 60 words x ~1.1 KB = ~2.7 MB: DynamoDB returns at most 1 MB per Query page
    words = [
        ReceiptWord(image_id, 1, line_id, word_id, f"W{line_id}-{word_id}-" + "Z" * 1000)
        for line_id in range(1, 41)
        for word_id in range(1, 61)
    ]
    dynamo.add_receipt_lines(lines)
    dynamo.add_receipt_words(words)
    dynamo.add_receipt_word_labels([proposal(w, "TAX") for w in words[:50]])
    # a neighbouring receipt (same image) whose items must not leak into receipt 1
    dynamo.add_receipt(Receipt(image_id, 10))
    dynamo.add_receipt_words([ReceiptWord(image_id, 10, 1, 1, "OTHER")])
    calls = Calls(ddb)
    got = dynamo.get_receipt_details(image_id, 1)
    assert calls.counter["Query"] >= 3
    assert got.receipt == Receipt(image_id, 1)
    assert got.lines == lines
    assert got.words == sorted(words, key=lambda w: (w.line_id, w.word_id))
    assert len(got.labels) == 50


def test_missing_receipt_raises_receipt_not_found_even_with_stray_children(ddb: Any) -> None:
    dynamo = DynamoClient(TABLE, client=ddb)
    image_id = str(uuid.uuid4())
    dynamo.add_receipt_words([ReceiptWord(image_id, 1, 1, 1, "ORPHAN")])
    with pytest.raises(ReceiptNotFoundError) as info:
        dynamo.get_receipt_details(image_id, 1)
    assert info.value.image_id == image_id and info.value.receipt_id == 1
    assert ReceiptNotFound is ReceiptNotFoundError
    # Lambda reports the raised class's own name as errorType, and Step Functions matches on it. The
    # state machine names this error nowhere (not retried, no Catch: docs/state-machine.md), so the
    # documented name is the contract; pytest.raises would also accept a subclass or a renamed class.
    assert type(info.value).__name__ == "ReceiptNotFoundError"


def items_by_key(client: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["PK"]["S"], i["SK"]["S"]): i for i in client.scan(TableName=TABLE)["Items"]}


def test_mark_receipt_labeled_sets_the_marker_and_touches_nothing_else(ddb: Any) -> None:
    dynamo = DynamoClient(TABLE, client=ddb)
    details = dynamo.load_receipt_document(fixture_doc("grocery"))
    receipt = details.receipt
    word = details.words[0]
    dynamo.add_receipt_word_labels(
        [
            ReceiptWordLabel(
                receipt.image_id, 1, word.line_id, word.word_id, "MERCHANT_NAME", "r", TS, ValidationStatus.VALID
            )
        ]
    )
    before = items_by_key(ddb)

    marked = dynamo.mark_receipt_labeled(receipt.image_id, 1, proposed_by="receipt_label:m", at=TS)

    got = dynamo.get_receipt_details(receipt.image_id, 1)
    assert got.receipt == marked == Receipt(receipt.image_id, 1, labeled_by="receipt_label:m", labeled_at=TS)
    after = items_by_key(ddb)
    receipt_key = (receipt.key["PK"]["S"], receipt.key["SK"]["S"])
    marker = {"labeled_by": {"S": "receipt_label:m"}, "labeled_at": {"S": TS}}
    assert after[receipt_key] == {**before[receipt_key], **marker}
    assert {k: v for k, v in after.items() if k != receipt_key} == {k: v for k, v in before.items() if k != receipt_key}
    # Marking again (a forced re-run) moves the marker.
    dynamo.mark_receipt_labeled(receipt.image_id, 1, proposed_by="receipt_label:other", at="2026-12-01T00:00:00Z")
    again = dynamo.get_receipt_details(receipt.image_id, 1).receipt
    assert (again.labeled_by, again.labeled_at) == ("receipt_label:other", "2026-12-01T00:00:00Z")


def test_mark_receipt_labeled_on_a_missing_receipt_raises_and_creates_nothing(ddb: Any) -> None:
    dynamo = DynamoClient(TABLE, client=ddb)
    image_id = str(uuid.uuid4())
    dynamo.add_receipt_words([ReceiptWord(image_id, 1, 1, 1, "STRAY")])  # children without their Receipt item
    with pytest.raises(ReceiptNotFoundError):
        dynamo.mark_receipt_labeled(image_id, 1, proposed_by="receipt_label:m")
    assert [i["TYPE"]["S"] for i in ddb.scan(TableName=TABLE)["Items"]] == ["RECEIPT_WORD"]
    assert list(dynamo.iter_receipt_keys()) == []


def test_loading_a_document_again_is_a_new_version_and_clears_the_marker_but_keeps_labels(ddb: Any) -> None:
    dynamo = DynamoClient(TABLE, client=ddb)
    doc = fixture_doc("grocery")
    details = dynamo.load_receipt_document(doc)
    word = details.words[0]
    label = ReceiptWordLabel(
        doc["image_id"], 1, word.line_id, word.word_id, "MERCHANT_NAME", "r", TS, ValidationStatus.PENDING
    )
    dynamo.add_receipt_word_labels([label])
    dynamo.mark_receipt_labeled(doc["image_id"], 1, proposed_by="receipt_label:m", at=TS)

    dynamo.load_receipt_document(doc)

    got = dynamo.get_receipt_details(doc["image_id"], 1)
    assert got.receipt == Receipt(doc["image_id"], 1)  # no marker: the next run labels this version
    assert got.labels == [label]


def test_constructor_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"constructor touched client.{name}")

    DynamoClient(TABLE, client=Exploding())

    built: list[str] = []
    operations: list[str] = []

    class Recorded:
        """Stands for the boto3 client: records the operations called on it."""

        def query(self, **kwargs: Any) -> dict[str, Any]:
            operations.append("Query")
            return {"Items": []}

    def create_client(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Recorded:
        built.append(service_name)
        return Recorded()

    # every boto3 client (boto3.client, a boto3 Session's client, a resource) is made here
    monkeypatch.setattr(botocore.session.Session, "create_client", create_client)
    dynamo = DynamoClient(TABLE)
    assert built == [] and operations == []  # no client built, no AWS call
    assert list(dynamo.iter_receipt_keys()) == []  # first use builds the client, once
    assert list(dynamo.iter_receipt_keys()) == []
    assert built == ["dynamodb"] and operations == ["Query", "Query"]


# --- label writes ---------------------------------------------------------------------------------


def test_one_thousand_labels_in_one_call_then_all_skipped(ddb: Any) -> None:
    image_id = str(uuid.uuid4())
    words = [ReceiptWord(image_id, 1, line, word, f"W{word}") for line in range(1, 51) for word in range(1, 21)]
    labels = [proposal(w, "LINE_TOTAL") for w in words]
    dynamo = DynamoClient(TABLE, client=ddb)
    result = dynamo.add_receipt_word_labels(labels)
    assert result.added == labels and result.skipped_existing == []
    assert len(stored_labels(ddb, image_id)) == 1000
    again = dynamo.add_receipt_word_labels([proposal(w, "LINE_TOTAL", reasoning="second run") for w in words])
    assert again.added == [] and len(again.skipped_existing) == 1000
    assert {i["reasoning"]["S"] for i in stored_labels(ddb, image_id)} == {
        f"W{n} looks like a line_total" for n in range(1, 21)
    }
    # reviewers find them through GSI3 by validation status
    pending = ddb.query(
        TableName=TABLE,
        IndexName="GSI3",
        KeyConditionExpression="GSI3PK = :s AND begins_with(GSI3SK, :img)",
        ExpressionAttributeValues={":s": {"S": "VALIDATION_STATUS#PENDING"}, ":img": {"S": f"IMAGE#{image_id}#"}},
        Select="COUNT",
    )
    assert pending["Count"] == 1000


def test_new_labels_are_written_to_the_validation_status_index_only(ddb: Any) -> None:
    dynamo = DynamoClient(TABLE, client=ddb)
    details = dynamo.load_receipt_document(fixture_doc("grocery"))
    labels = [proposal(w) for w in details.words]
    assert len(dynamo.add_receipt_word_labels(labels).added) == len(labels)

    stored = stored_labels(ddb, details.receipt.image_id)
    assert len(stored) == len(labels) and all("TYPE" not in item for item in stored)
    # not in GSITYPE: the type index holds the receipt, its lines and words, and no label
    names = {"ExpressionAttributeNames": {"#t": "TYPE"}}
    assert index_count(ddb, "GSITYPE", "#t = :t", {":t": {"S": "RECEIPT_WORD_LABEL"}}, **names) == 0
    assert index_count(ddb, "GSITYPE", "#t = :t", {":t": {"S": "RECEIPT_WORD"}}, **names) == len(details.words)
    # in GSI3, under the one PENDING key
    pending = {":s": {"S": "VALIDATION_STATUS#PENDING"}, ":img": {"S": f"IMAGE#{details.receipt.image_id}#"}}
    assert index_count(ddb, "GSI3", "GSI3PK = :s AND begins_with(GSI3SK, :img)", pending) == len(labels)
    # ...and read back through the table: recognised by their sort key
    assert dynamo.get_receipt_details(details.receipt.image_id, 1).labels == labels
    assert list(dynamo.iter_receipt_keys()) == [(details.receipt.image_id, 1)]


def test_a_label_written_by_an_earlier_version_with_type_is_read_and_never_overwritten(ddb: Any) -> None:
    dynamo = DynamoClient(TABLE, client=ddb)
    details = dynamo.load_receipt_document(fixture_doc("pharmacy"))
    word = details.words[0]
    earlier = proposal(
        word, "MERCHANT_NAME", validation_status=ValidationStatus.VALID, label_proposed_by="reviewer:ana"
    )
    old_item = {**earlier.to_item(), "TYPE": {"S": "RECEIPT_WORD_LABEL"}}  # the format of earlier versions
    ddb.put_item(TableName=TABLE, Item=old_item)
    new = proposal(details.words[1], "PRODUCT_NAME")

    result = dynamo.add_receipt_word_labels([proposal(word, "MERCHANT_NAME"), new])

    assert [x.label for x in result.skipped_existing] == ["MERCHANT_NAME"] and result.added == [new]
    assert ddb.get_item(TableName=TABLE, Key=earlier.key)["Item"] == old_item  # TYPE and all, unchanged
    assert dynamo.get_receipt_details(details.receipt.image_id, 1).labels == [earlier, new]


@pytest.mark.parametrize("status", ["VALID", "INVALID", "NEEDS_REVIEW", "PENDING", "NONE"])
def test_existing_labels_are_never_changed(ddb: Any, status: str) -> None:
    image_id = str(uuid.uuid4())
    word = ReceiptWord(image_id, 1, 4, 2, "21.80")
    existing = proposal(
        word,
        "GRAND_TOTAL",
        validation_status=status,
        reasoning="checked by a person",
        label_proposed_by="reviewer:ana",
        timestamp_added="2025-01-01T00:00:00Z",
    )
    ddb.put_item(TableName=TABLE, Item=existing.to_item())
    before = ddb.get_item(TableName=TABLE, Key=existing.key)["Item"]
    new = proposal(word, "SUBTOTAL")
    result = DynamoClient(TABLE, client=ddb).add_receipt_word_labels([proposal(word, "GRAND_TOTAL"), new])
    assert [x.label for x in result.skipped_existing] == ["GRAND_TOTAL"]
    assert result.added == [new]
    assert ddb.get_item(TableName=TABLE, Key=existing.key)["Item"] == before


def test_duplicate_keys_in_one_call_are_written_once(ddb: Any) -> None:
    word = ReceiptWord(str(uuid.uuid4()), 1, 1, 1, "MILK")
    first, second = proposal(word), proposal(word, reasoning="again")
    result = DynamoClient(TABLE, client=ddb).add_receipt_word_labels([first, second])
    assert result.added == [first] and result.skipped_existing == [second]
    assert [i["reasoning"]["S"] for i in stored_labels(ddb, word.image_id)] == [first.reasoning]


class Interleaving:
    """A client whose put_item lets another writer create the same key just before ours lands."""

    def __init__(self, real: Any, race: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.real = real
        self.race = race
        self.interleaved: list[tuple[str, str]] = []

    def put_item(self, **kwargs: Any) -> Any:
        key = (kwargs["Item"]["PK"]["S"], kwargs["Item"]["SK"]["S"])
        if key in self.race:
            self.real.put_item(TableName=TABLE, Item=self.race.pop(key))  # the other writer, unconditional
            self.interleaved.append(key)
        return self.real.put_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_label_created_by_another_writer_between_read_and_write_is_not_overwritten(ddb: Any) -> None:
    dynamo_loader = DynamoClient(TABLE, client=ddb)
    details = dynamo_loader.load_receipt_document(fixture_doc("pharmacy"))
    # our side reads the receipt: no labels yet
    read = DynamoClient(TABLE, client=ddb).get_receipt_details(details.receipt.image_id, 1)
    assert read.labels == []
    ours = [proposal(w, "PRODUCT_NAME") for w in read.words[:10]]
    theirs = proposal(
        read.words[3], "PRODUCT_NAME", validation_status="VALID", reasoning="human", label_proposed_by="reviewer:sam"
    )
    racing = Interleaving(ddb, {(theirs.key["PK"]["S"], theirs.key["SK"]["S"]): theirs.to_item()})
    result = DynamoClient(TABLE, client=racing).add_receipt_word_labels(ours)
    assert racing.interleaved  # the other write really happened between our read and our write
    assert result.skipped_existing == [ours[3]]
    assert result.added == ours[:3] + ours[4:]
    after = DynamoClient(TABLE, client=ddb).get_receipt_details(details.receipt.image_id, 1)
    assert [lbl for lbl in after.labels if lbl.word_key == theirs.word_key] == [theirs]
    assert len(after.labels) == 10


class Flaky:
    """Wraps a moto client: throttles chosen put_item calls and leaves batch items unprocessed."""

    def __init__(
        self,
        real: Any,
        *,
        throttle: Callable[[int, dict[str, Any]], bool],
        unprocessed: Callable[[int], int] = lambda n: 0,
        code: str = "ProvisionedThroughputExceededException",
    ):
        self.real = real
        self.throttle = throttle
        self.unprocessed = unprocessed
        self.code = code
        self.put_calls = 0
        self.batch_calls = 0
        self.throttled = 0

    def put_item(self, **kwargs: Any) -> Any:
        self.put_calls += 1
        if self.throttle(self.put_calls, kwargs):
            self.throttled += 1
            raise ClientError({"Error": {"Code": self.code, "Message": "slow down"}}, "PutItem")
        return self.real.put_item(**kwargs)

    def batch_write_item(self, **kwargs: Any) -> Any:
        self.batch_calls += 1
        ((table, requests),) = kwargs["RequestItems"].items()
        keep = self.unprocessed(self.batch_calls)
        if keep:
            done, left = requests[:-keep], requests[-keep:]
            if done:
                self.real.batch_write_item(RequestItems={table: done})
            return {"UnprocessedItems": {table: left}}
        return self.real.batch_write_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_throttled_label_writes_are_retried_until_every_label_is_written_once(ddb: Any) -> None:
    image_id = str(uuid.uuid4())
    words = [ReceiptWord(image_id, 1, line, word, "X") for line in range(1, 16) for word in range(1, 21)]
    labels = [proposal(w) for w in words]
    # the first 3 rounds throttle every third request; later requests go through
    flaky = Flaky(ddb, throttle=lambda n, _: n <= 700 and n % 3 == 0, code="ThrottlingException")
    sleeps, sleep = no_sleep_recorder()
    result = DynamoClient(TABLE, client=flaky, sleep=sleep, concurrency=1).add_receipt_word_labels(labels)
    assert flaky.throttled > 100
    assert sorted(result.added, key=lambda x: x.word_key) == labels and result.skipped_existing == []
    stored = stored_labels(ddb, image_id)
    assert len(stored) == 300 and len({i["SK"]["S"] for i in stored}) == 300
    assert 1 <= len(sleeps) <= 7
    # exponential backoff with full jitter: each sleep within its growing cap
    assert all(0 <= s <= min(5.0, 0.05 * 2**i) for i, s in enumerate(sleeps, start=1))


def test_persistent_throttling_ends_with_an_error_naming_written_and_not_written(ddb: Any) -> None:
    image_id = str(uuid.uuid4())
    words = [ReceiptWord(image_id, 1, 1, word, "X") for word in range(1, 11)]
    existing = proposal(words[0], "TAX", validation_status="VALID")
    ddb.put_item(TableName=TABLE, Item=existing.to_item())
    labels = [proposal(w, "TAX") for w in words]
    hot = {labels[7].key["SK"]["S"], labels[8].key["SK"]["S"]}
    flaky = Flaky(ddb, throttle=lambda _, kw: kw["Item"]["SK"]["S"] in hot)
    sleeps, sleep = no_sleep_recorder()
    client = DynamoClient(TABLE, client=flaky, sleep=sleep, max_attempts=4, concurrency=3)
    with pytest.raises(LabelWriteError) as info:
        client.add_receipt_word_labels(labels)
    err = info.value
    assert err.not_written == [labels[7], labels[8]]
    assert sorted(err.written, key=lambda x: x.word_key) == labels[1:7] + labels[9:]
    assert err.skipped_existing == [labels[0]]
    assert "ProvisionedThroughputExceededException" in str(err) and labels[7].describe() in str(err)
    assert len(sleeps) == 3  # 4 attempts, a sleep between each
    assert len(stored_labels(ddb, image_id)) == 8
    # retrying the same call later is safe: only what is missing gets written
    retry = DynamoClient(TABLE, client=ddb).add_receipt_word_labels(labels)
    assert retry.added == [labels[7], labels[8]]


def test_non_retryable_error_stops_and_reports(ddb: Any) -> None:
    labels = [proposal(ReceiptWord(str(uuid.uuid4()), 1, 1, 1, "X"))]
    with pytest.raises(LabelWriteError) as info:
        DynamoClient("no-such-table", client=ddb, sleep=lambda _: None).add_receipt_word_labels(labels)
    assert info.value.not_written == labels and info.value.written == []
    assert "ResourceNotFoundException" in str(info.value.__cause__.response["Error"]["Code"])  # type: ignore[union-attr]


def test_unprocessed_batch_items_are_retried_when_loading(ddb: Any) -> None:
    doc = fixture_doc("long_warehouse")
    # the first three batch calls leave 10 items unprocessed
    flaky = Flaky(ddb, throttle=lambda *_: False, unprocessed=lambda n: 10 if n <= 3 else 0)
    sleeps, sleep = no_sleep_recorder()
    details = DynamoClient(TABLE, client=flaky, sleep=sleep).load_receipt_document(doc)
    assert len(sleeps) == 3
    assert DynamoClient(TABLE, client=ddb).get_receipt_details(details.receipt.image_id, 1) == details


def test_words_given_twice_are_written_once(ddb: Any) -> None:
    image_id = str(uuid.uuid4())
    dynamo = DynamoClient(TABLE, client=ddb)
    dynamo.add_receipt(Receipt(image_id, 1))
    dynamo.add_receipt_words([ReceiptWord(image_id, 1, 1, 1, "FIRST"), ReceiptWord(image_id, 1, 1, 1, "LAST")])
    assert [w.text for w in dynamo.get_receipt_details(image_id, 1).words] == ["LAST"]


def test_unprocessed_items_that_never_clear_raise_item_write_error(ddb: Any) -> None:
    flaky = Flaky(ddb, throttle=lambda *_: False, unprocessed=lambda n: 2)
    client = DynamoClient(TABLE, client=flaky, sleep=lambda _: None, max_attempts=3)
    with pytest.raises(ItemWriteError) as info:
        client.load_receipt_document(fixture_doc("grocery"))
    assert info.value.unwritten_keys and info.value.written_keys
    # the receipt item is written last, so an incomplete receipt is never listed
    assert list(DynamoClient(TABLE, client=ddb).iter_receipt_keys()) == []


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_creates_the_table_and_loads_files_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with mock_aws():
        files = [str(p) for p in sorted(FIXTURES.glob("receipt_*.json"))]
        code = cli_main(["load", *files, "--table", "dev", "--create-table"], client_factory=boto3.client)
        out = capsys.readouterr().out
        assert code == 0, out
        assert f"loaded {len(files)} receipt(s)" in out
        ddb = boto3.client("dynamodb")
        assert ddb.describe_time_to_live(TableName="dev")["TimeToLiveDescription"]["AttributeName"] == "time_to_live"
        keys = set(DynamoClient("dev", client=ddb).iter_receipt_keys())
        assert keys == {(parse_receipt_document(json.loads(Path(f).read_text())).receipt.image_id, 1) for f in files}


def test_cli_module_loads_into_a_dynamodb_endpoint(tmp_path: Path) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        bad = tmp_path / "bad.json"
        doc = copy.deepcopy(fixture_doc("gas_station"))
        doc["lines"][1]["words"].append({"word_id": 1, "text": "DUP"})
        bad.write_text(json.dumps(doc))
        base = [
            sys.executable,
            "-m",
            "receipt_dynamo",
            "load",
            "--table",
            "local",
            "--endpoint-url",
            f"http://{host}:{port}",
        ]
        rejected = subprocess.run([*base, str(bad)], env=env, capture_output=True, text=True, timeout=60)
        assert rejected.returncode == 2
        assert f"{bad}: lines[1].words[4].word_id: duplicate word_id 1 in line" in rejected.stderr
        files = [str(FIXTURES / "receipt_gas_station.json"), str(FIXTURES / "receipt_restaurant.json")]
        done = subprocess.run([*base, "--create-table", *files], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "loaded 2 receipt(s), 134 word(s) into local" in done.stdout
        remote = boto3.client("dynamodb", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
        assert len(list(DynamoClient("local", client=remote).iter_receipt_keys())) == 2
    finally:
        server.stop()


# --- judging PENDING labels: conditional status changes ----------------------------------------------

JUDGED_AT = "2026-12-01T10:00:00+00:00"
VALIDATOR = "receipt_label:judge-model"


def stored_label(ddb: Any, label: ReceiptWordLabel) -> dict[str, Any]:
    return dict(ddb.get_item(TableName=TABLE, Key=label.key, ConsistentRead=True)["Item"])


def pending_count(ddb: Any, status: str = "PENDING") -> int:
    return index_count(ddb, "GSI3", "GSI3PK = :s", {":s": {"S": f"VALIDATION_STATUS#{status}"}})


def judge(client: Any, *judgements: LabelJudgement) -> ValidationWriteResult:
    return DynamoClient(TABLE, client=client).set_label_validations(
        judgements, validated_by=VALIDATOR, validated_at=JUDGED_AT
    )


def test_pending_receipts_are_listed_once_each_across_pages_and_leave_the_list_once_judged(ddb: Any) -> None:
    store = DynamoClient(TABLE, client=ddb)
    details = [store.load_receipt_document(fixture_doc(name)) for name in ("grocery", "pharmacy")]
    proposed = {d.receipt.image_id: [proposal(w) for w in d.words[:4]] for d in details}
    for labels in proposed.values():
        store.add_receipt_word_labels(labels)
    listed = list(store.iter_pending_receipts(page_size=3))  # 8 index entries over 3 pages
    assert sorted(listed) == sorted((d.receipt.image_id, 1) for d in details) and len(listed) == 2
    first = details[0].receipt.image_id
    result = judge(ddb, *(LabelJudgement.of(lbl, ValidationStatus.VALID, "fits") for lbl in proposed[first]))
    assert len(result.updated) == 4 and result.skipped_changed == []
    assert list(store.iter_pending_receipts()) == [(details[1].receipt.image_id, 1)]


def test_a_judgement_sets_the_status_the_reason_and_the_validator_and_moves_the_index_key(ddb: Any) -> None:
    word = ReceiptWord(str(uuid.uuid4()), 1, 2, 3, "2026-11-29")
    label = proposal(word, "TAX")
    DynamoClient(TABLE, client=ddb).add_receipt(Receipt(word.image_id, 1))
    DynamoClient(TABLE, client=ddb).add_receipt_word_labels([label])
    before = stored_label(ddb, label)

    result = judge(ddb, LabelJudgement.of(label, ValidationStatus.INVALID, "a date, not a tax"))

    assert result.updated and not result.skipped_changed
    after = stored_label(ddb, label)
    assert after["validation_status"] == {"S": "INVALID"} and after["GSI3PK"] == {"S": "VALIDATION_STATUS#INVALID"}
    assert after["GSI3SK"] == before["GSI3SK"]  # the sort key stays: the label keeps its place in each status
    assert (after["validation_reason"], after["validated_by"], after["validated_at"]) == (
        {"S": "a date, not a tax"},
        {"S": VALIDATOR},
        {"S": JUDGED_AT},
    )
    unchanged = {k: v for k, v in after.items() if k not in {"validation_status", "GSI3PK", *VALIDATION_FIELDS}}
    assert unchanged == {k: v for k, v in before.items() if k not in {"validation_status", "GSI3PK"}}
    assert (pending_count(ddb), pending_count(ddb, "INVALID")) == (0, 1)
    read = DynamoClient(TABLE, client=ddb).get_receipt_details(word.image_id, 1).labels
    assert read == [
        replace(
            label,
            validation_status=ValidationStatus.INVALID,
            validation_reason="a date, not a tax",
            validated_by=VALIDATOR,
            validated_at=JUDGED_AT,
        )
    ]


VALIDATION_FIELDS = ("validation_reason", "validated_by", "validated_at")


@pytest.mark.parametrize("status", ["VALID", "INVALID"])
def test_a_label_a_person_already_decided_is_skipped_and_left_as_it_is(ddb: Any, status: str) -> None:
    word = ReceiptWord(str(uuid.uuid4()), 1, 1, 1, "MILK")
    decided = proposal(word, validation_status=status, validated_by="reviewer:alice", validated_at=TS)
    ddb.put_item(TableName=TABLE, Item=decided.to_item())
    before = stored_label(ddb, decided)

    result = judge(ddb, LabelJudgement.of(decided, ValidationStatus.NEEDS_REVIEW, "unclear"))

    assert result.updated == [] and len(result.skipped_changed) == 1
    assert stored_label(ddb, decided) == before


@pytest.mark.parametrize("proposed_by", ["reviewer:sam", None])
def test_a_pending_label_proposed_by_someone_else_is_skipped(ddb: Any, proposed_by: str | None) -> None:
    word = ReceiptWord(str(uuid.uuid4()), 1, 1, 1, "MILK")
    theirs = proposal(word, label_proposed_by=proposed_by)
    ddb.put_item(TableName=TABLE, Item=theirs.to_item())
    before = stored_label(ddb, theirs)

    result = judge(ddb, LabelJudgement.of(theirs, ValidationStatus.INVALID, "no"))

    assert result.skipped_changed and not result.updated
    assert stored_label(ddb, theirs) == before and pending_count(ddb) == 1


def test_a_judgement_of_a_label_that_is_gone_creates_nothing(ddb: Any) -> None:
    label = proposal(ReceiptWord(str(uuid.uuid4()), 1, 1, 1, "MILK"))
    result = judge(ddb, LabelJudgement.of(label, ValidationStatus.VALID))
    assert result.skipped_changed and stored_labels(ddb, label.image_id) == []


class Deciding:
    """A client whose update_item lets a person decide the same label just before ours lands."""

    def __init__(self, real: Any, decisions: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.real = real
        self.decisions = decisions
        self.interleaved: list[tuple[str, str]] = []

    def update_item(self, **kwargs: Any) -> Any:
        key = (kwargs["Key"]["PK"]["S"], kwargs["Key"]["SK"]["S"])
        if key in self.decisions:
            self.real.put_item(TableName=TABLE, Item=self.decisions.pop(key))  # the reviewer's write
            self.interleaved.append(key)
        return self.real.update_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_decision_made_between_our_read_and_our_write_is_never_overwritten(ddb: Any) -> None:
    store = DynamoClient(TABLE, client=ddb)
    details = store.load_receipt_document(fixture_doc("pharmacy"))
    ours = [proposal(w) for w in details.words[:3]]
    store.add_receipt_word_labels(ours)
    read = store.get_receipt_details(details.receipt.image_id, 1).labels  # all three PENDING when we read
    assert {lbl.validation_status for lbl in read} == {ValidationStatus.PENDING}
    person = replace(ours[1], validation_status=ValidationStatus.VALID, validated_by="reviewer:sam", validated_at=TS)
    racing = Deciding(ddb, {(person.key["PK"]["S"], person.key["SK"]["S"]): person.to_item()})

    result = judge(racing, *(LabelJudgement.of(lbl, ValidationStatus.INVALID, "not a product") for lbl in read))

    assert racing.interleaved
    assert [j.word_id for j in result.skipped_changed] == [ours[1].word_id]
    assert [j.word_id for j in result.updated] == [ours[0].word_id, ours[2].word_id]
    after = {lbl.word_key: lbl for lbl in store.get_receipt_details(details.receipt.image_id, 1).labels}
    assert after[person.word_key] == person
    assert after[ours[0].word_key].validation_status is ValidationStatus.INVALID


class ThrottledUpdates:
    """Throttles every update_item after the first ``allowed``."""

    def __init__(self, real: Any, allowed: int) -> None:
        self.real = real
        self.allowed = allowed
        self.calls = 0

    def update_item(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > self.allowed:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateItem")
        return self.real.update_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_throttling_that_outlasts_the_rounds_raises_dynamo_throttled_error_keeping_what_was_judged(
    ddb: Any,
) -> None:
    labels = [proposal(ReceiptWord(str(uuid.uuid4()), 1, 1, w, "X")) for w in (1, 2)]
    DynamoClient(TABLE, client=ddb).add_receipt_word_labels(labels)
    throttled = ThrottledUpdates(ddb, allowed=1)
    sleeps, sleep = no_sleep_recorder()
    client = DynamoClient(TABLE, client=throttled, sleep=sleep, max_attempts=3, concurrency=1)
    with pytest.raises(DynamoThrottledError) as info:
        client.set_label_validations(
            [LabelJudgement.of(lbl, ValidationStatus.VALID) for lbl in labels], validated_by=VALIDATOR
        )
    assert (info.value.operation, info.value.code) == ("UpdateItem", "ThrottlingException")
    assert len(sleeps) == 2 and throttled.calls == 4
    assert stored_label(ddb, labels[0])["validation_status"] == {"S": "VALID"}
    assert stored_label(ddb, labels[1])["validation_status"] == {"S": "PENDING"}  # safe to judge again
