"""Test scaffolding shared by every test module: the repository root, synthesis, handlers and template queries.

- ``REPO_ROOT``; ``cdk_json_context()``, ``build_cdk_app(outdir, **context)`` (built, not synthesized)
  and ``synth_app(outdir, **context)`` (the cloud assembly), all with cdk.json's context as
  ``cdk synth`` passes it (local_pipeline/template.py holds the one implementation);
- ``load_handler(path, name)`` with ``LIST_HANDLER`` / ``PROCESS_HANDLER``, a ``LambdaContext`` and
  ``Calls`` (the AWS operations a boto3 client made);
- ``resources_of_type(template, *types)`` and ``one_resource(template, type_, **properties)`` over
  a template dict; ``aws_cdk.assertions.Template.from_json(template)`` says the rest;
- ``cfn_lint(template_text, regions)``: cfn-lint's findings with the repository's .cfnlintrc.yaml;
- ``FIXTURES`` and ``fixture_receipt(name)``: a receipt of tests/fixtures as the data layer reads it;
- ``direct_labeling_props(stack, **overrides)``: the keyword arguments of a labeling state machine
  construct used on its own (an imported table and key, no cdk.json).
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest

from local_pipeline.template import (
    LIST_HANDLER,
    PROCESS_HANDLER,
    REPO_ROOT,
    build_cdk_app,
    cdk_json_context,
    load_handler,
    resources_of_type,
    synth_app,
)
from receipt_dynamo import ReceiptDetails, ReceiptWord, ReceiptWordLabel, ValidationStatus, parse_receipt_document

__all__ = [
    "CFN_LINT_CONFIG",
    "FIXTURES",
    "LIST_HANDLER",
    "PERSON",
    "PROCESS_HANDLER",
    "REPO_ROOT",
    "WRITE_OPERATIONS",
    "Calls",
    "LambdaContext",
    "build_cdk_app",
    "cdk_json_context",
    "cfn_lint",
    "cold_container",
    "copy_of",
    "direct_labeling_props",
    "fixture_documents",
    "fixture_receipt",
    "load_handler",
    "one_resource",
    "person_label",
    "resources_of_type",
    "synth_app",
]

WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
CFN_LINT_CONFIG = REPO_ROOT / ".cfnlintrc.yaml"
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def fixture_receipt(name: str = "receipt_grocery.json") -> ReceiptDetails:
    """The receipt document ``tests/fixtures/<name>``, parsed as ``get_receipt_details`` returns it."""
    return parse_receipt_document(json.loads((FIXTURES / name).read_text()))


def fixture_documents() -> list[dict[str, Any]]:
    """Every receipt document under tests/fixtures, by file name."""
    return [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))]


def copy_of(document: dict[str, Any], *, marker: str | None = None) -> dict[str, Any]:
    """The same receipt under a new image id; ``marker`` replaces the first word's text."""
    clone = copy.deepcopy(document)
    clone["image_id"] = str(uuid.uuid4())
    if marker is not None:
        clone["lines"][0]["words"][0]["text"] = marker
    return clone


#: ``label_proposed_by`` of the labels a person writes in the tests.
PERSON = "reviewer:alice"


def person_label(
    word: ReceiptWord, label: str, status: ValidationStatus = ValidationStatus.VALID, *, by: str = PERSON
) -> ReceiptWordLabel:
    """A label a person (``by``) put on ``word``, already decided unless ``status`` says otherwise."""
    return ReceiptWordLabel(
        image_id=word.image_id,
        receipt_id=word.receipt_id,
        line_id=word.line_id,
        word_id=word.word_id,
        label=label,
        reasoning="checked by a person",
        timestamp_added="2026-01-02T03:04:05+00:00",
        validation_status=status,
        label_proposed_by=by,
    )


def cold_container(monkeypatch: pytest.MonkeyPatch, handler: ModuleType, table: Any) -> None:
    """``handler``'s per-container clients as a cold start has them, ``table`` as its table, no LangSmith secret."""
    monkeypatch.setattr(handler, "_dynamo", table)
    monkeypatch.setattr(handler, "_models", None)
    monkeypatch.setattr(handler, "_tracer", None)
    monkeypatch.delenv("LANGSMITH_API_KEY_SECRET_ARN", raising=False)


def one_resource(template: dict[str, Any], type_: str, **properties: Any) -> tuple[str, dict[str, Any]]:
    """The one resource of ``type_`` whose properties equal ``properties``: (logical id, resource).

    Fails the test when none or several match.
    """
    matches = [
        (logical_id, resource)
        for logical_id, resource in resources_of_type(template, type_).items()
        if all(resource.get("Properties", {}).get(name) == value for name, value in properties.items())
    ]
    assert len(matches) == 1, (type_, properties, [logical_id for logical_id, _ in matches])
    return matches[0]


def cfn_lint(template_text: str, regions: list[str]) -> list[str]:
    """cfn-lint's findings (``"<rule id> <message>"``) for a template, with the repository's .cfnlintrc.yaml."""
    from cfnlint.api import ManualArgs, lint

    # ``config_file`` is read by cfn-lint's ConfigMixIn though ManualArgs does not declare it.
    config = ManualArgs(regions=regions, config_file=str(CFN_LINT_CONFIG))  # type: ignore[typeddict-unknown-key]
    return [f"{m.rule.id} {m.message}" for m in lint(template_text, config=config)]


@dataclass
class LambdaContext:
    """The attributes of a Lambda context object that the handlers read."""

    function_name: str = "ProcessReceipt"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:ProcessReceipt"
    memory_limit_in_mb: int = 1536
    aws_request_id: str = "req-local"
    log_group_name: str = "/aws/lambda/ProcessReceipt"
    log_stream_name: str = "stream"
    timeout_seconds: float = 600.0
    _start: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        """As Lambda's: the milliseconds left before the function's timeout, counting down from creation."""
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._start)) * 1000))


@dataclass
class Calls:
    """AWS API operations a client made (one per API call, not per HTTP attempt); register ``hook``
    on the client's ``before-call`` event."""

    names: list[str] = field(default_factory=list)

    def hook(self, model: Any, **_: Any) -> None:
        self.names.append(model.name)

    def writes(self) -> list[str]:
        return [n for n in self.names if n in WRITE_OPERATIONS]


def direct_labeling_props(stack: Any, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``CreateLabelsStepFunction`` / ``ValidatePendingLabelsStepFunction`` in ``stack``.

    The table ``receipts`` and the secret ``ollama/api-key`` are imported once per stack (ids ``Table``
    and ``Key``); ``overrides`` replace or add arguments.
    """
    from aws_cdk import aws_dynamodb as dynamodb
    from aws_cdk import aws_secretsmanager as secretsmanager

    table = stack.node.try_find_child("Table") or dynamodb.TableV2.from_table_name(stack, "Table", "receipts")
    key = stack.node.try_find_child("Key") or secretsmanager.Secret.from_secret_name_v2(stack, "Key", "ollama/api-key")
    props = {
        "name": "receipt-labeling-direct",
        "table": table,
        "ollama_api_key_secret": key,
        "ollama_model": "gpt-oss:120b",
        "ollama_base_url": "https://ollama.com",
    }
    return {**props, **overrides}
