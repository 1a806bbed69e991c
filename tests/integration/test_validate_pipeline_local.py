"""ValidatePendingLabels end to end: the synthesized validation state machine on moto with the real handlers.

Each test first labels receipts with a CreateLabels run (PENDING labels proposed by this pipeline),
then runs the validation state machine; the loopback Ollama server judges every listed label with
the stand-in rule of ``local_pipeline.demo`` (``stand_in_judgement``), so what each label must
become is known. What a user cares about: the PENDING labels become VALID / INVALID / NEEDS_REVIEW
as the model says, with who, when and why, and leave the PENDING index; a person's decision is never
overwritten; a receipt whose answers are garbage changes nothing and fails alone, within the
template's tolerance; a second run makes no LLM call and changes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from local_pipeline.demo import labels_to_judge_in_prompt, stand_in_judgement, stand_in_reason, stand_in_responder
from local_pipeline.harness import LocalPipeline, RunResult
from local_pipeline.moto_shims import EXCEED_TOLERATED_FAILURE_THRESHOLD
from receipt_dynamo import ReceiptWordLabel, ValidationStatus
from tests.helpers import PERSON, copy_of, fixture_documents, person_label
from tests.ollama_server import OllamaServer, RecordedRequest, ScriptedResponse

pytestmark = pytest.mark.integration

MODEL = "loopback-model"
VALIDATED_BY = f"receipt_label:{MODEL}"
GARBAGE_WORD = "QQGARBLEDQQ"  # the judge answers garbage for a receipt holding this word
RACE_WORD = "QQRACEQQ"  # while the judge reads a receipt holding this word, a person decides its label
JUDGED = ("validation_status", "GSI3PK", "validation_reason", "validated_by", "validated_at")

Key = tuple[str, int]
Items = dict[str, dict[str, Any]]


def mentions(request: RecordedRequest, word: str) -> bool:
    return any(word in str(message.get("content") or "") for message in request.messages)


class Judge:
    """The loopback server's answers: the stand-in labels and judgements; garbage for GARBAGE_WORD receipts."""

    def __init__(self) -> None:
        self.stand_in = stand_in_responder()
        self.on_judging: list[Any] = []  # callables run when a judging request arrives (before it is answered)

    def __call__(self, request: RecordedRequest) -> ScriptedResponse:
        if labels_to_judge_in_prompt(request):
            for action in self.on_judging:
                action(request)
            if mentions(request, GARBAGE_WORD):
                return ScriptedResponse.answer("Looks fine to me! All VALID, I think, mostly.")
        return self.stand_in(request)


@pytest.fixture(scope="module")
def template(synthesized: Any) -> dict[str, Any]:
    return dict(synthesized.stacks[0].template)


@pytest.fixture
def world(template: dict[str, Any]) -> Iterator[tuple[LocalPipeline, OllamaServer, Judge]]:
    judge = Judge()
    with (
        OllamaServer(responder=judge) as server,
        LocalPipeline(template, ollama_base_url=server.url, ollama_model=MODEL) as local,
    ):
        yield local, server, judge


def label_with_a_create_run(local: LocalPipeline, documents: list[dict[str, Any]]) -> list[Key]:
    keys = local.load_receipts(documents)
    run = local.run(name=f"create-{uuid.uuid4().hex[:8]}")
    assert run.kind == "create" and run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output is not None and run.output["failed"] == 0
    return keys


def validate(local: LocalPipeline, **kwargs: Any) -> RunResult:
    return local.run(kind="validate", name=f"validate-{uuid.uuid4().hex[:8]}", **kwargs)


def item_id(key: dict[str, Any]) -> str:
    """``<PK> <SK>`` of an item (or of a key): labels of two receipts may share a sort key."""
    return f"{key['PK']['S']} {key['SK']['S']}"


def raw_labels(local: LocalPipeline, key: Key) -> Items:
    """PK and SK -> the raw DynamoDB item of every label of the receipt (every attribute, GSI keys included)."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    labels = local.dynamo().get_receipt_details(*key).labels
    return {
        item_id(label.key): client.get_item(TableName=local.table_name, Key=label.key, ConsistentRead=True)["Item"]
        for label in labels
    }


def word_texts(local: LocalPipeline, key: Key) -> dict[tuple[int, int], str]:
    return {(w.line_id, w.word_id): w.text for w in local.dynamo().get_receipt_details(*key).words}


def without(item: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in names}


def write_person_label(local: LocalPipeline, key: Key, word_index: int, label: str, status: ValidationStatus) -> str:
    """A label a person wrote (``reviewer:alice``) on the receipt's ``word_index``-th word; returns its item id."""
    written = person_label(local.dynamo().get_receipt_details(*key).words[word_index], label, status)
    assert len(local.dynamo().add_receipt_word_labels([written]).added) == 1
    return item_id(written.key)


def decide_as_a_person(local: LocalPipeline, item: dict[str, Any], status: ValidationStatus) -> None:
    """What a reviewer's tool writes when a person decides a label: status, index key, who, when, why."""
    boto3.client("dynamodb", region_name="us-east-1").update_item(
        TableName=local.table_name,
        Key={"PK": item["PK"], "SK": item["SK"]},
        UpdateExpression="SET validation_status = :s, GSI3PK = :pk, validated_by = :by, validated_at = :at, "
        "validation_reason = :why",
        ExpressionAttributeValues={
            ":s": {"S": status.value},
            ":pk": {"S": f"VALIDATION_STATUS#{status.value}"},
            ":by": {"S": PERSON},
            ":at": {"S": "2026-02-03T04:05:06+00:00"},
            ":why": {"S": "decided by a person"},
        },
    )


def pipeline_pending(items: Items) -> Items:
    return {
        sk: item
        for sk, item in items.items()
        if item["validation_status"]["S"] == "PENDING" and item["label_proposed_by"]["S"].startswith("receipt_label:")
    }


def test_validate_turns_each_pending_label_valid_invalid_or_needs_review_as_the_model_says_with_who_when_why(
    world: tuple[LocalPipeline, OllamaServer, Judge],
) -> None:
    """Every PENDING label of the fixtures gets the model's status, validated_by/at, its reason; GSI3PK moves."""
    local, server, _ = world
    keys = label_with_a_create_run(local, fixture_documents())
    before = {key: raw_labels(local, key) for key in keys}
    assert all(before[key] and pipeline_pending(before[key]) == before[key] for key in keys)
    calls_before = len(server.chat_requests)
    started = datetime.now(UTC)

    run = validate(local)

    finished = datetime.now(UTC)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output is not None
    assert (run.output["receipt_count"], run.output["succeeded"], run.output["failed"]) == (len(keys), len(keys), 0)
    results = {(i.event["image_id"], i.event["receipt_id"]): i.result for i in run.invocations_of("ValidateReceipt")}
    assert set(results) == set(keys) and all(i.ok for i in run.invocations)
    seen: set[str] = set()
    for key in keys:
        texts = word_texts(local, key)
        after = raw_labels(local, key)
        assert set(after) == set(before[key])  # no label added or removed
        expected: dict[str, int] = {"VALID": 0, "INVALID": 0, "NEEDS_REVIEW": 0}
        for sk, item in after.items():
            label = ReceiptWordLabel.from_item(item)
            text = texts[label.word_key]
            status = stand_in_judgement(text, label.label)
            expected[status] += 1
            seen.add(status)
            assert label.validation_status.value == status, (sk, text)
            assert item["GSI3PK"] == {"S": f"VALIDATION_STATUS#{status}"}
            assert item["GSI3SK"] == before[key][sk]["GSI3SK"]  # the index sort key stays
            assert label.validated_by == VALIDATED_BY
            assert label.validation_reason == stand_in_reason(text, label.label, status)
            assert label.validated_at is not None
            at = datetime.fromisoformat(label.validated_at)
            offset = at.utcoffset()
            assert offset is not None and offset.total_seconds() == 0  # ISO 8601 UTC
            assert started <= at <= finished
            assert without(item, JUDGED) == without(before[key][sk], JUDGED)  # nothing else changed
        result = results[key]
        assert result["labels_pending"] == len(after)
        assert (result["labels_valid"], result["labels_invalid"], result["labels_needs_review"]) == (
            expected["VALID"],
            expected["INVALID"],
            expected["NEEDS_REVIEW"],
        )
        assert (result["labels_skipped_changed"], result["llm_calls"]) == (0, 1)
    assert seen == {"VALID", "INVALID", "NEEDS_REVIEW"}  # the fixtures exercise every judgement
    assert list(local.dynamo().iter_pending_receipts()) == []  # nothing left in the PENDING index
    # The preflight's capped call, then one judging call per receipt.
    assert len(server.chat_requests) - calls_before == 1 + len(keys)
    judging = [r for r in server.chat_requests[calls_before:] if labels_to_judge_in_prompt(r)]
    assert len(judging) == len(keys)


def test_validate_never_changes_a_persons_valid_invalid_or_pending_label_nor_a_pipeline_label_a_person_decided(
    world: tuple[LocalPipeline, OllamaServer, Judge],
) -> None:
    """A person's labels, and this pipeline's labels a person already decided (before the run or while the
    model judges the receipt), stay exactly as they were; a receipt with only a person's PENDING label
    makes no LLM call."""
    local, server, judge = world
    documents = fixture_documents()[:2]
    racing = copy_of(documents[0], marker=RACE_WORD)
    first, second, raced = label_with_a_create_run(local, [*documents, racing])
    (only_a_persons,) = local.load_receipts([copy_of(documents[1])])  # loaded after labeling: no pipeline label

    protected = {
        write_person_label(local, first, 0, "MERCHANT_NAME", ValidationStatus.VALID),
        write_person_label(local, first, 1, "ADDRESS_LINE", ValidationStatus.INVALID),
        write_person_label(local, first, 2, "PHONE_NUMBER", ValidationStatus.PENDING),  # not ours: not judged
        write_person_label(local, only_a_persons, 0, "MERCHANT_NAME", ValidationStatus.PENDING),
    }
    decided = sorted(pipeline_pending(raw_labels(local, second)).items())[:2]
    decide_as_a_person(local, decided[0][1], ValidationStatus.VALID)
    decide_as_a_person(local, decided[1][1], ValidationStatus.INVALID)
    protected.update(sk for sk, _ in decided)
    (race_item,) = [
        item for item in raw_labels(local, raced).values() if ReceiptWordLabel.from_item(item).word_key == (1, 1)
    ]  # the label of RACE_WORD, the receipt's first word

    def person_decides_while_the_model_judges(request: RecordedRequest) -> None:
        if mentions(request, RACE_WORD):
            decide_as_a_person(local, race_item, ValidationStatus.INVALID)

    judge.on_judging.append(person_decides_while_the_model_judges)
    keys = [first, second, raced, only_a_persons]
    protected_before = {sk: item for key in keys for sk, item in raw_labels(local, key).items() if sk in protected}
    assert len(protected_before) == len(protected) == 6
    second_pending = len(pipeline_pending(raw_labels(local, second)))
    calls_before = len(server.chat_requests)

    run = validate(local)

    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output is not None and (run.output["receipt_count"], run.output["failed"]) == (4, 0)
    after = {sk: item for key in keys for sk, item in raw_labels(local, key).items()}
    for sk, item in protected_before.items():
        assert after[sk] == item, f"{sk} changed"
    race_after = after[item_id(race_item)]
    assert (race_after["validated_by"], race_after["validation_status"]) == ({"S": PERSON}, {"S": "INVALID"})
    results = {(i.event["image_id"], i.event["receipt_id"]): i.result for i in run.invocations_of("ValidateReceipt")}
    assert results[raced]["labels_skipped_changed"] == 1  # the person's decision won: reported, not overwritten
    assert results[second]["labels_pending"] == second_pending  # the two decided ones are not judged again
    assert results[only_a_persons] == {
        "image_id": only_a_persons[0],
        "receipt_id": 1,
        "labels_pending": 0,
        "labels_valid": 0,
        "labels_invalid": 0,
        "labels_needs_review": 0,
        "labels_skipped_changed": 0,
        "llm_calls": 0,
    }
    # Every label of this pipeline that was PENDING is now judged by the model, except the raced one.
    for key in (first, second, raced):
        assert pipeline_pending(raw_labels(local, key)) == {}
    judged_by_model = [item for item in after.values() if item.get("validated_by") == {"S": VALIDATED_BY}]
    assert judged_by_model and all(
        item["label_proposed_by"]["S"].startswith("receipt_label:") for item in judged_by_model
    )
    # The preflight and one judging call for each of the three receipts with pipeline labels; none for the fourth.
    assert len(server.chat_requests) - calls_before == 1 + 3


def test_validate_garbage_answer_even_after_the_repair_call_changes_nothing_for_that_receipt_others_judged_tolerated(
    world: tuple[LocalPipeline, OllamaServer, Judge],
) -> None:
    """1 receipt of 10 gets garbage judgements twice (answer, repair): it fails alone with LLMOutputError and
    keeps its PENDING labels untouched; 10 % is within the template's ToleratedFailurePercentage."""
    local, server, _ = world
    assert local.tolerances["JudgeReceipts"].percentage == 10
    fixtures = fixture_documents()
    good = [*fixtures, *(copy_of(fixtures[i]) for i in range(9 - len(fixtures)))]
    garbage = copy_of(fixtures[0], marker=GARBAGE_WORD)
    keys = label_with_a_create_run(local, [*good, garbage])
    garbage_key = (garbage["image_id"], 1)
    garbage_before = raw_labels(local, garbage_key)
    assert garbage_before and pipeline_pending(garbage_before) == garbage_before
    calls_before = len(server.chat_requests)

    run = validate(local)

    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output is not None
    assert (run.output["receipt_count"], run.output["succeeded"], run.output["failed"]) == (10, 9, 1)
    (failure,) = run.failed_results
    assert json.loads(failure["Input"])["image_id"] == garbage["image_id"]
    assert (failure["Status"], failure["Error"]) == ("FAILED", "LLMOutputError")
    assert raw_labels(local, garbage_key) == garbage_before  # nothing written for that receipt
    for key in keys:
        if key != garbage_key:
            assert pipeline_pending(raw_labels(local, key)) == {}, key  # the others are judged
    garbage_calls = [r for r in server.chat_requests[calls_before:] if mentions(r, GARBAGE_WORD)]
    assert len(garbage_calls) == 2  # the answer and one repair call, per attempt of the task
    assert all(labels_to_judge_in_prompt(r) for r in garbage_calls)
    assert list(local.dynamo().iter_pending_receipts()) == [garbage_key]


def test_validate_more_garbage_receipts_than_tolerated_fail_the_execution_and_write_nothing_for_them(
    world: tuple[LocalPipeline, OllamaServer, Judge],
) -> None:
    """2 of 10 receipts fail: 20 % > the template's 10 %, so the execution fails as on AWS (and alarms)."""
    local, _, _ = world
    fixtures = fixture_documents()
    good = [*fixtures, *(copy_of(fixtures[i]) for i in range(8 - len(fixtures)))]
    garbage = [copy_of(fixtures[0], marker=GARBAGE_WORD), copy_of(fixtures[1], marker=GARBAGE_WORD)]
    label_with_a_create_run(local, [*good, *garbage])
    garbage_keys = [(document["image_id"], 1) for document in garbage]
    before = {key: raw_labels(local, key) for key in garbage_keys}

    run = validate(local)

    assert run.status == "FAILED"
    assert run.error == EXCEED_TOLERATED_FAILURE_THRESHOLD
    assert "2 failed" in (run.cause or "") and "of 10 items" in (run.cause or "")
    assert "MapRunFailed" in [e["type"] for e in run.history]
    assert {key: raw_labels(local, key) for key in garbage_keys} == before
    for invocation in run.invocations_of("ValidateReceipt"):
        key = (invocation.event["image_id"], invocation.event["receipt_id"])
        if invocation.ok:
            assert pipeline_pending(raw_labels(local, key)) == {}, key  # what was judged stays judged


def test_validate_second_run_makes_no_llm_call_and_changes_nothing(
    world: tuple[LocalPipeline, OllamaServer, Judge],
) -> None:
    """Once judged, nothing PENDING of this pipeline is left: the list is empty, no preflight, no write."""
    local, server, _ = world
    keys = label_with_a_create_run(local, fixture_documents()[:3])
    first = validate(local)
    assert first.status == "SUCCEEDED", (first.error, first.cause)
    before = {key: raw_labels(local, key) for key in keys}
    calls_before = len(server.chat_requests)

    second = validate(local)

    assert second.status == "SUCCEEDED", (second.error, second.cause)
    assert len(server.chat_requests) == calls_before  # not even the preflight's call
    assert [i.state for i in second.invocations] == ["ListPendingReceipts"]
    assert second.output is not None
    assert (second.output["receipt_count"], second.output["succeeded"], second.output["map_run_arn"]) == (0, 0, None)
    assert {key: raw_labels(local, key) for key in keys} == before
