"""Integration test: the whole labeling pipeline as deployed, against a stand-in Ollama in the same stack.

The stack is ``ReceiptLabelingStack`` (stage ``integ``, half the receipts may fail so the garbage one
fails alone) plus ``OllamaStandIn``: a Lambda behind an HTTPS function URL that speaks ``/api/chat``
with deterministic answers, checks the bearer key against the stack's own Ollama secret (so no key
is ever written anywhere) and counts the calls it answers. Assertions, in order:

1. three fixture receipts are seeded (BatchWriteItem of the items receipt_dynamo builds);
2. an execution SUCCEEDS with 3 succeeded, 0 failed; a word of each receipt has its PENDING label;
   the stand-in answered 4 calls (the preflight and one per receipt);
3. a second execution SUCCEEDS and the stand-in still counts 4: no LLM call, not even the preflight;
4. a receipt whose answers are garbage is seeded; the third execution SUCCEEDS with exactly that
   receipt failed (3 succeeded, 1 failed) and 3 more calls (the preflight, the answer, the repair).

Synthesized offline by ``tests/integration/test_integ_snapshots.py``; deployed by ``make integ``.
"""

from __future__ import annotations

import copy
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The repository root, first on the path before aws_cdk: the project's constructs/ joins the constructs namespace.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk.integ_tests_alpha import ExpectedResult, IApiCall, IntegTest, Match

from constructs.receipt_labeling_stack import PipelineSettings, ReceiptLabelingStack
from receipt_dynamo import ReceiptDetails, keys, parse_receipt_document
from receipt_dynamo.document import receipt_document
from tests.helpers import REPO_ROOT
from tests.integ.ollama_stand_in.construct import OllamaStandIn

FIXTURES = ("receipt_gas_station.json", "receipt_pharmacy.json", "receipt_grocery.json")
GARBAGE_WORD = "QQGARBLEDQQ"  # the stand-in answers prose, never JSON, for a receipt holding this word
GARBAGE_IMAGE_ID = "9d3c1e55-2f7a-4b8e-a6d1-0c4b7e2f9a13"
BATCH = 25  # BatchWriteItem's limit
MODEL = "stand-in-model"
RUN_TIMEOUT = Duration.minutes(20)


def fixture(name: str) -> ReceiptDetails:
    return parse_receipt_document(json.loads((REPO_ROOT / "tests" / "fixtures" / name).read_text()))


def garbage_receipt() -> ReceiptDetails:
    document = receipt_document(fixture(FIXTURES[0]))
    document = copy.deepcopy(document)
    document["image_id"] = GARBAGE_IMAGE_ID
    document["lines"][0]["words"][0]["text"] = GARBAGE_WORD
    return parse_receipt_document(document)


def items(details: ReceiptDetails) -> list[dict[str, Any]]:
    """The receipt's items, the Receipt last (as receipt_dynamo loads it: a half-seeded receipt is not listed)."""
    children = [entity.to_item() for entity in (*details.lines, *details.words)]
    return [*children, details.receipt.to_item()]


def batches(table_name: str, all_items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for start in range(0, len(all_items), BATCH):
        chunk = all_items[start : start + BATCH]
        yield {"RequestItems": {table_name: [{"PutRequest": {"Item": item}} for item in chunk]}}


def chain(calls: list[IApiCall]) -> IApiCall:
    for first, second in itertools.pairwise(calls):
        first.next(second)
    return calls[-1]


def build(app: cdk.App) -> IntegTest:
    settings = PipelineSettings(
        stage="integ",
        ollama_model=MODEL,
        ollama_base_url="https://stand-in.invalid",  # replaced below by the stand-in's function URL
        tolerated_failure_percentage=50,
    )
    stack = ReceiptLabelingStack(app, "IntegPipeline", settings=settings, description="Integration test: pipeline")
    stand_in = OllamaStandIn(stack, "OllamaStandIn", api_key_secret=stack.ollama_api_key_secret, model=MODEL)
    stack.create_labels.worker_function.add_environment("OLLAMA_BASE_URL", stand_in.base_url)

    integ = IntegTest(app, "PipelineInteg", test_cases=[stack], diff_assets=True)
    assertions = integ.assertions
    table = stack.receipt_table.table.table_name
    state_machine = stack.create_labels.state_machine.state_machine_arn

    def seed(details: list[ReceiptDetails]) -> list[IApiCall]:
        all_items = [item for receipt in details for item in items(receipt)]
        return [assertions.aws_api_call("DynamoDB", "batchWriteItem", batch) for batch in batches(table, all_items)]

    def run(*, succeeded: int, failed: int) -> list[IApiCall]:
        start = assertions.aws_api_call(
            # No execution name: names must be unique per state machine for 90 days, and the assertions run
            # again on every deploy of the assertion stack.
            "StepFunctions",
            "startExecution",
            {"stateMachineArn": state_machine, "input": "{}"},
        )
        done = assertions.aws_api_call(
            "StepFunctions", "describeExecution", {"executionArn": start.get_att_string("executionArn")}
        )
        done.expect(
            ExpectedResult.object_like(
                {
                    "status": "SUCCEEDED",
                    "output": Match.serialized_json(
                        Match.object_like({"succeeded": succeeded, "failed": failed, "timed_out": 0, "aborted": 0})
                    ),
                }
            )
        )
        done.wait_for_assertions(total_timeout=RUN_TIMEOUT, interval=Duration.seconds(20))
        return [start, done]

    def calls_answered(count: int) -> IApiCall:
        call = assertions.aws_api_call(
            "DynamoDB", "getItem", {"TableName": stand_in.calls_table.table_name, "Key": {"pk": {"S": "calls"}}}
        )
        call.expect(ExpectedResult.object_like({"Item": {"pk": {"S": "calls"}, "calls": {"N": str(count)}}}))
        return call

    def pending_label(details: ReceiptDetails) -> IApiCall:
        word = next(w for w in details.words if w.text.isalpha())  # the stand-in labels it PRODUCT_NAME
        sort_key = keys.label_sk(details.receipt.receipt_id, word.line_id, word.word_id, "PRODUCT_NAME")
        key = {"PK": {"S": keys.image_pk(details.receipt.image_id)}, "SK": {"S": sort_key}}
        call = assertions.aws_api_call("DynamoDB", "getItem", {"TableName": table, "Key": key, "ConsistentRead": True})
        call.expect(
            ExpectedResult.object_like(
                {
                    "Item": Match.object_like(
                        {
                            "validation_status": {"S": "PENDING"},
                            "label_proposed_by": {"S": f"receipt_label:{MODEL}"},
                        }
                    )
                }
            )
        )
        return call

    receipts = [fixture(name) for name in FIXTURES]
    chain(
        [
            *seed(receipts),
            *run(succeeded=3, failed=0),
            *(pending_label(receipt) for receipt in receipts),
            calls_answered(1 + len(receipts)),
            *run(succeeded=3, failed=0),
            calls_answered(1 + len(receipts)),
            *seed([garbage_receipt()]),
            *run(succeeded=3, failed=1),
            calls_answered(1 + len(receipts) + 3),
        ]
    )
    return integ


if __name__ == "__main__":
    application = cdk.App()
    build(application)
    application.synth()
