"""LabelingStateMachine: the shape every labeling workflow shares (list -> Distributed Map -> summary).

A :class:`Workflow` names the states, functions, texts and the worker's image; a subclass adds the
worker's table permissions. States, retries, failure tolerance and permissions: docs/state-machine.md.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from aws_cdk import (
    Acknowledgment,
    ArnFormat,
    AssetHashType,
    Aws,
    Duration,
    Fn,
    RemovalPolicy,
    Stack,
    Validations,
)
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks

from constructs import Construct
from constructs.codebuild_docker_image import PROJECT_DIR, CodeBuildDockerImage, LambdaConfig, alarm_rule
from receipt_dynamo import schema

#: Errors the Lambda service (not our code) raises; always worth another try. The first four are
#: AWS's documented transient service errors (Step Functions best practices, "Handle Lambda service
#: exceptions"); ResourceNotReadyException is what an image function that went Inactive after weeks
#: idle answers to its first invoke while Lambda restores it.
LAMBDA_SERVICE_ERRORS: tuple[str, ...] = (
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ResourceNotReadyException",
)
#: The worker Lambdas' retryable errors, shared by Preflight and the per-receipt task.
LLM_RATE_LIMIT_ERRORS: tuple[str, ...] = ("LLMRateLimitError",)
LLM_TRANSIENT_ERRORS: tuple[str, ...] = ("LLMTransientError", "TimeBudgetExceededError")
AWS_TRANSIENT_ERRORS: tuple[str, ...] = ("DynamoThrottledError", "AwsTransientError")
#: Where the list Lambda writes manifests (lambdas/list_receipts/handler.py: MANIFEST_PREFIX) and
#: where the map writes its results.
MANIFEST_PREFIX = "manifests/"
RESULTS_PREFIX = "results"
#: Feature flag without which CDK drops ``result_writer_v2`` from the Distributed Map (and its IAM grant).
RESULT_WRITER_V2_FLAG = "@aws-cdk/aws-stepfunctions:useDistributedMapResultWriterV2"
#: The cdk-nag pack whose findings this module acknowledges (validation plugin namespace).
NAG_PACK = "AwsSolutions"
#: The worker images' pinned dependencies, one lock for every image (``make image-lock``).
IMAGE_LOCK = "lambdas/requirements.lock"
#: What every worker image's build context holds besides the Dockerfile and the worker's own folder.
IMAGE_SHARED_SOURCES: tuple[str, ...] = ("receipt_dynamo", "receipt_label", IMAGE_LOCK)
#: The one Dockerfile of every worker image, and its build argument naming the worker's folder.
IMAGE_DOCKERFILE = "lambdas/Dockerfile"
WORKER_DIR_ARG = "FUNCTION_DIR"

# The list Lambda's code: its handler at the root of the zip, beside the receipt_dynamo package.
_LIST_CODE_SOURCES: tuple[tuple[str, str], ...] = (("lambdas/list_receipts", ""), ("receipt_dynamo", "receipt_dynamo"))
_EXCLUDED_DIRS = frozenset({"__pycache__", "tests", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis"})
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")
# Why a Python 3.12 runtime is not the latest, for both packs' findings.
_PYTHON_312 = (
    "Python 3.12 on purpose: the worker Lambdas' images are public.ecr.aws/lambda/python:3.12 and every "
    "function shares receipt_dynamo, so one interpreter version is tested and deployed."
)
_SYNC_DLQ = (
    "Invoked synchronously by the state machine (LambdaInvoke, RequestResponse): a failure goes back to "
    "Step Functions, which retries it by error name and records it in the map run's FAILED results; a "
    "DLQ only ever receives asynchronous invocations, so it would stay empty."
)
_TRACING = (
    "The state machine traces with X-Ray and logs ALL events with execution data (each invocation's "
    "duration, error and cause); Lambda active tracing would add xray:PutTraceSegments on Resource '*' "
    "to the function role for no further insight. LLM calls are traced in LangSmith when configured."
)


def list_receipts_code_files(repo_root: Path = PROJECT_DIR) -> dict[str, Path]:
    """Archive path -> source file of the list Lambda's code asset (sorted, without caches or tests)."""
    files: dict[str, Path] = {}
    for source, target in _LIST_CODE_SOURCES:
        base = repo_root / source
        marker = base / ("__init__.py" if target else "handler.py")
        if not marker.is_file():
            raise FileNotFoundError(f"list Lambda code: {marker} does not exist")
        for path in sorted(base.rglob("*")):
            relative = path.relative_to(base)
            if not path.is_file() or _EXCLUDED_DIRS.intersection(relative.parts[:-1]):
                continue
            if path.name.endswith(_EXCLUDED_SUFFIXES) or path.name.startswith("."):
                continue
            files["/".join(filter(None, (target, relative.as_posix())))] = path
    return dict(sorted(files.items()))


def stage_list_receipts_code(repo_root: Path = PROJECT_DIR) -> tuple[Path, str]:
    """Copy the list Lambda's files into a fresh directory; return it and a hash of names and contents.

    Modes are normalized and the hash covers only archive paths and bytes: the same asset on every machine.
    """
    files = list_receipts_code_files(repo_root)
    digest = hashlib.sha256(b"list-receipts-code/v1\n")
    staging = Path(tempfile.mkdtemp(prefix="list-receipts-code-"))
    atexit.register(shutil.rmtree, staging, ignore_errors=True)
    for archive_path, source in files.items():
        data = source.read_bytes()
        digest.update(f"{archive_path}\0{len(data)}\0".encode())
        digest.update(data)
        target = staging / archive_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o644)
    for directory in sorted(p for p in staging.rglob("*") if p.is_dir()):
        directory.chmod(0o755)
    return staging, digest.hexdigest()


def nag_resource_text(scope: Construct, value: str) -> str:
    """``value`` (an ARN, possibly with tokens) written as cdk-nag names it in an IAM5 finding.

    cdk-nag flattens ``Fn::Join`` and writes ``{"Ref": X}`` as ``<X>`` and ``{"Fn::GetAtt": [X, A]}``
    as ``<X.A>`` (anything else as compact JSON).
    """

    def render(part: object) -> str:
        if isinstance(part, str):
            return part
        if isinstance(part, dict) and list(part) == ["Fn::Join"] and part["Fn::Join"][0] == "":
            return "".join(render(p) for p in part["Fn::Join"][1])
        if isinstance(part, dict) and list(part) == ["Ref"]:
            return f"<{part['Ref']}>"
        if isinstance(part, dict) and list(part) == ["Fn::GetAtt"]:
            return f"<{part['Fn::GetAtt'][0]}.{part['Fn::GetAtt'][1]}>"
        return json.dumps(part, separators=(",", ":"))

    return render(Stack.of(scope).resolve(value))


def _nag(rule: str) -> str:
    """The acknowledgement id of an AwsSolutions rule (``rule`` may carry its finding in brackets)."""
    return f"{NAG_PACK}::{NAG_PACK}-{rule}"


def _iam5(scope: Construct, resource: str) -> str:
    """The acknowledgement id of the one IAM5 finding on ``resource``."""
    return _nag(f"IAM5[Resource::{nag_resource_text(scope, resource)}]")


def _serverless(rule: str) -> str:
    return f"Serverless::Serverless-{rule}"


@dataclass(frozen=True)
class MapLimits:
    """The Distributed Map's concurrency and failure tolerance; raises ValueError naming a value out of range."""

    max_concurrency: int
    tolerated_failure_percentage: int
    tolerated_failure_count: int

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if not 0 <= self.tolerated_failure_percentage <= 100:
            raise ValueError(
                f"tolerated_failure_percentage must be within 0..100, got {self.tolerated_failure_percentage}"
            )
        if self.tolerated_failure_count < 0:
            raise ValueError(f"tolerated_failure_count must be >= 0, got {self.tolerated_failure_count}")


@dataclass(frozen=True, kw_only=True)
class Workflow:
    """What tells one labeling state machine from another: names, state ids, texts and the worker image.

    Function names are ``<name>-<kind>-list`` and ``<name>-<kind>-<worker>``; the state machine is
    ``<name>-<state_machine_suffix>``. ``*_comment`` and ``*_description`` texts land in the template.
    """

    kind: str
    state_machine_suffix: str
    state_machine_comment: str
    #: "labeling run": the alarm rule's description and message.
    run_noun: str
    list_state: str
    list_comment: str
    list_description: str
    list_role_description: str
    #: The one index the list Lambda queries, and the policy statement's sid.
    list_index: str
    list_query_sid: str
    list_environment: Mapping[str, str] = field(default_factory=dict)
    has_receipts_comment: str
    #: Run the map without Preflight when receipts are listed but none needs the LLM.
    map_without_preflight: bool
    map_state: str
    worker: str
    worker_state: str
    worker_comment: str
    worker_description: str
    worker_role_id: str
    worker_role_description: str
    image_id: str
    #: The worker's folder, holding its handler.py (IMAGE_DOCKERFILE's WORKER_DIR_ARG).
    image_dir: str
    no_receipts_comment: str
    #: The worker Lambda's defaults (the construct's ``worker_timeout`` / ``worker_memory_size``).
    worker_timeout_seconds: int
    worker_memory_size: int

    def image_build(self) -> dict[str, Any]:
        """The worker image's context selection: ``dockerfile_path``, ``source_paths`` and ``build_args``.

        Keyword arguments of :class:`CodeBuildDockerImage` and of ``docker_build_context.resolve_context``.
        """
        return {
            "dockerfile_path": IMAGE_DOCKERFILE,
            "source_paths": [*IMAGE_SHARED_SOURCES, self.image_dir],
            "build_args": {WORKER_DIR_ARG: self.image_dir},
        }

    def function_name(self, name: str, part: str) -> str:
        """``<name>-<kind>-<part>``, e.g. ``receipt-labeling-dev-create-labels-list``."""
        return f"{name}-{self.kind}-{part}"


class LabelingStateMachine(Construct):
    """A labeling pipeline: list Lambda, worker Lambda (built in CodeBuild), manifest bucket, state machine.

    Attributes: ``workflow``, ``manifest_bucket``, ``list_function`` / ``list_role`` / ``list_log_group``,
    ``worker_image`` (the :class:`CodeBuildDockerImage`), ``worker_function`` / ``worker_role``,
    ``log_group``, ``state_machine`` and ``failed_execution_rule`` (None without ``alarm_topic``).
    A subclass sets :attr:`workflow` and implements :meth:`_worker_table_statements`. ``worker_timeout``
    and ``worker_memory_size`` default to the workflow's. Raises ValueError for map limits out of range.
    """

    #: The subclass's configuration: names, state ids, texts, the worker's folder and defaults.
    workflow: ClassVar[Workflow]

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        name: str,
        table: dynamodb.ITableV2,
        ollama_api_key_secret: secretsmanager.ISecret,
        ollama_model: str,
        ollama_base_url: str,
        langsmith_api_key_secret: secretsmanager.ISecret | None = None,
        max_concurrency: int = 3,
        tolerated_failure_percentage: int = 10,
        tolerated_failure_count: int = 100,
        wait_for_build: bool = False,
        log_retention: logs.RetentionDays = logs.RetentionDays.TWO_WEEKS,
        manifest_expiration: Duration | None = None,
        worker_timeout: Duration | None = None,
        worker_memory_size: int | None = None,
        alarm_topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, id_)
        # The summary reads the map's ResultWriter, which CDK renders (and grants) only under this flag.
        # Set here, before any child exists, it holds for every child whatever the app's context.
        self.node.set_context(RESULT_WRITER_V2_FLAG, True)
        limits = MapLimits(max_concurrency, tolerated_failure_percentage, tolerated_failure_count)
        workflow = self.workflow
        self.name = name
        self.manifest_bucket = self._manifest_bucket(manifest_expiration or Duration.days(30))
        self._add_list_function(table=table, log_retention=log_retention)
        secrets = [ollama_api_key_secret, *([langsmith_api_key_secret] if langsmith_api_key_secret else [])]
        self.worker_role = self._worker_role(table=table, secrets=secrets)
        self.worker_image = self._worker_image(
            environment=worker_environment(
                name=name,
                table=table,
                ollama_base_url=ollama_base_url,
                ollama_model=ollama_model,
                ollama_api_key_secret=ollama_api_key_secret,
                langsmith_api_key_secret=langsmith_api_key_secret,
            ),
            timeout=worker_timeout or Duration.seconds(workflow.worker_timeout_seconds),
            memory_size=workflow.worker_memory_size if worker_memory_size is None else worker_memory_size,
            log_retention=log_retention,
            wait_for_build=wait_for_build,
            alarm_topic=alarm_topic,
        )
        self.worker_function = self.worker_image.lambda_function
        self._add_state_machine(f"{name}-{workflow.state_machine_suffix}", limits=limits, log_retention=log_retention)
        self.failed_execution_rule = self._alarm_on_failed_executions(alarm_topic)
        for scope_, rule, reason in self._acknowledgements():
            Validations.of(scope_).acknowledge(Acknowledgment(id=rule, reason=reason))

    def _worker_table_statements(self, table: dynamodb.ITableV2) -> list[iam.PolicyStatement]:
        """The worker role's DynamoDB statements (the LLM key reads are added by the base)."""
        raise NotImplementedError

    # ---- manifest bucket: manifests (list Lambda) and map results (ResultWriter) -------------------
    def _manifest_bucket(self, expiration: Duration) -> s3.Bucket:
        return s3.Bucket(
            self,
            "ManifestBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=False,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-manifests-and-results",
                    enabled=True,
                    expiration=expiration,
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            # Run data only; objects expire anyway. Retained so a stack deletion never fails on a
            # non-empty bucket and never needs an auto-delete custom resource.
            removal_policy=RemovalPolicy.RETAIN,
        )

    # ---- list Lambda: zip, arm64, no Docker ---------------------------------------------------------
    def _add_list_function(self, *, table: dynamodb.ITableV2, log_retention: logs.RetentionDays) -> None:
        """``list_log_group``, ``list_role`` (Query the workflow's index, put manifests) and ``list_function``."""
        workflow = self.workflow
        function_name = workflow.function_name(self.name, "list")
        self.list_log_group = logs.LogGroup(
            self,
            "ListReceiptsLogGroup",
            log_group_name=f"/aws/lambda/{function_name}",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.list_role = iam.Role(
            self,
            "ListReceiptsRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{function_name}: {workflow.list_role_description}",
        )
        self.list_log_group.grant_write(self.list_role)
        self.list_role.add_to_policy(
            iam.PolicyStatement(
                sid=workflow.list_query_sid,
                actions=["dynamodb:Query"],
                resources=[f"{table.table_arn}/index/{index_name(workflow.list_index)}"],
            )
        )
        self.list_role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteRunManifests",
                actions=["s3:PutObject"],
                resources=[self.manifest_bucket.arn_for_objects(f"{MANIFEST_PREFIX}*")],
            )
        )
        staged, code_hash = stage_list_receipts_code()
        self.list_function = lambda_.Function(
            self,
            "ListReceiptsFunction",
            function_name=function_name,
            description=workflow.list_description,
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler="handler.lambda_handler",
            code=lambda_.Code.from_asset(str(staged), asset_hash_type=AssetHashType.CUSTOM, asset_hash=code_hash),
            role=self.list_role,
            memory_size=256,
            timeout=Duration.minutes(5),
            log_group=self.list_log_group,
            # Lambda's JSON log format: the runtime writes each stdlib record as one JSON object.
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            environment={
                "DYNAMODB_TABLE_NAME": table.table_name,
                "MANIFEST_BUCKET": self.manifest_bucket.bucket_name,
                **workflow.list_environment,
            },
        )

    # ---- worker Lambda: container image built in CodeBuild ------------------------------------------
    @property
    def _worker_function_name(self) -> str:
        return self.workflow.function_name(self.name, self.workflow.worker)

    def _worker_role(self, *, table: dynamodb.ITableV2, secrets: Sequence[secretsmanager.ISecret]) -> iam.Role:
        """The workflow's table statements plus reading the LLM keys; nothing else."""
        role = iam.Role(
            self,
            self.workflow.worker_role_id,
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{self._worker_function_name}: {self.workflow.worker_role_description}",
        )
        for statement in self._worker_table_statements(table):
            role.add_to_policy(statement)
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadLlmApiKeys",
                actions=["secretsmanager:GetSecretValue"],
                resources=[_secret_policy_arn(secret) for secret in secrets],
            )
        )
        return role

    def _worker_image(
        self,
        *,
        environment: dict[str, str],
        timeout: Duration,
        memory_size: int,
        log_retention: logs.RetentionDays,
        wait_for_build: bool,
        alarm_topic: sns.ITopic | None,
    ) -> CodeBuildDockerImage:
        """The worker's image (the shared Dockerfile, sources and its folder, built in CodeBuild) and function."""
        return CodeBuildDockerImage(
            self,
            self.workflow.image_id,
            build_context_path=str(PROJECT_DIR),
            **self.workflow.image_build(),
            lambda_function_name=self._worker_function_name,
            lambda_config=LambdaConfig(
                role=self.worker_role,
                timeout=timeout,
                memory_size=memory_size,
                environment=environment,
                description=self.workflow.worker_description,
                log_retention=log_retention,
            ),
            wait_for_build=wait_for_build,
            alarm_topic=alarm_topic,
        )

    # ---- state machine and its log group ------------------------------------------------------------
    def _add_state_machine(
        self, state_machine_name: str, *, limits: MapLimits, log_retention: logs.RetentionDays
    ) -> None:
        """``log_group`` and ``state_machine`` (STANDARD, logs ALL with execution data, X-Ray)."""
        self.log_group = logs.LogGroup(
            self,
            "StateMachineLogGroup",
            log_group_name=f"/aws/stepfunctions/{state_machine_name}",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Map run ARNs end in a run id unknown until the run starts: all runs of this state machine.
        self._map_runs_arn = Stack.of(self).format_arn(
            service="states",
            resource="mapRun",
            resource_name=f"{state_machine_name}/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=state_machine_name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            comment=self.workflow.state_machine_comment,
            definition_body=sfn.DefinitionBody.from_chainable(self._definition(limits)),
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=True,
        )

    # ---- alarms ------------------------------------------------------------------------------------
    def _alarm_on_failed_executions(self, topic: sns.ITopic | None) -> events.Rule | None:
        """An EventBridge rule: executions that end FAILED, TIMED_OUT or ABORTED reach ``topic``."""
        if topic is None:
            return None
        field_ = events.EventField.from_path
        run = self.workflow.run_noun
        return alarm_rule(
            self,
            "FailedExecutionRule",
            topic=topic,
            description=f"{run[0].upper()}{run[1:]} ended FAILED, TIMED_OUT or ABORTED",
            source="aws.states",
            detail_type="Step Functions Execution Status Change",
            detail={
                "status": ["FAILED", "TIMED_OUT", "ABORTED"],
                "stateMachineArn": [self.state_machine.state_machine_arn],
            },
            message=(
                f"A {run} ended {field_('$.detail.status')}: {field_('$.detail.executionArn')}. Its error "
                "and cause are in the execution's history (Step Functions console)."
            ),
        )

    # ---- the definition ----------------------------------------------------------------------------
    def _definition(self, limits: MapLimits) -> sfn.IChainable:
        """List -> HasReceipts -> [Preflight ->] map -> CountResults -> Summarize, or NoReceipts."""
        list_receipts = self._list_receipts_task()
        preflight = self._preflight_task()
        receipts_map = self._receipts_map(limits)
        count_results = self._count_results_task()
        summarize = self._summarize_state()
        no_receipts = self._no_receipts_state()
        has_receipts = sfn.Choice(self, "HasReceipts", comment=self.workflow.has_receipts_comment).when(
            sfn.Condition.number_greater_than("$.list.receipts_to_label", 0), preflight.next(receipts_map)
        )
        if self.workflow.map_without_preflight:
            # Every listed receipt is already done: the map only confirms it, no LLM call, no preflight.
            has_receipts.when(sfn.Condition.number_greater_than("$.list.receipt_count", 0), receipts_map)
        has_receipts.otherwise(no_receipts)
        receipts_map.next(count_results).next(summarize)
        return list_receipts.next(has_receipts)

    def _list_receipts_task(self) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self,
            self.workflow.list_state,
            comment=self.workflow.list_comment,
            lambda_function=self.list_function,
            # The execution input ({} or {"limit": N}) plus the execution name, which names the manifest.
            payload=sfn.TaskInput.from_json_path_at(
                sfn.JsonPath.json_merge(
                    sfn.JsonPath.entire_payload,
                    sfn.JsonPath.string_to_json(
                        sfn.JsonPath.format('\\{"execution_name":"{}"\\}', sfn.JsonPath.execution_name)
                    ),
                )
            ),
            result_selector={
                "receipt_count": sfn.JsonPath.number_at("$.Payload.receipt_count"),
                "receipts_to_label": sfn.JsonPath.number_at("$.Payload.receipts_to_label"),
                "manifest_bucket": sfn.JsonPath.string_at("$.Payload.manifest_bucket"),
                "manifest_key": sfn.JsonPath.string_at("$.Payload.manifest_key"),
            },
            result_path="$.list",
            retry_on_service_exceptions=False,
        )
        _add_retry(task, LAMBDA_SERVICE_ERRORS, interval=2, max_attempts=6, max_delay=60)
        return task

    def _preflight_task(self) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self,
            "Preflight",
            comment="One LLM call capped at one token: the endpoint answers, accepts the key, serves the model",
            lambda_function=self.worker_function,
            payload=sfn.TaskInput.from_object({"preflight": True}),
            result_selector={
                "model": sfn.JsonPath.string_at("$.Payload.model"),
                "base_url": sfn.JsonPath.string_at("$.Payload.base_url"),
            },
            result_path="$.preflight",
            retry_on_service_exceptions=False,
        )
        # Transient failures retry as for a receipt; LLMAuthError, LLMModelNotFoundError and
        # LLMRequestError fail the execution here, before any receipt is tried.
        _add_worker_function_retries(task)
        return task

    def _worker_task(self) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self,
            self.workflow.worker_state,
            comment=self.workflow.worker_comment,
            lambda_function=self.worker_function,
            payload=sfn.TaskInput.from_object(
                {
                    "image_id": sfn.JsonPath.string_at("$.image_id"),
                    "receipt_id": sfn.JsonPath.number_at("$.receipt_id"),
                }
            ),
            output_path="$.Payload",
            retry_on_service_exceptions=False,
        )
        # Not retried, on purpose: InvalidEventError, ReceiptNotFoundError, LLMOutputError,
        # LLMRequestError, LLMAuthError, LLMModelNotFoundError (another try gives the same answer).
        _add_worker_function_retries(task)
        # Labels partly written: safe to re-run (what is written is skipped the next time), but each
        # try asks the LLM again for the labels still to do, hence few tries.
        _add_retry(task, ["LabelWriteError"], interval=15, max_attempts=2, max_delay=60)
        return task

    def _receipts_map(self, limits: MapLimits) -> sfn.DistributedMap:
        """The Distributed Map over the run's manifest; its item processor is the worker task."""
        worker_task = self._worker_task()
        receipts_map = sfn.DistributedMap(
            self,
            self.workflow.map_state,
            comment="One child STANDARD execution per receipt of the manifest",
            # JSON Lines: one child execution per line; limits in docs/state-machine.md.
            item_reader=sfn.S3JsonLItemReader(
                bucket=self.manifest_bucket, key=sfn.JsonPath.string_at("$.list.manifest_key")
            ),
            item_selector={
                "image_id": sfn.JsonPath.string_at("$$.Map.Item.Value.image_id"),
                "receipt_id": sfn.JsonPath.number_at("$$.Map.Item.Value.receipt_id"),
            },
            max_concurrency=limits.max_concurrency,
            tolerated_failure_percentage=limits.tolerated_failure_percentage,
            tolerated_failure_count=limits.tolerated_failure_count,
            map_execution_type=sfn.StateMachineType.STANDARD,
            label=self.workflow.map_state,
            result_writer_v2=sfn.ResultWriterV2(bucket=self.manifest_bucket, prefix=RESULTS_PREFIX),
            result_selector={
                "map_run_arn": sfn.JsonPath.string_at("$.MapRunArn"),
                "results_bucket": sfn.JsonPath.string_at("$.ResultWriterDetails.Bucket"),
                "results_key": sfn.JsonPath.string_at("$.ResultWriterDetails.Key"),
            },
            result_path="$.map",
        )
        receipts_map.item_processor(worker_task)
        return receipts_map

    def _count_results_task(self) -> tasks.CallAwsService:
        task = tasks.CallAwsService(
            self,
            "CountResults",
            comment="Item counts of the map run (succeeded, failed, timed out, aborted)",
            service="sfn",
            action="describeMapRun",
            parameters={"MapRunArn": sfn.JsonPath.string_at("$.map.map_run_arn")},
            iam_action="states:DescribeMapRun",
            iam_resources=[self._map_runs_arn],
            result_selector={
                "succeeded": sfn.JsonPath.number_at("$.ItemCounts.Succeeded"),
                "failed": sfn.JsonPath.number_at("$.ItemCounts.Failed"),
                "timed_out": sfn.JsonPath.number_at("$.ItemCounts.TimedOut"),
                "aborted": sfn.JsonPath.number_at("$.ItemCounts.Aborted"),
                "total": sfn.JsonPath.number_at("$.ItemCounts.Total"),
            },
            result_path="$.counts",
        )
        # A read-only call: any failure of it is worth a few more tries before failing the run.
        _add_retry(task, ["States.TaskFailed"], interval=2, max_attempts=3, max_delay=20)
        return task

    def _summarize_state(self) -> sfn.Pass:
        return sfn.Pass(
            self,
            "Summarize",
            comment="The execution's output: counts and where the per-receipt results are",
            parameters={
                "receipt_count": sfn.JsonPath.number_at("$.list.receipt_count"),
                "succeeded": sfn.JsonPath.number_at("$.counts.succeeded"),
                "failed": sfn.JsonPath.number_at("$.counts.failed"),
                "timed_out": sfn.JsonPath.number_at("$.counts.timed_out"),
                "aborted": sfn.JsonPath.number_at("$.counts.aborted"),
                "results": {
                    "bucket": sfn.JsonPath.string_at("$.map.results_bucket"),
                    "manifest_key": sfn.JsonPath.string_at("$.map.results_key"),
                },
                "manifest": {
                    "bucket": sfn.JsonPath.string_at("$.list.manifest_bucket"),
                    "key": sfn.JsonPath.string_at("$.list.manifest_key"),
                },
                "map_run_arn": sfn.JsonPath.string_at("$.map.map_run_arn"),
            },
        )

    def _no_receipts_state(self) -> sfn.Pass:
        """Summarize's keys with zeros, so a caller reads every execution's output the same way."""
        # CDK drops None from Parameters (jsii passes it as undefined): a JSON null is an intrinsic.
        json_null = "States.StringToJson('null')"
        return sfn.Pass(
            self,
            "NoReceipts",
            comment=self.workflow.no_receipts_comment,
            parameters={
                "receipt_count": sfn.JsonPath.number_at("$.list.receipt_count"),
                "succeeded": 0,
                "failed": 0,
                "timed_out": 0,
                "aborted": 0,
                "results.$": json_null,
                "manifest": {
                    "bucket": sfn.JsonPath.string_at("$.list.manifest_bucket"),
                    "key": sfn.JsonPath.string_at("$.list.manifest_key"),
                },
                "map_run_arn.$": json_null,
            },
        )

    # ---- cdk-nag acknowledgements --------------------------------------------------------------------
    def _acknowledgements(self) -> list[tuple[Construct, str, str]]:
        """Every cdk-nag finding on this construct's resources: (construct, finding, why it is fine).

        The image build's resources are acknowledged by CodeBuildDockerImage itself.
        """
        sm, worker, map_state = self.state_machine, self.workflow.worker, self.workflow.map_state
        executions = Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=Fn.select(6, Fn.split(":", sm.state_machine_arn)),
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        manifests = self.manifest_bucket.arn_for_objects(f"{MANIFEST_PREFIX}*")
        return [
            (
                self.manifest_bucket,
                _nag("S1"),
                "The manifest bucket holds only run manifests and map results written by this state machine and "
                "its list Lambda (both through scoped IAM roles); objects expire after 30 days. Server access logs "
                "would need a second bucket and add nothing that CloudTrail data events cannot give when required.",
            ),
            (
                self.list_role,
                _iam5(self, manifests),
                "List Lambda role, s3:PutObject on <manifest bucket>/manifests/*: each run writes one manifest "
                "under a key named after its execution, unknown at deploy time; no other prefix, no other bucket.",
            ),
            (self.list_function, _nag("L1"), _PYTHON_312),
            (
                sm,
                _nag("IAM5[Resource::*]"),
                "State machine role, Resource '*' only for the actions that support no resource-level permission: "
                "X-Ray PutTraceSegments, PutTelemetryRecords, GetSamplingRules, GetSamplingTargets (tracing) and the "
                "CloudWatch Logs vended-log-delivery actions (CreateLogDelivery, GetLogDelivery, UpdateLogDelivery, "
                "DeleteLogDelivery, ListLogDeliveries, PutResourcePolicy, DescribeResourcePolicies, "
                "DescribeLogGroups) that Step Functions logging requires.",
            ),
            (
                sm,
                _iam5(self, f"{self.list_function.function_arn}:*"),
                "State machine role, lambda:InvokeFunction on the list function's qualified ARNs (versions and "
                "aliases of this one function), added by LambdaInvoke.",
            ),
            (
                sm,
                _iam5(self, f"{self.worker_function.function_arn}:*"),
                f"State machine role, lambda:InvokeFunction on the {worker} function's qualified ARNs (versions and "
                "aliases of this one function), added by LambdaInvoke.",
            ),
            (
                sm,
                _iam5(self, f"arn:{Aws.PARTITION}:s3:::{self.manifest_bucket.bucket_name}/*"),
                "State machine role, s3:GetObject (ItemReader: the run's manifest) and s3:PutObject/GetObject/"
                "ListMultipartUploadParts/AbortMultipartUpload (ResultWriter: results/<map run id>/...) on objects "
                "of the manifest bucket only; the keys are per run and unknown at deploy time.",
            ),
            (
                sm,
                _iam5(self, self._map_runs_arn),
                "State machine role, states:DescribeMapRun on the map runs of this state machine only: a map run "
                "ARN ends in a run id that exists only once the run starts.",
            ),
            (
                sm,
                _iam5(self, f"{executions}:*"),
                "Distributed Map policy, states:DescribeExecution/StopExecution on the child executions of this "
                "state machine only (their names are generated per item).",
            ),
            (
                sm,
                _iam5(self, f"{executions}/{map_state}:*"),
                f"Distributed Map policy, states:RedriveExecution on this state machine's {map_state} map-run "
                "executions only (ids generated per run).",
            ),
            # Serverless pack: findings that do not apply to functions the state machine invokes synchronously.
            (self.list_function, _serverless("LambdaDLQ"), _SYNC_DLQ),
            (self.list_function, _serverless("LambdaTracing"), _TRACING),
            (self.list_function, _serverless("LambdaLatestVersion"), _PYTHON_312),
            (self.worker_function, _serverless("LambdaDLQ"), _SYNC_DLQ),
            (self.worker_function, _serverless("LambdaTracing"), _TRACING),
        ]


def _add_retry(
    state: sfn.TaskStateBase,
    errors: Sequence[str],
    *,
    interval: int,
    max_attempts: int,
    max_delay: int,
    backoff_rate: float = 2.0,
) -> None:
    """Exponential backoff with full jitter, capped at ``max_delay`` seconds."""
    state.add_retry(
        errors=list(errors),
        interval=Duration.seconds(interval),
        max_attempts=max_attempts,
        backoff_rate=backoff_rate,
        max_delay=Duration.seconds(max_delay),
        jitter_strategy=sfn.JitterType.FULL,
    )


def _add_worker_function_retries(state: sfn.TaskStateBase) -> None:
    """The worker function's retriers (Preflight and the per-receipt task), in order; their error names are disjoint."""
    _add_retry(state, LAMBDA_SERVICE_ERRORS, interval=2, max_attempts=6, max_delay=60)
    _add_retry(state, LLM_RATE_LIMIT_ERRORS, interval=30, max_attempts=6, max_delay=300)
    # TimeBudgetExceededError: the handler stopped LLM work before the Lambda's timeout, nothing written.
    _add_retry(state, LLM_TRANSIENT_ERRORS, interval=5, max_attempts=4, max_delay=60)
    # receipt_dynamo raises DynamoThrottledError once its own retries against throttling are spent,
    # AwsTransientError for 5xx and connection errors of DynamoDB or Secrets Manager.
    _add_retry(state, AWS_TRANSIENT_ERRORS, interval=10, max_attempts=4, max_delay=120)


def _secret_policy_arn(secret: secretsmanager.ISecret) -> str:
    """The ARN to grant on: the full ARN, or for a secret imported by name the name plus ``-??????``.

    Secrets Manager appends ``-`` and six random characters to every secret's ARN; ``-??????`` matches
    exactly that suffix (as CDK's own grants do).
    """
    return secret.secret_full_arn or f"{secret.secret_arn}-??????"


def worker_environment(
    *,
    name: str,
    table: dynamodb.ITableV2,
    ollama_base_url: str,
    ollama_model: str,
    ollama_api_key_secret: secretsmanager.ISecret,
    langsmith_api_key_secret: secretsmanager.ISecret | None,
) -> dict[str, str]:
    """A worker Lambda's environment (docs/handlers.md); LangSmith's keys only with its secret."""
    environment = {
        "DYNAMODB_TABLE_NAME": table.table_name,
        "OLLAMA_BASE_URL": ollama_base_url,
        "OLLAMA_MODEL": ollama_model,
        "OLLAMA_API_KEY_SECRET_ARN": ollama_api_key_secret.secret_arn,
    }
    if langsmith_api_key_secret is not None:
        environment["LANGSMITH_API_KEY_SECRET_ARN"] = langsmith_api_key_secret.secret_arn
        environment["LANGSMITH_PROJECT"] = name
    return environment


def index_name(name: str) -> str:
    """``name`` if it is one of the table's indexes (receipt_dynamo.schema); raises RuntimeError otherwise."""
    names = [index for index, _, _ in schema.GLOBAL_SECONDARY_INDEXES]
    if name not in names:
        raise RuntimeError(f"the table has no index {name!r}: {names}")
    return name


def type_index_name() -> str:
    """The index keyed on TYPE (receipt_dynamo iter_receipt_keys: TYPE = RECEIPT)."""
    names = [index for index, pk, _ in schema.GLOBAL_SECONDARY_INDEXES if pk == schema.TYPE_ATTRIBUTE]
    if len(names) != 1:
        raise RuntimeError(f"expected one index keyed on {schema.TYPE_ATTRIBUTE}, found {names}")
    return names[0]
