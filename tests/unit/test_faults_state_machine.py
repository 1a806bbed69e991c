"""What Step Functions does with each error the handlers raise (the "what happens" column of the README
"Failure behaviour" table), read from the synthesized state machine definition.

The handler-level fault tests (tests/integration/test_faults_*.py) show which error class each
fault raises; this test shows how the state machine treats that class name.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.security_synth import NagSynth

pytestmark = pytest.mark.unit

LAMBDA_SERVICE_ERRORS = {
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ResourceNotReadyException",  # an image function gone Inactive rejects its first invoke
}


def definition(nag_synth: NagSynth) -> dict[str, Any]:
    (machine,) = [
        r
        for r in nag_synth.template["Resources"].values()
        if r["Type"] == "AWS::StepFunctions::StateMachine" and "LabelReceipts" in json.dumps(r)
    ]
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else "TOKEN" for p in parts)  # tokens sit inside JSON strings
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def retriers(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {error: retry for retry in state.get("Retry", []) for error in retry["ErrorEquals"]}


def test_process_receipt_retries_llm_throttling_and_transient_errors_with_jittered_backoff(nag_synth: NagSynth) -> None:
    states = definition(nag_synth)["States"]
    process = states["LabelReceipts"]["ItemProcessor"]["States"]["ProcessReceipt"]
    retry = retriers(process)
    assert retry["LLMRateLimitError"]["MaxAttempts"] == 6 and retry["LLMRateLimitError"]["IntervalSeconds"] == 30
    assert retry["LLMTransientError"]["MaxAttempts"] == 4
    assert all(retry[e]["JitterStrategy"] == "FULL" for e in ("LLMRateLimitError", "LLMTransientError"))
    assert set(retry) >= LAMBDA_SERVICE_ERRORS
    # Not retried: another try gives the same result. Raw botocore throttling names never reach the
    # state machine (the handler maps them to DynamoThrottledError), and nothing catches all.
    for error in (
        "InvalidEventError",
        "ReceiptNotFoundError",
        "LLMOutputError",
        "LLMRequestError",
        "ProvisionedThroughputExceededException",
        "ClientError",
        "States.ALL",
        "States.TaskFailed",
    ):
        assert error not in retry, error
    assert "Catch" not in process  # a failed receipt fails its map item (FAILED results), never silently


def test_process_receipt_retries_dynamodb_throttling_and_partial_label_writes_a_bounded_number_of_times(
    nag_synth: NagSynth,
) -> None:
    """A partly labeled receipt has no completion marker, so a retry completes it (rows of the README table)."""
    process = definition(nag_synth)["States"]["LabelReceipts"]["ItemProcessor"]["States"]["ProcessReceipt"]
    retry = retriers(process)
    for error in ("DynamoThrottledError", "LabelWriteError"):
        assert retry[error]["JitterStrategy"] == "FULL", error
        assert retry[error]["BackoffRate"] > 1, error
        assert 1 <= retry[error]["MaxAttempts"] <= 4, error  # bounded: each LabelWriteError retry asks the LLM again
        assert retry[error]["IntervalSeconds"] >= 10, error  # give the table's capacity time to recover


def test_a_failed_receipt_is_counted_and_the_run_fails_past_the_tolerated_share(nag_synth: NagSynth) -> None:
    states = definition(nag_synth)["States"]
    label = states["LabelReceipts"]
    assert label["ToleratedFailurePercentage"] == 10
    assert label["ResultWriter"]["Resource"].endswith(":states:::s3:putObject")  # per-item results in S3
    assert "failed" in json.dumps(states["Summarize"]["Parameters"])


def test_every_lambda_task_retries_the_documented_lambda_service_errors(nag_synth: NagSynth) -> None:
    states = definition(nag_synth)["States"]
    tasks = {
        "ListReceipts": states["ListReceipts"],
        "Preflight": states["Preflight"],
        "ProcessReceipt": states["LabelReceipts"]["ItemProcessor"]["States"]["ProcessReceipt"],
    }
    for name, task in tasks.items():
        assert set(retriers(task)) >= LAMBDA_SERVICE_ERRORS, name


def test_list_receipts_retries_only_lambda_service_errors(nag_synth: NagSynth) -> None:
    listing = definition(nag_synth)["States"]["ListReceipts"]
    assert set(retriers(listing)) == LAMBDA_SERVICE_ERRORS  # an S3 or DynamoDB error fails the execution
    assert "Catch" not in listing
