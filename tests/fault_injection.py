"""Fault injection helpers for the fault and abuse suite (tests/*/test_faults_*.py, test_security_*.py).

:class:`HttpFaults` fails chosen AWS API calls at the HTTP layer, so botocore's retries and error
parsing and the caller's handling run as against AWS; :func:`process_world` runs the ProcessReceipt
handler on moto and the loopback Ollama server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.core.botocore_stubber import MockRawResponse

from receipt_dynamo import DynamoClient, ReceiptWordLabel
from receipt_dynamo.schema import create_table_kwargs
from tests.helpers import PROCESS_HANDLER, REPO_ROOT, Calls, LambdaContext, load_handler
from tests.ollama_server import OllamaServer

FIXTURES = REPO_ROOT / "tests" / "fixtures"
TABLE = "receipts-faults"
BUCKET = "manifests-faults"
API_KEY = "olk-faults-3b9e71d2-never-log-me"
MODEL = "loopback-model"


# ---- AWS faults at the HTTP layer ----------------------------------------------------------------


def dynamodb_error(code: str, message: str, status: int = 400) -> tuple[int, bytes]:
    return status, json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()


def s3_error(code: str, message: str, status: int) -> tuple[int, bytes]:
    body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return status, body.encode()


THROTTLED = dynamodb_error(
    "ProvisionedThroughputExceededException",
    "The level of configured provisioned throughput for the table was exceeded.",
)


class _FaultRouter:
    """Takes the place of moto's ``before-send`` handler on one client: faults first, then moto.

    botocore calls every ``before-send`` handler and uses the first response; a fault hook merely
    registered before moto's would still let moto execute the request. Routing keeps a failed
    request away from moto entirely, as a throttled request never reaches the table.
    """

    def __init__(self, client: Any) -> None:
        from moto.core.models import botocore_stubber

        self._moto = botocore_stubber
        self.faults: list[HttpFaults] = []
        client.meta.events.unregister("before-send", botocore_stubber)
        client.meta.events.register("before-send", self)

    def __call__(self, event_name: str, request: Any, **kwargs: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        for fault in list(self.faults):
            if fault.operation == operation:
                response = fault.attempt(request)
                if response is not None:
                    return response
        result: AWSResponse | None = self._moto(event_name=event_name, request=request, **kwargs)
        return result


_ROUTERS: dict[int, _FaultRouter] = {}


@dataclass
class HttpFaults:
    """Fail the HTTP requests of ``operation`` on ``client`` for which ``when(n)`` is true (n counts from 1).

    Every HTTP attempt (botocore's retries included) is counted in ``seen``; failed ones never reach moto.
    """

    client: Any
    operation: str
    when: Callable[[int], bool]
    error: tuple[int, bytes] = THROTTLED
    respond: Callable[[Any], tuple[int, bytes]] | None = None  # builds the answer from the request instead
    seen: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        key = id(self.client.meta.events)
        if key not in _ROUTERS:
            _ROUTERS[key] = _FaultRouter(self.client)
        self._router = _ROUTERS[key]
        self._router.faults.append(self)

    def remove(self) -> None:
        """The fault clears: later requests reach moto again."""
        if self in self._router.faults:
            self._router.faults.remove(self)

    def attempt(self, request: Any) -> AWSResponse | None:
        with self._lock:
            self.seen += 1
            fail = self.when(self.seen)
            if fail:
                self.failed += 1
        if not fail:
            return None
        status, body = self.respond(request) if self.respond is not None else self.error
        headers = {"Content-Type": "application/x-amz-json-1.0" if body.startswith(b"{") else "application/xml"}
        return AWSResponse(request.url, status, headers, MockRawResponse(body))


# ---- the ProcessReceipt world ---------------------------------------------------------------------


@dataclass
class ProcessWorld:
    """The ProcessReceipt handler on moto (DynamoDB, Secrets Manager) and the loopback Ollama server.

    Nothing sleeps: every ``time.sleep`` (botocore's retry sleeps included) is appended to ``sleeps``.
    """

    handler: ModuleType
    server: OllamaServer
    ddb: Any  # the boto3 DynamoDB client the handler uses (fault hooks go on it)
    store: DynamoClient  # the handler's DynamoClient (no real sleeps)
    calls: Calls
    sleeps: list[float]

    def load(self, fixture: str = "receipt_grocery.json") -> dict[str, Any]:
        doc = json.loads((FIXTURES / fixture).read_text())
        DynamoClient(TABLE).load_receipt_document(doc)
        return {"image_id": doc["image_id"], "receipt_id": doc["receipt_id"]}

    def invoke(self, event: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.handler.lambda_handler(event, LambdaContext())
        return result

    def items(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every item of the table by (PK, SK), read with a client that has no fault hooks."""
        client = boto3.client("dynamodb")
        items: dict[tuple[str, str], dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"TableName": TABLE}
        while True:
            page = client.scan(**kwargs)
            items.update({(i["PK"]["S"], i["SK"]["S"]): i for i in page["Items"]})
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def labels(self, event: dict[str, Any]) -> list[ReceiptWordLabel]:
        return list(DynamoClient(TABLE).get_receipt_details(event["image_id"], event["receipt_id"]).labels)


@contextmanager
def process_world(server: OllamaServer, monkeypatch: pytest.MonkeyPatch, *, name: str) -> Iterator[ProcessWorld]:
    """A fresh ProcessReceipt container on moto + the loopback server; see :class:`ProcessWorld`."""
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)  # botocore's and receipt_label's retry sleeps
    with mock_aws():
        boto3.client("dynamodb").create_table(**create_table_kwargs(TABLE))
        arn = boto3.client("secretsmanager").create_secret(Name="ollama-api-key", SecretString=API_KEY)["ARN"]
        monkeypatch.setenv("DYNAMODB_TABLE_NAME", TABLE)
        monkeypatch.setenv("OLLAMA_BASE_URL", server.url)
        monkeypatch.setenv("OLLAMA_MODEL", MODEL)
        monkeypatch.setenv("OLLAMA_TIMEOUT_SECONDS", "30")
        monkeypatch.setenv("OLLAMA_API_KEY_SECRET_ARN", arn)
        for var in ("LANGSMITH_API_KEY_SECRET_ARN", "OLLAMA_API_KEY", "LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
            monkeypatch.delenv(var, raising=False)
        handler = load_handler(PROCESS_HANDLER, f"process_receipt_handler_{name}")
        ddb = boto3.client("dynamodb")
        store = DynamoClient(TABLE, client=ddb, sleep=sleeps.append)
        handler._dynamo = store
        calls = Calls()
        ddb.meta.events.register("before-call.*.*", calls.hook)
        yield ProcessWorld(handler, server, ddb, store, calls, sleeps)
