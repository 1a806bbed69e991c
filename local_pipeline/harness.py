"""Run the synthesized labeling state machines locally: moto Step Functions, DynamoDB, S3 and Secrets Manager.

::

    with LocalPipeline(ollama_base_url=server.url) as pipeline:      # synthesizes the app
        pipeline.load_receipts(documents)                           # receipt JSON documents
        run = pipeline.run()                                        # one CreateLabels execution, to its end
        judged = pipeline.run(kind="validate")                      # one ValidatePendingLabels execution
        run.status, run.output, run.results, run.history, run.invocations

How it works:

- the definitions come from the synthesized template (``local_pipeline.template``): each labeling
  state machine (``create``, ``validate``: found by the worker its Map runs), its intrinsics
  resolved to local names and ARNs; the Lambda functions it invokes, their environment
  (``DYNAMODB_TABLE_NAME``, ``MANIFEST_BUCKET``, ``RECEIPT_SELECTION``, the Ollama settings, ...)
  and the table and buckets come from the same template; a run sets its own state machine's
  environment (the two list functions differ in theirs);
- ``local_pipeline.moto_shims`` adapts the definition and moto where moto differs from AWS (the
  one documented place); the state machine is created in moto with execution enabled;
- every Lambda invocation the state machine makes reaches moto's Lambda service, which this
  module routes to the real handler in-process (by function name; the Task state's name picks the
  handler file); a raised exception becomes an ``Unhandled`` function error whose ``errorType``
  is the exception's class name, so Retry and Catch match as on AWS;
- two backends: in-process ``mock_aws`` (tests, benchmarks; ``endpoint_url=None``) or a moto
  server on loopback (``make run-local``; every boto3 client, the handlers' included, talks to it
  through ``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import boto3

from local_pipeline import moto_shims
from local_pipeline.template import (
    LIST_HANDLER,
    PROCESS_HANDLER,
    REGION,
    VALIDATE_HANDLER,
    WORKER_STATES,
    LocalStack,
    TemplateError,
    lambda_tasks,
    load_handler,
    synthesize_template,
)

#: The handler file of the function each Task state invokes (state name -> file); the list function
#: of each state machine runs the same file, told apart by its environment (RECEIPT_SELECTION).
HANDLER_FILES: dict[str, Path] = {
    "ListReceipts": LIST_HANDLER,
    "ProcessReceipt": PROCESS_HANDLER,
    "ListPendingReceipts": LIST_HANDLER,
    "ValidateReceipt": VALIDATE_HANDLER,
}
PROCESS_STATE = WORKER_STATES["create"]
VALIDATE_STATE = WORKER_STATES["validate"]
LIST_STATE = "ListReceipts"
LIST_PENDING_STATE = "ListPendingReceipts"
#: Invokes the worker function with {"preflight": true}: one route serves both states.
PREFLIGHT_STATE = "Preflight"
MOTO_CONFIG: dict[str, Any] = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})

Handler = Callable[[Any, Any], Any]


@dataclass
class LambdaContext:
    """The attributes of the Lambda runtime's context object that the handlers read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 1024
    timeout_seconds: int = 600
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    _start: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._start)) * 1000))


@dataclass(frozen=True)
class Invocation:
    """One Lambda invocation the state machine made."""

    state: str  # the Task state whose function was invoked (ListReceipts, ProcessReceipt, ValidateReceipt, ...)
    function_name: str
    event: Any
    result: Any
    error_type: str | None
    error_message: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error_type is None


@dataclass
class Route:
    state: str
    function_name: str
    function_arn: str
    handler: Handler
    memory_mb: int
    timeout_seconds: int
    also_preflight: bool = False  # the function also serves the Preflight state (event {"preflight": true})

    def state_of(self, event: Any) -> str:
        """The Task state an invocation came from: functions shared by two states tell them apart by event."""
        if self.also_preflight and isinstance(event, dict) and event.get("preflight") is True:
            return PREFLIGHT_STATE
        return self.state


class LambdaRouter:
    """Routes moto Lambda ``Invoke`` calls to in-process handlers, by function name."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.invocations: list[Invocation] = []
        self.listeners: list[Callable[[Invocation], None]] = []
        self._lock = threading.Lock()

    def add(self, route: Route) -> None:
        self.routes[route.function_name] = route

    def invoke(
        self, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
    ) -> bytes:
        name = function_name.split(":function:")[-1].split(":")[0]
        route = self.routes.get(name)
        if route is None:
            response_headers["x-amz-function-error"] = "Unhandled"
            error = {"errorType": "ResourceNotFoundException", "errorMessage": f"no local route for {function_name}"}
            return json.dumps(error).encode()
        raw = body.decode() if isinstance(body, bytes) else (body or "{}")
        event = json.loads(raw) if raw else {}
        context = LambdaContext(
            function_name=route.function_name,
            invoked_function_arn=route.function_arn,
            memory_limit_in_mb=route.memory_mb,
            timeout_seconds=route.timeout_seconds,
            log_group_name=f"/aws/lambda/{route.function_name}",
        )
        state = route.state_of(event)
        started = time.perf_counter()
        try:
            result = route.handler(event, context)
        except Exception as error:  # an unhandled function error, as the Lambda service reports it
            seconds = time.perf_counter() - started
            response_headers["x-amz-function-error"] = "Unhandled"
            payload = {
                "errorType": type(error).__name__,
                "errorMessage": str(error),
                "requestId": context.aws_request_id,
                "stackTrace": traceback.format_tb(error.__traceback__),
            }
            self._record(Invocation(state, name, event, None, type(error).__name__, str(error), seconds))
            return json.dumps(payload).encode()
        seconds = time.perf_counter() - started
        self._record(Invocation(state, name, event, result, None, None, seconds))
        return json.dumps(result).encode()

    def _record(self, invocation: Invocation) -> None:
        with self._lock:
            self.invocations.append(invocation)
            listeners = list(self.listeners)
        for listener in listeners:
            listener(invocation)

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Route invocations of moto's Lambda backends (the docker-less one and the default one) here."""
        from moto.awslambda.models import LambdaBackend
        from moto.awslambda_simple.models import LambdaSimpleBackend

        router = self

        def invoke(
            backend: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
        ) -> bytes:
            return router.invoke(function_name, qualifier, body, headers, response_headers)

        with (
            mock.patch.object(LambdaSimpleBackend, "invoke", invoke),
            mock.patch.object(LambdaBackend, "invoke", invoke),
        ):
            yield


@dataclass
class RunResult:
    kind: str  # the state machine that ran: create or validate
    execution_arn: str
    status: str
    output: dict[str, Any] | None
    error: str | None
    cause: str | None
    history: list[dict[str, Any]]
    invocations: list[Invocation]
    results_manifest: dict[str, Any] | None
    results: list[dict[str, Any]]  # every child execution from the ResultWriter files
    seconds: float

    @property
    def failed_results(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["Status"] != "SUCCEEDED"]

    @property
    def succeeded_results(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["Status"] == "SUCCEEDED"]

    def invocations_of(self, state: str) -> list[Invocation]:
        return [i for i in self.invocations if i.state == state]


@dataclass
class LocalStateMachine:
    """One labeling state machine as created in moto, with what a run of it needs."""

    kind: str
    logical_id: str
    definition: dict[str, Any]
    moto_definition: dict[str, Any]
    tolerances: dict[str, moto_shims.MapTolerance]
    arn: str = ""
    #: Its functions' environment from the template, with the local Ollama settings (set during its runs).
    environment: dict[str, str] = field(default_factory=dict)


def load_handler_module(path: Path, tag: str) -> ModuleType:
    """A fresh copy of the handler file, under a module name of its own (its cached clients start empty)."""
    return load_handler(path, f"local_pipeline_handler_{tag}_{uuid.uuid4().hex[:8]}")


class LocalPipeline:
    """The synthesized pipeline on moto with the real handlers (see the module docstring).

    ``kinds``: the state machines to create (default: every labeling state machine of the template);
    the first is the one ``run()`` starts without ``kind``. ``handlers``: Task state name -> a handler
    used instead of the file. ``chat_model``: a LangChain chat model every worker uses instead of Ollama.
    """

    def __init__(
        self,
        template: dict[str, Any] | None = None,
        *,
        ollama_base_url: str,
        ollama_model: str | None = None,
        ollama_api_key: str | None = None,
        ollama_timeout_seconds: float | None = None,
        endpoint_url: str | None = None,
        handlers: dict[str, Handler] | None = None,
        chat_model: Any = None,
        handler_log_level: str = "WARNING",
        stack_name: str = "local",
        poll_seconds: float = 0.05,
        moto_log_level: int = logging.CRITICAL,
        kinds: Iterable[str] | None = None,
    ) -> None:
        self.template = template
        self.ollama_base_url = ollama_base_url
        self.ollama_model = ollama_model
        self.ollama_api_key = ollama_api_key
        self.ollama_timeout_seconds = ollama_timeout_seconds
        self.endpoint_url = endpoint_url
        self.handler_overrides = dict(handlers or {})
        self.chat_model = chat_model
        self.handler_log_level = handler_log_level
        self.stack_name = stack_name
        self.poll_seconds = poll_seconds
        self.moto_log_level = moto_log_level
        self.kinds = None if kinds is None else list(kinds)
        self.router = LambdaRouter()
        self.modules: dict[str, ModuleType] = {}
        self._exit = ExitStack()
        self.stack: LocalStack
        self.machines: dict[str, LocalStateMachine] = {}
        self.table_name = ""
        self.buckets: list[str] = []

    # lifecycle ------------------------------------------------------------------------------------
    def __enter__(self) -> LocalPipeline:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._exit.close()
        for module in self.modules.values():
            sys.modules.pop(module.__name__, None)
        self.modules.clear()

    def start(self) -> None:
        self.stack = LocalStack(self.template if self.template is not None else synthesize_template(), self.stack_name)
        found = self.stack.state_machines()
        kinds = self.kinds if self.kinds is not None else list(found)
        if not kinds:
            raise TemplateError("the template has no labeling state machine (a Map running a known worker)")
        for kind in kinds:
            logical_id = found.get(kind) or self.stack.state_machine(kind)  # the latter raises, naming the kind
            definition = self.stack.definition(logical_id)
            moto_definition, tolerances = moto_shims.prepare_definition(definition)
            self.machines[kind] = LocalStateMachine(kind, logical_id, definition, moto_definition, tolerances)

        self._exit.enter_context(_preserved_logger_levels())
        # moto logs every failed state at ERROR with a repr of the whole state (the run result carries the errors)
        self._exit.enter_context(_logger_level(logging.getLogger("moto.stepfunctions.parser"), self.moto_log_level))
        self._exit.enter_context(self._moto())
        self._exit.enter_context(moto_shims.installed(self.tolerances))
        self._exit.enter_context(self.router.installed())
        self._create_resources()
        # The first state machine's environment holds outside runs too (as before there were two).
        sfn = boto3.client("stepfunctions", region_name=REGION)
        for index, machine in enumerate(self.machines.values()):
            self._add_routes(machine)
            if index == 0:
                self._exit.enter_context(_environ(machine.environment))
            props = self.stack.resource(machine.logical_id)["Properties"]
            machine.arn = sfn.create_state_machine(
                name=self.stack.physical_name(machine.logical_id),
                definition=json.dumps(machine.moto_definition),
                roleArn=self.stack.resolve(props["RoleArn"]),
                type=props.get("StateMachineType", "STANDARD"),
            )["stateMachineArn"]

    def _add_routes(self, machine: LocalStateMachine) -> None:
        """Route the functions ``machine`` invokes; each handler file is loaded in the machine's environment."""
        function_ids = {
            state: self.stack.function_id_for_arn(arn) for state, arn in lambda_tasks(machine.definition).items()
        }
        machine.environment = self._environment(function_ids.values())
        worker = WORKER_STATES[machine.kind]
        preflight_function = function_ids.get(PREFLIGHT_STATE)
        with _environ(machine.environment):  # a handler may read its environment on import (RECEIPT_SELECTION)
            for state, function_id in function_ids.items():
                if state == PREFLIGHT_STATE and function_ids.get(worker) == function_id:
                    continue  # served by the worker's route
                route = self._route(state, function_id)
                route.also_preflight = state == worker and function_id == preflight_function
                self.router.add(route)

    # the default state machine (the first of ``kinds``) ------------------------------------------
    def machine(self, kind: str | None = None) -> LocalStateMachine:
        """The state machine of ``kind`` (default: the first created)."""
        if kind is None:
            return next(iter(self.machines.values()))
        try:
            return self.machines[kind]
        except KeyError:
            raise TemplateError(f"no {kind!r} state machine in this local pipeline: {list(self.machines)}") from None

    @property
    def state_machine_arn(self) -> str:
        return self.machine().arn

    @property
    def definition(self) -> dict[str, Any]:
        return self.machine().definition

    @property
    def environment(self) -> dict[str, str]:
        return self.machine().environment

    @property
    def tolerances(self) -> dict[str, moto_shims.MapTolerance]:
        """Map state name -> its tolerated failure thresholds, over every state machine."""
        return {name: t for machine in self.machines.values() for name, t in machine.tolerances.items()}

    @contextmanager
    def _moto(self) -> Iterator[None]:
        from moto.core.config import default_user_config

        if self.endpoint_url is None:
            from moto import mock_aws

            with mock_aws(config=MOTO_CONFIG):  # type: ignore[call-overload]
                yield
            return
        port = self.endpoint_url.rsplit(":", 1)[-1].strip("/")
        with (
            mock.patch.dict(default_user_config, MOTO_CONFIG),
            _environ({"AWS_ENDPOINT_URL": self.endpoint_url, "MOTO_PORT": port}),
        ):
            yield

    def _create_resources(self) -> None:
        from receipt_dynamo.schema import create_table_kwargs

        dynamodb = boto3.client("dynamodb", region_name=REGION)
        tables = self.stack.resources_of_type("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable")
        if len(tables) != 1:
            raise TemplateError(f"expected one DynamoDB table in the template, found {tables}")
        self.table_name = self.stack.physical_name(tables[0])
        existing = dynamodb.list_tables().get("TableNames", [])
        if self.table_name not in existing:
            dynamodb.create_table(**create_table_kwargs(self.table_name))
        s3 = boto3.client("s3", region_name=REGION)
        for bucket_id in self.stack.resources_of_type("AWS::S3::Bucket"):
            name = self.stack.physical_name(bucket_id)
            s3.create_bucket(Bucket=name)
            self.buckets.append(name)
        secrets = boto3.client("secretsmanager", region_name=REGION)
        for secret_id in self.stack.resources_of_type("AWS::SecretsManager::Secret"):
            if self.ollama_api_key is None:
                continue  # no key: the process function gets no OLLAMA_API_KEY_SECRET_ARN (no key sent)
            created = secrets.create_secret(Name=self.stack.physical_name(secret_id), SecretString=self.ollama_api_key)
            self.stack.refs[secret_id] = created["ARN"]

    def _environment(self, function_ids: Iterable[str]) -> dict[str, str]:
        """The routed functions' environment from the template, with the local Ollama settings."""
        merged: dict[str, str] = {}
        for function_id in function_ids:
            for key, value in self.stack.function_environment(function_id).items():
                if key in merged and merged[key] != value:
                    raise TemplateError(f"functions disagree on {key}: {merged[key]!r} vs {value!r}")
                merged[key] = value
        merged["OLLAMA_BASE_URL"] = self.ollama_base_url
        if self.ollama_model:
            merged["OLLAMA_MODEL"] = self.ollama_model
        if self.ollama_timeout_seconds is not None:
            merged["OLLAMA_TIMEOUT_SECONDS"] = str(self.ollama_timeout_seconds)
        if self.ollama_api_key is None:
            merged.pop("OLLAMA_API_KEY_SECRET_ARN", None)
        merged.setdefault("AWS_DEFAULT_REGION", REGION)
        return merged

    def _route(self, state: str, function_id: str) -> Route:
        props = self.stack.resource(function_id).get("Properties", {})
        handler = self.handler_overrides.get(state)
        if handler is None:
            path = HANDLER_FILES.get(state)
            if path is None:
                raise TemplateError(f"no handler file known for the Task state {state!r}; pass handlers={{...}}")
            module = load_handler_module(path, state.lower())
            self.modules[state] = module
            if isinstance(getattr(module, "logger", None), logging.Logger):  # as Lambda's application log level
                self._exit.enter_context(_logger_level(module.logger, self.handler_log_level))
            if state in WORKER_STATES.values() and self.chat_model is not None:
                setattr(module, "_chat_model", self.chat_model)  # noqa: B010 - the handler's LLM, replaced
            handler = module.lambda_handler
        return Route(
            state=state,
            function_name=self.stack.physical_name(function_id),
            function_arn=self.stack.arn(function_id),
            handler=handler,
            memory_mb=int(props.get("MemorySize", 128)),
            timeout_seconds=int(props.get("Timeout", 3)),
        )

    @property
    def handler_loggers(self) -> list[logging.Logger]:
        """The module-level ``logger`` of each handler loaded (``list_receipts``, ``process_receipt``, ...), once."""
        loggers = [getattr(module, "logger", None) for module in self.modules.values()]
        return list(dict.fromkeys(logger for logger in loggers if isinstance(logger, logging.Logger)))

    # data -----------------------------------------------------------------------------------------
    def dynamo(self) -> Any:
        from receipt_dynamo import DynamoClient

        return DynamoClient(self.table_name, client=boto3.client("dynamodb", region_name=REGION))

    def load_receipts(self, documents: Iterable[dict[str, Any]]) -> list[tuple[str, int]]:
        store = self.dynamo()
        keys = []
        for document in documents:
            details = store.load_receipt_document(document)
            keys.append((details.receipt.image_id, details.receipt.receipt_id))
        return keys

    # runs -----------------------------------------------------------------------------------------
    def run(
        self,
        execution_input: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        timeout: float = 900,
        kind: str | None = None,
    ) -> RunResult:
        """Start one execution of the ``kind`` state machine (default: the first) and wait for its end.

        The execution is named (moto leaves ``$$.Execution.Name`` empty otherwise); the state
        machine's function environment is set while it runs.
        """
        machine = self.machine(kind)
        sfn = boto3.client("stepfunctions", region_name=REGION)
        first_invocation = len(self.router.invocations)
        started = time.perf_counter()
        with _environ(machine.environment):
            execution_arn = sfn.start_execution(
                stateMachineArn=machine.arn,
                name=name or f"local-{uuid.uuid4()}",
                input=json.dumps(execution_input or {}),
            )["executionArn"]
            deadline = time.monotonic() + timeout
            while True:
                described = sfn.describe_execution(executionArn=execution_arn)
                if described["status"] in TERMINAL:
                    break
                if time.monotonic() > deadline:
                    sfn.stop_execution(executionArn=execution_arn, error="LocalTimeout", cause=f"over {timeout} s")
                    raise TimeoutError(f"{execution_arn} still {described['status']} after {timeout} s")
                time.sleep(self.poll_seconds)
        seconds = time.perf_counter() - started
        output = json.loads(described["output"]) if described.get("output") else None
        manifest, results = self._results(output)
        return RunResult(
            kind=machine.kind,
            execution_arn=execution_arn,
            status=described["status"],
            output=output,
            error=described.get("error"),
            cause=described.get("cause"),
            history=self.history(execution_arn),
            invocations=self.router.invocations[first_invocation:],
            results_manifest=manifest,
            results=results,
            seconds=seconds,
        )

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        sfn = boto3.client("stepfunctions", region_name=REGION)
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        while True:
            page = sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]

    def _results(self, output: dict[str, Any] | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        location = (output or {}).get("results") or {}
        bucket, key = location.get("bucket"), location.get("manifest_key")
        if not bucket or not key:
            return None, []
        s3 = boto3.client("s3", region_name=REGION)
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        results: list[dict[str, Any]] = []
        for status in ("SUCCEEDED", "FAILED", "PENDING"):
            for entry in manifest["ResultFiles"].get(status, []):
                body = s3.get_object(Bucket=manifest["DestinationBucket"], Key=entry["Key"])["Body"].read()
                results.extend(json.loads(body))
        return manifest, results


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (the Lambda environment: handlers read os.environ)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _preserved_logger_levels() -> Iterator[None]:
    """Leave the process's logger levels as found (a run sets the handlers' loggers to its log level)."""
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level) for logger in loggers]
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


@contextmanager
def _logger_level(logger: logging.Logger, level: int | str) -> Iterator[None]:
    """``logger`` at ``level`` for the block."""
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)
