"""AWS cost per 1,000 receipts, the LLM excluded: a model over the synthesized template and the fixtures.

Nothing here calls AWS: quantities taken from the synthesized definition, the handlers and the fixtures
are multiplied by the prices in ``PRICES``; the model, its assumptions and sources are in docs/cost.md.
Rows are informational (no target): they are arithmetic, not measurements of this machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import mean
from typing import Any
from unittest import mock

from awslambdaric.lambda_runtime_log_utils import JsonFormatter

from bench import Row
from local_pipeline.template import REPO_ROOT, synthesize_template

AREA = "cost"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
STATE_MACHINE_SUFFIX = "-sf"
RECEIPTS = 1_000

# ---- prices: one place, one region, one date ------------------------------------------------------
PRICES_REGION = "us-east-1"
PRICES_TAKEN = "2026-11-30"  # when these were read from the sources below (stored copies of the pages)


@dataclass(frozen=True)
class Prices:
    """USD per unit, us-east-1, on-demand, no free tier applied. Sources and status: ``PRICE_SOURCES``."""

    sfn_transition: float = 0.025 / 1_000  # Standard workflows, per state transition
    sfn_express_request: float = 1.00 / 1_000_000
    sfn_express_gb_second: float = 0.00001667  # first 1,000 GB-hours a month
    lambda_request: float = 0.20 / 1_000_000
    lambda_arm_gb_second: float = 0.0000133334  # first 7.5 billion GB-s a month
    lambda_x86_gb_second: float = 0.0000166667  # first 6 billion GB-s a month
    dynamodb_wru: float = 0.625 / 1_000_000  # on-demand, since 2024-11-01
    dynamodb_rru: float = 0.125 / 1_000_000
    s3_put: float = 0.005 / 1_000  # S3 Standard PUT, COPY, POST, LIST
    s3_get: float = 0.0004 / 1_000  # S3 Standard GET, SELECT and all other requests
    s3_gb_month: float = 0.023  # S3 Standard, first 50 TB
    logs_ingested_gb: float = 0.50  # CloudWatch Logs standard ingestion (vended logs: same rate to 10 TB)
    xray_trace: float = 5.00 / 1_000_000  # traces recorded


PRICES = Prices()

#: (price, as listed, source, status). "verified" = the number was read on the AWS pricing page's
#: stored copy on PRICES_TAKEN; "list price, verify" = the well-known list price, seen only in a
#: secondary source (the stored AWS page renders its numbers client-side).
PRICE_SOURCES: tuple[tuple[str, str, str, str], ...] = (
    (
        "Step Functions Standard",
        "$0.025 per 1,000 state transitions",
        "https://aws.amazon.com/step-functions/pricing/",
        "verified (us-east-1 row of the state transitions table)",
    ),
    (
        "Step Functions Express",
        "$1.00 per 1M requests; $0.00001667 per GB-second (first 1,000 GB-hours), 64 MB chunks, 100 ms",
        "https://aws.amazon.com/step-functions/pricing/",
        "list price, verify",
    ),
    (
        "Lambda arm64",
        "$0.20 per 1M requests; $0.0000133334 per GB-second (first 7.5B GB-s)",
        "https://aws.amazon.com/lambda/pricing/",
        "list price, verify",
    ),
    (
        "DynamoDB on-demand",
        "$0.625 per 1M write request units; $0.125 per 1M read request units",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/",
        "list price, verify (unit rules verified on the page)",
    ),
    (
        "S3 Standard",
        "PUT $0.005 per 1,000; GET $0.0004 per 1,000; $0.023 per GB-month",
        "https://aws.amazon.com/s3/pricing/",
        "list price, verify",
    ),
    (
        "CloudWatch Logs",
        "$0.50 per GB ingested (standard; vended logs first 10 TB)",
        "https://aws.amazon.com/cloudwatch/pricing/",
        "list price, verify",
    ),
    (
        "X-Ray",
        "$5.00 per 1M traces recorded",
        "https://aws.amazon.com/xray/pricing/",
        "verified",
    ),
)

# ---- service rules the model uses ------------------------------------------------------------------
HISTORY_EVENT_LIMIT = 25_000  # events in one execution's history (an inline Map's iterations included)
PAYLOAD_LIMIT_BYTES = 256 * 1024  # a state's input or output
INLINE_MAX_CONCURRENCY = 40
EXPRESS_MAX_SECONDS = 300
EXPRESS_MEMORY_CHUNK_GB = 64 / 1024  # Express memory is billed in 64 MB chunks (the minimum)
CLOUDWATCH_EVENT_OVERHEAD_BYTES = 26  # per log event, as CloudWatch Logs sizes a batch
KB = 1024
READ_UNIT_BYTES = 4 * KB
QUERY_PAGE_BYTES = 1024 * KB

#: History events one state adds when it runs once (success path, no retry).
EVENTS_PER_STATE: Mapping[str, int] = {
    "Task": 5,  # StateEntered, Scheduled, Started, Succeeded, StateExited
    "Pass": 2,
    "Choice": 2,
    "Wait": 2,
    "Succeed": 2,
    "Fail": 1,
    "Parallel": 4,
    "Map": 4,  # MapStateEntered, MapStateStarted, MapStateSucceeded, MapStateExited
}
DISTRIBUTED_MAP_EXTRA_EVENTS = 2  # MapRunStarted, MapRunSucceeded
EXECUTION_EVENTS = 2  # ExecutionStarted, ExecutionSucceeded
INLINE_ITERATION_EVENTS = 2  # MapIterationStarted, MapIterationSucceeded


# ---- the definition: states entered, per parent run and per child ---------------------------------
def _successors(state: Mapping[str, Any]) -> list[str]:
    if state.get("Type") == "Choice":
        nexts = [str(choice["Next"]) for choice in state.get("Choices", [])]
        return nexts + ([str(state["Default"])] if "Default" in state else [])
    if state.get("End") or state.get("Type") in ("Succeed", "Fail"):
        return []
    return [str(state["Next"])] if "Next" in state else []


def execution_paths(states: Mapping[str, Mapping[str, Any]], start_at: str) -> list[list[str]]:
    """Every path of states from ``start_at`` to a terminal state other than Fail (no state twice)."""
    paths: list[list[str]] = []

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            return  # a loop: not a path a successful run is priced on
        path = [*path, name]
        state = states[name]
        following = _successors(state)
        if not following:
            if state.get("Type") != "Fail":
                paths.append(path)
            return
        for nxt in following:
            walk(nxt, path)

    walk(start_at, [])
    return paths


def happy_path(definition: Mapping[str, Any]) -> list[str]:
    """The states one successful execution with work enters, in order.

    At a Choice, the branch that reaches a Map state is taken (a run that has receipts), and of the
    paths that do, the longest; without a Map, the longest path. Catch routes and retries are not
    on it (retries are priced separately).
    """
    states: Mapping[str, Mapping[str, Any]] = definition["States"]
    paths = execution_paths(states, str(definition["StartAt"]))
    if not paths:
        raise ValueError("the definition has no path to a successful end")
    with_map = [p for p in paths if any(states[n].get("Type") == "Map" for n in p)]
    return max(with_map or paths, key=len)


def map_state(definition: Mapping[str, Any], path: Sequence[str]) -> tuple[str, Mapping[str, Any]] | None:
    states: Mapping[str, Mapping[str, Any]] = definition["States"]
    found = [(name, states[name]) for name in path if states[name].get("Type") == "Map"]
    if len(found) > 1:
        raise ValueError(f"the model prices one Map state per execution, found {[n for n, _ in found]}")
    return found[0] if found else None


def state_transitions(definition: Mapping[str, Any], path: Sequence[str]) -> int:
    """States entered along ``path``: one each; a Parallel state's branches add their own states."""
    states: Mapping[str, Mapping[str, Any]] = definition["States"]
    count = 0
    for name in path:
        count += 1
        for branch in states[name].get("Branches", []):
            count += state_transitions(branch, happy_path(branch))
    return count


def history_events(definition: Mapping[str, Any], path: Sequence[str], *, execution: bool = True) -> int:
    """History events of one run along ``path`` (a Distributed Map's MapRun events, not its children's)."""
    states: Mapping[str, Mapping[str, Any]] = definition["States"]
    events = EXECUTION_EVENTS if execution else 0
    for name in path:
        state = states[name]
        events += EVENTS_PER_STATE.get(str(state.get("Type")), 2)
        if _processor_mode(state) == "DISTRIBUTED":
            events += DISTRIBUTED_MAP_EXTRA_EVENTS
        for branch in state.get("Branches", []):
            events += history_events(branch, happy_path(branch), execution=False)
    return events


def _processor(state: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(state.get("ItemProcessor") or state.get("Iterator") or {})


def _processor_mode(state: Mapping[str, Any]) -> str:
    if state.get("Type") != "Map":
        return ""
    return str(_processor(state).get("ProcessorConfig", {}).get("Mode", "INLINE"))


def lambda_function_of(state: Mapping[str, Any]) -> str | None:
    """The function a Task state invokes (``lambda:invoke`` or a function ARN as Resource), else None."""
    if state.get("Type") != "Task":
        return None
    resource = str(state.get("Resource", ""))
    if resource.endswith(":states:::lambda:invoke") or resource.endswith(":states:::lambda:invoke.waitForTaskToken"):
        return str(state.get("Parameters", {}).get("FunctionName", ""))
    if ":lambda:" in resource and ":function:" in resource:
        return resource
    return None


@dataclass(frozen=True)
class Workflow:
    """What one run of the state machine does, as far as billing goes (derived: :func:`workflow_of`)."""

    parent_states: tuple[str, ...]
    child_states: tuple[str, ...]
    parent_transitions: int
    child_transitions: int
    parent_events: int
    child_events: int  # per child execution, ExecutionStarted/Succeeded included
    map_name: str = "LabelReceipts"
    map_mode: str = "DISTRIBUTED"  # or INLINE
    child_execution_type: str = "STANDARD"  # or EXPRESS (Distributed Map only)
    items_per_child: int = 1  # ItemBatcher MaxItemsPerBatch; 1 without a batcher
    max_concurrency: int = 1
    tolerated_failure_percentage: float = 0.0
    list_invocations: int = 1  # parent Lambda tasks invoking another function than the children's
    preflight_invocations: int = 0  # parent Lambda tasks invoking the children's function
    process_invocations_per_child: int = 1
    child_retriers: tuple[Mapping[str, Any], ...] = ()

    def children(self, receipts: int) -> int:
        return math.ceil(receipts / self.items_per_child) if receipts else 0

    def transitions(self, receipts: int, retries: float = 0.0) -> float:
        """Billed Standard state transitions for one run over ``receipts`` (``retries`` in total)."""
        if self.map_mode == "INLINE":
            return self.parent_transitions + receipts * self.child_transitions + retries
        children = self.children(receipts)
        per_child = 1 + (self.child_transitions if self.child_execution_type == "STANDARD" else 0)
        return self.parent_transitions + children * per_child + retries


def workflow_of(definition: Mapping[str, Any]) -> Workflow:
    """The :class:`Workflow` of a state machine definition (resolved: function names are strings)."""
    parent_path = happy_path(definition)
    found = map_state(definition, parent_path)
    if found is None:
        raise ValueError("no Map state on the definition's successful path")
    name, state = found
    processor = _processor(state)
    child_path = happy_path(processor)
    config = processor.get("ProcessorConfig", {})
    child_functions = [f for f in (lambda_function_of(processor["States"][n]) for n in child_path) if f is not None]
    child_function = child_functions[0] if child_functions else None
    parent_functions = [f for f in (lambda_function_of(definition["States"][n]) for n in parent_path) if f is not None]
    batcher = state.get("ItemBatcher") or {}
    retriers = tuple(r for n in child_path for r in processor["States"][n].get("Retry", []))
    return Workflow(
        parent_states=tuple(parent_path),
        child_states=tuple(child_path),
        parent_transitions=state_transitions(definition, parent_path),
        child_transitions=state_transitions(processor, child_path),
        parent_events=history_events(definition, parent_path),
        child_events=history_events(processor, child_path),
        map_name=name,
        map_mode=str(config.get("Mode", "INLINE")),
        child_execution_type=str(config.get("ExecutionType", "STANDARD")),
        items_per_child=int(batcher.get("MaxItemsPerBatch", 1)),
        max_concurrency=int(state.get("MaxConcurrency", 0)) or 1,
        tolerated_failure_percentage=float(state.get("ToleratedFailurePercentage", 0)),
        list_invocations=sum(1 for f in parent_functions if f != child_function),
        preflight_invocations=sum(1 for f in parent_functions if f == child_function),
        process_invocations_per_child=len(child_functions),
        child_retriers=retriers,
    )


def inline_history_cap(workflow: Workflow) -> int:
    """Receipts an inline Map can take before the parent's history reaches the event limit."""
    per_item = INLINE_ITERATION_EVENTS + workflow.child_events - EXECUTION_EVENTS
    fixed = workflow.parent_events - DISTRIBUTED_MAP_EXTRA_EVENTS
    return (HISTORY_EVENT_LIMIT - fixed) // per_item


def longest_retry_wait_seconds(retriers: Iterable[Mapping[str, Any]]) -> float:
    """The longest total backoff one retrier can wait (full jitter's upper bound, capped per try)."""
    longest = 0.0
    for retrier in retriers:
        interval = float(retrier.get("IntervalSeconds", 1))
        rate = float(retrier.get("BackoffRate", 2.0))
        cap = float(retrier.get("MaxDelaySeconds", math.inf))
        attempts = int(retrier.get("MaxAttempts", 3))
        longest = max(longest, sum(min(interval * rate**k, cap) for k in range(attempts)))
    return longest


# ---- DynamoDB units ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexSpec:
    name: str
    partition_key: str
    sort_key: str | None = None
    projection: str = "ALL"  # ALL | KEYS_ONLY | INCLUDE
    non_key_attributes: frozenset[str] = frozenset()


def index_specs(
    indexes: Iterable[tuple[str, str, str | None]], projections: Mapping[str, Mapping[str, Any]] | None = None
) -> list[IndexSpec]:
    """``schema.GLOBAL_SECONDARY_INDEXES`` with each index's Projection (CloudFormation shape; ALL if absent)."""
    out = []
    for name, pk, sk in indexes:
        projection = (projections or {}).get(name, {"ProjectionType": "ALL"})
        out.append(
            IndexSpec(
                name,
                pk,
                sk,
                str(projection.get("ProjectionType", "ALL")),
                frozenset(projection.get("NonKeyAttributes", ())),
            )
        )
    return out


def indexes_written(
    attributes: Collection[str],
    indexes: Iterable[IndexSpec],
    *,
    changed: Collection[str] | None = None,
    table_keys: Collection[str] = ("PK", "SK"),
) -> list[str]:
    """The indexes a write of an item with ``attributes`` also writes.

    An item is in an index when it has the index's key attributes. A put writes every index it is in;
    an update (``changed``: the attributes it sets) only those projecting a changed attribute.
    """
    written = []
    for index in indexes:
        keys = {index.partition_key} | ({index.sort_key} if index.sort_key else set())
        if not keys <= set(attributes):
            continue
        if changed is not None:
            projects_all = index.projection == "ALL"
            projected = keys | set(table_keys) | set(index.non_key_attributes)
            if not projects_all and not set(changed) & projected:
                continue
        written.append(index.name)
    return written


def write_units(
    item_bytes: int,
    attributes: Collection[str],
    indexes: Iterable[IndexSpec],
    *,
    changed: Collection[str] | None = None,
) -> int:
    """WRU of one standard write: 1 per KB of the item on the table, and again for each index written."""
    per_copy = max(1, math.ceil(item_bytes / KB))
    return per_copy * (1 + len(indexes_written(attributes, indexes, changed=changed)))


def query_read_units(item_sizes: Sequence[int], *, consistent: bool) -> float:
    """RRU of one paginated Query: per 1 MB page, its items' bytes rounded up to 4 KB; half if eventual."""
    units = 0.0
    page = 0
    for size in item_sizes:
        if page and page + size > QUERY_PAGE_BYTES:
            units += math.ceil(page / READ_UNIT_BYTES)
            page = 0
        page += size
    units += math.ceil(page / READ_UNIT_BYTES) if page else 1  # an empty Query still reads one unit
    return units * (1.0 if consistent else 0.5)


# ---- the model ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LambdaSpec:
    memory_mb: int
    arm64: bool = True
    timeout_seconds: int = 900

    @property
    def gb(self) -> float:
        return self.memory_mb / 1024


@dataclass(frozen=True)
class ReceiptIO:
    """Per-receipt (and per-run) quantities measured from the code and the fixtures."""

    query_read_units: float  # the process handler's Query of one receipt
    labels: float  # label PutItems per receipt
    wru_per_label: int
    marker_wru: int
    list_read_units: float  # the list function's Query pages, whole run
    manifest_bytes: float  # per receipt
    result_bytes: float  # per receipt in the ResultWriter's SUCCEEDED file
    child_log_bytes: float  # state machine log bytes of one child execution
    parent_log_bytes: float  # per run
    lambda_log_bytes: float  # process function log bytes per invocation


@dataclass(frozen=True)
class Assumptions:
    receipts: int = RECEIPTS  # per run
    llm_seconds: float = 20.0  # the process function waits this long for the model, per receipt
    handler_seconds: float = 1.0  # the rest of a receipt's invocation (Query, label puts, marker, graph)
    cold_start_seconds: float = 3.0  # INIT of the container image, billed, one per concurrent slot per run
    list_seconds: float = 2.0  # the list function for a run of `receipts` (Query pages + one PUT)
    preflight_seconds: float = 2.0  # one capped chat call
    retries: float = 0.0  # extra process attempts per receipt (each: full LLM wait, one more Query)
    s3_itemreader_gets: int = 1  # the manifest read by the ItemReader
    s3_result_puts: int = 6  # manifest.json + SUCCEEDED_0.json, each a 3-request multipart upload
    storage_days: float = 30.0  # the manifest bucket's lifecycle expiry
    lambda_log_bytes_on_retry: bool = True


@dataclass(frozen=True)
class CostLine:
    component: str
    quantity: str
    usd: float


@dataclass(frozen=True)
class Breakdown:
    lines: tuple[CostLine, ...]
    receipts: int

    @property
    def total(self) -> float:
        return sum(line.usd for line in self.lines)

    def per_1000(self, usd: float | None = None) -> float:
        value = self.total if usd is None else usd
        return value * 1000 / self.receipts if self.receipts else 0.0

    def share(self, component: str) -> float:
        total = self.total
        return sum(ln.usd for ln in self.lines if ln.component == component) / total if total else 0.0

    def usd(self, component: str) -> float:
        return sum(ln.usd for ln in self.lines if ln.component == component)


def child_seconds(workflow: Workflow, a: Assumptions) -> float:
    return workflow.items_per_child * (a.llm_seconds + a.handler_seconds)


def cost_of_run(
    workflow: Workflow,
    process: LambdaSpec,
    list_fn: LambdaSpec,
    rio: ReceiptIO,
    a: Assumptions,
    prices: Prices = PRICES,
) -> Breakdown:
    """Dollars of one run over ``a.receipts`` receipts, by component (the LLM provider excluded)."""
    n = a.receipts
    retries = n * a.retries
    children = workflow.children(n)
    lines: list[CostLine] = []

    transitions = workflow.transitions(n, retries)
    lines.append(
        CostLine("Step Functions transitions", f"{transitions:,.0f} transitions", transitions * prices.sfn_transition)
    )
    if workflow.map_mode == "DISTRIBUTED" and workflow.child_execution_type == "EXPRESS":
        billed = math.ceil(child_seconds(workflow, a) * 10) / 10  # 100 ms increments
        gb_s = children * EXPRESS_MEMORY_CHUNK_GB * billed
        usd = children * prices.sfn_express_request + gb_s * prices.sfn_express_gb_second
        lines.append(CostLine("Step Functions Express children", f"{children:,} requests, {gb_s:,.0f} GB-s", usd))

    process_invocations = children * workflow.process_invocations_per_child + retries
    preflights = workflow.preflight_invocations
    list_invocations = workflow.list_invocations
    requests = process_invocations + preflights + list_invocations
    lines.append(CostLine("Lambda requests", f"{requests:,.0f} invocations", requests * prices.lambda_request))

    process_seconds = (
        n * (a.llm_seconds + a.handler_seconds)
        + retries * a.llm_seconds
        + preflights * a.preflight_seconds
        + min(workflow.max_concurrency, max(children, 1)) * a.cold_start_seconds
    )
    process_gb_s = process_seconds * process.gb
    list_gb_s = list_invocations * a.list_seconds * list_fn.gb
    duration_usd = process_gb_s * _gb_second_price(process, prices) + list_gb_s * _gb_second_price(list_fn, prices)
    lines.append(
        CostLine(
            "Lambda duration", f"{process_gb_s + list_gb_s:,.0f} GB-s, process at {process.memory_mb} MB", duration_usd
        )
    )

    rru = (n + retries) * rio.query_read_units + rio.list_read_units
    lines.append(CostLine("DynamoDB reads", f"{rru:,.0f} RRU", rru * prices.dynamodb_rru))
    wru = n * (rio.labels * rio.wru_per_label + rio.marker_wru)
    lines.append(CostLine("DynamoDB writes", f"{wru:,.0f} WRU", wru * prices.dynamodb_wru))

    puts = 1 + (a.s3_result_puts if workflow.map_mode == "DISTRIBUTED" else 0)
    gets = a.s3_itemreader_gets if workflow.map_mode == "DISTRIBUTED" else 0
    lines.append(CostLine("S3 requests", f"{puts} PUT, {gets} GET", puts * prices.s3_put + gets * prices.s3_get))
    stored_gb = n * (rio.manifest_bytes + rio.result_bytes) / 1024**3
    lines.append(
        CostLine(
            "S3 storage",
            f"{stored_gb * 1024:,.2f} MB for {a.storage_days:g} days",
            stored_gb * prices.s3_gb_month * a.storage_days / 30,
        )
    )

    per_event = rio.child_log_bytes / workflow.child_events if workflow.child_events else 0.0
    retry_log = retries * (3 * per_event + (rio.lambda_log_bytes if a.lambda_log_bytes_on_retry else 0))
    log_bytes = (
        children * rio.child_log_bytes
        + rio.parent_log_bytes
        + (process_invocations - retries + preflights) * rio.lambda_log_bytes
        + retry_log
    )
    lines.append(
        CostLine(
            "CloudWatch Logs ingestion",
            f"{log_bytes / 1024**2:,.1f} MB",
            log_bytes / 1024**3 * prices.logs_ingested_gb,
        )
    )

    traces = 1 + (children if workflow.map_mode == "DISTRIBUTED" else 0)
    lines.append(CostLine("X-Ray traces", f"{traces:,} traces", traces * prices.xray_trace))
    return Breakdown(tuple(lines), n)


def _gb_second_price(fn: LambdaSpec, prices: Prices) -> float:
    return prices.lambda_arm_gb_second if fn.arm64 else prices.lambda_x86_gb_second


def batch_failure_fraction(receipt_failure_rate: float, batch: int) -> float:
    """Share of items a map run reports failed when a batch fails as a whole: 1 - (1 - p)^N."""
    return 1 - (1 - receipt_failure_rate) ** batch


# ---- measurements from the template, the fixtures and the handlers -----------------------------------
@dataclass
class Deployed:
    """What the model reads from the synthesized template."""

    state_machine_name: str
    state_machine_type: str
    tracing: bool
    logging_level: str
    log_execution_data: bool
    definition: dict[str, Any]
    workflow: Workflow
    process: LambdaSpec
    list_fn: LambdaSpec
    process_arn: str
    projections: dict[str, dict[str, Any]] = field(default_factory=dict)


def deployed(template: Mapping[str, Any]) -> Deployed:
    from local_pipeline.template import LocalStack

    stack = LocalStack(dict(template))
    machines = [
        logical_id
        for logical_id in stack.resources_of_type("AWS::StepFunctions::StateMachine")
        if stack.physical_name(logical_id).endswith(STATE_MACHINE_SUFFIX)
    ]
    if len(machines) != 1:
        raise RuntimeError(f"expected one state machine named *{STATE_MACHINE_SUFFIX}, found {machines}")
    (machine,) = machines
    props = stack.resource(machine)["Properties"]
    definition = stack.definition(machine)
    workflow = workflow_of(definition)
    processor = _processor(definition["States"][workflow.map_name])
    process_arn = next(
        f for f in (lambda_function_of(processor["States"][n]) for n in workflow.child_states) if f is not None
    )
    list_arn = next(
        f
        for f in (lambda_function_of(definition["States"][n]) for n in workflow.parent_states)
        if f is not None and f != process_arn
    )

    def spec(arn: str) -> LambdaSpec:
        fn = stack.resource(stack.function_id_for_arn(arn))["Properties"]
        return LambdaSpec(
            memory_mb=int(fn.get("MemorySize", 128)),
            arm64="arm64" in fn.get("Architectures", ["x86_64"]),
            timeout_seconds=int(fn.get("Timeout", 3)),
        )

    projections: dict[str, dict[str, Any]] = {}
    for table in stack.resources_of_type("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable"):
        for index in stack.resource(table)["Properties"].get("GlobalSecondaryIndexes", []):
            projections[index["IndexName"]] = dict(index.get("Projection", {}))
    logging = props.get("LoggingConfiguration", {})
    return Deployed(
        state_machine_name=stack.physical_name(machine),
        state_machine_type=str(props.get("StateMachineType", "STANDARD")),
        tracing=bool(props.get("TracingConfiguration", {}).get("Enabled")),
        logging_level=str(logging.get("Level", "OFF")),
        log_execution_data=bool(logging.get("IncludeExecutionData")),
        definition=definition,
        workflow=workflow,
        process=spec(process_arn),
        list_fn=spec(list_arn),
        process_arn=process_arn,
        projections=projections,
    )


def fixture_documents() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]


_PRICE = re.compile(r"-?\$?\d+\.\d\d")
REASONING = {
    "LINE_TOTAL": "amount at the right end of an item line: its line total",
    "PRODUCT_NAME": "item line word before the price: part of the product name",
}


def label_for(text: str) -> str:
    """Every word gets a label (the upper bound): prices LINE_TOTAL, anything else PRODUCT_NAME."""
    return "LINE_TOTAL" if _PRICE.fullmatch(text) else "PRODUCT_NAME"


def every_word_answer(messages: list[Any]) -> dict[str, Any]:
    """A model answer labeling every ``[line:word] text`` of the prompt, with a 12-word-or-less reasoning."""
    text = str(messages[-1].content)
    labels = []
    for line_id, word_id, word in re.findall(r"\[(\d+):(\d+)\] (\S+)", text):
        label = label_for(word)
        labels.append({"line_id": int(line_id), "word_id": int(word_id), "label": label, "reasoning": REASONING[label]})
    return {"labels": labels}


class RecordingDynamoClient:
    """A stand-in for the boto3 DynamoDB client: records every call, answers the Query with ``items``."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def query(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("Query", kwargs))
        return {"Items": list(self.items)}

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("PutItem", kwargs))
        return {}

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("UpdateItem", kwargs))
        return {}

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        def other(**kwargs: Any) -> dict[str, Any]:
            self.calls.append((name, kwargs))
            return {}

        return other


@dataclass
class HandlerRun:
    """The process handler on the fixtures with a recording DynamoDB client and a scripted model."""

    consistent_read: bool | None = None
    calls: Counter[str] = field(default_factory=Counter)
    label_items: list[dict[str, Any]] = field(default_factory=list)
    marker_updates: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    log_bytes: list[int] = field(default_factory=list)  # the handler's own log output per receipt
    error: str | None = None


#: Set while a handler runs here: anything that would reach AWS or a model fails at once (loopback port 9).
OFFLINE_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": PRICES_REGION,
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "DYNAMODB_TABLE_NAME": "bench-cost",
    "OLLAMA_BASE_URL": "http://127.0.0.1:9",
    "OLLAMA_MODEL": "bench",
}


@contextlib.contextmanager
def offline_environment() -> Iterator[None]:
    """AWS and Ollama pointed at a dead loopback port for the block; the environment is restored after."""
    with mock.patch.dict(os.environ, OFFLINE_ENVIRONMENT):
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("LANGSMITH_API_KEY_SECRET_ARN", None)
        yield


def run_process_handler(documents: Sequence[dict[str, Any]]) -> HandlerRun:
    """Each fixture through the real ``lambda_handler`` (no AWS: the DynamoDB client records, the LLM is scripted)."""
    from receipt_dynamo import DynamoClient, parse_receipt_document
    from tests.helpers import PROCESS_HANDLER, LambdaContext, load_handler
    from tests.scripted_chat import ScriptedChatModel

    out = HandlerRun()
    stdout = io.StringIO()
    # The handler's records as Lambda writes them with the JSON log format: the runtime's own formatter.
    lines = logging.StreamHandler(stdout)
    lines.setFormatter(JsonFormatter())
    handler_logger = logging.getLogger("process_receipt")
    handler_logger.addHandler(lines)
    level = handler_logger.level
    handler_logger.setLevel(logging.INFO)  # the functions' application log level
    try:
        with offline_environment(), contextlib.redirect_stdout(stdout):
            handler: Any = load_handler(PROCESS_HANDLER, "bench_cost_process_handler")
            fake = RecordingDynamoClient()
            handler._dynamo = DynamoClient("bench-cost", client=fake, concurrency=1)
            handler._chat_model = ScriptedChatModel(answers=[every_word_answer], repeat_last=True, model="bench")
            for document in documents:
                details = parse_receipt_document(document)
                fake.items = receipt_item_list(details)
                fake.calls.clear()
                before = len(stdout.getvalue().encode())
                out.results.append(
                    handler.lambda_handler(
                        {"image_id": details.receipt.image_id, "receipt_id": details.receipt.receipt_id},
                        LambdaContext(function_name="receipt-labeling-dev-create-labels-process"),
                    )
                )
                out.log_bytes.append(len(stdout.getvalue().encode()) - before)
                for name, kwargs in fake.calls:
                    out.calls[name] += 1
                    if name == "Query":
                        out.consistent_read = bool(kwargs.get("ConsistentRead", False))
                    elif name == "PutItem":
                        out.label_items.append(kwargs["Item"])
                    elif name == "UpdateItem":
                        out.marker_updates.append(kwargs)
    except Exception as error:  # the handler is only a cross-check: the model falls back to the fixtures
        out.error = f"{type(error).__name__}: {error}"[:200]
    finally:
        handler_logger.removeHandler(lines)
        handler_logger.setLevel(level)
    return out


def receipt_item_list(details: Any) -> list[dict[str, Any]]:
    """The items the process handler's Query returns for a receipt not yet labeled: receipt, lines, words."""
    return [details.receipt.to_item()] + [e.to_item() for e in [*details.lines, *details.words]]


def manifest_bytes_per_receipt(documents: Sequence[dict[str, Any]]) -> float:
    """Bytes per receipt of the list handler's JSON Lines manifest (its own ``write_manifest``)."""
    from tests.helpers import LIST_HANDLER, load_handler

    with contextlib.redirect_stdout(io.StringIO()):
        handler = load_handler(LIST_HANDLER, "bench_cost_list_handler")
    buffer = io.BytesIO()
    keys = [(str(uuid.uuid4()), int(d["receipt_id"])) for d in documents]
    handler.write_manifest(keys, buffer)
    return len(buffer.getvalue()) / len(keys)


def invoke_response(result: Mapping[str, Any]) -> dict[str, Any]:
    """What ``lambda:invoke`` returns to the state (the Task's output before OutputPath)."""
    request_id = str(uuid.uuid4())
    body = json.dumps(result)
    headers = {
        "X-Amz-Executed-Version": "$LATEST",
        "x-amzn-Remapped-Content-Length": "0",
        "Connection": "keep-alive",
        "x-amzn-RequestId": request_id,
        "Content-Length": str(len(body)),
        "Date": "Mon, 30 Nov 2026 11:00:00 GMT",
        "X-Amzn-Trace-Id": "Root=1-692c2000-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=1",
        "Content-Type": "application/json",
    }
    return {
        "ExecutedVersion": "$LATEST",
        "Payload": dict(result),
        "SdkHttpMetadata": {
            "AllHttpHeaders": {k: [v] for k, v in headers.items()},
            "HttpHeaders": headers,
            "HttpStatusCode": 200,
        },
        "SdkResponseMetadata": {"RequestId": request_id},
        "StatusCode": 200,
    }


def child_log_events(
    *,
    state_machine_name: str,
    map_label: str,
    child_states: Sequence[tuple[str, str]],
    function_arn: str,
    execution_input: Mapping[str, Any],
    result: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The CloudWatch Logs events of one child execution (level ALL, execution data included)."""
    arn = f"arn:aws:states:{PRICES_REGION}:123456789012:execution:{state_machine_name}/{map_label}:{uuid.uuid4()}"
    role = f"arn:aws:iam::123456789012:role/{state_machine_name}-StateMachineRole-0123456789AB"
    no_truncation = {"truncated": False}
    details: list[tuple[str, dict[str, Any]]] = [
        (
            "ExecutionStarted",
            {"input": json.dumps(execution_input), "inputDetails": no_truncation, "roleArn": role},
        )
    ]
    data: Mapping[str, Any] = execution_input
    for name, kind in child_states:
        entered = {"name": name, "input": json.dumps(data), "inputDetails": no_truncation}
        if kind == "Task":
            lambda_io = {"resource": "invoke", "resourceType": "lambda"}
            details += [
                ("TaskStateEntered", entered),
                (
                    "TaskScheduled",
                    {
                        "parameters": json.dumps({"FunctionName": function_arn, "Payload": data}),
                        "region": PRICES_REGION,
                        **lambda_io,
                    },
                ),
                ("TaskStarted", lambda_io),
                (
                    "TaskSucceeded",
                    {"output": json.dumps(invoke_response(result)), "outputDetails": no_truncation, **lambda_io},
                ),
            ]
            data = result
            details.append(
                ("TaskStateExited", {"name": name, "output": json.dumps(data), "outputDetails": no_truncation})
            )
        else:
            details += [
                (f"{kind}StateEntered", entered),
                (f"{kind}StateExited", {"name": name, "output": json.dumps(data), "outputDetails": no_truncation}),
            ]
    details.append(("ExecutionSucceeded", {"output": json.dumps(data), "outputDetails": no_truncation}))
    return [
        {
            "id": str(i),
            "type": kind,
            "details": detail,
            "previous_event_id": str(i - 1),
            "event_timestamp": "1764500000000",
            "execution_arn": arn,
            "redrive_count": "0",
        }
        for i, (kind, detail) in enumerate(details, start=1)
    ]


def log_bytes(events: Iterable[Mapping[str, Any]]) -> int:
    return sum(len(json.dumps(e).encode()) + CLOUDWATCH_EVENT_OVERHEAD_BYTES for e in events)


def lambda_platform_log_bytes(memory_mb: int) -> int:
    """START, END and REPORT lines of one invocation (text log format)."""
    request_id = str(uuid.uuid4())
    lines = [
        f"START RequestId: {request_id} Version: $LATEST\n",
        f"END RequestId: {request_id}\n",
        f"REPORT RequestId: {request_id}\tDuration: 21034.56 ms\tBilled Duration: 21035 ms\t"
        f"Memory Size: {memory_mb} MB\tMax Memory Used: 312 MB\t\n",
    ]
    return sum(len(line.encode()) + CLOUDWATCH_EVENT_OVERHEAD_BYTES for line in lines)


def result_entry_bytes(state_machine_name: str, map_label: str, item: Mapping[str, Any], result: Any) -> int:
    """One child execution's entry in the ResultWriter's SUCCEEDED file."""
    child = f"{state_machine_name}/{map_label}:{uuid.uuid4()}"
    entry = {
        "ExecutionArn": f"arn:aws:states:{PRICES_REGION}:123456789012:execution:{child}",
        "Input": json.dumps(item),
        "InputDetails": {"Included": True},
        "Name": str(uuid.uuid4()),
        "Output": json.dumps(result),
        "OutputDetails": {"Included": True},
        "RedriveCount": 0,
        "RedriveStatus": "NOT_REDRIVABLE",
        "RedriveStatusReason": "Execution is SUCCEEDED and cannot be redriven",
        "StartDate": "2026-11-30T11:00:00.000Z",
        "StateMachineArn": f"arn:aws:states:{PRICES_REGION}:123456789012:stateMachine:{child.split(':')[0]}",
        "Status": "SUCCEEDED",
        "StopDate": "2026-11-30T11:00:21.000Z",
    }
    return len(json.dumps(entry).encode()) + 2  # ",\n" between entries


@dataclass
class Measured:
    rio: ReceiptIO
    notes: dict[str, str]


def measure(dep: Deployed, documents: Sequence[dict[str, Any]]) -> Measured:
    from bench.bench_dynamo import item_size
    from receipt_dynamo import ReceiptWordLabel, ValidationStatus, parse_receipt_document, schema

    indexes = index_specs(schema.GLOBAL_SECONDARY_INDEXES, dep.projections)
    run = run_process_handler(documents)
    consistent = run.consistent_read if run.consistent_read is not None else True

    parsed = [parse_receipt_document(d) for d in documents]
    words = [len(p.words) for p in parsed]
    query_units = []
    query_bytes = []
    query_items = []
    receipt_items = []
    for details in parsed:
        items = receipt_item_list(details)
        query_units.append(query_read_units([item_size(i) for i in items], consistent=consistent))
        query_bytes.append(sum(item_size(i) for i in items))
        query_items.append(len(items))
        receipt_items.append(details.receipt.to_item())

    # Label items: the handler's own puts when it ran, else every word labeled through to_item().
    if run.label_items:
        label_items = run.label_items
        labels_per_receipt = len(label_items) / len(documents)
    else:
        label_items = [
            ReceiptWordLabel(
                w.image_id,
                w.receipt_id,
                w.line_id,
                w.word_id,
                label_for(w.text),
                REASONING[label_for(w.text)],
                "2026-11-30T11:00:00.000000+00:00",
                ValidationStatus.PENDING,
                "receipt_label:bench",
            ).to_item()
            for p in parsed
            for w in p.words
        ]
        labels_per_receipt = sum(words) / len(words)
    label_wru = [write_units(item_size(i), i.keys(), indexes) for i in label_items]
    label_indexes = Counter(tuple(indexes_written(i.keys(), indexes)) for i in label_items)
    sizes = [item_size(i) for i in label_items]

    marked = {**receipt_items[0], "labeled_by": {"S": "receipt_label:gpt-oss:120b"}}
    marked["labeled_at"] = {"S": "2026-11-30T11:00:00.000000+00:00"}
    changed = ("labeled_by", "labeled_at")
    marker_wru = write_units(item_size(marked), marked.keys(), indexes, changed=changed)
    marker_indexes = indexes_written(marked.keys(), indexes, changed=changed)

    results = run.results or [
        {
            "image_id": p.receipt.image_id,
            "receipt_id": p.receipt.receipt_id,
            "labels_added": len(p.words),
            "labels_skipped_existing": 0,
            "labels_rejected": 0,
            "llm_calls": 1,
            "already_labeled": False,
        }
        for p in parsed
    ]
    processor = _processor(dep.definition["States"][dep.workflow.map_name])
    child_kinds = [(n, str(processor["States"][n]["Type"])) for n in dep.workflow.child_states]
    child_logs = []
    result_bytes = []
    for details, result in zip(parsed, results, strict=True):
        item = {"image_id": details.receipt.image_id, "receipt_id": details.receipt.receipt_id}
        events = child_log_events(
            state_machine_name=dep.state_machine_name,
            map_label=dep.workflow.map_name,
            child_states=child_kinds,
            function_arn=dep.process_arn,
            execution_input=item,
            result=result,
        )
        child_logs.append(log_bytes(events))
        result_bytes.append(result_entry_bytes(dep.state_machine_name, dep.workflow.map_name, item, result))
    child_log = sum(child_logs) / len(child_logs) if dep.logging_level == "ALL" else 0.0
    per_event = child_log / dep.workflow.child_events if dep.workflow.child_events else 0.0
    handler_log = sum(run.log_bytes) / len(run.log_bytes) if run.log_bytes else 0.0
    lambda_log = lambda_platform_log_bytes(dep.process.memory_mb) + handler_log

    manifest = manifest_bytes_per_receipt(documents)
    receipt_bytes = item_size(receipt_items[0])
    list_units = query_read_units([receipt_bytes] * RECEIPTS, consistent=False)  # GSI reads are eventual

    rio = ReceiptIO(
        query_read_units=sum(query_units) / len(query_units),
        labels=labels_per_receipt,
        wru_per_label=max(label_wru),
        marker_wru=marker_wru,
        list_read_units=list_units,
        manifest_bytes=manifest,
        result_bytes=sum(result_bytes) / len(result_bytes),
        child_log_bytes=child_log,
        parent_log_bytes=dep.workflow.parent_events * per_event,
        lambda_log_bytes=lambda_log,
    )
    others = sorted(set(run.calls) - {"Query", "PutItem", "UpdateItem"})
    if run.error is None:
        handler_note = (
            f"process handler on the {len(documents)} fixtures (recording DynamoDB client, every word labeled): "
            f"{run.calls.get('Query', 0)} Query (ConsistentRead={run.consistent_read}), "
            f"{run.calls.get('PutItem', 0)} PutItem, {run.calls.get('UpdateItem', 0)} UpdateItem"
            + (f", other {others}" if others else "")
        )
    else:
        handler_note = (
            f"process handler did not run ({run.error}): strong reads assumed, labels from ReceiptWordLabel.to_item()"
        )
    notes = {
        "handler": handler_note,
        "consistency": "strongly consistent (1 RRU per 4 KB)"
        if consistent
        else "eventually consistent (0.5 RRU per 4 KB)",
        "words": f"{min(words)}-{max(words)} words, mean {sum(words) / len(words):.1f}",
        "label_size": f"{min(sizes)}-{max(sizes)} bytes",
        "label_indexes": "; ".join(
            f"{' + '.join(('table', *k))} ({v} of {len(label_items)})" for k, v in label_indexes.items()
        ),
        "marker_indexes": " + ".join(("table", *marker_indexes)),
        "query_items": f"{mean(query_items):.0f} items, {mean(query_bytes) / KB:.1f} KB",
        "child_log": f"{dep.workflow.child_events} events, {child_log / KB:.1f} KB",
        "lambda_log": f"START/END/REPORT + {handler_log:.0f} bytes of the handler's JSON lines",
        "manifest": f"{manifest:.0f} bytes per receipt",
        "results": f"{rio.result_bytes:.0f} bytes per receipt",
    }
    return Measured(rio, notes)


# ---- rows ------------------------------------------------------------------------------------------
def _usd(value: float) -> str:
    if value >= 1:
        return f"${value:,.2f}"
    if value >= 0.01:
        return f"${value:.3f}"
    return f"${value:.5f}"


def _latencies() -> tuple[float, ...]:
    return (20.0, 60.0)


def breakdown_rows(label: str, b: Breakdown) -> Iterator[Row]:
    for line in b.lines:
        yield Row(
            AREA,
            f"  {label}: {line.component} ({line.quantity})",
            f"{_usd(b.per_1000(line.usd))} ({b.share(line.component):.1%})",
        )
    yield Row(AREA, f"  {label}: TOTAL per 1,000 receipts, LLM excluded", _usd(b.per_1000()))


def rows() -> list[Row]:
    dep = deployed(synthesize_template())
    measured = measure(dep, fixture_documents())
    rio, notes = measured.rio, measured.notes
    wf = dep.workflow
    a = Assumptions()
    out: list[Row] = []

    def add(metric: str, value: str) -> None:
        out.append(Row(AREA, metric, value))

    runs = {lat: cost_of_run(wf, dep.process, dep.list_fn, rio, replace(a, llm_seconds=lat)) for lat in _latencies()}
    base = runs[a.llm_seconds]
    biggest = sorted(base.lines, key=lambda ln: ln.usd, reverse=True)[:3]
    add(
        f"HEADLINE: AWS $ per {RECEIPTS:,} receipts, LLM excluded, at {a.llm_seconds:g} s of LLM per receipt "
        f"(one run of {RECEIPTS:,}; {PRICES_REGION} prices of {PRICES_TAKEN}, no free tier)",
        f"{_usd(base.per_1000())}: " + ", ".join(f"{ln.component} {base.share(ln.component):.0%}" for ln in biggest),
    )
    for latency, b in runs.items():
        if latency != a.llm_seconds:
            add(f"HEADLINE: the same at {latency:g} s of LLM per receipt", f"{_usd(b.per_1000())}")

    # -- derived from the synthesized template
    add(
        f"{dep.state_machine_name} ({dep.state_machine_type}; logs {dep.logging_level}"
        f"{' + execution data' if dep.log_execution_data else ''}; X-Ray {'on' if dep.tracing else 'off'}): "
        "parent states per run",
        f"{wf.parent_transitions}: {' > '.join(wf.parent_states)}",
    )
    add(
        f"  {wf.map_name}: {wf.map_mode} Map, {wf.child_execution_type} children, {wf.items_per_child} item per "
        f"child, MaxConcurrency {wf.max_concurrency}: states per child",
        f"{wf.child_transitions}: {' > '.join(wf.child_states)}",
    )
    add(
        f"  transitions per {RECEIPTS:,} receipts = {wf.parent_transitions} + {RECEIPTS:,} x (1 child start + "
        f"{wf.child_transitions}); ItemReader, ResultWriter: none (S3 requests)",
        f"{wf.transitions(RECEIPTS):,.0f}",
    )
    per_child = wf.process_invocations_per_child
    add(
        f"  Lambda invocations per run: list {wf.list_invocations} ({dep.list_fn.memory_mb} MB), process "
        f"{wf.preflight_invocations} preflight + {per_child} per child "
        f"({dep.process.memory_mb} MB {'arm64' if dep.process.arm64 else 'x86_64'}, timeout "
        f"{dep.process.timeout_seconds} s)",
        f"{wf.list_invocations + wf.preflight_invocations + wf.children(RECEIPTS) * per_child:,}",
    )
    # -- measured from the code and the fixtures
    add(f"  {notes['handler']}", "")
    add(
        f"  DynamoDB read per receipt: 1 Query, {notes['consistency']}; fixtures: {notes['query_items']} avg",
        f"{rio.query_read_units:.2f} RRU",
    )
    add(
        f"  labels per receipt: one per word (upper bound: the model may leave words out); fixtures {notes['words']}",
        f"{rio.labels:.1f}",
    )
    add(
        f"  WRU per new label: conditional PutItem, {notes['label_size']} (1 KB), written to "
        f"{notes['label_indexes']} (item attributes vs schema.GLOBAL_SECONDARY_INDEXES)",
        str(rio.wru_per_label),
    )
    add(
        f"  WRU per completion marker: UpdateItem of labeled_by/labeled_at, written to {notes['marker_indexes']}",
        str(rio.marker_wru),
    )
    add(
        f"  list function per run: GSITYPE Query of {RECEIPTS:,} Receipt items (eventual) / manifest "
        f"({notes['manifest']})",
        f"{rio.list_read_units:g} RRU / {rio.manifest_bytes * RECEIPTS / KB:.0f} KB",
    )
    add(
        f"  CloudWatch Logs per receipt: state machine child ({notes['child_log']}, modeled) / process function "
        f"({notes['lambda_log']})",
        f"{rio.child_log_bytes / KB:.1f} KB / {rio.lambda_log_bytes / KB:.1f} KB",
    )
    add(
        "  X-Ray: a trace per execution, parent and children (upper bound; the default rule's 1/s reservoir "
        f"records all at {wf.max_concurrency} receipts at once)",
        f"{1 + wf.children(RECEIPTS):,} traces",
    )
    add(
        f"  S3 per run: manifest 1 PUT, ItemReader {a.s3_itemreader_gets} GET, ResultWriter {a.s3_result_puts} PUT "
        f"(2 files, multipart); results {notes['results']}, kept {a.storage_days:g} days",
        "negligible: " + _usd(base.per_1000(base.usd("S3 requests") + base.usd("S3 storage"))),
    )
    add(
        f"  assumed: invocation = LLM wait + {a.handler_seconds:g} s; INIT {a.cold_start_seconds:g} s billed per "
        f"concurrent slot per run; list {a.list_seconds:g} s per run; preflight {a.preflight_seconds:g} s; no retry",
        "",
    )

    # -- the cost, by component
    for latency, b in runs.items():
        out.extend(breakdown_rows(f"LLM {latency:g} s", b))
    retried = cost_of_run(wf, dep.process, dep.list_fn, rio, replace(a, retries=0.05))
    add(
        f"  with 5% of receipts retried once at LLM {a.llm_seconds:g} s (each: +1 transition, +1 invocation "
        "waiting the full LLM time, +1 Query, +3 log events)",
        f"{_usd(retried.per_1000())} (+{retried.total / base.total - 1:.1%})",
    )
    out.extend(alternative_rows(dep, rio, a, base))
    return out


def express_break_even_seconds(workflow: Workflow, prices: Prices = PRICES) -> float:
    """Child duration under which an EXPRESS child costs less than a STANDARD one (the start is billed in both)."""
    standard = workflow.child_transitions * prices.sfn_transition
    return (standard - prices.sfn_express_request) / (EXPRESS_MEMORY_CHUNK_GB * prices.sfn_express_gb_second)


def alternative_rows(dep: Deployed, rio: ReceiptIO, a: Assumptions, base: Breakdown) -> list[Row]:
    wf = dep.workflow
    out: list[Row] = []

    def add(metric: str, value: str) -> None:
        out.append(Row(AREA, metric, value))

    def run(workflow: Workflow, assumptions: Assumptions = a) -> Breakdown:
        return cost_of_run(workflow, dep.process, dep.list_fn, rio, assumptions)

    inline = replace(wf, map_mode="INLINE", items_per_child=1)
    inline_cost = run(inline)
    history_cap = inline_history_cap(wf)
    payload_cap = PAYLOAD_LIMIT_BYTES // math.ceil(rio.manifest_bytes)
    add(
        f"alternative inline Map (iterations in the parent, not billed; no child start): transitions "
        f"{inline.transitions(RECEIPTS):,.0f} vs {wf.transitions(RECEIPTS):,.0f}, total per {RECEIPTS:,}",
        f"{_usd(inline_cost.per_1000())} ({inline_cost.total / base.total - 1:+.1%})",
    )
    add(
        f"  capped: history {HISTORY_EVENT_LIMIT:,} events at {INLINE_ITERATION_EVENTS + wf.child_events - 2} per "
        f"receipt, payload 256 KB at {math.ceil(rio.manifest_bytes)} bytes per key, concurrency "
        f"<= {INLINE_MAX_CONCURRENCY}: receipts per run at most",
        f"{min(history_cap, payload_cap):,} (history {history_cap:,}, payload {payload_cap:,})",
    )

    express = replace(wf, child_execution_type="EXPRESS")
    for latency in _latencies():
        at = replace(a, llm_seconds=latency)
        std, exp = run(wf, at), run(express, at)
        sfn_std = std.usd("Step Functions transitions")
        sfn_exp = exp.usd("Step Functions transitions") + exp.usd("Step Functions Express children")
        add(
            f"alternative EXPRESS children, LLM {latency:g} s: Step Functions $ per {RECEIPTS:,} (child start + "
            "$1/1M requests + 64 MB x duration) vs STANDARD",
            f"{_usd(exp.per_1000(sfn_exp))} vs {_usd(std.per_1000(sfn_std))} (total {exp.total / std.total - 1:+.1%})",
        )
    wait = longest_retry_wait_seconds(wf.child_retriers)
    add(
        f"  EXPRESS costs less only below {express_break_even_seconds(wf):.0f} s per child, and does not fit: it "
        f"stops at {EXPRESS_MAX_SECONDS} s; retry waits reach {wait:,.0f} s (longest retrier)",
        f"{EXPRESS_MAX_SECONDS} s < process timeout {dep.process.timeout_seconds} s",
    )

    failure_rate = 0.01
    for batch in (10, 25):
        batched = replace(wf, items_per_child=batch)
        b = run(batched)
        saved = base.usd("Step Functions transitions") - b.usd("Step Functions transitions")
        saved += base.usd("Lambda requests") - b.usd("Lambda requests")
        fits = dep.process.timeout_seconds // (a.llm_seconds + a.handler_seconds)
        failed = batch_failure_fraction(failure_rate, batch)
        add(
            f"alternative ItemBatcher, {batch} receipts per child (one invocation each): transitions "
            f"{batched.transitions(RECEIPTS):,.0f}; saved per {RECEIPTS:,} (transitions + requests)",
            f"{_usd(b.per_1000(saved))} ({saved / base.total:.1%} of the total)",
        )
        over = " (over the threshold)" if failed * 100 > wf.tolerated_failure_percentage else ""
        add(
            f"  but a batch fails as one: items reported failed at {failure_rate:.0%} failing receipts (tolerated "
            f"{wf.tolerated_failure_percentage:g}%); {batch} x {a.llm_seconds + a.handler_seconds:g} s per "
            f"invocation ({fits:.0f} fit in {dep.process.timeout_seconds} s)",
            f"{failed:.1%}{over}",
        )
    return out
