"""The labeling state machine, parsed out of the synthesized template and checked state by state.

The definition is the ``Fn::Join`` in ``DefinitionString``; references are rendered as ``${LogicalId}``
/ ``${LogicalId.Attr}`` so the JSON can be parsed and compared exactly (Retry and Catch included).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from receipt_dynamo import AwsTransientError, DynamoThrottledError, LabelWriteError, ReceiptNotFoundError
from receipt_label import (
    LLMAuthError,
    LLMModelNotFoundError,
    LLMOutputError,
    LLMRateLimitError,
    LLMRequestError,
    LLMTransientError,
    TimeBudgetExceededError,
)
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.unit

STATE_MACHINE_NAME = "receipt-labeling-dev-sf"
LAMBDA_SERVICE_ERRORS = [
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ResourceNotReadyException",
]
LAMBDA_SERVICE_RETRY = {
    "ErrorEquals": LAMBDA_SERVICE_ERRORS,
    "IntervalSeconds": 2,
    "MaxAttempts": 6,
    "BackoffRate": 2,
    "MaxDelaySeconds": 60,
    "JitterStrategy": "FULL",
}
RATE_LIMIT_RETRY = {
    "ErrorEquals": ["LLMRateLimitError"],
    "IntervalSeconds": 30,
    "MaxAttempts": 6,
    "BackoffRate": 2,
    "MaxDelaySeconds": 300,
    "JitterStrategy": "FULL",
}
# TimeBudgetExceededError: the handler stopped LLM work before Lambda's timeout; nothing was written.
LLM_TRANSIENT_RETRY = {
    "ErrorEquals": ["LLMTransientError", "TimeBudgetExceededError"],
    "IntervalSeconds": 5,
    "MaxAttempts": 4,
    "BackoffRate": 2,
    "MaxDelaySeconds": 60,
    "JitterStrategy": "FULL",
}
AWS_TRANSIENT_RETRY = {
    "ErrorEquals": ["DynamoThrottledError", "AwsTransientError"],
    "IntervalSeconds": 10,
    "MaxAttempts": 4,
    "BackoffRate": 2,
    "MaxDelaySeconds": 120,
    "JitterStrategy": "FULL",
}


def test_lambda_service_retrier_covers_the_documented_transient_and_inactive_function_errors() -> None:
    """AWS's "Handle Lambda service exceptions" list, plus ResourceNotReadyException (an Inactive image function)."""
    assert set(LAMBDA_SERVICE_ERRORS) >= {
        "Lambda.ClientExecutionTimeoutException",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "Lambda.ResourceNotReadyException",
    }


def render_token(value: Any) -> str:
    """A CloudFormation reference inside the definition, as ``${LogicalId}`` or ``${LogicalId.Attr}``."""
    if isinstance(value, dict) and list(value) == ["Ref"]:
        return "${" + value["Ref"] + "}"
    if isinstance(value, dict) and list(value) == ["Fn::GetAtt"]:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    raise AssertionError(f"unexpected intrinsic in the state machine definition: {value!r}")


def parse_definition(definition_string: Any) -> dict[str, Any]:
    if isinstance(definition_string, str):
        return dict(json.loads(definition_string))
    separator, parts = definition_string["Fn::Join"]
    assert separator == ""
    return dict(json.loads("".join(p if isinstance(p, str) else render_token(p) for p in parts)))


def resources_of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def logical_id(template: dict[str, Any], type_: str, **properties: Any) -> str:
    matches = [
        k
        for k, v in resources_of_type(template, type_).items()
        if all(v["Properties"].get(name) == value for name, value in properties.items())
    ]
    assert len(matches) == 1, (type_, properties, matches)
    return matches[0]


@pytest.fixture(scope="module")
def template(synthesized: Any) -> dict[str, Any]:
    return dict(synthesized.get_stack_by_name("ReceiptLabeling-dev").template)


@pytest.fixture(scope="module")
def definition(template: dict[str, Any]) -> dict[str, Any]:
    machines = {
        k: v
        for k, v in resources_of_type(template, "AWS::StepFunctions::StateMachine").items()
        if v["Properties"].get("StateMachineName") == STATE_MACHINE_NAME
    }
    assert len(machines) == 1, f"expected one state machine named {STATE_MACHINE_NAME}, got {list(machines)}"
    (machine,) = machines.values()
    return parse_definition(machine["Properties"]["DefinitionString"])


@pytest.fixture(scope="module")
def list_function(template: dict[str, Any]) -> str:
    return logical_id(template, "AWS::Lambda::Function", FunctionName="receipt-labeling-dev-create-labels-list")


@pytest.fixture(scope="module")
def process_function(template: dict[str, Any]) -> str:
    return logical_id(template, "AWS::Lambda::Function", FunctionName="receipt-labeling-dev-create-labels-process")


@pytest.fixture(scope="module")
def manifest_bucket(template: dict[str, Any]) -> str:
    buckets = [k for k in resources_of_type(template, "AWS::S3::Bucket") if k.startswith("CreateLabelsManifestBucket")]
    assert len(buckets) == 1, buckets
    return buckets[0]


def test_shape_list_choice_map_summary(definition: dict[str, Any]) -> None:
    assert definition["StartAt"] == "ListReceipts"
    assert set(definition["States"]) == {
        "ListReceipts",
        "HasReceipts",
        "NoReceipts",
        "Preflight",
        "LabelReceipts",
        "CountResults",
        "Summarize",
    }
    states = definition["States"]
    assert states["ListReceipts"]["Next"] == "HasReceipts"
    assert states["Preflight"]["Next"] == "LabelReceipts"
    assert states["LabelReceipts"]["Next"] == "CountResults"
    assert states["CountResults"]["Next"] == "Summarize"
    assert states["Summarize"]["End"] is True
    assert states["NoReceipts"]["Type"] == "Pass"
    assert states["NoReceipts"]["End"] is True
    assert "QueryLanguage" not in definition  # JSONPath throughout


def test_list_receipts_passes_the_execution_name_and_keeps_the_input(
    definition: dict[str, Any], list_function: str
) -> None:
    state = definition["States"]["ListReceipts"]
    assert state["Type"] == "Task"
    assert state["Resource"] == "arn:${AWS::Partition}:states:::lambda:invoke"
    assert state["Parameters"] == {
        "FunctionName": "${" + list_function + ".Arn}",
        # {} or {"limit": N} from the execution input, plus {"execution_name": <execution name>}.
        "Payload.$": "States.JsonMerge($, States.StringToJson(States.Format("
        '\'\\{"execution_name":"{}"\\}\', $$.Execution.Name)), false)',
    }
    assert state["ResultSelector"] == {
        "receipt_count.$": "$.Payload.receipt_count",
        "receipts_to_label.$": "$.Payload.receipts_to_label",
        "manifest_bucket.$": "$.Payload.manifest_bucket",
        "manifest_key.$": "$.Payload.manifest_key",
    }
    assert state["ResultPath"] == "$.list"
    assert state["Retry"] == [LAMBDA_SERVICE_RETRY]
    assert "Catch" not in state


def module_constants(path: Path) -> dict[str, Any]:
    """Module-level ``NAME = <literal>`` assignments of a Python file, read without importing it."""
    constants = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return constants


def test_list_payload_uses_the_handlers_field_and_result_names(definition: dict[str, Any]) -> None:
    """The seam with lambdas/list_receipts/handler.py: the event field and the returned keys."""
    handler = REPO_ROOT / "lambdas/list_receipts/handler.py"
    constants = module_constants(handler)
    state = definition["States"]["ListReceipts"]
    assert f'"{constants["EXECUTION_NAME_FIELD"]}":"{{}}"' in state["Parameters"]["Payload.$"]
    returned = (
        'return {"receipt_count": count, "receipts_to_label": to_label, "manifest_bucket": bucket, "manifest_key": key}'
    )
    assert returned in handler.read_text()
    assert {v.removeprefix("$.Payload.") for v in state["ResultSelector"].values()} == {
        "receipt_count",
        "receipts_to_label",
        "manifest_bucket",
        "manifest_key",
    }


def test_has_receipts_skips_the_map_for_an_empty_manifest(definition: dict[str, Any]) -> None:
    state = definition["States"]["HasReceipts"]
    assert state["Type"] == "Choice"
    # The LLM preflight only when a receipt needs labeling; a labeled table still runs the map (each
    # item skipped, no LLM call), an empty one ends at once.
    assert state["Choices"] == [
        {"Variable": "$.list.receipts_to_label", "NumericGreaterThan": 0, "Next": "Preflight"},
        {"Variable": "$.list.receipt_count", "NumericGreaterThan": 0, "Next": "LabelReceipts"},
    ]
    assert state["Default"] == "NoReceipts"
    assert definition["States"]["NoReceipts"] == {
        "Type": "Pass",
        "Comment": "The table holds no receipt: nothing to label; the output has Summarize's keys, with zeros",
        "Parameters": {
            "receipt_count.$": "$.list.receipt_count",
            "succeeded": 0,
            "failed": 0,
            "timed_out": 0,
            "aborted": 0,
            "results.$": "States.StringToJson('null')",
            "manifest": {"bucket.$": "$.list.manifest_bucket", "key.$": "$.list.manifest_key"},
            "map_run_arn.$": "States.StringToJson('null')",
        },
        "End": True,
    }


def test_both_ends_output_the_same_keys(definition: dict[str, Any]) -> None:
    """An empty table and a labeling run give a caller the same output keys (and manifest's keys)."""

    def keys(parameters: dict[str, Any]) -> set[str]:
        return {k.removesuffix(".$") for k in parameters}

    empty = definition["States"]["NoReceipts"]["Parameters"]
    summary = definition["States"]["Summarize"]["Parameters"]
    assert keys(empty) == keys(summary)
    assert empty["manifest"] == summary["manifest"]


def test_label_receipts_is_a_distributed_map_over_the_s3_manifest(
    definition: dict[str, Any], manifest_bucket: str
) -> None:
    state = definition["States"]["LabelReceipts"]
    assert state["Type"] == "Map"
    assert state["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert state["ItemReader"] == {
        "Resource": "arn:${AWS::Partition}:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSONL"},  # one child execution per line
        "Parameters": {"Bucket": "${" + manifest_bucket + "}", "Key.$": "$.list.manifest_key"},
    }
    assert "ItemsPath" not in state  # the items never travel through the state's payload
    assert state["ItemSelector"] == {
        "image_id.$": "$$.Map.Item.Value.image_id",
        "receipt_id.$": "$$.Map.Item.Value.receipt_id",
    }
    assert state["MaxConcurrency"] == 3
    assert state["ToleratedFailurePercentage"] == 10
    assert state["ToleratedFailureCount"] == 100  # a large run stops after a bounded number of failures
    assert state["Label"] == "LabelReceipts"
    assert state["ResultWriter"] == {
        "Resource": "arn:${AWS::Partition}:states:::s3:putObject",
        "Parameters": {"Bucket": "${" + manifest_bucket + "}", "Prefix": "results"},
    }
    assert state["ResultSelector"] == {
        "map_run_arn.$": "$.MapRunArn",
        "results_bucket.$": "$.ResultWriterDetails.Bucket",
        "results_key.$": "$.ResultWriterDetails.Key",
    }
    assert state["ResultPath"] == "$.map"
    # A failed receipt fails its child execution and is counted; above the tolerated share the map
    # (and the execution) fails with States.ExceedToleratedFailureThreshold. Nothing catches it.
    assert "Retry" not in state
    assert "Catch" not in state


def test_preflight_runs_once_before_the_map_and_retries_only_transient_errors(
    definition: dict[str, Any], process_function: str
) -> None:
    state = definition["States"]["Preflight"]
    assert state["Type"] == "Task"
    assert state["Resource"] == "arn:${AWS::Partition}:states:::lambda:invoke"
    assert state["Parameters"] == {"FunctionName": "${" + process_function + ".Arn}", "Payload": {"preflight": True}}
    assert state["ResultPath"] == "$.preflight"  # the execution's input and list result travel on
    assert state["Retry"] == [LAMBDA_SERVICE_RETRY, RATE_LIMIT_RETRY, LLM_TRANSIENT_RETRY, AWS_TRANSIENT_RETRY]
    retried = {name for retrier in state["Retry"] for name in retrier["ErrorEquals"]}
    # A rejected key, an unknown model or a bad request fails the execution here, at once.
    assert not retried & {"LLMAuthError", "LLMModelNotFoundError", "LLMRequestError", "States.ALL"}
    assert "Catch" not in state


def test_preflight_payload_is_the_handlers_preflight_field(definition: dict[str, Any]) -> None:
    """The worker handlers tell a preflight by ``event.get(<field>) is True``: the payload sets that field."""
    # Both worker handlers answer the preflight through receipt_label.lambda_wiring.ContainerWiring.handle.
    path = REPO_ROOT / "receipt_label/lambda_wiring.py"
    constants = module_constants(path)

    def literal(node: ast.expr) -> Any:
        return node.value if isinstance(node, ast.Constant) else constants.get(getattr(node, "id", ""))

    fields = {
        literal(node.left.args[0])
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Compare)
        and isinstance(node.ops[0], ast.Is)
        and isinstance(node.comparators[0], ast.Constant)
        and node.comparators[0].value is True
        and isinstance(node.left, ast.Call)
        and isinstance(node.left.func, ast.Attribute)
        and node.left.func.attr == "get"
        and node.left.args
    }
    (field,) = fields
    assert definition["States"]["Preflight"]["Parameters"]["Payload"] == {field: True}


def test_process_receipt_retries_only_what_is_transient(definition: dict[str, Any], process_function: str) -> None:
    processor = definition["States"]["LabelReceipts"]["ItemProcessor"]
    assert processor["StartAt"] == "ProcessReceipt"
    assert set(processor["States"]) == {"ProcessReceipt"}
    state = processor["States"]["ProcessReceipt"]
    assert state["Type"] == "Task"
    assert state["End"] is True
    assert state["Resource"] == "arn:${AWS::Partition}:states:::lambda:invoke"
    assert state["Parameters"] == {
        "FunctionName": "${" + process_function + ".Arn}",
        "Payload": {"image_id.$": "$.image_id", "receipt_id.$": "$.receipt_id"},
    }
    assert state["OutputPath"] == "$.Payload"
    assert state["Retry"] == [
        LAMBDA_SERVICE_RETRY,
        RATE_LIMIT_RETRY,
        LLM_TRANSIENT_RETRY,
        AWS_TRANSIENT_RETRY,
        {
            "ErrorEquals": ["LabelWriteError"],
            "IntervalSeconds": 15,
            "MaxAttempts": 2,
            "BackoffRate": 2,
            "MaxDelaySeconds": 60,
            "JitterStrategy": "FULL",
        },
    ]
    assert "Catch" not in state


def test_retry_names_are_the_class_names_the_handler_raises(definition: dict[str, Any]) -> None:
    """Step Functions matches on the exception class name: a rename in receipt_label must break this test."""
    state = definition["States"]["LabelReceipts"]["ItemProcessor"]["States"]["ProcessReceipt"]
    retried = {name for retrier in state["Retry"] for name in retrier["ErrorEquals"]}
    transient = {
        LLMRateLimitError,
        LLMTransientError,
        TimeBudgetExceededError,
        DynamoThrottledError,
        AwsTransientError,
        LabelWriteError,
    }
    assert {error.__name__ for error in transient} <= retried
    # Rate limits wait longer than other transient errors.
    by_name = {name: retrier for retrier in state["Retry"] for name in retrier["ErrorEquals"]}
    assert by_name["LLMRateLimitError"]["IntervalSeconds"] > by_name["LLMTransientError"]["IntervalSeconds"]
    assert by_name["LLMRateLimitError"]["MaxDelaySeconds"] > by_name["LLMTransientError"]["MaxDelaySeconds"]
    # Permanent errors are never retried (another try would give the same answer), nor is any catch-all.
    permanent_errors = (LLMOutputError, LLMRequestError, LLMAuthError, LLMModelNotFoundError, ReceiptNotFoundError)
    for permanent in ("InvalidEventError", *(error.__name__ for error in permanent_errors)):
        assert permanent not in retried
    assert not retried & {"States.ALL", "States.TaskFailed"}
    for retrier in state["Retry"]:
        assert retrier["JitterStrategy"] == "FULL"
        assert retrier["BackoffRate"] > 1


def test_count_results_describes_the_map_run(definition: dict[str, Any]) -> None:
    state = definition["States"]["CountResults"]
    assert state["Type"] == "Task"
    assert state["Resource"] == "arn:${AWS::Partition}:states:::aws-sdk:sfn:describeMapRun"
    assert state["Parameters"] == {"MapRunArn.$": "$.map.map_run_arn"}
    assert state["ResultSelector"] == {
        "succeeded.$": "$.ItemCounts.Succeeded",
        "failed.$": "$.ItemCounts.Failed",
        "timed_out.$": "$.ItemCounts.TimedOut",
        "aborted.$": "$.ItemCounts.Aborted",
        "total.$": "$.ItemCounts.Total",
    }
    assert state["ResultPath"] == "$.counts"
    assert state["Retry"] == [
        {
            "ErrorEquals": ["States.TaskFailed"],
            "IntervalSeconds": 2,
            "MaxAttempts": 3,
            "BackoffRate": 2,
            "MaxDelaySeconds": 20,
            "JitterStrategy": "FULL",
        }
    ]
    assert "Catch" not in state


def test_summary_is_the_execution_output(definition: dict[str, Any]) -> None:
    state = definition["States"]["Summarize"]
    assert state["Type"] == "Pass"
    assert state["Parameters"] == {
        "receipt_count.$": "$.list.receipt_count",
        "succeeded.$": "$.counts.succeeded",
        "failed.$": "$.counts.failed",
        "timed_out.$": "$.counts.timed_out",
        "aborted.$": "$.counts.aborted",
        "results": {"bucket.$": "$.map.results_bucket", "manifest_key.$": "$.map.results_key"},
        "manifest": {"bucket.$": "$.list.manifest_bucket", "key.$": "$.list.manifest_key"},
        "map_run_arn.$": "$.map.map_run_arn",
    }
    for name in ("Retry", "Catch", "ResultPath", "OutputPath"):
        assert name not in state


def test_no_state_catches_errors(definition: dict[str, Any]) -> None:
    """A failure is never swallowed: no Catch anywhere, in the parent or in the item processor."""

    def walk(states: dict[str, Any]) -> list[str]:
        found = []
        for name, state in states.items():
            if "Catch" in state:
                found.append(name)
            if "ItemProcessor" in state:
                found += walk(state["ItemProcessor"]["States"])
        return found

    assert walk(definition["States"]) == []


def test_definition_is_valid_asl_for_an_independent_parser(definition: dict[str, Any]) -> None:
    """moto's Amazon States Language parser (a port of LocalStack's) accepts the definition.

    That parser knows neither ``ToleratedFailurePercentage`` nor the ``JSONL`` input type (both valid
    ASL, checked above), so only those are removed or read as ``JSON`` here. References are replaced
    by plain ARNs first.
    """
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.asl.parse.intrinsic.intrinsic_parser import IntrinsicParser

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, str) and "${" in value:
            return value.replace("${AWS::Partition}", "aws").replace("${", "arn:aws:lambda:us-east-1:1:function:")
        return value

    parsable = plain(json.loads(json.dumps(definition)))
    assert 0 <= parsable["States"]["LabelReceipts"].pop("ToleratedFailurePercentage") <= 100
    reader_config = parsable["States"]["LabelReceipts"]["ItemReader"]["ReaderConfig"]
    assert reader_config["InputType"] == "JSONL"
    reader_config["InputType"] = "JSON"
    program, _ = AmazonStateLanguageParser.parse(json.dumps(parsable))
    assert program is not None

    def intrinsics(value: Any) -> list[str]:
        if isinstance(value, dict):
            own = [v for k, v in value.items() if k.endswith(".$") and str(v).startswith("States.")]
            return own + [i for v in value.values() for i in intrinsics(v)]
        if isinstance(value, list):
            return [i for v in value for i in intrinsics(v)]
        return []

    found = intrinsics(definition)
    assert found, "expected the ListReceipts payload intrinsic"
    for expression in found:  # the ASL parser leaves intrinsic strings for run time
        IntrinsicParser.parse(expression)


def test_the_map_limits_accept_their_documented_bounds() -> None:
    """One child at a time, no failure tolerated or every one: all valid settings of the map."""
    from constructs.labeling_state_machine import MapLimits

    for limits in [(1, 0, 0), (1, 100, 0), (1000, 0, 1), (1, 50, 100)]:
        accepted = MapLimits(*limits)  # raises ValueError for a value out of range
        assert (accepted.max_concurrency, accepted.tolerated_failure_percentage, accepted.tolerated_failure_count) == (
            limits
        )


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        ((0, 10, 100), "max_concurrency must be >= 1, got 0"),
        ((3, -1, 100), "tolerated_failure_percentage must be within 0..100, got -1"),
        ((3, 101, 100), "tolerated_failure_percentage must be within 0..100, got 101"),
        ((3, 10, -1), "tolerated_failure_count must be >= 0, got -1"),
    ],
)
def test_map_limits_out_of_range_are_refused_naming_the_setting_and_the_value(
    limits: tuple[int, int, int], named: str
) -> None:
    from constructs.labeling_state_machine import MapLimits

    with pytest.raises(ValueError) as raised:
        MapLimits(*limits)
    assert str(raised.value) == named
