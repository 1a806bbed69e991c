"""The validation state machine (ValidatePendingLabelsStepFunction) and its two functions, in the synthesized template.

Where it must behave as the labeling state machine (retries, map, summary) it is compared with it
state by state; the rest is asserted on its own.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Capture, Match, Template

from constructs.create_labels_step_function import CreateLabelsStepFunction
from constructs.labeling_state_machine import LabelingStateMachine
from constructs.validate_pending_labels_step_function import ValidatePendingLabelsStepFunction
from receipt_dynamo import LabelWriteError
from tests.helpers import direct_labeling_props, one_resource, resources_of_type, synth_app
from tests.unit.test_step_function_definition import (
    AWS_TRANSIENT_RETRY,
    LAMBDA_SERVICE_RETRY,
    LLM_TRANSIENT_RETRY,
    RATE_LIMIT_RETRY,
    parse_definition,
)

pytestmark = pytest.mark.unit

NAME = "receipt-labeling-dev-validate-labels-sf"
LIST = "receipt-labeling-dev-validate-labels-list"
JUDGE = "receipt-labeling-dev-validate-labels-judge"
LAMBDA_INVOKE = "arn:${AWS::Partition}:states:::lambda:invoke"
JSON_LOGS = {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "WARN"}


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template(synthesized: Any) -> dict[str, Any]:
    return dict(synthesized.get_stack_by_name("ReceiptLabeling-dev").template)


def definition_of(template: dict[str, Any], name: str) -> dict[str, Any]:
    _, machine = one_resource(template, "AWS::StepFunctions::StateMachine", StateMachineName=name)
    return parse_definition(machine["Properties"]["DefinitionString"])


@pytest.fixture(scope="module")
def definition(template: dict[str, Any]) -> dict[str, Any]:
    return definition_of(template, NAME)


@pytest.fixture(scope="module")
def labeling(template: dict[str, Any]) -> dict[str, Any]:
    """The create-labels definition, the reference for what both state machines share."""
    return definition_of(template, "receipt-labeling-dev-sf")


@pytest.fixture(scope="module")
def ids(template: dict[str, Any]) -> dict[str, str]:
    """Logical ids of the validation resources the definition and the policies name."""
    (table_id,) = resources_of_type(template, "AWS::DynamoDB::GlobalTable")
    (secret_id,) = resources_of_type(template, "AWS::SecretsManager::Secret")
    (bucket_id,) = [k for k in resources_of_type(template, "AWS::S3::Bucket") if k.startswith("ValidateLabelsManifest")]
    return {
        "list": one_resource(template, "AWS::Lambda::Function", FunctionName=LIST)[0],
        "judge": one_resource(template, "AWS::Lambda::Function", FunctionName=JUDGE)[0],
        "process": one_resource(
            template, "AWS::Lambda::Function", FunctionName="receipt-labeling-dev-create-labels-process"
        )[0],
        "table": table_id,
        "secret": secret_id,
        "bucket": bucket_id,
    }


def judge_task(definition: dict[str, Any]) -> dict[str, Any]:
    return dict(definition["States"]["JudgeReceipts"]["ItemProcessor"]["States"]["ValidateReceipt"])


def role_statements(template: dict[str, Any], function_name: str) -> list[dict[str, Any]]:
    _, function = one_resource(template, "AWS::Lambda::Function", FunctionName=function_name)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    assert "Policies" not in template["Resources"][role_id]["Properties"]
    assert "ManagedPolicyArns" not in template["Resources"][role_id]["Properties"]
    return [
        statement
        for policy in resources_of_type(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


# ---- states and transitions -----------------------------------------------------------------------
def test_states_and_transitions(definition: dict[str, Any]) -> None:
    states = definition["States"]
    assert definition["StartAt"] == "ListPendingReceipts"
    assert set(states) == {
        "ListPendingReceipts",
        "HasReceipts",
        "Preflight",
        "JudgeReceipts",
        "CountResults",
        "Summarize",
        "NoReceipts",
    }
    assert states["ListPendingReceipts"]["Next"] == "HasReceipts"
    # Every listed receipt has a PENDING label: preflight whenever the manifest is not empty.
    assert states["HasReceipts"]["Choices"] == [
        {"Variable": "$.list.receipts_to_label", "NumericGreaterThan": 0, "Next": "Preflight"}
    ]
    assert states["HasReceipts"]["Default"] == "NoReceipts"
    assert states["Preflight"]["Next"] == "JudgeReceipts"
    assert states["JudgeReceipts"]["Next"] == "CountResults"
    assert states["CountResults"]["Next"] == "Summarize"
    assert states["Summarize"]["End"] is True
    assert states["NoReceipts"]["End"] is True
    processor = states["JudgeReceipts"]["ItemProcessor"]
    assert processor["StartAt"] == "ValidateReceipt" and set(processor["States"]) == {"ValidateReceipt"}
    assert processor["States"]["ValidateReceipt"]["End"] is True


def test_list_pending_receipts_invokes_the_validation_list_function(
    definition: dict[str, Any], labeling: dict[str, Any], ids: dict[str, str]
) -> None:
    state = definition["States"]["ListPendingReceipts"]
    reference = labeling["States"]["ListReceipts"]
    assert state["Resource"] == LAMBDA_INVOKE
    assert state["Parameters"] == {**reference["Parameters"], "FunctionName": "${" + ids["list"] + ".Arn}"}
    assert state["ResultSelector"] == reference["ResultSelector"]
    assert state["ResultPath"] == "$.list"
    assert state["Retry"] == [LAMBDA_SERVICE_RETRY]


def test_preflight_and_validate_receipt_invoke_the_judge_with_process_receipts_retries(
    definition: dict[str, Any], labeling: dict[str, Any], ids: dict[str, str]
) -> None:
    preflight = definition["States"]["Preflight"]
    assert preflight["Parameters"] == {"FunctionName": "${" + ids["judge"] + ".Arn}", "Payload": {"preflight": True}}
    assert preflight["Retry"] == labeling["States"]["Preflight"]["Retry"]
    assert preflight["Retry"] == [LAMBDA_SERVICE_RETRY, RATE_LIMIT_RETRY, LLM_TRANSIENT_RETRY, AWS_TRANSIENT_RETRY]

    task = judge_task(definition)
    process = labeling["States"]["LabelReceipts"]["ItemProcessor"]["States"]["ProcessReceipt"]
    assert task["Resource"] == LAMBDA_INVOKE
    assert task["Parameters"] == {
        "FunctionName": "${" + ids["judge"] + ".Arn}",
        "Payload": {"image_id.$": "$.image_id", "receipt_id.$": "$.receipt_id"},
    }
    assert task["OutputPath"] == "$.Payload"
    assert task["Retry"] == process["Retry"]
    assert task["Retry"][-1]["ErrorEquals"] == [LabelWriteError.__name__]
    assert "Catch" not in task and "Catch" not in preflight


def test_judge_receipts_is_a_distributed_map_over_its_own_jsonl_manifest(
    definition: dict[str, Any], labeling: dict[str, Any], ids: dict[str, str]
) -> None:
    state = definition["States"]["JudgeReceipts"]
    assert state["Type"] == "Map"
    assert state["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert state["ItemReader"] == {
        "Resource": "arn:${AWS::Partition}:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSONL"},
        "Parameters": {"Bucket": "${" + ids["bucket"] + "}", "Key.$": "$.list.manifest_key"},
    }
    assert state["ResultWriter"] == {
        "Resource": "arn:${AWS::Partition}:states:::s3:putObject",
        "Parameters": {"Bucket": "${" + ids["bucket"] + "}", "Prefix": "results"},
    }
    assert (state["MaxConcurrency"], state["ToleratedFailurePercentage"], state["ToleratedFailureCount"]) == (
        3,
        10,
        100,
    )
    assert state["Label"] == "JudgeReceipts"
    reference = labeling["States"]["LabelReceipts"]
    for key in ("ItemSelector", "ResultSelector", "ResultPath"):
        assert state[key] == reference[key], key


def test_count_summarize_and_no_receipts_give_the_labeling_runs_output(
    definition: dict[str, Any], labeling: dict[str, Any]
) -> None:
    for name in ("CountResults", "Summarize"):
        assert definition["States"][name] == labeling["States"][name], name
    no_receipts = definition["States"]["NoReceipts"]
    assert no_receipts["Parameters"] == labeling["States"]["NoReceipts"]["Parameters"]
    assert no_receipts["Comment"].startswith("No PENDING label")


def test_variant_settings_reach_the_map_and_imported_resources_the_roles(tmp_path: Any) -> None:
    tmpl = dict(
        synth_app(
            tmp_path,
            stage="prod",
            table_name="receipts-existing",
            ollama_api_key_secret_name="ollama/api-key",
            account="123456789012",
            region="eu-west-1",
            max_concurrency=7,
            tolerated_failure_percentage=25,
            tolerated_failure_count=40,
        )
        .get_stack_by_name("ReceiptLabeling-prod")
        .template
    )
    state = definition_of(tmpl, "receipt-labeling-prod-validate-labels-sf")["States"]["JudgeReceipts"]
    assert (state["MaxConcurrency"], state["ToleratedFailurePercentage"], state["ToleratedFailureCount"]) == (7, 25, 40)
    table_arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/receipts-existing"
    judge = {s.get("Sid"): s for s in role_statements(tmpl, "receipt-labeling-prod-validate-labels-judge")}
    assert judge["JudgePendingLabels"]["Resource"] == table_arn
    assert (
        judge["ReadLlmApiKeys"]["Resource"]
        == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ollama/api-key-??????"
    )
    listing = {s.get("Sid"): s for s in role_statements(tmpl, "receipt-labeling-prod-validate-labels-list")}
    assert listing["QueryPendingLabelsOnGsi3"]["Resource"] == f"{table_arn}/index/GSI3"


# ---- the functions ---------------------------------------------------------------------------------
def test_judge_function_is_the_arm64_image_with_the_process_functions_environment(
    template: dict[str, Any], ids: dict[str, str]
) -> None:
    log_group, environment = Capture(), Capture()
    Template.from_json(template).has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": JUDGE,
            "PackageType": "Image",
            "Architectures": ["arm64"],
            "MemorySize": 2048,
            "Timeout": 900,
            "Environment": {"Variables": environment},
            "LoggingConfig": Match.object_equals({"LogGroup": {"Ref": log_group}, **JSON_LOGS}),
        },
    )
    process = template["Resources"][ids["process"]]["Properties"]
    assert environment.as_object() == process["Environment"]["Variables"]
    assert set(environment.as_object()) == {
        "DYNAMODB_TABLE_NAME",
        "OLLAMA_BASE_URL",
        "OLLAMA_MODEL",
        "OLLAMA_API_KEY_SECRET_ARN",
    }
    assert template["Resources"][log_group.as_string()]["Properties"]["LogGroupName"] == f"/aws/lambda/{JUDGE}"


def test_list_function_is_the_list_code_selecting_pending_receipts(
    template: dict[str, Any], ids: dict[str, str]
) -> None:
    _, reference = one_resource(
        template, "AWS::Lambda::Function", FunctionName="receipt-labeling-dev-create-labels-list"
    )
    log_group = Capture()
    Template.from_json(template).has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": LIST,
            "Runtime": "python3.12",
            "Architectures": ["arm64"],
            "Handler": "handler.lambda_handler",
            "Code": reference["Properties"]["Code"],  # the same asset as ListReceipts
            "Environment": {
                "Variables": Match.object_equals(
                    {
                        "DYNAMODB_TABLE_NAME": {"Ref": ids["table"]},
                        "MANIFEST_BUCKET": {"Ref": ids["bucket"]},
                        "RECEIPT_SELECTION": "pending",
                    }
                )
            },
            "LoggingConfig": Match.object_equals({"LogGroup": {"Ref": log_group}, **JSON_LOGS}),
        },
    )
    assert template["Resources"][log_group.as_string()]["Properties"]["LogGroupName"] == f"/aws/lambda/{LIST}"


# ---- least privilege ----------------------------------------------------------------------------------
def test_judge_role_reads_the_table_updates_labels_and_reads_only_the_llm_keys(
    template: dict[str, Any], ids: dict[str, str]
) -> None:
    table_arn = {"Fn::GetAtt": [ids["table"], "Arn"]}
    statements = {s.get("Sid"): s for s in role_statements(template, JUDGE)}
    logs = statements.pop(None)
    assert sorted(logs["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statements == {
        "ReadReceiptsAndLabels": {
            "Action": ["dynamodb:GetItem", "dynamodb:Query"],
            "Effect": "Allow",
            "Resource": table_arn,  # the table only: no index
            "Sid": "ReadReceiptsAndLabels",
        },
        "JudgePendingLabels": {
            "Action": "dynamodb:UpdateItem",
            "Effect": "Allow",
            "Resource": table_arn,
            "Sid": "JudgePendingLabels",
        },
        "ReadLlmApiKeys": {
            "Action": "secretsmanager:GetSecretValue",
            "Effect": "Allow",
            "Resource": {"Ref": ids["secret"]},
            "Sid": "ReadLlmApiKeys",
        },
    }


def test_list_role_queries_gsi3_only_and_writes_manifests(template: dict[str, Any], ids: dict[str, str]) -> None:
    statements = {s.get("Sid"): s for s in role_statements(template, LIST)}
    logs = statements.pop(None)
    assert sorted(logs["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statements == {
        "QueryPendingLabelsOnGsi3": {
            "Action": "dynamodb:Query",
            "Effect": "Allow",
            "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [ids["table"], "Arn"]}, "/index/GSI3"]]},
            "Sid": "QueryPendingLabelsOnGsi3",
        },
        "WriteRunManifests": {
            "Action": "s3:PutObject",
            "Effect": "Allow",
            "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [ids["bucket"], "Arn"]}, "/manifests/*"]]},
            "Sid": "WriteRunManifests",
        },
    }


def test_state_machine_invokes_only_its_own_functions(template: dict[str, Any], ids: dict[str, str]) -> None:
    _, machine = one_resource(template, "AWS::StepFunctions::StateMachine", StateMachineName=NAME)
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    invoked = [
        resource
        for policy in resources_of_type(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "lambda:InvokeFunction" in statement["Action"]
        for resource in statement["Resource"]
    ]
    named = {str(r["Fn::GetAtt"][0] if "Fn::GetAtt" in r else r["Fn::Join"][1][0]["Fn::GetAtt"][0]) for r in invoked}
    assert named == {ids["list"], ids["judge"]}
    props = machine["Properties"]
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is True


def test_failed_validation_runs_reach_the_alarm_topic(template: dict[str, Any]) -> None:
    machine_id, _ = one_resource(template, "AWS::StepFunctions::StateMachine", StateMachineName=NAME)
    topic_id, _ = one_resource(template, "AWS::SNS::Topic", TopicName="receipt-labeling-dev-alarms")
    Template.from_json(template).has_resource_properties(
        "AWS::Events::Rule",
        {
            "Description": "Validation run ended FAILED, TIMED_OUT or ABORTED",
            "EventPattern": {
                "source": ["aws.states"],
                "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"], "stateMachineArn": [{"Ref": machine_id}]},
            },
            "Targets": [Match.object_like({"Arn": {"Ref": topic_id}})],
        },
    )


# ---- the construct used directly ---------------------------------------------------------------------
def test_the_construct_used_directly_has_the_documented_defaults() -> None:
    stack = cdk.Stack(cdk.App(), "Direct")
    construct = ValidatePendingLabelsStepFunction(stack, "Validate", **direct_labeling_props(stack))
    assert construct.worker_function is construct.worker_image.lambda_function
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {"FunctionName": "receipt-labeling-direct-validate-labels-judge", "MemorySize": 2048, "Timeout": 900},
    )
    template.resource_count_is("AWS::Events::Rule", 0)  # no alarm topic, no rule
    assert construct.failed_execution_rule is None
    with pytest.raises(ValueError, match="max_concurrency"):
        ValidatePendingLabelsStepFunction(
            stack,
            "Invalid",
            **direct_labeling_props(stack, name="receipt-labeling-invalid", max_concurrency=0),
        )


@pytest.mark.parametrize(
    ("construct_class", "function_name"),
    [
        (ValidatePendingLabelsStepFunction, "receipt-labeling-direct-validate-labels-judge"),
        (CreateLabelsStepFunction, "receipt-labeling-direct-create-labels-process"),
    ],
)
def test_the_worker_timeout_and_memory_given_replace_the_workflow_defaults(
    construct_class: type[LabelingStateMachine], function_name: str
) -> None:
    from aws_cdk import Duration

    stack = cdk.Stack(cdk.App(), "Direct")
    props = direct_labeling_props(stack, worker_timeout=Duration.seconds(300), worker_memory_size=1024)
    construct_class(stack, "Worker", **props)
    Template.from_stack(stack).has_resource_properties(
        "AWS::Lambda::Function", {"FunctionName": function_name, "MemorySize": 1024, "Timeout": 300}
    )
