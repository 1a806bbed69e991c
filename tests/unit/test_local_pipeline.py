"""local_pipeline without running anything: the template's resolution, the moto shims' own logic.

The field moto cannot parse (ToleratedFailurePercentage) is checked here in the synthesized template,
and the harness's evaluation of it (``exceeds_tolerated_failure_threshold``) against AWS's rule.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from local_pipeline.moto_shims import (
    ItemRecord,
    MapTolerance,
    aws_states_format,
    exceeds_tolerated_failure_threshold,
    prepare_definition,
    result_entry,
)
from local_pipeline.template import WORKER_STATES, LocalStack, TemplateError, iter_states, lambda_tasks, map_workers

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def stack(synthesized: Any) -> LocalStack:
    return LocalStack(dict(synthesized.stacks[0].template))


def map_state(definition: dict[str, Any]) -> dict[str, Any]:
    (state,) = [s for s in iter_states(definition) if s.get("Type") == "Map"]
    return state


#: Kind -> (its Map state, its Task states): what each labeling state machine runs.
KINDS = {
    "create": ("LabelReceipts", {"ListReceipts", "Preflight", "ProcessReceipt"}),
    "validate": ("JudgeReceipts", {"ListPendingReceipts", "Preflight", "ValidateReceipt"}),
}


def test_state_machines_are_found_by_the_worker_their_map_runs(stack: LocalStack) -> None:
    machines = stack.state_machines()

    assert list(machines) == ["create", "validate"]
    assert machines == {kind: stack.state_machine(kind) for kind in KINDS}
    assert len(set(machines.values())) == 2
    assert stack.physical_name(machines["validate"]).endswith("-validate-labels-sf")
    assert not stack.physical_name(machines["create"]).endswith("-validate-labels-sf")
    for kind, logical_id in machines.items():
        assert map_workers(stack.definition(logical_id)) == {WORKER_STATES[kind]}


def test_an_unknown_or_missing_kind_names_what_was_asked_for(stack: LocalStack) -> None:
    with pytest.raises(TemplateError, match="unknown state machine kind 'judge'"):
        stack.state_machine("judge")
    only_create = {"Resources": {k: v for k, v in stack.resources.items() if k != stack.state_machine("validate")}}
    with pytest.raises(TemplateError, match=r"expected one state machine whose Map runs ValidateReceipt \(validate\)"):
        LocalStack(only_create).state_machine("validate")
    assert list(LocalStack(only_create).state_machines()) == ["create"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_synthesized_map_tolerates_ten_percent_and_only_that_field_is_removed_for_moto(
    stack: LocalStack, kind: str
) -> None:
    map_name = KINDS[kind][0]
    definition = stack.definition(stack.state_machine(kind))
    assert map_state(definition)["_name"] == map_name
    assert map_state(definition)["ToleratedFailurePercentage"] == 10
    assert map_state(definition)["ToleratedFailureCount"] == 100  # moto parses this one: it stays

    prepared, tolerances = prepare_definition(definition)

    assert tolerances == {map_name: MapTolerance(map_name, percentage=10.0, count=100)}
    assert "ToleratedFailurePercentage" not in map_state(prepared)
    expected = json.loads(json.dumps(definition))
    del expected["States"][map_name]["ToleratedFailurePercentage"]
    assert prepared == expected  # nothing else changed
    assert "ToleratedFailurePercentage" in map_state(definition)  # the input is not modified


@pytest.mark.parametrize("kind", list(KINDS))
def test_definition_resolves_to_the_local_functions_and_bucket(stack: LocalStack, kind: str) -> None:
    definition = stack.definition(stack.state_machine(kind))
    tasks = lambda_tasks(definition)

    assert set(tasks) == KINDS[kind][1]
    assert tasks["Preflight"] == tasks[WORKER_STATES[kind]]  # one function, told apart by its event
    for arn in tasks.values():
        function_id = stack.function_id_for_arn(arn)
        assert arn == f"arn:aws:lambda:us-east-1:123456789012:function:{stack.physical_name(function_id)}"
    bucket = map_state(definition)["ItemReader"]["Parameters"]["Bucket"]
    assert bucket in {stack.physical_name(b) for b in stack.resources_of_type("AWS::S3::Bucket")}
    assert map_state(definition)["ResultWriter"]["Parameters"]["Bucket"] == bucket
    assert "Fn::" not in json.dumps(definition) and '"Ref"' not in json.dumps(definition)


@pytest.mark.parametrize("kind", list(KINDS))
def test_function_environments_name_the_local_table_and_bucket(stack: LocalStack, kind: str) -> None:
    definition = stack.definition(stack.state_machine(kind))
    environments = [stack.function_environment(stack.function_id_for_arn(a)) for a in lambda_tasks(definition).values()]
    (table_id,) = stack.resources_of_type("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable")
    assert {env["DYNAMODB_TABLE_NAME"] for env in environments} == {stack.physical_name(table_id)}
    assert any(
        env.get("MANIFEST_BUCKET") == map_state(definition)["ItemReader"]["Parameters"]["Bucket"]
        for env in environments
    )
    selections = {env.get("RECEIPT_SELECTION") for env in environments}
    assert selections == ({None, "pending"} if kind == "validate" else {None})  # only the pending list sets it


@pytest.mark.parametrize(
    ("failed", "timed_out", "total", "tolerance", "exceeded"),
    [
        (1, 0, 10, MapTolerance("M", percentage=10), False),  # 10 % is tolerated: only "more than" fails
        (2, 0, 10, MapTolerance("M", percentage=10), True),
        (1, 1, 10, MapTolerance("M", percentage=10), True),  # timed-out items count as failures
        (0, 0, 0, MapTolerance("M", percentage=0), False),
        (1, 0, 1000, MapTolerance("M"), True),  # neither field: any failure fails the run
        (0, 0, 1000, MapTolerance("M"), False),
        (3, 0, 10, MapTolerance("M", count=3), False),
        (4, 0, 10, MapTolerance("M", count=3), True),
        (4, 0, 100, MapTolerance("M", percentage=50, count=3), True),  # either threshold fails it
        (10, 0, 10, MapTolerance("M", percentage=100), False),
    ],
)
def test_tolerated_failure_threshold_follows_aws(
    failed: int, timed_out: int, total: int, tolerance: MapTolerance, exceeded: bool
) -> None:
    assert (
        exceeds_tolerated_failure_threshold(failed=failed, timed_out=timed_out, total=total, tolerance=tolerance)
        is exceeded
    )


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        # what moto hands over for the definition's States.Format('\{"execution_name":"{}"\}', ...)
        ('\\\\{"execution_name":"{}"\\\\}', ["run-1"], '{"execution_name":"run-1"}'),
        ("Hello, {} and {}", ["a", "b"], "Hello, a and b"),
        ("\\\\\\\\ and {}", ["x"], "\\ and x"),
    ],
)
def test_states_format_follows_aws_escapes(template: str, values: list[str], expected: str) -> None:
    assert aws_states_format(template, values) == expected


def test_states_format_with_too_few_arguments_fails() -> None:
    with pytest.raises(ValueError, match="more"):
        aws_states_format("{} {}", ["one"])


def test_intrinsics_resolve_to_local_names() -> None:
    template = {
        "Resources": {
            "Fn": {"Type": "AWS::Lambda::Function", "Properties": {"FunctionName": "my-fn"}},
            "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {}},
        }
    }
    stack = LocalStack(template, stack_name="Local")
    assert stack.resolve({"Ref": "Bucket"}) == "local-bucket"
    assert stack.resolve({"Fn::GetAtt": ["Fn", "Arn"]}) == "arn:aws:lambda:us-east-1:123456789012:function:my-fn"
    assert stack.resolve({"Fn::Sub": "${Fn.Arn}:*/${AWS::Region}/${!Literal}"}).endswith(
        ":my-fn:*/us-east-1/${Literal}"
    )
    assert (
        stack.resolve({"Fn::Select": [1, {"Fn::Split": [":", {"Fn::Join": [":", ["a", {"Ref": "Fn"}]]}]}]}) == "my-fn"
    )


def test_result_entries_use_the_aws_result_file_fields() -> None:
    import datetime

    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)
    base = {"index": 0, "name": "n1", "input": {"image_id": "i", "receipt_id": 1}, "start": moment, "stop": moment}
    ok = result_entry(
        ItemRecord(status="SUCCEEDED", output={"labels_added": 3}, **base),
        map_state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:sm/Map",
    )
    failed = result_entry(
        ItemRecord(status="FAILED", error="LLMOutputError", cause="bad", **base),
        map_state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:sm/Map",
    )

    assert ok["ExecutionArn"] == "arn:aws:states:us-east-1:1:execution:sm/Map:n1"
    assert json.loads(ok["Input"]) == {"image_id": "i", "receipt_id": 1}
    assert json.loads(ok["Output"]) == {"labels_added": 3}
    assert ok["StartDate"] == "2026-01-02T03:04:05.678Z"
    assert (ok["Status"], "Error" in ok) == ("SUCCEEDED", False)
    assert (failed["Status"], failed["Error"], failed["Cause"], "Output" in failed) == (
        "FAILED",
        "LLMOutputError",
        "bad",
        False,
    )
