"""ProcessReceipt handler end to end: moto (DynamoDB, Secrets Manager) and the loopback Ollama server.

What the handler must guarantee (issue 5): PENDING labels come out for a fixture receipt; a bad
event, a missing receipt or any LLM failure writes nothing; a re-run costs no LLM call and no
write; ``force`` recomputes and still never overwrites a label; the key is read once per container
and never shows up in logs. The completion marker (``labeled_by`` / ``labeled_at`` on the Receipt
item) is written last, so a run that stopped between its label writes and the marker is completed
by the next one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from moto import mock_aws
from pytest_httpserver import HTTPServer

from receipt_dynamo import DynamoClient, ReceiptNotFoundError, ReceiptWordLabel, ValidationStatus, utc_now_iso
from receipt_dynamo.keys import TYPE_RECEIPT
from receipt_dynamo.schema import create_table_kwargs
from receipt_label import (
    LLMAuthError,
    LLMModelNotFoundError,
    LLMOutputError,
    LLMRateLimitError,
    LLMRequestError,
    LLMTransientError,
    TimeBudgetExceededError,
)
from tests.helpers import PROCESS_HANDLER, REPO_ROOT, Calls, LambdaContext
from tests.helpers import load_handler as load_handler_file
from tests.ollama_server import OllamaServer, ScriptedResponse, label_words_responder

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "tests" / "fixtures"
TABLE = "receipts-test"
API_KEY = "olk-loopback-7f3a9c-do-not-log"
LANGSMITH_KEY = "lsv2-loopback-key-do-not-log"


def _load_handler() -> ModuleType:
    return load_handler_file(PROCESS_HANDLER, "process_receipt_handler_integration")


handler = _load_handler()


@dataclass
class World:
    server: OllamaServer
    store: DynamoClient
    calls: Calls

    def load(self, fixture: str) -> dict[str, Any]:
        doc = json.loads((FIXTURES / fixture).read_text())
        self.store.load_receipt_document(doc)
        return {"image_id": doc["image_id"], "receipt_id": doc["receipt_id"]}

    def invoke(self, event: Any) -> dict[str, Any]:
        result: dict[str, Any] = handler.lambda_handler(event, LambdaContext())
        return result

    def labels(self, event: dict[str, Any]) -> list[ReceiptWordLabel]:
        return list(self.store.get_receipt_details(event["image_id"], event["receipt_id"]).labels)

    def items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = boto3.client("dynamodb").scan(TableName=TABLE)["Items"]
        return sorted(items, key=lambda i: (i["PK"]["S"], i["SK"]["S"]))

    def receipt(self, event: dict[str, Any]) -> Any:
        return self.store.get_receipt_details(event["image_id"], event["receipt_id"]).receipt


def handler_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "process_receipt"]


def alpha_words(text: str) -> str | None:
    return "PRODUCT_NAME" if text.isalpha() else None


@pytest.fixture
def world(ollama_server: OllamaServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with mock_aws():
        boto3.client("dynamodb").create_table(**create_table_kwargs(TABLE))
        arn = boto3.client("secretsmanager").create_secret(Name="ollama-api-key", SecretString=API_KEY)["ARN"]
        monkeypatch.setenv("DYNAMODB_TABLE_NAME", TABLE)
        monkeypatch.setenv("OLLAMA_BASE_URL", ollama_server.url)
        monkeypatch.setenv("OLLAMA_MODEL", "loopback-model")
        monkeypatch.setenv("OLLAMA_TIMEOUT_SECONDS", "30")
        monkeypatch.setenv("OLLAMA_API_KEY_SECRET_ARN", arn)
        monkeypatch.delenv("LANGSMITH_API_KEY_SECRET_ARN", raising=False)
        for cached in ("_dynamo", "_models", "_chat_model", "_tracer"):  # a new container
            monkeypatch.setattr(handler, cached, None)
        monkeypatch.setattr(handler, "_secrets", SecretsProvider())
        calls = Calls()
        handler.dynamo().client.meta.events.register("before-call.*.*", calls.hook)
        handler._secrets.client.meta.events.register("before-call.*.*", calls.hook)
        ollama_server.responder = label_words_responder(alpha_words)
        yield World(ollama_server, DynamoClient(TABLE), calls)


def test_a_fixture_receipt_gets_pending_labels(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="process_receipt")
    event = world.load("receipt_grocery.json")

    result = world.invoke(event)

    labels = world.labels(event)
    assert labels, "the receipt has alphabetic words, so labels are expected"
    assert result == {
        **event,
        "labels_added": len(labels),
        "labels_skipped_existing": 0,
        "labels_rejected": 0,
        "llm_calls": 1,
        "already_labeled": False,
    }
    assert {label.validation_status for label in labels} == {ValidationStatus.PENDING}
    assert {label.label_proposed_by for label in labels} == {"receipt_label:loopback-model"}
    assert {label.label for label in labels} == {"PRODUCT_NAME"}
    assert world.server.chat_requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    receipt = world.receipt(event)  # the completion marker, written after the labels
    assert receipt.labeled_by == "receipt_label:loopback-model" and receipt.labeled_at is not None
    assert world.calls.writes()[-1] == "UpdateItem" and world.calls.writes().count("UpdateItem") == 1

    records = handler_records(caplog)  # stdlib records; Lambda's JSON log format writes every extra key
    done = [r for r in records if r.getMessage() == "receipt labeled"]
    assert done and done[0].__dict__["labels_added"] == len(labels)
    assert all((r.__dict__["image_id"], r.__dict__["receipt_id"]) == (event["image_id"], 1) for r in records)


def test_the_key_is_read_once_per_container_and_never_logged_or_put_in_the_environment(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events = [world.load("receipt_grocery.json"), world.load("receipt_pharmacy.json")]
    for event in events:
        world.invoke(event)
    assert world.calls.names.count("GetSecretValue") == 1  # cached for the container
    world.server.default = ScriptedResponse.http_error(401, "unauthorized")
    world.server.responder = None
    with pytest.raises(LLMAuthError):
        world.invoke({**world.load("receipt_restaurant.json")})

    # The 401 makes the handler read the secret once more, bypassing the cache; the same key is not retried.
    assert world.calls.names.count("GetSecretValue") == 2
    assert [r.headers["authorization"] for r in world.server.chat_requests] == [f"Bearer {API_KEY}"] * 3
    captured = capsys.readouterr()
    assert API_KEY not in captured.out + captured.err + caplog.text
    assert all(API_KEY not in repr(record.__dict__) for record in caplog.records)
    assert all(API_KEY not in value for value in os.environ.values())
    (failed,) = [r for r in handler_records(caplog) if r.getMessage() == "receipt failed"]
    assert failed.__dict__["error_type"] == "LLMAuthError" and failed.__dict__["receipt_id"] == 1


def test_a_rerun_makes_no_llm_call_and_no_write(world: World) -> None:
    event = world.load("receipt_grocery.json")
    world.invoke(event)
    before, calls_before, writes_before = world.items(), len(world.server.chat_requests), len(world.calls.writes())

    again = world.invoke(event)

    assert again == {
        **event,
        "labels_added": 0,
        "labels_skipped_existing": 0,
        "labels_rejected": 0,
        "llm_calls": 0,
        "already_labeled": True,
    }
    assert len(world.server.chat_requests) == calls_before
    assert len(world.calls.writes()) == writes_before
    assert world.items() == before


def test_force_recomputes_and_never_overwrites_an_existing_label(world: World) -> None:
    event = world.load("receipt_grocery.json")
    details = world.store.get_receipt_details(event["image_id"], event["receipt_id"])
    word = next(w for w in details.words if w.text.isalpha())
    human = ReceiptWordLabel(
        image_id=word.image_id,
        receipt_id=word.receipt_id,
        line_id=word.line_id,
        word_id=word.word_id,
        label="MERCHANT_NAME",
        reasoning="checked by a person",
        timestamp_added=utc_now_iso(),
        validation_status=ValidationStatus.VALID,
        label_proposed_by="reviewer:alice",
    )
    world.store.add_receipt_word_labels([human])
    first = world.invoke(event)  # a person's label is not this pipeline's: the receipt is labeled
    assert first["already_labeled"] is False and first["llm_calls"] == 1
    after_first = world.items()

    # The model now also labels numbers, and proposes a different label for every labeled word.
    def answer_everything(request: Any) -> ScriptedResponse:
        from tests.ollama_server import words_in_prompt

        proposals = [
            {"line_id": w.line_id, "word_id": w.word_id, "label": "LINE_TOTAL", "reasoning": "number"}
            for w in words_in_prompt(request)
            if not w.text.isalpha() and any(c.isdigit() for c in w.text)
        ]
        proposals.append({"line_id": word.line_id, "word_id": word.word_id, "label": "ADDRESS_LINE", "reasoning": "x"})
        return ScriptedResponse.answer({"labels": proposals})

    world.server.responder = answer_everything
    skipped = world.invoke(event)
    assert skipped["already_labeled"] is True and skipped["llm_calls"] == 0

    marked_first = world.receipt(event).labeled_at
    forced = world.invoke({**event, "force": True})

    assert forced["llm_calls"] == 1 and forced["already_labeled"] is False
    assert forced["labels_added"] > 0
    after_force = {(i["PK"]["S"], i["SK"]["S"]): i for i in world.items()}
    for item in after_first:  # every item that existed is byte-for-byte unchanged, but for the re-set marker
        if item.get("TYPE", {}).get("S") == TYPE_RECEIPT:
            continue
        assert after_force[(item["PK"]["S"], item["SK"]["S"])] == item
    remarked = world.receipt(event)
    assert remarked.labeled_by == "receipt_label:loopback-model"
    assert remarked.labeled_at is not None and marked_first is not None and remarked.labeled_at >= marked_first
    assert len(after_force) == len(after_first) + forced["labels_added"]
    word_labels = [
        (lab.label, lab.validation_status)
        for lab in world.labels(event)
        if lab.word_key == (word.line_id, word.word_id)
    ]
    assert ("MERCHANT_NAME", ValidationStatus.VALID) in word_labels
    assert all(label != "ADDRESS_LINE" for label, _ in word_labels)


def test_a_crash_between_the_label_writes_and_the_marker_is_completed_by_the_next_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = world.load("receipt_grocery.json")

    class Crash(RuntimeError):
        """The container dies after the labels are in the table, before the marker (a timeout, OOM)."""

    def crash(*_: Any, **__: Any) -> None:
        raise Crash("container gone")

    with monkeypatch.context() as patch, pytest.raises(Crash):
        patch.setattr(handler.dynamo(), "mark_receipt_labeled", crash)
        world.invoke(event)
    labels_after_crash = {label.key["SK"]["S"]: label.to_item() for label in world.labels(event)}
    assert labels_after_crash and world.receipt(event).labeled_by is None
    puts_before = world.calls.names.count("PutItem")

    retry = world.invoke(event)

    assert retry["already_labeled"] is False  # labels of this pipeline, but no marker: not skipped
    assert retry["labels_added"] == 0  # every alphabetic word was labeled by the crashed run
    assert world.calls.names.count("PutItem") == puts_before  # the model proposed nothing new: no label write
    assert {label.key["SK"]["S"]: label.to_item() for label in world.labels(event)} == labels_after_crash
    assert world.receipt(event).labeled_by == "receipt_label:loopback-model"
    assert world.invoke(event)["already_labeled"] is True  # converged: the next run is free


def test_a_receipt_labeled_before_the_marker_existed_is_completed_once_and_nothing_is_overwritten(
    world: World,
) -> None:
    event = world.load("receipt_grocery.json")
    details = world.store.get_receipt_details(event["image_id"], event["receipt_id"])
    alpha = [w for w in details.words if w.text.isalpha()]
    old = [  # labels of an older pipeline version, which wrote no marker
        ReceiptWordLabel(
            w.image_id,
            w.receipt_id,
            w.line_id,
            w.word_id,
            "MERCHANT_NAME",
            "old",
            utc_now_iso(),
            ValidationStatus.PENDING,
            "receipt_label:older-model",
        )
        for w in alpha[:3]
    ]
    world.store.add_receipt_word_labels(old)
    before = {label.key["SK"]["S"]: label.to_item() for label in old}

    first = world.invoke(event)

    assert first["already_labeled"] is False and first["llm_calls"] == 1
    assert first["labels_added"] == len(alpha) - len(old)  # only words without a label got one
    after = {label.key["SK"]["S"]: label.to_item() for label in world.labels(event)}
    assert all(after[sk] == item for sk, item in before.items())
    second = world.invoke(event)
    assert second["already_labeled"] is True and second["llm_calls"] == 0


def test_a_missing_receipt_raises_receipt_not_found_without_llm_or_write(world: World) -> None:
    with pytest.raises(ReceiptNotFoundError) as raised:
        world.invoke({"image_id": "0f0e0d0c-0b0a-4908-8706-050403020100", "receipt_id": 9})
    assert type(raised.value).__name__ == "ReceiptNotFoundError"
    assert world.server.chat_requests == []
    assert world.calls.writes() == []


@pytest.mark.parametrize(
    "event",
    [
        {"receipt_id": 1},
        {"image_id": "4ba71ab7-ac05-44a5-acc6-be1805fdf179", "receipt_id": 0},
        {"image_id": "4ba71ab7-ac05-44a5-acc6-be1805fdf179", "receipt_id": "x" * (1 << 20)},
    ],
)
def test_a_bad_event_raises_invalid_event_error_with_no_read_llm_call_or_write(world: World, event: Any) -> None:
    world.load("receipt_grocery.json")
    with pytest.raises(handler.InvalidEventError):
        world.invoke(event)
    assert world.calls.names == []
    assert world.server.chat_requests == []


FAILURES: list[tuple[Callable[[OllamaServer], None], type[Exception]]] = [
    (lambda s: s.script(ScriptedResponse.http_error(429, "slow down")), LLMRateLimitError),
    (lambda s: setattr(s, "default", ScriptedResponse.http_error(503, "overloaded")), LLMTransientError),
    (lambda s: setattr(s, "default", ScriptedResponse(reset=True)), LLMTransientError),
    (lambda s: setattr(s, "default", ScriptedResponse.answer("this is not JSON")), LLMOutputError),
    (lambda s: s.script(ScriptedResponse.http_error(404, "model not found")), LLMModelNotFoundError),
    (lambda s: s.script(ScriptedResponse.http_error(400, "invalid format")), LLMRequestError),
]


@pytest.mark.parametrize(("script", "error"), FAILURES, ids=[e.__name__ + str(i) for i, (_, e) in enumerate(FAILURES)])
def test_any_llm_failure_raises_its_typed_error_and_writes_nothing(
    world: World, script: Callable[[OllamaServer], None], error: type[Exception]
) -> None:
    event = world.load("receipt_grocery.json")
    world.server.responder = None
    script(world.server)
    before = world.items()

    with pytest.raises(error) as raised:
        world.invoke(event)

    assert type(raised.value).__name__ == error.__name__
    assert world.calls.writes() == []
    assert world.items() == before
    assert world.labels(event) == []


def test_with_a_langsmith_secret_the_run_gets_a_tracer_built_from_it(
    world: World, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_core.tracers.langchain import LangChainTracer

    httpserver.expect_request("/info").respond_with_json({})  # LangSmith stand-in on loopback
    httpserver.expect_request(re.compile("^/runs.*")).respond_with_json({})
    arn = boto3.client("secretsmanager").create_secret(Name="langsmith", SecretString=LANGSMITH_KEY)["ARN"]
    monkeypatch.setenv("LANGSMITH_API_KEY_SECRET_ARN", arn)
    monkeypatch.setenv("LANGSMITH_ENDPOINT", httpserver.url_for("/").rstrip("/"))
    monkeypatch.setenv("LANGSMITH_PROJECT", "receipts-test")
    events = [world.load("receipt_grocery.json"), world.load("receipt_pharmacy.json")]

    results = [world.invoke(event) for event in events]

    assert all(r["labels_added"] > 0 for r in results)
    tracer = handler.tracer()
    assert isinstance(tracer, LangChainTracer) and tracer.project_name == "receipts-test"
    assert tracer.client.api_key == LANGSMITH_KEY
    assert world.calls.names.count("GetSecretValue") == 2  # Ollama key and LangSmith key, once each
    assert all(LANGSMITH_KEY not in value for value in os.environ.values())
    posts = [request for request, _ in httpserver.log if request.path.startswith("/runs")]
    assert posts, "the runs were sent to the configured LangSmith endpoint before the handler returned"
    assert all(request.headers.get("x-api-key") == LANGSMITH_KEY for request in posts)
    assert all(API_KEY not in request.get_data(as_text=True) for request in posts), "the Ollama key is in a trace"


# ---- fail fast: a rotated key, the time budget, the preflight -------------------------------------
ROTATED_KEY = "olk-loopback-rotated-2b9e-do-not-log"


def accept_only(key: str, then: Callable[[Any], ScriptedResponse]) -> Callable[[Any], ScriptedResponse]:
    """An endpoint that answers 401 unless the request carries ``Bearer <key>`` (as Ollama Cloud does)."""

    def respond(request: Any) -> ScriptedResponse:
        if request.headers.get("authorization") != f"Bearer {key}":
            return ScriptedResponse.http_error(401, "unauthorized")
        return then(request)

    return respond


def test_a_key_fixed_in_the_secret_after_a_401_is_used_at_once_not_after_the_cache_expires(world: World) -> None:
    """Documented: Ollama Cloud answers 401 for a wrong key. The handler re-reads the secret (bypassing the
    one-hour cache) and, the key having changed, labels the receipt with one more call."""
    first = world.load("receipt_grocery.json")
    world.invoke(first)  # the container has the old key cached
    boto3.client("secretsmanager").put_secret_value(SecretId="ollama-api-key", SecretString=ROTATED_KEY)
    world.server.responder = accept_only(ROTATED_KEY, label_words_responder(alpha_words))
    event = world.load("receipt_pharmacy.json")
    calls_before = len(world.server.chat_requests)

    result = world.invoke(event)

    assert result["labels_added"] > 0 and world.labels(event)
    sent = [r.headers["authorization"] for r in world.server.chat_requests[calls_before:]]
    assert sent == [f"Bearer {API_KEY}", f"Bearer {ROTATED_KEY}"]
    assert world.calls.names.count("GetSecretValue") == 2  # the first read, then one forced re-read


def test_a_stream_that_trickles_a_valid_answer_stops_inside_the_lambdas_time_with_a_retryable_error(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk arrives well inside the HTTP read timeout (30 s), so only the time budget can stop it:
    a 4 s Lambda with a 1 s margin must end within 3 s with TimeBudgetExceededError and write nothing."""
    monkeypatch.setenv("TIME_MARGIN_SECONDS", "1")
    event = world.load("receipt_grocery.json")
    valid = label_words_responder(alpha_words)
    world.server.responder = lambda request: ScriptedResponse.answer(
        valid(request).content, chunks=400, chunk_delay=0.05
    )
    context = LambdaContext(timeout_seconds=4.0)
    before = world.items()

    with pytest.raises(TimeBudgetExceededError):
        handler.lambda_handler(event, context)

    assert context.get_remaining_time_in_millis() > 500, "the handler must return before Lambda's timeout"
    assert world.calls.writes() == [] and world.items() == before
    assert len(world.server.chat_requests) == 1  # no in-process retry past the deadline


def test_a_stalled_stream_stops_at_the_deadline_not_after_the_http_read_timeout(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIME_MARGIN_SECONDS", "1")
    monkeypatch.setenv("OLLAMA_TIMEOUT_SECONDS", "60")
    event = world.load("receipt_grocery.json")
    world.server.responder = None
    world.server.script(ScriptedResponse.answer({"labels": []}, delay=30))  # 30 s before the first byte
    context = LambdaContext(timeout_seconds=3.0)

    with pytest.raises(TimeBudgetExceededError):
        handler.lambda_handler(event, context)

    assert context.get_remaining_time_in_millis() > 300
    assert world.calls.writes() == []


def test_the_answer_length_is_capped_with_num_predict(world: World) -> None:
    world.invoke(world.load("receipt_grocery.json"))
    assert world.server.chat_requests[0].json["options"]["num_predict"] == 16_384


def test_preflight_makes_one_capped_call_and_touches_no_receipt(world: World) -> None:
    result = world.invoke({"preflight": True})

    assert result == {"preflight": "ok", "model": "loopback-model", "base_url": world.server.url, "llm_calls": 1}
    (request,) = world.server.chat_requests
    assert request.json["options"]["num_predict"] == 1
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert [n for n in world.calls.names if n != "GetSecretValue"] == []  # no DynamoDB call at all


def test_preflight_with_a_rejected_key_names_the_secret_and_the_fix_after_at_most_two_calls(world: World) -> None:
    world.server.responder = None
    world.server.default = ScriptedResponse.http_error(401, "unauthorized")

    with pytest.raises(LLMAuthError) as raised:
        world.invoke({"preflight": True})

    message = str(raised.value)
    assert os.environ["OLLAMA_API_KEY_SECRET_ARN"] in message and "put-secret-value" in message
    assert API_KEY not in message
    assert len(world.server.chat_requests) == 1  # the secret still holds the same key: not tried again
    assert world.calls.names.count("GetSecretValue") == 2


def test_preflight_after_the_key_was_fixed_passes_with_the_new_key(world: World) -> None:
    world.invoke({"preflight": True})  # caches the old key
    boto3.client("secretsmanager").put_secret_value(SecretId="ollama-api-key", SecretString=ROTATED_KEY)
    world.server.responder = accept_only(ROTATED_KEY, lambda request: ScriptedResponse.answer({"labels": []}))

    result = world.invoke({"preflight": True})

    assert result["preflight"] == "ok" and result["llm_calls"] == 2


def test_preflight_with_a_model_the_endpoint_does_not_serve_names_the_model_and_the_fix(world: World) -> None:
    """Ollama answers 404 ``model "x" not found, try pulling it first`` for an unknown model."""
    world.server.responder = None
    world.server.default = ScriptedResponse.http_error(404, 'model "loopback-model" not found, try pulling it first')

    with pytest.raises(LLMModelNotFoundError) as raised:
        world.invoke({"preflight": True})

    assert "'loopback-model'" in str(raised.value) and "ollama_model" in str(raised.value)
    assert len(world.server.chat_requests) == 1


def test_preflight_against_an_unreachable_endpoint_raises_the_retryable_transient_error(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setattr(handler, "_models", None)  # a new container: the model is built with the new URL

    with pytest.raises(LLMTransientError) as raised:
        world.invoke({"preflight": True})

    assert "http://127.0.0.1:9 did not answer" in str(raised.value) and "ollama_base_url" in str(raised.value)


def test_a_secrets_manager_service_error_reaches_step_functions_as_aws_transient_error(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documented: GetSecretValue answers InternalServiceError (HTTP 500) on a service-side failure. After
    botocore's retries the handler raises the one retried name, before any LLM call or write."""
    from botocore.stub import Stubber

    from receipt_dynamo import AwsTransientError

    event = world.load("receipt_grocery.json")
    client = handler._secrets.client
    with Stubber(client) as stubber:
        for _ in range(10):  # more than botocore's attempts: whatever it retries is answered the same
            stubber.add_client_error("get_secret_value", "InternalServiceError", "boom", http_status_code=500)
        with pytest.raises(AwsTransientError) as raised:
            world.invoke(event)

    assert "InternalServiceError" in str(raised.value) and "GetSecretValue" in str(raised.value)
    assert world.server.chat_requests == [] and world.calls.writes() == []


def test_a_price_that_is_both_unit_price_and_line_total_is_written_as_two_pending_labels(world: World) -> None:
    """The taxonomy's one compatible pair: each label is its own item (the label is part of the key)."""
    event = world.load("receipt_grocery.json")

    def price_or_word(text: str) -> str | tuple[str, ...] | None:
        if text.replace(".", "").replace("$", "").isdigit() and "." in text:
            return ("UNIT_PRICE", "LINE_TOTAL")
        return "PRODUCT_NAME" if text.isalpha() else None

    world.server.responder = label_words_responder(price_or_word)

    result = world.invoke(event)

    by_word: dict[tuple[int, int], set[str]] = {}
    for label in world.labels(event):
        by_word.setdefault((label.line_id, label.word_id), set()).add(label.label)
    priced = [labels for labels in by_word.values() if "LINE_TOTAL" in labels]
    assert priced and all(labels == {"UNIT_PRICE", "LINE_TOTAL"} for labels in priced)
    assert result["labels_added"] == sum(len(labels) for labels in by_word.values())
    assert result["labels_rejected"] == 0


def test_with_tracing_on_and_every_logger_at_debug_no_key_of_either_kind_is_logged(
    world: World, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The LangSmith key as well as the Ollama key: DEBUG everywhere (the handler, root, botocore, httpx, langsmith)."""
    httpserver.expect_request("/info").respond_with_json({})
    httpserver.expect_request(re.compile("^/runs.*")).respond_with_json({})
    arn = boto3.client("secretsmanager").create_secret(Name="langsmith-debug", SecretString=LANGSMITH_KEY)["ARN"]
    monkeypatch.setenv("LANGSMITH_API_KEY_SECRET_ARN", arn)
    monkeypatch.setenv("LANGSMITH_ENDPOINT", httpserver.url_for("/").rstrip("/"))
    lines: list[str] = []

    class Everything(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.name} {record.getMessage()} {record.args!r} {record.__dict__!r}")

    capture, root = Everything(level=logging.DEBUG), logging.getLogger()
    names = ("process_receipt", "botocore", "urllib3", "httpx", "httpcore", "langsmith", "langchain", "receipt_label")
    saved = root.level, {name: logging.getLogger(name).level for name in names}
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        result = world.invoke(world.load("receipt_grocery.json"))
    finally:
        root.removeHandler(capture)
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)

    assert result["labels_added"] > 0 and handler.tracer() is not None
    assert any(line.startswith("botocore") for line in lines)  # library debug logging was on
    assert any(line.startswith("process_receipt receipt labeled") for line in lines)
    out, err = capfd.readouterr()
    for key in (LANGSMITH_KEY, API_KEY):
        assert [line[:160] for line in lines if key in line] == []
        assert key not in out + err
