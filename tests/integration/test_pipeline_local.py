"""The synthesized state machine run end to end on moto with the real handlers (local_pipeline.harness).

What a user cares about: every fixture receipt gets PENDING labels; labels that were VALID before
the run are untouched; a receipt whose LLM answers are garbage fails alone and is listed in the
map's results; a second run makes no LLM call; more failures than the template tolerates fail the
execution; 10,000 receipts keep the parent history under 100 events.
"""

from __future__ import annotations

import json
import types
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from local_pipeline.harness import LocalPipeline
from local_pipeline.moto_shims import EXCEED_TOLERATED_FAILURE_THRESHOLD
from receipt_dynamo import Receipt, ValidationStatus
from tests.helpers import copy_of, fixture_documents, person_label
from tests.ollama_server import OllamaServer, RecordedRequest, ScriptedResponse, label_words_responder, words_in_prompt

pytestmark = pytest.mark.integration

GARBAGE_WORD = "QQGARBLEDQQ"  # a receipt holding this word gets garbage answers from the model


def label_for(text: str) -> str | None:
    if text.replace(".", "").replace("$", "").isdigit():
        return "LINE_TOTAL"
    return "PRODUCT_NAME" if text.isalpha() else None


def responder(request: RecordedRequest) -> ScriptedResponse:
    if any(word.text == GARBAGE_WORD for word in words_in_prompt(request)):
        return ScriptedResponse.answer("Sure! Here are the labels you asked for: MERCHANT_NAME, TOTAL ...")
    return label_words_responder(label_for)(request)


def prompt_texts(request: RecordedRequest) -> set[str]:
    return {word.text for word in words_in_prompt(request)}


@pytest.fixture(scope="module")
def template(synthesized: Any) -> dict[str, Any]:
    return dict(synthesized.stacks[0].template)


@pytest.fixture
def pipeline(template: dict[str, Any]) -> Iterator[tuple[LocalPipeline, OllamaServer]]:
    with (
        OllamaServer(responder=responder) as server,
        LocalPipeline(template, ollama_base_url=server.url, ollama_model="loopback-model") as local,
    ):
        yield local, server


def test_fixture_receipts_labeled_valid_untouched_garbage_fails_alone_rerun_free(
    pipeline: tuple[LocalPipeline, OllamaServer],
) -> None:
    local, server = pipeline
    fixtures = fixture_documents()
    assert len(fixtures) <= 9
    extra_good = [copy_of(fixtures[i % len(fixtures)]) for i in range(9 - len(fixtures))]
    garbage = copy_of(fixtures[0], marker=GARBAGE_WORD)
    keys = local.load_receipts([*fixtures, *extra_good, garbage])  # 10 receipts: 1 failure = 10 %, tolerated
    store = local.dynamo()

    # A person validated two words of the first fixture before the run.
    first = store.get_receipt_details(fixtures[0]["image_id"], 1)
    validated = [person_label(first.words[0], "MERCHANT_NAME"), person_label(first.words[1], "MERCHANT_NAME")]
    assert [len(r.added) for r in [store.add_receipt_word_labels(validated)]] == [2]
    items_before = {label.key["SK"]["S"]: label.to_item() for label in validated}

    run = local.run()

    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output is not None
    assert (run.output["receipt_count"], run.output["succeeded"], run.output["failed"]) == (10, 9, 1)

    # The garbage receipt failed alone, with the model-output error, and is listed in the results.
    assert [json.loads(r["Input"])["image_id"] for r in run.failed_results] == [garbage["image_id"]]
    failure = run.failed_results[0]
    assert failure["Error"] == "LLMOutputError"
    assert failure["Status"] == "FAILED"
    assert "LLMOutputError" in failure["Cause"]
    assert len(run.succeeded_results) == 9
    assert store.get_receipt_details(garbage["image_id"], 1).labels == []
    assert run.results_manifest is not None
    assert run.results_manifest["MapRunArn"] == run.output["map_run_arn"]

    # Every fixture receipt has PENDING labels proposed by this pipeline; the VALID ones are untouched.
    for document in fixtures:
        labels = store.get_receipt_details(document["image_id"], 1).labels
        pending = [label for label in labels if label.validation_status is ValidationStatus.PENDING]
        assert pending, f"no PENDING label on {document['image_id']}"
        assert all(label.label_proposed_by == "receipt_label:loopback-model" for label in pending)
    after = {
        label.key["SK"]["S"]: label.to_item() for label in store.get_receipt_details(fixtures[0]["image_id"], 1).labels
    }
    for sk, item in items_before.items():
        assert after[sk] == item, f"{sk} changed"
    words_with_valid = {(label.line_id, label.word_id) for label in validated}
    assert not [
        label
        for label in store.get_receipt_details(fixtures[0]["image_id"], 1).labels
        if (label.line_id, label.word_id) in words_with_valid and label.validation_status is not ValidationStatus.VALID
    ]

    # The preflight's one capped call, one chat call per good receipt, two (answer + repair) for the garbage one.
    garbage_calls = [r for r in server.chat_requests if GARBAGE_WORD in prompt_texts(r)]
    assert len(garbage_calls) == 2
    assert [r.json["options"]["num_predict"] for r in server.chat_requests].count(1) == 1
    assert len(server.chat_requests) == 1 + 9 + 2
    assert [i.result["llm_calls"] for i in run.invocations_of("Preflight")] == [1]
    assert sum(i.result["llm_calls"] for i in run.invocations_of("ProcessReceipt") if i.ok) == 9

    # Second run, once the bad receipt is removed from the table: no LLM call at all (not even the
    # preflight: ListReceipts reports nothing to label), nothing rewritten.
    delete_receipt(local.table_name, garbage["image_id"])
    labels_before_rerun = {k: _labels(store, k) for k in keys if k[0] != garbage["image_id"]}
    calls_before = len(server.chat_requests)
    rerun = local.run()
    assert rerun.status == "SUCCEEDED", (rerun.error, rerun.cause)
    assert rerun.output is not None and (rerun.output["succeeded"], rerun.output["failed"]) == (9, 0)
    assert len(server.chat_requests) == calls_before
    assert rerun.invocations_of("Preflight") == []
    assert all(
        i.result["already_labeled"] and i.result["llm_calls"] == 0 for i in rerun.invocations_of("ProcessReceipt")
    )
    assert {k: _labels(store, k) for k in labels_before_rerun} == labels_before_rerun


def test_an_empty_table_succeeds_with_the_summary_keys_and_zeros(pipeline: tuple[LocalPipeline, OllamaServer]) -> None:
    """No receipt: the map is skipped, no LLM call, and the output has the same keys as a labeling run's."""
    local, server = pipeline

    run = local.run(name="empty-table")

    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert [i.state for i in run.invocations] == ["ListReceipts"]
    listed = run.invocations[0].result
    assert listed["receipt_count"] == 0 and listed["manifest_bucket"] in local.buckets
    assert listed["manifest_key"].startswith("manifests/empty-table/")
    assert server.chat_requests == []
    assert run.output == {
        "receipt_count": 0,
        "succeeded": 0,
        "failed": 0,
        "timed_out": 0,
        "aborted": 0,
        "results": None,
        "manifest": {"bucket": listed["manifest_bucket"], "key": listed["manifest_key"]},
        "map_run_arn": None,
    }


def test_more_failures_than_tolerated_fail_the_execution(pipeline: tuple[LocalPipeline, OllamaServer]) -> None:
    """Two of ten receipts fail: 20 % > the template's ToleratedFailurePercentage (10)."""
    local, _ = pipeline
    assert local.tolerances["LabelReceipts"].percentage == 10
    fixtures = fixture_documents()
    local.load_receipts([*fixtures, *(copy_of(fixtures[i]) for i in range(8 - len(fixtures)))])
    local.load_receipts([copy_of(fixtures[0], marker=GARBAGE_WORD), copy_of(fixtures[1], marker=GARBAGE_WORD)])

    run = local.run()

    assert run.status == "FAILED"
    assert run.error == EXCEED_TOLERATED_FAILURE_THRESHOLD
    assert "2 failed" in (run.cause or "") and "of 10 items" in (run.cause or "")
    assert [e["type"] for e in run.history][-1] == "ExecutionFailed"
    assert "MapRunFailed" in [e["type"] for e in run.history]


def test_a_rejected_key_fails_the_execution_in_the_preflight_with_at_most_two_llm_calls_and_no_label(
    template: dict[str, Any],
) -> None:
    """Every first run of a fresh stack meets this (the secret holds a placeholder): 40 receipts, every
    call answered 401. The run must stop before the map, whatever the number of receipts."""
    with (
        OllamaServer(default=ScriptedResponse.http_error(401, "unauthorized")) as server,
        LocalPipeline(
            template, ollama_base_url=server.url, ollama_model="loopback-model", ollama_api_key="placeholder-key"
        ) as local,
    ):
        fixtures = fixture_documents()
        keys = local.load_receipts([copy_of(fixtures[n % len(fixtures)]) for n in range(40)])

        run = local.run(name="rejected-key")

        assert run.status == "FAILED"
        assert run.error == "LLMAuthError"
        assert "put-secret-value" in (run.cause or "")
        assert len(server.chat_requests) <= 2
        assert [i.state for i in run.invocations] == ["ListReceipts", "Preflight"]
        assert "MapRunStarted" not in [e["type"] for e in run.history]
        store = local.dynamo()
        assert all(store.get_receipt_details(*key).labels == [] for key in keys)


def test_an_endpoint_that_stays_down_fails_in_the_preflight_after_its_retries(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connection refused is transient: the preflight is retried (LLMTransientError) and then fails the run."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    waits: list[float] = []  # the retrier's backoff waits, recorded instead of slept (up to 75 s otherwise)
    monkeypatch.setattr(retrier_decl, "time", types.SimpleNamespace(sleep=waits.append))
    with LocalPipeline(template, ollama_base_url="http://127.0.0.1:9", ollama_model="loopback-model") as local:
        local.load_receipts(fixture_documents()[:2])

        run = local.run(name="endpoint-down", timeout=600)

    assert run.status == "FAILED" and run.error == "LLMTransientError"
    preflights = run.invocations_of("Preflight")
    # MaxAttempts 4 counts retries: the first try and 4 more, after full-jitter waits of up to 5, 10, 20, 40 s.
    assert len(preflights) == 5 and all(i.error_type == "LLMTransientError" for i in preflights)
    assert len(waits) == 4 and all(0 <= wait <= cap for wait, cap in zip(waits, (5, 10, 20, 40), strict=True))
    assert run.invocations_of("ProcessReceipt") == []


def test_ten_thousand_receipts_keep_the_parent_history_under_100_events(template: dict[str, Any]) -> None:
    """10,000 receipts: the real ListReceipts handler over the moto table, ProcessReceipt an instant stand-in."""
    count = 10_000

    def instant_process(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event.get("preflight"):
            return {"preflight": "ok", "model": "stand-in", "base_url": "http://127.0.0.1:9", "llm_calls": 0}
        return {"image_id": event["image_id"], "receipt_id": event["receipt_id"], "labels_added": 0, "llm_calls": 0}

    with LocalPipeline(
        template, ollama_base_url="http://127.0.0.1:9", handlers={"ProcessReceipt": instant_process}
    ) as local:
        table = boto3.resource("dynamodb", region_name="us-east-1").Table(local.table_name)
        with table.batch_writer() as batch:
            for n in range(count):
                item = Receipt(image_id=str(uuid.UUID(int=n + 1)), receipt_id=1).to_item()
                batch.put_item(Item={k: _plain(v) for k, v in item.items()})

        run = local.run(timeout=600)

    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output is not None
    assert (run.output["receipt_count"], run.output["succeeded"], run.output["failed"]) == (count, count, 0)
    assert len(run.invocations_of("ProcessReceipt")) == count
    assert len(run.history) <= 100, len(run.history)


def _plain(value: dict[str, Any]) -> Any:
    ((kind, raw),) = value.items()
    return int(raw) if kind == "N" else raw


def _labels(store: Any, key: tuple[str, int]) -> list[dict[str, Any]]:
    return [label.to_item() for label in store.get_receipt_details(*key).labels]


def delete_receipt(table_name: str, image_id: str) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    items = client.query(
        TableName=table_name,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"IMAGE#{image_id}"}},
        ProjectionExpression="PK, SK",
    )["Items"]
    for item in items:
        client.delete_item(TableName=table_name, Key={"PK": item["PK"], "SK": item["SK"]})
