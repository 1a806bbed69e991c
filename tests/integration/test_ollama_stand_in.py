"""The integration tests' stand-in Ollama (tests/integ/ollama_stand_in): its handler and its construct.

The handler runs under moto (the key secret, the calls table) behind a loopback HTTP server that does
what a Lambda function URL does: each HTTP request becomes a payload-format-2.0 event, the handler's
result becomes the HTTP response, buffered. The project's own client (`create_chat_model`,
`label_receipt`, `check_endpoint`) and the process Lambda handler talk to it, as they will to the
deployed stand-in. The construct is synthesized alone in a throwaway stack.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from receipt_dynamo import DynamoClient, ReceiptDetails, ReceiptWordLabel, ValidationStatus, parse_receipt_document
from receipt_dynamo.schema import create_table_kwargs
from receipt_label import (
    LabelingOptions,
    LLMAuthError,
    LLMModelNotFoundError,
    LLMOutputError,
    OllamaSettings,
    check_endpoint,
    create_chat_model,
    label_receipt,
)
from tests.helpers import (
    PROCESS_HANDLER,
    REPO_ROOT,
    Calls,
    LambdaContext,
    cfn_lint,
    load_handler,
    resources_of_type,
)

pytestmark = pytest.mark.integration

STAND_IN_DIR = REPO_ROOT / "tests" / "integ" / "ollama_stand_in"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
API_KEY = "olk-stand-in-3c9e1b-never-logged"
MODEL = "stand-in-model:latest"
CALLS_TABLE = "ollama-stand-in-calls"
RECEIPT_TABLE = "receipts-stand-in"
GARBAGE_IMAGE_ID = "0b6f6c1e-8a51-4c47-9d0e-3f2a7c5d9e14"
FAST = LabelingOptions(retry_delay_seconds=0.0)

handler = load_handler(STAND_IN_DIR / "handler.py", "ollama_stand_in_handler")


# ---- a function URL on loopback -------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    body: Any  # the JSON body the handler received, if any (headers are not kept: they hold the key)


@dataclass
class FunctionUrl:
    """What a Lambda function URL in BUFFERED mode does, on 127.0.0.1: HTTP request -> event -> handler -> response."""

    function: Callable[[dict[str, Any], Any], dict[str, Any]]
    base64_bodies: bool = False  # send request bodies base64-encoded (as a function URL does for binary bodies)
    seen: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> FunctionUrl:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                headers: dict[str, str] = {}
                for name, value in self.headers.items():
                    key = name.lower()
                    headers[key] = f"{headers[key]},{value}" if key in headers else value
                encoded = owner.base64_bodies
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    encoded = True
                event: dict[str, Any] = {
                    "version": "2.0",
                    "routeKey": "$default",
                    "rawPath": path,
                    "rawQueryString": query,
                    "headers": headers,
                    "requestContext": {
                        "http": {
                            "method": self.command,
                            "path": path,
                            "protocol": "HTTP/1.1",
                            "sourceIp": "127.0.0.1",
                            "userAgent": headers.get("user-agent", ""),
                        },
                        "timeEpoch": int(time.time() * 1000),
                    },
                    "isBase64Encoded": encoded,
                }
                if raw:
                    event["body"] = base64.b64encode(raw).decode() if encoded else text
                try:
                    body_json = json.loads(raw) if raw else None
                except ValueError:
                    body_json = None
                owner.seen.append(Seen(self.command, path, body_json))
                try:
                    result = owner.function(event, LambdaContext(function_name="OllamaStandIn"))
                    status = int(result["statusCode"])
                    out_headers = dict(result.get("headers") or {})
                    body = str(result.get("body") or "")
                    payload = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
                except Exception:  # a function URL answers 502 when the function fails
                    status, out_headers, payload = 502, {"content-type": "application/json"}, b'{"Message":null}'
                self.send_response(status)
                for name, value in out_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def chats(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and s.path == "/api/chat"]


@dataclass
class StandIn:
    endpoint: FunctionUrl
    secret_arn: str

    @property
    def url(self) -> str:
        return self.endpoint.url

    def chat_model(self, *, key: str | None = API_KEY, model: str = MODEL, stream: bool = True) -> Any:
        llm = create_chat_model(OllamaSettings(base_url=self.url, model=model, timeout_seconds=5), api_key=key)
        return llm if stream else llm.bind(stream=False)

    def calls(self) -> int:
        item = boto3.client("dynamodb").get_item(TableName=CALLS_TABLE, Key={"pk": {"S": "calls"}}).get("Item")
        return int(item["calls"]["N"]) if item else 0

    def rotate(self, key: str) -> None:
        boto3.client("secretsmanager").put_secret_value(SecretId=self.secret_arn, SecretString=key)

    def http(self, method: str, path: str, body: Any = None, *, key: str | None = API_KEY) -> tuple[int, str, bytes]:
        """(status, content type, body) of one raw request."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", ""), error.read()


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    with mock_aws():
        arn = boto3.client("secretsmanager").create_secret(Name="ollama-stand-in-key", SecretString=API_KEY)["ARN"]
        boto3.client("dynamodb").create_table(
            TableName=CALLS_TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        monkeypatch.setenv("API_KEY_SECRET_ARN", arn)
        monkeypatch.setenv("MODEL", MODEL)
        monkeypatch.setenv("CALLS_TABLE", CALLS_TABLE)
        handler.reset()  # a new container: no cached key, clients made inside the mock
        with FunctionUrl(handler.lambda_handler) as endpoint:
            yield StandIn(endpoint, arn)
        handler.reset()


# ---- helpers --------------------------------------------------------------------------------


def document(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


def fixture(name: str) -> ReceiptDetails:
    return parse_receipt_document(document(name))


def garbage_document() -> dict[str, Any]:
    doc = copy.deepcopy(document("receipt_gas_station.json"))
    doc["image_id"] = GARBAGE_IMAGE_ID
    doc["lines"][0]["words"][0]["text"] = "QQGARBLEDQQ"
    return doc


def rule(text: str) -> str | None:
    """The stand-in's rule, written out again: prices are LINE_TOTAL, alphabetic words PRODUCT_NAME."""
    if re.fullmatch(r"-?\$?\d+[.,]\d\d", text):
        return "LINE_TOTAL"
    return "PRODUCT_NAME" if text.isalpha() else None


def expected(details: ReceiptDetails) -> dict[tuple[int, int], str]:
    labeled = {(lab.line_id, lab.word_id) for lab in details.labels}
    out = {}
    for word in details.words:
        label = rule(word.text)
        if label is not None and (word.line_id, word.word_id) not in labeled:
            out[(word.line_id, word.word_id)] = label
    return out


def ndjson(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.decode().splitlines()]


# ---- the handler, through the project's client ------------------------------------------------


@pytest.mark.parametrize("name", ["receipt_grocery.json", "receipt_long_300.json"])
def test_a_receipt_is_labeled_by_the_rule_in_one_call(stand_in: StandIn, name: str) -> None:
    details = fixture(name)

    result = label_receipt(details, llm=stand_in.chat_model(), options=FAST)

    assert result.llm_calls == 1
    assert {(lab.line_id, lab.word_id): lab.label for lab in result.labels} == expected(details)
    assert {"LINE_TOTAL", "PRODUCT_NAME"} <= {lab.label for lab in result.labels}
    assert result.rejected == []
    assert {lab.label_proposed_by for lab in result.labels} == {f"receipt_label:{MODEL}"}
    [chat] = stand_in.endpoint.chats
    assert chat.body["stream"] is True
    assert stand_in.calls() == 1


def test_words_already_labeled_get_nothing(stand_in: StandIn) -> None:
    details = fixture("receipt_grocery.json")
    first_alpha = next(w for w in details.words if w.text.isalpha())
    first_price = next(w for w in details.words if rule(w.text) == "LINE_TOTAL")
    existing = [
        ReceiptWordLabel(
            image_id=details.receipt.image_id,
            receipt_id=details.receipt.receipt_id,
            line_id=word.line_id,
            word_id=word.word_id,
            label="MERCHANT_NAME" if word is first_alpha else "GRAND_TOTAL",
            reasoning="set before",
            timestamp_added="2024-01-01T00:00:00+00:00",
            validation_status=ValidationStatus.VALID,
        )
        for word in (first_alpha, first_price)
    ]
    details = replace(details, labels=existing)

    result = label_receipt(details, llm=stand_in.chat_model(), options=FAST)

    proposed = {(lab.line_id, lab.word_id): lab.label for lab in result.labels}
    assert proposed == expected(details)
    assert (first_alpha.line_id, first_alpha.word_id) not in proposed
    assert (first_price.line_id, first_price.word_id) not in proposed
    assert result.rejected == []  # the stand-in did not propose the labeled words at all
    assert result.llm_calls == 1 and stand_in.calls() == 1


def test_the_plain_json_mode_works_too(stand_in: StandIn) -> None:
    details = fixture("receipt_pharmacy.json")

    result = label_receipt(details, llm=stand_in.chat_model(stream=False), options=FAST)

    assert result.llm_calls == 1
    assert {(lab.line_id, lab.word_id): lab.label for lab in result.labels} == expected(details)
    [chat] = stand_in.endpoint.chats
    assert chat.body["stream"] is False
    assert stand_in.calls() == 1


def test_the_preflight_passes_with_one_counted_call(stand_in: StandIn) -> None:
    assert check_endpoint(stand_in.chat_model()) == 1
    [chat] = stand_in.endpoint.chats
    assert chat.body["options"]["num_predict"] == 1
    assert stand_in.calls() == 1


def test_a_wrong_or_missing_key_is_rejected_and_not_counted(stand_in: StandIn) -> None:
    with pytest.raises(LLMAuthError) as wrong:
        check_endpoint(stand_in.chat_model(key="olk-not-the-key"))
    with pytest.raises(LLMAuthError):
        label_receipt(fixture("receipt_grocery.json"), llm=stand_in.chat_model(key=None), options=FAST)

    assert wrong.value.attempts == 1
    assert "unauthorized" in str(wrong.value)
    assert stand_in.calls() == 0


def test_the_key_is_read_once_and_again_only_when_a_request_does_not_match(stand_in: StandIn) -> None:
    reads = Calls()
    handler._client("secrets").meta.events.register("before-call.*.*", reads.hook)

    assert check_endpoint(stand_in.chat_model()) == 1
    assert check_endpoint(stand_in.chat_model()) == 1
    assert reads.names == ["GetSecretValue"]  # once per container

    stand_in.rotate("olk-rotated-8d2f")
    assert check_endpoint(stand_in.chat_model(key="olk-rotated-8d2f")) == 1  # accepted at once
    assert check_endpoint(stand_in.chat_model(key="olk-rotated-8d2f")) == 1
    with pytest.raises(LLMAuthError):
        check_endpoint(stand_in.chat_model())  # the old key no longer works
    assert reads.names == ["GetSecretValue"] * 3  # the rotated key's first use, the old key's rejection
    assert stand_in.calls() == 4


def test_a_wrong_model_is_not_found_like_ollama_says_it(stand_in: StandIn) -> None:
    with pytest.raises(LLMModelNotFoundError) as caught:
        label_receipt(fixture("receipt_grocery.json"), llm=stand_in.chat_model(model="llama3:8b"), options=FAST)

    assert 'model "llama3:8b" not found, try pulling it first' in str(caught.value)
    assert caught.value.attempts == 1
    assert stand_in.calls() == 1  # authorized, so counted: the pipeline counts it as an attempt too


def test_the_garbage_receipt_fails_alone_after_one_repair(stand_in: StandIn) -> None:
    with pytest.raises(LLMOutputError) as caught:
        label_receipt(parse_receipt_document(garbage_document()), llm=stand_in.chat_model(), options=FAST)
    good = label_receipt(fixture("receipt_gas_station.json"), llm=stand_in.chat_model(), options=FAST)

    assert caught.value.llm_calls == 2
    assert "not valid JSON" in caught.value.errors[0]
    _, repair, _ = stand_in.endpoint.chats
    assert [m["role"] for m in repair.body["messages"]] == ["system", "user", "assistant", "user"]
    assert repair.body["messages"][2]["content"].startswith("Sure!")  # its own prose answer, shown back to it
    assert good.llm_calls == 1 and good.labels
    assert stand_in.calls() == 3


def test_the_key_never_reaches_the_logs(
    stand_in: StandIn, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, botocore's included

    label_receipt(fixture("receipt_grocery.json"), llm=stand_in.chat_model(), options=FAST)
    check_endpoint(stand_in.chat_model())
    with pytest.raises(LLMAuthError):
        check_endpoint(stand_in.chat_model(key=API_KEY + "-wrong"))
    stand_in.http("GET", "/api/tags")

    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "POST /api/chat -> 200" in caplog.text and "POST /api/chat -> 401" in caplog.text
    assert API_KEY not in logged  # neither the key nor the wrong one built from it
    assert "Bearer" not in logged  # no request header either (botocore's own SigV4 lines are not ours)


# ---- the handler, raw HTTP ----------------------------------------------------------------------


def test_streamed_answers_are_ollama_ndjson(stand_in: StandIn) -> None:
    messages = [{"role": "user", "content": "Label the words:\n\n[1:1] MILK  [1:2] 3.49\n[2:1] TOTAL  [2:2] $3.49"}]
    status, content_type, body = stand_in.http("POST", "/api/chat", {"model": MODEL, "messages": messages})

    assert status == 200 and content_type == "application/x-ndjson"
    lines = ndjson(body)
    *chunks, final = lines
    assert chunks and all(set(c) == {"model", "created_at", "message", "done"} and c["done"] is False for c in chunks)
    assert all(c["message"]["role"] == "assistant" and c["model"] == MODEL for c in chunks)
    assert final["done"] is True and final["done_reason"] == "stop" and final["message"]["content"] == ""
    assert {"total_duration", "prompt_eval_count", "eval_count"} <= set(final)
    answer = json.loads("".join(c["message"]["content"] for c in chunks))
    assert [(i["line_id"], i["word_id"], i["label"]) for i in answer["labels"]] == [
        (1, 1, "PRODUCT_NAME"),
        (1, 2, "LINE_TOTAL"),
        (2, 1, "PRODUCT_NAME"),
        (2, 2, "LINE_TOTAL"),
    ]


def test_plain_answers_are_one_object_and_format_is_ignored(stand_in: StandIn) -> None:
    request = {
        "model": MODEL,
        "stream": False,
        "format": {"type": "object"},
        "messages": [{"role": "user", "content": "[1:1] BREAD {PRODUCT_NAME}  [1:2] -2,50  [1:3] x2"}],
    }
    status, content_type, body = stand_in.http("POST", "/api/chat", request)

    assert status == 200 and content_type.startswith("application/json")
    answer = json.loads(body)
    assert answer["done"] is True and answer["done_reason"] == "stop"
    labels = json.loads(answer["message"]["content"])["labels"]
    assert [(i["line_id"], i["word_id"], i["label"]) for i in labels] == [(1, 2, "LINE_TOTAL")]


def test_the_preflight_answer_is_cut_at_the_length_limit(stand_in: StandIn) -> None:
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 1}}
    status, _, body = stand_in.http("POST", "/api/chat", request)

    *chunks, final = ndjson(body)
    content = "".join(c["message"]["content"] for c in chunks)
    assert status == 200 and 0 < len(content) < len('{"labels": []}')
    assert final["done_reason"] == "length"


def test_routes(stand_in: StandIn) -> None:
    assert stand_in.http("GET", "/", key=None) == (200, "text/plain; charset=utf-8", b"Ollama is running")
    status, _, body = stand_in.http("GET", "/api/tags")
    assert status == 200 and json.loads(body) == {"models": [{"name": MODEL, "model": MODEL}]}
    assert stand_in.http("GET", "/api/tags", key=None)[0] == 401
    status, _, body = stand_in.http("GET", "/api/tags", key="nope")
    assert status == 401 and json.loads(body) == {"error": "unauthorized"}
    assert stand_in.http("POST", "/api/generate", {"model": MODEL})[0] == 404
    assert stand_in.http("GET", "/api/chat")[0] == 404
    assert stand_in.http("POST", "/api/chat", {"model": MODEL, "messages": []}, key=None)[0] == 401
    assert stand_in.calls() == 0


def test_a_base64_encoded_body_is_read(stand_in: StandIn) -> None:
    stand_in.endpoint.base64_bodies = True

    result = label_receipt(fixture("receipt_restaurant.json"), llm=stand_in.chat_model(), options=FAST)

    assert result.llm_calls == 1 and result.labels
    assert stand_in.calls() == 1


# ---- the process Lambda against the stand-in: what the integration test will deploy --------------


def test_the_process_lambda_runs_the_pipelines_calls_against_it(
    stand_in: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    process = load_handler(PROCESS_HANDLER, "process_receipt_handler_stand_in")
    boto3.client("dynamodb").create_table(**create_table_kwargs(RECEIPT_TABLE))
    monkeypatch.setenv("DYNAMODB_TABLE_NAME", RECEIPT_TABLE)
    monkeypatch.setenv("OLLAMA_BASE_URL", stand_in.url)
    monkeypatch.setenv("OLLAMA_MODEL", MODEL)
    monkeypatch.setenv("OLLAMA_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("OLLAMA_API_KEY_SECRET_ARN", stand_in.secret_arn)
    monkeypatch.delenv("LANGSMITH_API_KEY_SECRET_ARN", raising=False)
    store = DynamoClient(RECEIPT_TABLE)
    good = document("receipt_pharmacy.json")
    store.load_receipt_document(good)
    store.load_receipt_document(garbage_document())
    event = {"image_id": good["image_id"], "receipt_id": good["receipt_id"]}

    assert process.lambda_handler({"preflight": True}, None)["llm_calls"] == 1
    first = process.lambda_handler(event, None)
    again = process.lambda_handler(event, None)
    with pytest.raises(LLMOutputError):
        process.lambda_handler({"image_id": GARBAGE_IMAGE_ID, "receipt_id": good["receipt_id"]}, None)

    assert first["llm_calls"] == 1 and first["labels_added"] == len(expected(fixture("receipt_pharmacy.json")))
    assert again["already_labeled"] is True and again["llm_calls"] == 0
    assert stand_in.calls() == 1 + 1 + 2  # preflight, the receipt, the garbage receipt and its repair

    # a rotated key: the process Lambda's cached key is rejected once, it re-reads the secret and retries
    stand_in.rotate("olk-rotated-in-between")
    assert process.lambda_handler({"preflight": True}, None)["preflight"] == "ok"
    assert stand_in.calls() == 5  # the rejected attempt is not counted


# ---- the construct -----------------------------------------------------------------------------


def synth_stand_in(outdir: Path, *, imported_secret: bool = False, nag: bool = False) -> tuple[str, Any]:
    """Synthesize the construct alone in a throwaway stack; return the template text and the stand-in."""
    import aws_cdk as cdk
    from aws_cdk import aws_secretsmanager as secretsmanager

    from tests.integ.ollama_stand_in.construct import OllamaStandIn

    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(app, "StandInOnly")
    if imported_secret:
        secret = secretsmanager.Secret.from_secret_name_v2(stack, "Key", "integ/ollama-api-key")
    else:
        secret = secretsmanager.Secret(stack, "Key")
        cdk.Validations.of(secret).acknowledge(
            cdk.Acknowledgment(id="AwsSolutions::AwsSolutions-SMG4", reason="This test's own secret, never deployed")
        )
    stand_in = OllamaStandIn(stack, "OllamaStandIn", api_key_secret=secret, model=MODEL)
    cdk.CfnOutput(stack, "BaseUrl", value=stand_in.base_url)
    if nag:
        from cdk_nag import AwsSolutionsChecks, ServerlessChecks

        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    app.synth()
    return (outdir / "StandInOnly.template.json").read_text(), stand_in


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from strings(inner)


def test_the_construct_synthesizes_a_public_url_and_scoped_permissions(tmp_path: Path) -> None:
    from aws_cdk.assertions import Match, Template

    text, _ = synth_stand_in(tmp_path)
    template = Template.from_json(json.loads(text))

    for kind in (
        "AWS::Lambda::Url",
        "AWS::Lambda::Function",
        "AWS::Logs::LogGroup",
        "AWS::DynamoDB::GlobalTable",
        "AWS::SecretsManager::Secret",
        "AWS::IAM::Role",
        "AWS::IAM::Policy",
    ):
        template.resource_count_is(kind, 1)
    template.has_resource_properties("AWS::Lambda::Url", {"AuthType": "NONE", "InvokeMode": "BUFFERED"})
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Runtime": "python3.12",
            "Architectures": ["arm64"],
            "MemorySize": 256,
            "Timeout": 30,
            "Handler": "handler.lambda_handler",
            "Environment": {
                "Variables": Match.object_equals(
                    {name: Match.any_value() for name in ("API_KEY_SECRET_ARN", "MODEL", "CALLS_TABLE")}
                )
            },
        },
    )
    template.has_resource("AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 7}, "DeletionPolicy": "Delete"})
    template.has_resource(
        "AWS::DynamoDB::GlobalTable",
        {
            "Properties": {
                "KeySchema": Match.exact([{"AttributeName": "pk", "KeyType": "HASH"}]),
                "BillingMode": "PAY_PER_REQUEST",
                "SSESpecification": Match.object_equals({"SSEEnabled": True, "SSEType": "KMS"}),
                "Replicas": [{"PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}}],
            },
            "DeletionPolicy": "Delete",
        },
    )
    template.has_resource_properties(
        "AWS::IAM::Role", {"ManagedPolicyArns": Match.absent(), "Policies": Match.absent()}
    )

    [secret_id] = template.find_resources("AWS::SecretsManager::Secret")
    [table_id] = template.find_resources("AWS::DynamoDB::GlobalTable")
    [log_id] = template.find_resources("AWS::Logs::LogGroup")
    [policy] = template.find_resources("AWS::IAM::Policy").values()
    granted = {
        tuple(sorted([s["Action"]] if isinstance(s["Action"], str) else s["Action"])): s["Resource"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    }
    assert granted == {
        ("secretsmanager:GetSecretValue",): {"Ref": secret_id},
        ("dynamodb:GetItem", "dynamodb:UpdateItem"): {"Fn::GetAtt": [table_id, "Arn"]},
        ("logs:CreateLogStream", "logs:PutLogEvents"): {"Fn::GetAtt": [log_id, "Arn"]},
    }
    permissions = template.find_resources("AWS::Lambda::Permission").values()
    assert {p["Properties"]["Action"] for p in permissions} == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}


def test_a_secret_imported_by_name_is_granted_without_a_star(tmp_path: Path) -> None:
    template = json.loads(synth_stand_in(tmp_path, imported_secret=True)[0])

    [policy] = resources_of_type(template, "AWS::IAM::Policy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert not any("*" in s for statement in statements for s in strings(statement["Resource"]))
    [secret_statement] = [s for s in statements if s["Action"] == "secretsmanager:GetSecretValue"]
    assert "".join(strings(secret_statement["Resource"])).endswith(":secret:integ/ollama-api-key-??????")


def test_two_synths_are_byte_identical_and_the_asset_is_only_the_handler(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_

    from tests.integ.ollama_stand_in.construct import ASSET_EXCLUDE, HERE

    (HERE / "__pycache__").mkdir(exist_ok=True)  # as any test run leaves it (this module imported handler.py)
    first, _ = synth_stand_in(tmp_path / "one")
    second, _ = synth_stand_in(tmp_path / "two")
    assert first == second

    # the same hash as a folder holding handler.py alone: the construct, caches and modes do not count
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(HERE / "handler.py", alone / "handler.py")
    (alone / "handler.py").chmod(0o600)
    (alone / "__pycache__").mkdir()
    (alone / "__pycache__" / "handler.cpython-312.pyc").write_bytes(b"\x00")
    (alone / "construct.py").write_text("# another construct\n")
    app = cdk.App(outdir=str(tmp_path / "alone.out"))
    stack = cdk.Stack(app, "Alone")
    lambda_.Function(
        stack,
        "F",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="handler.lambda_handler",
        code=lambda_.Code.from_asset(str(alone), exclude=ASSET_EXCLUDE),
    )
    alone_template = app.synth().get_stack_by_name("Alone").template
    [alone_function] = resources_of_type(alone_template, "AWS::Lambda::Function").values()
    [function] = resources_of_type(json.loads(first), "AWS::Lambda::Function").values()
    assert alone_function["Properties"]["Code"]["S3Key"] == function["Properties"]["Code"]["S3Key"]


def test_the_base_url_passes_the_pipelines_https_check_and_the_raw_url_does_not(tmp_path: Path) -> None:
    from constructs.receipt_labeling_stack import PipelineSettings

    text, stand_in = synth_stand_in(tmp_path)
    template = json.loads(text)

    [url_id] = resources_of_type(template, "AWS::Lambda::Url")
    assert template["Outputs"]["BaseUrl"]["Value"] == {
        "Fn::Join": [
            "",
            ["https://", {"Fn::Select": [2, {"Fn::Split": ["/", {"Fn::GetAtt": [url_id, "FunctionUrl"]}]}]}],
        ]
    }
    # CloudFormation's Fn::Split / Fn::Select on a function URL, done in Python: the host, no trailing slash
    function_url = "https://abc123.lambda-url.eu-west-1.on.aws/"
    assert "https://" + function_url.split("/")[2] == function_url.rstrip("/")
    assert PipelineSettings(ollama_base_url=stand_in.base_url).ollama_base_url == stand_in.base_url
    with pytest.raises(ValueError, match="https://"):
        PipelineSettings(ollama_base_url=stand_in.url)


def test_cdk_nag_has_nothing_left_to_say(tmp_path: Path) -> None:
    synth_stand_in(tmp_path, nag=True)  # raises on an unacknowledged error-level finding

    report = json.loads((tmp_path / "validation-report.json").read_text())
    assert {p["pluginName"]: p["violations"] for p in report["pluginReports"]} == {
        "AwsSolutions": [],
        "Serverless": [],
    }
    suppressed = {v["ruleName"] for p in report["pluginReports"] for v in p["suppressedViolations"]}
    assert suppressed == {
        "AwsSolutions-L1",
        "AwsSolutions-SMG4",  # the test's own secret
        "Serverless-LambdaDLQ",
        "Serverless-LambdaLatestVersion",
        "Serverless-LambdaTracing",
    }


@pytest.mark.parametrize("imported_secret", [False, True], ids=["new-secret", "imported-secret"])
def test_cfn_lint_with_the_repository_configuration_finds_nothing(tmp_path: Path, imported_secret: bool) -> None:
    text, _ = synth_stand_in(tmp_path, imported_secret=imported_secret)

    assert cfn_lint(text, ["us-east-1", "eu-west-1"]) == []
