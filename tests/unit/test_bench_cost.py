"""bench/bench_cost.py's arithmetic: transitions from a definition, write units from indexes, a tiny total."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from bench.bench_cost import (
    PRICES,
    Assumptions,
    IndexSpec,
    LambdaSpec,
    ReceiptIO,
    batch_failure_fraction,
    cost_of_run,
    express_break_even_seconds,
    happy_path,
    index_specs,
    indexes_written,
    inline_history_cap,
    longest_retry_wait_seconds,
    query_read_units,
    workflow_of,
    write_units,
)
from receipt_dynamo import ReceiptWordLabel, ValidationStatus, schema

pytestmark = pytest.mark.unit

PROCESS = "arn:aws:lambda:us-east-1:123456789012:function:process"
LIST = "arn:aws:lambda:us-east-1:123456789012:function:list"


def toy_definition() -> dict[str, Any]:
    """List -> Choice (work: the map; none: a Pass) -> Distributed Map of one Task -> Pass."""
    return {
        "StartAt": "List",
        "States": {
            "List": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": LIST},
                "Next": "HasWork",
            },
            "HasWork": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.n", "NumericGreaterThan": 0, "Next": "Map"}],
                "Default": "Nothing",
            },
            "Nothing": {"Type": "Pass", "Next": "NothingEither"},
            "NothingEither": {"Type": "Pass", "Next": "StillNothing"},
            "StillNothing": {"Type": "Pass", "End": True},
            "Map": {
                "Type": "Map",
                "MaxConcurrency": 3,
                "ToleratedFailurePercentage": 10,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Process",
                    "States": {
                        "Process": {
                            "Type": "Task",
                            "Resource": "arn:aws:states:::lambda:invoke",
                            "Parameters": {"FunctionName": PROCESS},
                            "End": True,
                        }
                    },
                },
                "Next": "Summarize",
            },
            "Summarize": {"Type": "Pass", "End": True},
        },
    }


def test_the_path_follows_the_choice_branch_that_reaches_the_map() -> None:
    # The Default branch is longer (3 states), but a run with work takes the map's branch.
    assert happy_path(toy_definition()) == ["List", "HasWork", "Map", "Summarize"]


def test_transitions_are_counted_from_the_definition() -> None:
    workflow = workflow_of(toy_definition())
    assert (workflow.parent_transitions, workflow.child_transitions) == (4, 1)
    assert (workflow.map_mode, workflow.child_execution_type, workflow.items_per_child) == (
        "DISTRIBUTED",
        "STANDARD",
        1,
    )
    # Parent states + per child: one transition for starting it and one per state it enters.
    assert workflow.transitions(1_000) == 4 + 1_000 * (1 + 1)
    assert (workflow.list_invocations, workflow.preflight_invocations, workflow.process_invocations_per_child) == (
        1,
        0,
        1,
    )


def test_adding_a_state_changes_the_count() -> None:
    definition = toy_definition()
    before = workflow_of(definition).transitions(1_000)

    parent = copy.deepcopy(definition)
    parent["States"]["Map"]["Next"] = "Audit"
    parent["States"]["Audit"] = {"Type": "Pass", "Next": "Summarize"}
    assert workflow_of(parent).transitions(1_000) == before + 1  # once per run

    child = copy.deepcopy(definition)
    states = child["States"]["Map"]["ItemProcessor"]["States"]
    states["Process"].pop("End")
    states["Process"]["Next"] = "Shape"
    states["Shape"] = {"Type": "Pass", "End": True}
    assert workflow_of(child).transitions(1_000) == before + 1_000  # once per child


def test_a_preflight_on_the_childrens_function_is_counted_apart_from_the_list_function() -> None:
    definition = toy_definition()
    definition["States"]["List"]["Next"] = "Preflight"
    definition["States"]["Preflight"] = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": PROCESS},
        "Next": "HasWork",
    }
    workflow = workflow_of(definition)
    assert (workflow.parent_transitions, workflow.list_invocations, workflow.preflight_invocations) == (5, 1, 1)


def test_batching_and_express_children_and_inline_mode_change_the_billed_transitions() -> None:
    definition = toy_definition()
    definition["States"]["Map"]["ItemBatcher"] = {"MaxItemsPerBatch": 10}
    batched = workflow_of(definition)
    assert batched.children(1_001) == 101
    assert batched.transitions(1_001) == 4 + 101 * 2

    definition = toy_definition()
    definition["States"]["Map"]["ItemProcessor"]["ProcessorConfig"]["ExecutionType"] = "EXPRESS"
    assert workflow_of(definition).transitions(1_000) == 4 + 1_000  # only the child starts are transitions

    definition = toy_definition()
    definition["States"]["Map"]["ItemProcessor"]["ProcessorConfig"] = {"Mode": "INLINE"}
    assert workflow_of(definition).transitions(1_000) == 4 + 1_000 * 1  # iterations are not billed, states are


def test_inline_history_cap_uses_the_events_per_iteration() -> None:
    workflow = workflow_of(toy_definition())
    # Parent: 2 execution + Task 5 + Choice 2 + Map 4 (+2 MapRun, not inline) + Pass 2 = 17 events.
    assert workflow.parent_events == 17
    # Inline: MapIterationStarted/Succeeded + the Task's 5 = 7 events per receipt.
    assert inline_history_cap(workflow) == (25_000 - 15) // 7


def test_index_writes_follow_the_items_key_attributes() -> None:
    indexes = index_specs(schema.GLOBAL_SECONDARY_INDEXES)
    in_gsi3 = {"PK", "SK", "GSI3PK", "GSI3SK", "label", "reasoning"}
    assert indexes_written(in_gsi3, indexes) == ["GSI3"]
    assert write_units(500, in_gsi3, indexes) == 2
    assert write_units(500, in_gsi3 | {"TYPE"}, indexes) == 3  # TYPE puts it in GSITYPE too
    assert write_units(1_500, in_gsi3, indexes) == 4  # 2 KB: 2 units on the table and 2 on GSI3
    assert write_units(500, {"PK", "SK", "GSI3PK"}, indexes) == 1  # half an index key: not in it


def test_a_label_items_write_units_come_from_its_attributes() -> None:
    label = ReceiptWordLabel(
        "4ba71ab7-ac05-44a5-acc6-be1805fdf179",
        1,
        3,
        2,
        "LINE_TOTAL",
        "amount at the right end of an item line: its line total",
        "2026-11-30T11:00:00+00:00",
        ValidationStatus.PENDING,
        "receipt_label:bench",
    )
    item = label.to_item()
    indexes = index_specs(schema.GLOBAL_SECONDARY_INDEXES)
    expected = [name for name, pk, sk in schema.GLOBAL_SECONDARY_INDEXES if pk in item and (sk is None or sk in item)]
    assert indexes_written(item.keys(), indexes) == expected
    assert write_units(400, item.keys(), indexes) == 1 + len(expected)
    assert expected == ["GSI3"]  # a label item has no TYPE: table + GSI3 = 2 WRU


def test_an_update_writes_an_index_only_when_it_projects_a_changed_attribute() -> None:
    receipt = {"PK", "SK", "TYPE", "labeled_by", "labeled_at"}
    changed = ("labeled_by", "labeled_at")
    projection_all = [IndexSpec("GSITYPE", "TYPE")]
    keys_only = [IndexSpec("GSITYPE", "TYPE", projection="KEYS_ONLY")]
    including = [IndexSpec("GSITYPE", "TYPE", projection="INCLUDE", non_key_attributes=frozenset({"labeled_at"}))]
    assert write_units(150, receipt, projection_all, changed=changed) == 2
    assert write_units(150, receipt, keys_only, changed=changed) == 1
    assert write_units(150, receipt, including, changed=changed) == 2
    assert index_specs([("GSITYPE", "TYPE", None)], {"GSITYPE": {"ProjectionType": "KEYS_ONLY"}}) == keys_only


def test_query_read_units_round_each_page_up_to_4_kb() -> None:
    assert query_read_units([1_000] * 5, consistent=True) == 2  # 5,000 bytes
    assert query_read_units([1_000] * 5, consistent=False) == 1.0
    assert query_read_units([4_096], consistent=True) == 1
    assert query_read_units([600 * 1024, 600 * 1024], consistent=True) == 2 * 150  # two 1 MB pages


def test_a_tiny_run_costs_what_it_costs_by_hand() -> None:
    workflow = workflow_of(toy_definition())  # 4 parent states, 1 per child, MaxConcurrency 3
    rio = ReceiptIO(
        query_read_units=1.0,
        labels=3,
        wru_per_label=2,
        marker_wru=2,
        list_read_units=0.5,
        manifest_bytes=0,
        result_bytes=0,
        child_log_bytes=0,
        parent_log_bytes=0,
        lambda_log_bytes=0,
    )
    a = Assumptions(
        receipts=2,
        llm_seconds=10,
        handler_seconds=0,
        cold_start_seconds=0,
        list_seconds=1,
        preflight_seconds=0,
        s3_itemreader_gets=1,
        s3_result_puts=6,
    )
    b = cost_of_run(workflow, LambdaSpec(1024), LambdaSpec(512), rio, a)
    by_hand = {
        "Step Functions transitions": (4 + 2 * 2) * 0.025 / 1_000,
        "Lambda requests": 3 * 0.20 / 1e6,  # 2 receipts + 1 list
        "Lambda duration": (2 * 10 * 1.0 + 1 * 1 * 0.5) * 0.0000133334,  # GB-s, arm64
        "DynamoDB reads": (2 * 1.0 + 0.5) * 0.125 / 1e6,
        "DynamoDB writes": 2 * (3 * 2 + 2) * 0.625 / 1e6,
        "S3 requests": 7 * 0.005 / 1_000 + 1 * 0.0004 / 1_000,  # manifest + 6 result PUTs, 1 GET
        "S3 storage": 0.0,
        "CloudWatch Logs ingestion": 0.0,
        "X-Ray traces": 3 * 5.00 / 1e6,  # the parent and 2 children
    }
    assert {line.component: line.usd for line in b.lines} == pytest.approx(by_hand)
    assert b.total == pytest.approx(sum(by_hand.values()))
    assert b.per_1000() == pytest.approx(sum(by_hand.values()) * 500)
    assert b.share("Lambda duration") == pytest.approx(by_hand["Lambda duration"] / sum(by_hand.values()))

    retried = cost_of_run(workflow, LambdaSpec(1024), LambdaSpec(512), rio, replace(a, retries=0.5))
    # One retry in 2 receipts: +1 transition, +1 request, +10 GB-s, +1 Query.
    extra = 0.025 / 1_000 + 0.20 / 1e6 + 10 * 0.0000133334 + 1.0 * 0.125 / 1e6
    assert retried.total - b.total == pytest.approx(extra)


def test_express_children_are_billed_per_request_and_64_mb_duration() -> None:
    definition = toy_definition()
    definition["States"]["Map"]["ItemProcessor"]["ProcessorConfig"]["ExecutionType"] = "EXPRESS"
    workflow = workflow_of(definition)
    rio = ReceiptIO(0, 0, 1, 1, 0, 0, 0, 0, 0, 0)
    a = Assumptions(receipts=1, llm_seconds=20.04, handler_seconds=0, cold_start_seconds=0, list_seconds=0)
    b = cost_of_run(workflow, LambdaSpec(1024), LambdaSpec(512), rio, a)
    assert b.usd("Step Functions Express children") == pytest.approx(1.00 / 1e6 + (64 / 1024) * 20.1 * 0.00001667)
    # A STANDARD child's own transition (one state) costs the same as ~23 s of a 64 MB Express child.
    assert express_break_even_seconds(workflow_of(toy_definition()), PRICES) == pytest.approx(
        (0.025 / 1_000 - 1.00 / 1e6) / ((64 / 1024) * 0.00001667)
    )


def test_retry_waits_and_batch_failures() -> None:
    retrier = {"IntervalSeconds": 30, "BackoffRate": 2, "MaxAttempts": 6, "MaxDelaySeconds": 300}
    assert longest_retry_wait_seconds([retrier]) == 30 + 60 + 120 + 240 + 300 + 300
    assert batch_failure_fraction(0.01, 1) == pytest.approx(0.01)
    assert batch_failure_fraction(0.01, 10) == pytest.approx(1 - 0.99**10)
