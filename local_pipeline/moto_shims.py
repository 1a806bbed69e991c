"""THE one place where the local run differs from AWS: emulation of Step Functions behaviour moto lacks.

Checked against moto 5.2.5 (``MOTO_VERSION``; ``installed()`` refuses other versions, so an upgrade
makes someone re-check each item below). Everything else runs as moto runs it.

Definition (``prepare_definition``), applied to the definition before ``CreateStateMachine``:

1. ``ToleratedFailurePercentage`` is removed from Distributed Map states: moto's ASL parser rejects
   the field (``ASLParserException ... no viable alternative at input "ToleratedFailurePercentage"``).
   Its value is kept in ``MapTolerance`` and enforced by shim 4. Nothing else is removed.

Runtime patches (``installed()``; restored on exit):

2. ``States.Format``: moto keeps the JSON escaping of backslashes inside intrinsic string literals
   and formats with Python's ``str.format``, so the AWS escapes ``\\{`` / ``\\}`` (a literal brace)
   raise ``KeyError``. Emulated: ``{}`` takes the next argument, ``\\X`` is the character X.
3. ``aws-sdk:*`` tasks: AWS takes PascalCase parameter names (``MapRunArn``) and returns PascalCase
   fields (``ItemCounts.Succeeded``); moto passes the names to botocore unchanged and returns
   botocore's camelCase. Emulated with botocore's service model (both directions).
4. Distributed Map tolerated failures: moto counts failed items but never fails the map run.
   Emulated as AWS documents it: the map run fails with ``States.ExceedToleratedFailureThreshold``
   when (failed + timed out) / total items * 100 exceeds ``ToleratedFailurePercentage``, or
   failed + timed out exceeds ``ToleratedFailureCount``; with neither field, any failure fails it.
   (AWS may stop early; the emulation decides once all items ran.) No results are written then.
5. ``ResultWriter`` (``s3:putObject``): moto writes only ``manifest.json`` with empty
   ``ResultFiles``. Emulated in AWS's documented format: ``<prefix>/<map run id>/SUCCEEDED_0.json``
   and ``FAILED_0.json`` (JSON arrays of child executions with ``ExecutionArn``, ``Name``,
   ``Input``, ``Output`` or ``Error``/``Cause``, ``Status``, ``StartDate``, ``StopDate``, ...; timed
   out and aborted items go to FAILED with their status) and ``manifest.json`` listing them with
   ``Key`` and ``Size``. One file per status (AWS splits files at 5 GB).

6. Distributed Map workers: moto's worker takes its next item by recursing (one more Python stack
   level per item), so a worker dies with ``RecursionError`` after about 1,500 items and the map
   run waits forever. Replaced by the same steps in a loop.
7. Performance only, no behaviour change: moto builds a new boto3 client for every task it runs
   (~10 ms each); clients are cached per (service, region, endpoint, role). That is 10,000 clients
   saved in a 10,000-receipt run.
8. ``ItemReader`` with ``ReaderConfig.InputType: JSONL`` (``S3JsonLItemReader``, how the map reads
   the manifest): moto knows only ``CSV`` and ``JSON``, so ``CreateStateMachine`` fails with
   ``'JSONL' is not a valid InputTypeValue``. Emulated as AWS documents it
   (https://docs.aws.amazon.com/step-functions/latest/dg/input-output-itemreader.html): one item
   per line of the ``s3:getObject`` body, the line's JSON value as the item, in file order, at most
   ``MaxItems`` (moto's default is the documented 100,000,000). The page does not say what happens
   to a blank line or to a line that is not JSON; here a line holding only JSON whitespace is no
   item (so the ``\\n`` that ends the last line adds none), and a line that is not JSON fails the
   map with ``States.ItemReaderFailed`` ("couldn't read from the item source", as AWS's error list
   defines it), the cause naming the line. Lines after ``MaxItems`` items are not read. Not
   emulated: GZIP/ZSTD-compressed files, the 10 GB file and 8 MB item limits. moto binds
   ``resource_output_transformer_for`` into ``item_reader_decl`` at import, so the patch goes there
   (and into the factory module, for any later importer), and ``InputType`` accepts ``JSONL``.

Not a shim, but worth knowing: moto leaves ``$$.Execution.Name`` empty when ``StartExecution`` has
no ``name``; the harness always passes one.
"""

from __future__ import annotations

import copy
import datetime
import enum
import functools
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import moto

MOTO_VERSION = "5.2.5"
EXCEED_TOLERATED_FAILURE_THRESHOLD = "States.ExceedToleratedFailureThreshold"
ITEM_READER_FAILED = "States.ItemReaderFailed"
JSONL_INPUT_TYPE = "JSONL"
REMOVED_FIELDS = ("ToleratedFailurePercentage",)


# ---- 1. the definition ------------------------------------------------------------------------
@dataclass(frozen=True)
class MapTolerance:
    """The tolerated-failure fields of one Distributed Map state (None: the field is absent)."""

    state_name: str
    percentage: float | None = None
    count: int | None = None


def prepare_definition(definition: dict[str, Any]) -> tuple[dict[str, Any], dict[str, MapTolerance]]:
    """A copy of ``definition`` moto can parse, and the tolerated-failure fields of each Distributed Map state."""
    prepared = copy.deepcopy(definition)
    tolerances: dict[str, MapTolerance] = {}

    def visit(states: dict[str, Any]) -> None:
        for name, state in states.items():
            processor = state.get("ItemProcessor") or state.get("Iterator") or {}
            if state.get("Type") == "Map" and processor.get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED":
                percentage = state.pop("ToleratedFailurePercentage", None)
                count = state.get("ToleratedFailureCount")
                tolerances[name] = MapTolerance(
                    name,
                    None if percentage is None else float(percentage),
                    None if count is None else int(count),
                )
            for nested in (state.get("ItemProcessor"), state.get("Iterator")):
                if nested:
                    visit(nested.get("States", {}))
            for branch in state.get("Branches", []):
                visit(branch.get("States", {}))

    visit(prepared.get("States", {}))
    return prepared, tolerances


def exceeds_tolerated_failure_threshold(*, failed: int, timed_out: int, total: int, tolerance: MapTolerance) -> bool:
    """AWS's rule for a Distributed Map run (see the module docstring, item 4)."""
    bad = failed + timed_out
    if tolerance.percentage is None and tolerance.count is None:
        return bad > 0
    if tolerance.percentage is not None and total > 0 and bad * 100.0 / total > tolerance.percentage:
        return True
    return tolerance.count is not None and bad > tolerance.count


# ---- 2. States.Format --------------------------------------------------------------------------
_FORMAT_TOKEN = re.compile(r"\\(.)|\{\}", re.DOTALL)


def aws_states_format(template: str, values: list[str]) -> str:
    """``States.Format`` as AWS evaluates it, on moto's literal (whose ``\\\\`` is still JSON-escaped)."""
    text = template.replace("\\\\", "\\")
    remaining = iter(values)

    def substitute(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return match.group(1)
        try:
            return next(remaining)
        except StopIteration:
            raise ValueError(f"States.Format: more '{{}}' than arguments in {template!r}") from None

    return _FORMAT_TOKEN.sub(substitute, text)


def _string_format_eval_body(self: Any, env: Any) -> None:
    self.argument_list.eval(env=env)
    args = env.stack.pop()
    values = [self._to_str_repr(value) for value in args[1:]]
    env.stack.append(aws_states_format(str(args[0]), values))


# ---- 3. aws-sdk casing ---------------------------------------------------------------------------
def _operation_model(task: Any) -> Any:
    import botocore.session

    action = str(task.resource.api_action)
    service_model = botocore.session.get_session().get_service_model(task._get_boto_service_name())
    return service_model.operation_model(action[:1].upper() + action[1:])


def _sdk_normalise_parameters(self: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> None:
    self._to_boto_request(parameters, _operation_model(self).input_shape)


def _sdk_normalise_response(self: Any, response: Any, *args: Any, **kwargs: Any) -> None:
    self._from_boto_response(response, _operation_model(self).output_shape)


# ---- 4 and 5. Distributed Map items, tolerated failures, results --------------------------------
@dataclass
class ItemRecord:
    index: int
    name: str
    input: Any
    status: str
    start: datetime.datetime
    stop: datetime.datetime
    output: Any = None
    error: str | None = None
    cause: str | None = None


@dataclass
class _MapRuns:
    lock: threading.Lock = field(default_factory=threading.Lock)
    items: dict[str, list[ItemRecord]] = field(default_factory=dict)
    tolerances: dict[str, MapTolerance] = field(default_factory=dict)

    def add(self, map_run_arn: str, record: ItemRecord) -> None:
        with self.lock:
            self.items.setdefault(map_run_arn, []).append(record)

    def records(self, map_run_arn: str) -> list[ItemRecord]:
        with self.lock:
            return sorted(self.items.get(map_run_arn, []), key=lambda r: r.index)


MAP_RUNS = _MapRuns()


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def _worker_eval_input(original: Any) -> Any:
    def eval_input(self: Any, env_frame: Any) -> None:
        original(self, env_frame)
        env_frame.local_pipeline_item_input = copy.deepcopy(env_frame.states.get_input())

    return eval_input


def _worker_eval_job(original: Any) -> Any:
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramError, ProgramStopped, ProgramTimedOut

    def eval_job(self: Any, env: Any, job: Any) -> None:
        start = _now()
        original(self, env, job)
        state = env.program_state()
        record = ItemRecord(
            index=job.job_index,
            name=str(uuid.uuid4()),
            input=getattr(env, "local_pipeline_item_input", job.job_input),
            status="SUCCEEDED",
            start=start,
            stop=_now(),
        )
        if isinstance(state, ProgramError):
            details = state.error or {}
            record.status, record.error, record.cause = "FAILED", details.get("error"), details.get("cause")
        elif isinstance(state, ProgramTimedOut):
            record.status, record.error = "TIMED_OUT", "States.Timeout"
        elif isinstance(state, ProgramStopped):
            record.status = "ABORTED"
        elif job.job_output is None:  # the worker swallowed an exception (moto counts it as failed)
            record.status, record.error = "FAILED", "States.Runtime"
        else:
            record.output = job.job_output
        MAP_RUNS.add(self._map_run_record.map_run_arn, record)

    return eval_job


def _map_run(original: Any) -> Any:
    from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    def map_run(self: Any, env: Any, eval_input: Any) -> None:
        original(self, env, eval_input)
        record = eval_input.map_run_record
        with MAP_RUNS.lock:
            tolerance = MAP_RUNS.tolerances.get(eval_input.state_name, MapTolerance(eval_input.state_name))
        counts = record.item_counter
        failed, timed_out, total = counts.failed.get(), counts.timed_out.get(), counts.total.get()
        if exceeds_tolerated_failure_threshold(failed=failed, timed_out=timed_out, total=total, tolerance=tolerance):
            cause = (
                f"The specified tolerated failure threshold was exceeded: {failed} failed and {timed_out} timed out "
                f"of {total} items (ToleratedFailurePercentage={tolerance.percentage}, "
                f"ToleratedFailureCount={tolerance.count})"
            )
            raise FailureEventException(
                FailureEvent(
                    env=env,
                    error_name=StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold),
                    event_type=HistoryEventType.ExecutionFailed,
                    event_details=EventDetails(  # type: ignore[typeddict-item]
                        executionFailedEventDetails=ExecutionFailedEventDetails(
                            error=EXCEED_TOLERATED_FAILURE_THRESHOLD, cause=cause
                        )
                    ),
                )
            )

    return map_run


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def result_entry(record: ItemRecord, *, map_state_machine_arn: str) -> dict[str, Any]:
    """One child execution as AWS writes it to a ResultWriter file."""
    execution_arn = f"{map_state_machine_arn.replace(':stateMachine:', ':execution:')}:{record.name}"
    entry: dict[str, Any] = {
        "ExecutionArn": execution_arn,
        "Input": json.dumps(record.input, separators=(",", ":")),
        "InputDetails": {"Included": True},
        "Name": record.name,
        "RedriveCount": 0,
        "RedriveStatus": "NOT_REDRIVABLE" if record.status == "SUCCEEDED" else "REDRIVABLE",
        "StartDate": _iso(record.start),
        "StateMachineArn": map_state_machine_arn,
        "Status": record.status,
        "StopDate": _iso(record.stop),
    }
    if record.status == "SUCCEEDED":
        entry["Output"] = json.dumps(record.output, separators=(",", ":"))
        entry["OutputDetails"] = {"Included": True}
    else:
        entry["Error"] = record.error
        entry["Cause"] = record.cause
    return entry


def _handle_put_object(env: Any, resource_runtime_part: Any, state_credentials: Any) -> None:
    from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for

    parameters = env.stack.pop()
    env.stack.pop()  # the map's outputs; the per-item records hold more (input, error, cause)
    record = env.map_run_record_pool_manager.get_all().pop()
    run_id = record.map_run_arn.split(":")[-1]
    bucket = parameters["Bucket"]
    prefix = parameters.get("Prefix") or ""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    s3 = boto_client_for(service="s3", region=resource_runtime_part.region, state_credentials=state_credentials)
    files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
    by_status: dict[str, list[dict[str, Any]]] = {"FAILED": [], "SUCCEEDED": []}
    for item in MAP_RUNS.records(record.map_run_arn):
        entry = result_entry(item, map_state_machine_arn=record.map_state_machine_arn)
        by_status["SUCCEEDED" if item.status == "SUCCEEDED" else "FAILED"].append(entry)
    for status, entries in by_status.items():
        if not entries:
            continue
        key = f"{prefix}{run_id}/{status}_0.json"
        body = json.dumps(entries, indent=2).encode()
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        files[status].append({"Key": key, "Size": len(body)})
    manifest = {"DestinationBucket": bucket, "MapRunArn": record.map_run_arn, "ResultFiles": files}
    key = f"{prefix}{run_id}/manifest.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest, indent=2).encode())
    env.stack.append({"MapRunArn": record.map_run_arn, "ResultWriterDetails": {"Bucket": bucket, "Key": key}})


# ---- 6. workers without recursion -----------------------------------------------------------------
def _worker_eval_pool(self: Any, job: Any, worker_frame: Any) -> None:
    """moto's ``DistributedItemProcessorWorker._eval_pool``, one loop iteration per item instead of one recursion."""
    while True:
        if job is None:
            self._env.delete_frame(worker_frame)
            return
        job_frame = worker_frame.open_inner_frame()
        self._eval_job(env=job_frame, job=job)
        worker_frame.delete_frame(job_frame)
        if isinstance(job.job_output, Exception) or self.stopped():
            self._env.delete_frame(worker_frame)
            self._job_pool.close_job(job)
            return
        next_job = self._job_pool.next_job()
        if next_job is None:
            self._env.delete_frame(worker_frame)
            self._job_pool.close_job(job)
            return
        self._job_pool.close_job(job)
        job = next_job


# ---- 7. boto3 client cache -----------------------------------------------------------------------
def _cached_client_factory(original: Any) -> Any:
    cache: dict[tuple[Any, ...], Any] = {}
    lock = threading.Lock()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        from moto.core.models import botocore_stubber
        from moto.settings import moto_server_port

        key = (
            region,
            service,
            botocore_stubber.enabled,
            moto_server_port(),
            getattr(state_credentials, "role_arn", None),
        )
        with lock:
            client = cache.get(key)
        if client is None:
            client = original(region=region, service=service, state_credentials=state_credentials)
            with lock:
                cache.setdefault(key, client)
        return client

    return boto_client_for


# ---- 8. JSON Lines item reader ---------------------------------------------------------------------
class JsonlInputTypeValue(enum.Enum):
    """Stands in for the member moto's ``InputTypeValue`` lacks (moto's enum cannot be extended)."""

    JSONL = JSONL_INPUT_TYPE


class JsonlReadError(ValueError):
    """A JSON Lines body the item reader cannot read; ``line`` is the 1-based line number."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line} of the JSONL file is not valid JSON: {reason}")
        self.line = line


_JSON_WHITESPACE = " \t\r"


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` split at ``\\n`` only (JSON Lines' separator), without copying the text."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end == -1:
            end = len(text)
        yield text[start:end]
        start = end + 1


def read_jsonl_items(text: str, max_items: int | None = None) -> list[Any]:
    """The items of a JSON Lines body as shim 8 reads them (see the module docstring, item 8)."""
    items: list[Any] = []
    for number, line in enumerate(_lines(text), start=1):
        if max_items is not None and len(items) >= max_items:
            break  # AWS stops reading at MaxItems: what follows is never parsed
        if not line.strip(_JSON_WHITESPACE):
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise JsonlReadError(number, f"{error.msg} (column {error.colno})") from None
    return items


def _input_type_init(original: Any) -> Any:
    def __init__(self: Any, input_type: str) -> None:
        if input_type == JSONL_INPUT_TYPE:
            self.input_type_value = JsonlInputTypeValue.JSONL
        else:
            original(self, input_type)

    return __init__


@functools.cache
def _jsonl_transformer_class() -> type:
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_output_transformer.transformer import (  # noqa: E501
        ResourceOutputTransformer,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    class ResourceOutputTransformerJsonl(ResourceOutputTransformer):
        """The JSONL counterpart of moto's ``ResourceOutputTransformerJson`` (same stack protocol)."""

        def _eval_body(self, env: Any) -> None:
            reader_config = env.stack.pop()
            body = env.stack.pop()
            try:
                items = read_jsonl_items(body, reader_config["MaxItemsValue"])
            except JsonlReadError as error:
                raise FailureEventException(
                    failure_event=FailureEvent(
                        env=env,
                        error_name=StatesErrorName(typ=StatesErrorNameType.StatesItemReaderFailed),
                        event_type=HistoryEventType.TaskFailed,
                        event_details=EventDetails(  # type: ignore[typeddict-item]
                            mapRunFailedEventDetails=MapRunFailedEventDetails(
                                error=ITEM_READER_FAILED, cause=str(error)
                            )
                        ),
                    )
                ) from None
            env.stack.append(items)

    return ResourceOutputTransformerJsonl


def _transformer_factory(original: Any) -> Any:
    def resource_output_transformer_for(input_type: Any) -> Any:
        if input_type.input_type_value is JsonlInputTypeValue.JSONL:
            return _jsonl_transformer_class()()
        return original(input_type=input_type)

    return resource_output_transformer_for


# ---- installation ------------------------------------------------------------------------------
_install_lock = threading.RLock()
_install_depth = 0


def _patch_targets() -> list[tuple[Any, str, Any]]:
    """(owner, attribute, replacement) for every runtime patch."""
    import sys

    from moto.stepfunctions.parser.asl.component.intrinsic.function.statesfunction.generic import string_format
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader import item_reader_decl
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_output_transformer import (  # noqa: E501
        transformer_factory,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.reader_config import input_type
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as dic,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor import (
        distributed_item_processor_worker as dipw,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval import (
        resource_eval_s3,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as aws_sdk,
    )
    from moto.stepfunctions.parser.asl.utils import boto_client

    worker = dipw.DistributedItemProcessorWorker
    targets: list[tuple[Any, str, Any]] = [
        (string_format.StringFormat, "_eval_body", _string_format_eval_body),
        (aws_sdk.StateTaskServiceAwsSdk, "_normalise_parameters", _sdk_normalise_parameters),
        (aws_sdk.StateTaskServiceAwsSdk, "_normalise_response", _sdk_normalise_response),
        (worker, "_eval_input", _worker_eval_input(worker._eval_input)),
        (worker, "_eval_job", _worker_eval_job(worker._eval_job)),
        (worker, "_eval_pool", _worker_eval_pool),
        (dic.DistributedIterationComponent, "_map_run", _map_run(dic.DistributedIterationComponent._map_run)),
        (resource_eval_s3.ResourceEvalS3, "_handle_put_object", staticmethod(_handle_put_object)),
        (input_type.InputType, "__init__", _input_type_init(input_type.InputType.__init__)),
    ]
    # item_reader_decl calls the name it imported, so patching the factory module alone changes nothing.
    factory = _transformer_factory(transformer_factory.resource_output_transformer_for)
    targets += [
        (module, "resource_output_transformer_for", factory) for module in (item_reader_decl, transformer_factory)
    ]
    original_factory = boto_client.boto_client_for
    cached = _cached_client_factory(original_factory)
    for module in list(sys.modules.values()):
        if module is not None and getattr(module, "boto_client_for", None) is original_factory:
            targets.append((module, "boto_client_for", cached))
    return targets


_saved: list[tuple[Any, str, Any]] = []
_ABSENT = object()


@contextmanager
def installed(tolerances: dict[str, MapTolerance] | None = None) -> Iterator[None]:
    """Apply the runtime patches (2-8) for the duration of the block; ``tolerances`` from prepare_definition."""
    global _install_depth
    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"local_pipeline.moto_shims was checked against moto {MOTO_VERSION}, found {moto.__version__}: "
            "re-check each shim in local_pipeline/moto_shims.py against the new version, then update MOTO_VERSION"
        )
    with _install_lock:
        if _install_depth == 0:
            _import_parser_modules()
            for owner, attribute, replacement in _patch_targets():
                _saved.append((owner, attribute, owner.__dict__.get(attribute, _ABSENT)))
                setattr(owner, attribute, replacement)
        _install_depth += 1
        with MAP_RUNS.lock:
            MAP_RUNS.tolerances.update(tolerances or {})
    try:
        yield
    finally:
        with _install_lock:
            _install_depth -= 1
            if _install_depth == 0:
                while _saved:
                    owner, attribute, value = _saved.pop()
                    if value is _ABSENT:
                        delattr(owner, attribute)  # it was inherited
                    else:
                        setattr(owner, attribute, value)
                with MAP_RUNS.lock:
                    MAP_RUNS.items.clear()
                    MAP_RUNS.tolerances.clear()


def _import_parser_modules() -> None:
    """Import every moto module that binds ``boto_client_for`` so shim 7 reaches all of them."""
    import importlib
    import pkgutil

    import moto.stepfunctions.parser.asl as asl

    for info in pkgutil.walk_packages(asl.__path__, prefix=f"{asl.__name__}."):
        if "antlr" in info.name or "jsonata" in info.name:
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:
            continue
