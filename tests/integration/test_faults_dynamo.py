"""Fault injection, DynamoDB side: throttling, unprocessed items, concurrent runs, human labels.

Rows of the README "Failure behaviour" table. Faults are injected at the HTTP layer
(tests/fault_injection.py: a botocore ``before-send`` hook answers before moto), so botocore's
retries and error parsing run as against AWS; the handler is the real ProcessReceipt handler on
moto with the loopback Ollama server. No real sleeps: every retry sleep is recorded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from receipt_dynamo import DynamoClient, DynamoThrottledError, ItemWriteError, LabelWriteError, ValidationStatus, keys
from tests.fault_injection import (
    FIXTURES,
    TABLE,
    HttpFaults,
    ProcessWorld,
    process_world,
)
from tests.helpers import LambdaContext, load_handler, person_label
from tests.ollama_server import OllamaServer, RecordedRequest, ScriptedResponse, label_words_responder

pytestmark = pytest.mark.integration


def alpha_words(text: str) -> str | None:
    return "PRODUCT_NAME" if text.isalpha() else None


@pytest.fixture
def world(ollama_server: OllamaServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcessWorld]:
    ollama_server.responder = label_words_responder(alpha_words)
    with process_world(ollama_server, monkeypatch, name="faults_dynamo") as w:
        yield w


def label_items(items: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The label items (told apart by their sort key: label items carry no TYPE)."""
    return {k: v for k, v in items.items() if keys.is_label_sk(k[1])}


def marker(world: ProcessWorld, event: dict[str, Any]) -> str | None:
    """The receipt's completion marker (labeled_by), read with a client that has no fault hooks."""
    return DynamoClient(TABLE).get_receipt_details(event["image_id"], event["receipt_id"]).receipt.labeled_by


# ---- reads --------------------------------------------------------------------------------------


def test_read_throttling_that_clears_is_absorbed_by_botocore_retries(world: ProcessWorld) -> None:
    event = world.load()
    faults = HttpFaults(world.ddb, "Query", when=lambda n: n <= 3)

    result = world.invoke(event)

    assert faults.failed == 3 and result["labels_added"] > 0
    assert result["labels_added"] == len(world.labels(event))


def test_read_throttling_that_never_clears_fails_the_receipt_before_any_llm_call_or_write(world: ProcessWorld) -> None:
    event = world.load()
    before = world.items()
    faults = HttpFaults(world.ddb, "Query", when=lambda n: True)

    with pytest.raises(DynamoThrottledError) as raised:
        world.invoke(event)

    # What Step Functions records for the item: the error name is the exception's class. Unmapped, it
    # would be botocore's modeled class (ProvisionedThroughputExceededException, ThrottlingException,
    # ...); the handler maps every throttling code to one documented name, which the state machine
    # retries. The cause names the call, the code and botocore's retries.
    assert type(raised.value).__name__ == "DynamoThrottledError"
    assert (raised.value.operation, raised.value.code) == ("Query", "ProvisionedThroughputExceededException")
    assert isinstance(raised.value.__cause__, ClientError)
    assert str(raised.value).startswith("DynamoDB Query throttled (ProvisionedThroughputExceededException)")
    assert "Query operation (reached max retries: 3)" in str(raised.value)
    assert faults.seen == 4  # bounded: botocore's standard retry mode, 4 attempts, then the error
    assert world.server.chat_requests == []
    assert world.calls.writes() == []
    assert world.items() == before


# ---- label writes -------------------------------------------------------------------------------


def test_write_throttling_that_clears_writes_every_label_exactly_once(world: ProcessWorld) -> None:
    event = world.load()
    # The first 60 PutItem requests are throttled: some labels exhaust botocore's 4 attempts and go
    # to receipt_dynamo's retry rounds.
    faults = HttpFaults(world.ddb, "PutItem", when=lambda n: n <= 60)

    result = world.invoke(event)

    labels = world.labels(event)
    assert faults.failed == 60
    assert result["labels_added"] == len(labels) > 0
    assert result["labels_skipped_existing"] == 0
    assert faults.seen - faults.failed == len(labels)  # one successful PutItem per label, no second write
    assert {label.validation_status for label in labels} == {ValidationStatus.PENDING}


def test_write_throttling_that_never_clears_raises_label_write_error_and_the_retry_completes_the_receipt(
    world: ProcessWorld,
) -> None:
    event = world.load()
    before = world.items()
    faults = HttpFaults(world.ddb, "PutItem", when=lambda n: n > 5)  # five labels get in, then throttled for good

    with pytest.raises(LabelWriteError) as raised:
        world.invoke(event)

    error = raised.value
    assert type(error).__name__ == "LabelWriteError"
    assert str(error).startswith("PutItem still throttled (ProvisionedThroughputExceededException) after 8 attempts")
    assert f"5 label(s) written, 0 skipped as existing, {len(error.not_written)} not written" in str(error)
    assert len(error.written) == 5 and error.not_written
    # bounded: 8 rounds (PutItem calls) for each label that never got in, each call at most botocore's
    # 4 HTTP attempts (standard retry mode, fewer once its retry quota is spent)
    puts = world.calls.names.count("PutItem")
    assert puts == 5 + 8 * len(error.not_written)
    assert puts <= faults.seen <= 4 * puts
    after = world.items()
    new = {k: v for k, v in after.items() if k not in before}
    # Each label is one conditional PutItem: it is in the table whole, or not at all.
    assert new == {(lbl.key["PK"]["S"], lbl.key["SK"]["S"]): lbl.to_item() for lbl in error.written}
    assert all(after[k] == v for k, v in before.items())
    assert marker(world, event) is None  # labeling did not finish: no completion marker
    assert "UpdateItem" not in world.calls.names

    # The throttling clears; Step Functions retries the item (the same event): the receipt carries
    # labels of this pipeline but no marker, so it is labeled again and completed.
    faults.remove()
    puts_before = world.calls.names.count("PutItem")
    completed = world.invoke(event)

    final = world.items()
    assert completed["already_labeled"] is False
    assert completed["labels_added"] == len(error.not_written)  # the missing labels, written now
    assert completed["labels_skipped_existing"] == 0  # the model was asked only about unlabeled words
    assert world.calls.names.count("PutItem") - puts_before == len(error.not_written)  # each label written once
    assert all(final[k] == v for k, v in after.items() if v.get("TYPE", {}).get("S") != "RECEIPT")  # nothing changed
    assert set(label_items(final)) == set(label_items(after)) | {
        (lbl.key["PK"]["S"], lbl.key["SK"]["S"]) for lbl in error.not_written
    }
    assert marker(world, event) == "receipt_label:loopback-model"
    # Converged: the next run makes no LLM call and no write.
    calls, writes = len(world.server.chat_requests), len(world.calls.writes())
    assert world.invoke(event)["already_labeled"] is True
    assert (len(world.server.chat_requests), len(world.calls.writes())) == (calls, writes)


def test_a_marker_write_throttled_for_good_raises_dynamo_throttled_error_and_the_retry_sets_it(
    world: ProcessWorld,
) -> None:
    event = world.load()
    faults = HttpFaults(world.ddb, "UpdateItem", when=lambda n: True)

    with pytest.raises(DynamoThrottledError) as raised:
        world.invoke(event)

    assert (raised.value.operation, raised.value.code) == ("UpdateItem", "ProvisionedThroughputExceededException")
    assert world.calls.names.count("UpdateItem") == 8  # receipt_dynamo's bounded rounds
    labels = label_items(world.items())
    assert labels and marker(world, event) is None
    faults.remove()
    retry = world.invoke(event)
    assert retry["labels_added"] == 0 and label_items(world.items()) == labels
    assert marker(world, event) == "receipt_label:loopback-model"


def test_unprocessed_items_that_never_clear_end_with_item_write_error_and_no_listed_half_receipt(
    world: ProcessWorld,
) -> None:
    doc = json.loads((FIXTURES / "receipt_long_warehouse.json").read_text())

    def nothing_processed(request: Any) -> tuple[int, bytes]:
        return 200, json.dumps({"UnprocessedItems": json.loads(request.body)["RequestItems"]}).encode()

    # The first BatchWriteItem (25 lines/words) goes through, then DynamoDB never processes anything.
    faults = HttpFaults(world.ddb, "BatchWriteItem", when=lambda n: n > 1, respond=nothing_processed)
    loader = DynamoClient(TABLE, client=world.ddb, sleep=lambda _: None)

    with pytest.raises(ItemWriteError) as raised:
        loader.load_receipt_document(doc)

    assert str(raised.value).startswith("BatchWriteItem left items unprocessed after 8 attempts: 25 item(s) written")
    assert faults.seen == 1 + 8  # bounded retries
    items = world.items()
    assert len(items) == 25
    assert all(item["TYPE"]["S"] in ("RECEIPT_LINE", "RECEIPT_WORD") for item in items.values())
    # The Receipt item is written last: the half-loaded receipt is not listed, so no run picks it up.
    assert list(DynamoClient(TABLE).iter_receipt_keys()) == []
    faults.remove()
    loader.load_receipt_document(doc)  # loading again (idempotent) completes it
    assert list(DynamoClient(TABLE).iter_receipt_keys()) == [(doc["image_id"], doc["receipt_id"])]


# ---- concurrency and human labels --------------------------------------------------------------


def test_the_same_receipt_processed_twice_at_the_same_time_writes_each_label_once(
    world: ProcessWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = world.load()
    # Two containers (two module copies, each with its own clients), both past the "already labeled"
    # read before either writes: the loopback server answers only once both asked.
    second = load_handler(world.handler.__spec__.origin, "process_receipt_handler_faults_second")  # type: ignore[union-attr]
    second._dynamo = DynamoClient(TABLE, client=boto3.client("dynamodb"), sleep=lambda _: None)
    both_asked = threading.Barrier(2, timeout=20)
    answer = label_words_responder(alpha_words)

    def together(request: RecordedRequest) -> ScriptedResponse:
        both_asked.wait()
        return answer(request)

    world.server.responder = together
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run(handler: Any) -> None:
        try:
            results.append(handler.lambda_handler(dict(event), LambdaContext()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(h,)) for h in (world.handler, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == [] and len(results) == 2
    labels = label_items(world.items())
    assert len(world.server.chat_requests) == 2
    assert all(r["already_labeled"] is False for r in results)
    # Every label was created by exactly one of the two; the other found it and skipped it.
    assert sum(r["labels_added"] for r in results) == len(labels) > 0
    assert all(r["labels_added"] + r["labels_skipped_existing"] == len(labels) for r in results)
    details = world.store.get_receipt_details(event["image_id"], event["receipt_id"])
    assert len(labels) == sum(1 for w in details.words if w.text.isalpha())


def test_valid_and_invalid_labels_are_never_changed(world: ProcessWorld) -> None:
    event = world.load()
    details = world.store.get_receipt_details(event["image_id"], event["receipt_id"])
    words = [w for w in details.words if w.text.isalpha()]
    assert len(words) >= 6
    statuses = [ValidationStatus.VALID, ValidationStatus.INVALID, ValidationStatus.NEEDS_REVIEW, ValidationStatus.NONE]
    reviewed = [person_label(w, "MERCHANT_NAME", s) for w, s in zip(words, statuses, strict=False)]
    world.store.add_receipt_word_labels(reviewed)
    # Labels a person saves while the model is thinking (after the handler's read): same keys as the
    # model is about to propose.
    racing = [
        person_label(words[4], "PRODUCT_NAME", ValidationStatus.VALID, by="reviewer:bob"),
        person_label(words[5], "PRODUCT_NAME", ValidationStatus.INVALID, by="reviewer:bob"),
    ]
    answer = label_words_responder(alpha_words)

    def person_saves_then_answer(request: RecordedRequest) -> ScriptedResponse:
        DynamoClient(TABLE).add_receipt_word_labels(racing)
        labels = json.loads(answer(request).text)["labels"]
        # ...and the model also proposes other labels for the reviewed words.
        labels += [
            {"line_id": r.line_id, "word_id": r.word_id, "label": "ADDRESS_LINE", "reasoning": "x"} for r in reviewed
        ]
        labels += [
            {"line_id": r.line_id, "word_id": r.word_id, "label": "GRAND_TOTAL", "reasoning": "y"} for r in reviewed
        ]
        return ScriptedResponse.answer({"labels": labels})

    world.server.responder = person_saves_then_answer
    protected = {(lbl.key["PK"]["S"], lbl.key["SK"]["S"]): lbl.to_item() for lbl in reviewed + racing}

    result = world.invoke(event)

    after = world.items()
    assert all(after[key] == item for key, item in protected.items())  # byte for byte
    assert result["labels_skipped_existing"] == len(racing)  # found at write time, not overwritten
    assert result["labels_added"] > 0
    reviewed_words = {r.word_key for r in reviewed}
    assert all(
        lbl.label == "MERCHANT_NAME" for lbl in world.labels(event) if lbl.word_key in reviewed_words
    )  # no second label on a reviewed word
